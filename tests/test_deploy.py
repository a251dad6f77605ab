"""The deployment files, run for real: the Procfile under honcho, nginx before gunicorn, the systemd unit.

Everything listens on 127.0.0.1 and reads the loopback fake upstream. The nginx
tests need the nginx binary (.ci/install-nginx.sh installs it): without it they
skip, except under CI, where they fail.
"""

from __future__ import annotations

import gzip
import http.client
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest

from .atomcheck import ATOM, check_atom
from .conftest import all_items
from .fakeupstream import FakeUpstream
from .servers import BIN, ROOT, free_port, group_alive, service_env, start_gunicorn, stop, stop_group, wait_for_feed

DEPLOY = ROOT / "deploy"
NGINX_TEMPLATES = ("nginx.conf", "feedproxy.nginx.conf")
PLACEHOLDERS = ("LISTEN", "UPSTREAM", "CACHE_DIR")


def find_program(name: str) -> str | None:
    """A program on PATH or in the sbin folders, which a normal user's PATH may lack."""
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if os.access(p, os.X_OK)), None
    )


def require_nginx() -> str:
    nginx = find_program("nginx")
    if nginx is None:
        message = "nginx is not installed: run .ci/install-nginx.sh (Debian/Ubuntu, as root) or apt-get install nginx"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this fails instead of skipping)")
        pytest.skip(message)
    return nginx


# -- HTTP without a client library's defaults (httpx would ask for gzip on every request) -----------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes  # as sent: still gzipped when Content-Encoding says so


def fetch(base: str, path: str, **headers: str) -> Reply:
    """GET base+path with exactly these headers (plus Host, and Accept-Encoding: identity unless given)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


# -- the nginx template ----------------------------------------------------------------------------


def render_template(text: str, values: dict[str, str]) -> str:
    """Fill in the three placeholders as `envsubst '${LISTEN} ${UPSTREAM} ${CACHE_DIR}'` does.

    Uses the real envsubst when installed; otherwise the same substitution in Python.
    """
    envsubst = find_program("envsubst")
    if envsubst:
        shell_format = " ".join("${%s}" % name for name in PLACEHOLDERS)
        env = {"PATH": os.environ.get("PATH", ""), **values}
        return subprocess.run([envsubst, shell_format], input=text, env=env, capture_output=True, text=True,
                              check=True).stdout
    names = "|".join(PLACEHOLDERS)
    return re.sub(r"\$\{(%s)\}|\$(%s)\b" % (names, names), lambda m: values[m.group(1) or m.group(2)], text)


def render_nginx(prefix: Path, listen: str, upstream: str) -> Path:
    """Render both templates into prefix, with the cache under it; return the main file."""
    prefix.mkdir(parents=True, exist_ok=True)
    values = {"LISTEN": listen, "UPSTREAM": upstream, "CACHE_DIR": str(prefix / "cache")}
    for name in NGINX_TEMPLATES:
        (prefix / name).write_text(render_template((DEPLOY / name).read_text(), values))
    return prefix / "nginx.conf"


def _nginx_takes_e(nginx: str) -> bool:
    """nginx 1.19.5 and later take `-e stderr`, which keeps it from opening the packaged error log first."""
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    return bool(found) and tuple(map(int, found.groups())) >= (1, 19, 5)


@dataclass
class Nginx:
    proc: subprocess.Popen
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_nginx(nginx: str, prefix: Path, upstream: str, run_as: pwd.struct_passwd | None = None) -> Nginx:
    """Render the templates and start nginx in the foreground on a free port, as the README says."""
    port = free_port()
    conf = render_nginx(prefix, f"127.0.0.1:{port}", upstream)
    if os.geteuid() == 0 and run_as is None:
        # As root, workers would switch to `nobody`, who cannot enter pytest's private tmp folders.
        conf.write_text("user root;\n" + conf.read_text())
    command = [nginx, *(["-e", "stderr"] if _nginx_takes_e(nginx) else []),
               "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"]
    log = prefix / "nginx.out"
    log.touch()
    if run_as is not None:
        for path in (prefix, log):
            os.chown(path, run_as.pw_uid, run_as.pw_gid)
        command = ["setpriv", f"--reuid={run_as.pw_uid}", f"--regid={run_as.pw_gid}", "--clear-groups", *command]
    with open(log, "ab") as out:  # append mode: nginx reopens /dev/stdout and writes beside stderr
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Nginx(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.time() + 15
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited with status {proc.returncode}:\n{server.output()}")
        try:
            if fetch(server.base, "/healthz").status == 200:
                return server
        except OSError:
            pass
        if time.time() > deadline:
            stop_group(proc)
            raise AssertionError(f"nginx did not answer within 15 s:\n{server.output()}")
        time.sleep(0.05)


@dataclass
class Stack:
    """nginx in front of gunicorn in front of the fake upstream."""

    nginx: Nginx
    app_base: str
    access_log: Path  # gunicorn's own access log: one line per request that reached the app

    def app_requests(self, path: str) -> int:
        """How many requests for exactly this path and query reached gunicorn."""
        needle = f'"GET {path} HTTP/'
        return sum(needle in line for line in self.access_log.read_text().splitlines())

    def wait_app_requests(self, path: str, expected: int, settle: float = 0.5) -> int:
        """The count once it reaches expected (gunicorn logs after answering), or after it stays put."""
        deadline = time.time() + 5
        while self.app_requests(path) < expected and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(settle)  # a late line from a request that should not have reached the app shows here
        return self.app_requests(path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    nginx = require_nginx()
    tmp = tmp_path_factory.mktemp("deploy")
    upstream = FakeUpstream(all_items()).start()
    access_log = tmp / "gunicorn-access.log"
    with open(tmp / "gunicorn.out", "ab") as out:
        gunicorn, app_base = start_gunicorn(
            {
                "FEEDPROXY_UPSTREAM_URL": upstream.url,
                "FEEDPROXY_WINDOW_DAYS": "1000",
                "FEEDPROXY_PROXY_COUNT": "1",
                "FEEDPROXY_DATA_DIR": str(tmp / "data"),
                # One worker, so the first 200 means every request finds data (a second
                # worker may still answer 503 for a few seconds after a cold start).
                "WEB_CONCURRENCY": "1",
                # Counted by the tests; gunicorn.conf.py leaves gunicorn's access log off.
                "GUNICORN_CMD_ARGS": f"--access-logfile={access_log}",
            },
            output=out,
        )
    try:
        wait_for_feed(app_base, gunicorn, "/healthz")
        proxy = start_nginx(nginx, tmp / "nginx", urlsplit(app_base).netloc)
    except BaseException:
        stop(gunicorn)
        upstream.stop()
        raise
    yield Stack(proxy, app_base, access_log)
    clean = stop_group(proxy.proc)
    stop(gunicorn)
    upstream.stop()
    assert clean, "nginx must exit on SIGTERM\n" + proxy.output()
    assert "[emerg]" not in proxy.output() and "[alert]" not in proxy.output(), proxy.output()


def test_repeated_requests_are_answered_from_the_nginx_cache(stack):
    path = "/feed?q=benchmark&limit=20"
    first = fetch(stack.nginx.base, path)
    assert first.status == 200 and first.headers["X-Cache-Status"] == "MISS"
    assert re.fullmatch(r"public, max-age=\d+", first.headers["Cache-Control"])  # the app's, passed on
    assert first.headers["Vary"] == "Accept-Encoding"
    assert stack.wait_app_requests(path, 1) == 1
    for _ in range(5):
        again = fetch(stack.nginx.base, path)
        assert again.status == 200 and again.headers["X-Cache-Status"] == "HIT"
        assert again.body == first.body and again.headers["ETag"] == first.headers["ETag"]
    assert stack.wait_app_requests(path, 1) == 1, "a cached feed must not be asked of the app again"
    assert fetch(stack.nginx.base, path + "&sort=upvotes").headers["X-Cache-Status"] == "MISS"  # full URI in the key


def test_conditional_requests_are_answered_304_by_nginx(stack):
    path = "/feed?q=pretraining"
    plain = fetch(stack.nginx.base, path)
    zipped = fetch(stack.nginx.base, path, Accept_Encoding="gzip")
    assert plain.status == zipped.status == 200
    assert stack.wait_app_requests(path, 2) == 2
    for validators in (
        {"If-None-Match": plain.headers["ETag"]},
        {"If-Modified-Since": plain.headers["Last-Modified"]},
        {"If-None-Match": zipped.headers["ETag"], "Accept-Encoding": "gzip"},
    ):
        reply = fetch(stack.nginx.base, path, **validators)
        assert reply.status == 304 and reply.body == b"", validators
        assert reply.headers["X-Cache-Status"] == "HIT"
    changed = fetch(stack.nginx.base, path, If_None_Match='"an-older-version"')
    assert changed.status == 200 and changed.body == plain.body
    assert stack.wait_app_requests(path, 2) == 2, "nginx, not the app, answers conditional requests"


def test_gzip_and_identity_are_cached_as_separate_variants(stack):
    path = "/feed?q=agents&limit=30"
    zipped = fetch(stack.nginx.base, path, Accept_Encoding="gzip")
    assert zipped.status == 200 and zipped.headers["X-Cache-Status"] == "MISS"
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["ETag"].endswith('-gz"')
    # `*` accepts gzip too, but the key files it under identity: the app must be asked the
    # same way, or the gzip bytes would be cached for clients that cannot read them.
    plain = fetch(stack.nginx.base, path, Accept_Encoding="*")
    assert plain.status == 200 and "Content-Encoding" not in plain.headers and plain.body.startswith(b"<?xml")
    assert plain.headers["X-Cache-Status"] == "MISS", "the identity variant must not be served the gzip copy"
    assert gzip.decompress(zipped.body) == plain.body
    # Other spellings share the two cached variants, and each gets the one it accepts.
    for accept, want_gzip in [
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("deflate, gzip;q=0", False),
        ("br", False),
        ("identity", False),
        (None, False),
    ]:
        reply = fetch(stack.nginx.base, path, **({"Accept_Encoding": accept} if accept else {}))
        assert reply.status == 200 and reply.headers["X-Cache-Status"] == "HIT", accept
        assert reply.body == (zipped.body if want_gzip else plain.body), accept
        assert (reply.headers.get("Content-Encoding") == "gzip") is want_gzip, accept
        assert reply.headers["Vary"] == "Accept-Encoding"
    assert stack.wait_app_requests(path, 2) == 2


def test_feed_links_carry_the_public_host_and_cannot_be_spoofed(stack):
    path = "/feed?q=diffusion&limit=5"
    # (issue 17) X-Forwarded-Port from a client too: it would have poisoned the cached feed's links.
    reply = fetch(stack.nginx.base, path, X_Forwarded_Host="evil.example", X_Forwarded_Proto="https",
                  X_Forwarded_Port="6666")
    assert reply.status == 200
    root = check_atom(reply.body, self_url=stack.nginx.base + path)
    assert root.findtext(f"{ATOM}id").startswith(stack.nginx.base + "/feed?q=")
    assert not feedparser.parse(reply.body).bozo
    # Another public name is another cache entry, never the first name's rel=self.
    other = fetch(stack.nginx.base, path, Host="feeds.example.org")
    assert other.status == 200 and other.headers["X-Cache-Status"] == "MISS"
    check_atom(other.body, self_url="http://feeds.example.org" + path)


def test_only_what_the_app_marks_cacheable_is_cached(stack):
    for path, status in [("/healthz", 200), ("/feed?limit=0", 400), ("/no-such-page", 404)]:
        before = stack.app_requests(path)
        for _ in range(2):
            reply = fetch(stack.nginx.base, path)
            assert reply.status == status and reply.headers["X-Cache-Status"] != "HIT", path
        assert stack.wait_app_requests(path, before + 2) == before + 2, path


def test_nginx_conf_runs_as_a_normal_user(stack):
    """As root, run a second nginx as `nobody`; as anyone else the stack's nginx already proved it."""
    if os.geteuid() != 0:
        pytest.skip("not root: the other nginx tests already run nginx as a normal user")
    if not find_program("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop to `nobody`")
    nobody = pwd.getpwnam("nobody")
    prefix = Path(tempfile.mkdtemp(prefix="feedproxy-nginx-"))  # pytest's tmp folders are private to root
    server = start_nginx(require_nginx(), prefix, urlsplit(stack.app_base).netloc, run_as=nobody)
    try:
        path = "/feed?q=model&limit=3"
        assert fetch(server.base, path).headers["X-Cache-Status"] == "MISS"
        assert fetch(server.base, path).headers["X-Cache-Status"] == "HIT"  # the cache under the prefix works
        assert any((prefix / "cache").rglob("*")), "nothing was written to CACHE_DIR"
    finally:
        clean = stop_group(server.proc)
        output = server.output()
        shutil.rmtree(prefix, ignore_errors=True)
    assert clean, "nginx must exit on SIGTERM\n" + output
    assert "[emerg]" not in output and "[alert]" not in output, output


def test_nginx_templates_fill_in_only_their_three_placeholders():
    for name in NGINX_TEMPLATES:
        text = (DEPLOY / name).read_text()
        assert set(re.findall(r"\$\{(\w+)\}", text)) <= set(PLACEHOLDERS), name
        rendered = render_template(text, {"LISTEN": "127.0.0.1:8080", "UPSTREAM": "127.0.0.1:8000",
                                          "CACHE_DIR": "/var/cache/feedproxy"})
        assert "${" not in rendered, name
    site = render_template((DEPLOY / "feedproxy.nginx.conf").read_text(),
                           {"LISTEN": "8080", "UPSTREAM": "127.0.0.1:8000", "CACHE_DIR": "/var/cache/feedproxy"})
    assert "listen 8080;" in site and "server 127.0.0.1:8000;" in site
    assert "proxy_cache_path /var/cache/feedproxy " in site
    # nginx's own variables survive the rendering.
    for variable in ("$http_host", "$request_uri", "$upstream_cache_status", "$proxy_add_x_forwarded_for",
                     "$feedproxy_encoding", "$scheme"):
        assert variable in site, variable
    # The app's max-age decides freshness: no lifetime of nginx's own.
    assert "proxy_cache_valid" not in site
    # Expiry needs 30 s or more (the app's smallest max-age), so these are checked as written, not run.
    for directive in ("proxy_cache_revalidate on;", "proxy_cache_lock on;", "proxy_cache_background_update on;",
                      "proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;"):
        assert directive in site, directive


# -- the Procfile, under honcho --------------------------------------------------------------------


def start_honcho(tmp_path: Path, env_overrides: dict) -> tuple[subprocess.Popen, str, Path]:
    """`honcho start` in the project folder with an empty .env, on a free port; output to a file."""
    port = free_port()
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    env = service_env({"FEEDPROXY_DATA_DIR": str(tmp_path / "data"), **env_overrides})
    env.pop("PORT", None)  # honcho sets it from -p
    out = tmp_path / "honcho.out"
    with open(out, "ab") as log:
        proc = subprocess.Popen(
            [str(BIN / "honcho"), "start", "--no-colour", "-e", str(empty_env), "-f", "Procfile", "-p", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}", out


def test_honcho_runs_the_procfile_with_gunicorn_conf(tmp_path, upstream):
    proc, base, out = start_honcho(tmp_path, {
        "FEEDPROXY_UPSTREAM_URL": upstream.url,
        "FEEDPROXY_WINDOW_DAYS": "1000",
        "WEB_CONCURRENCY": "3",
    })
    try:
        response = wait_for_feed(base, proc, "/feed?q=benchmark&limit=500")
        parsed = feedparser.parse(response.content)
        assert not parsed.bozo and len(parsed.entries) >= 5
        assert any((tmp_path / "data").rglob("*.json.gz")), "no snapshot saved under FEEDPROXY_DATA_DIR"
    finally:
        clean = stop_group(proc)
    log = out.read_text()
    assert clean, "honcho and gunicorn must all exit on SIGTERM\n" + log
    assert not group_alive(proc.pid)
    port = urlsplit(base).port
    assert f"Listening at: http://0.0.0.0:{port}" in log, log  # all interfaces, on honcho's $PORT
    # One thread a worker: the sync worker; WEB_CONCURRENCY workers.
    assert "Using worker: sync" in log, log
    assert log.count("Booting worker with pid") == 3, log
    # gunicorn.conf.py was read: its control socket is off.
    assert "Control socket" not in log and "Traceback" not in log, log


def test_honcho_stops_on_a_bad_setting_with_one_line(tmp_path):
    # gunicorn ignores GUNICORN_THREADS itself: only gunicorn.conf.py can refuse it.
    proc, _, out = start_honcho(tmp_path, {"GUNICORN_THREADS": "0"})
    try:
        proc.wait(timeout=30)
    finally:
        stop_group(proc)
    log = out.read_text()
    assert "feedproxy: configuration error: GUNICORN_THREADS must be from 1 to 64, got 0" in log, log
    assert "Traceback" not in log, log


# -- gunicorn.conf.py ------------------------------------------------------------------------------


def gunicorn_settings(env_overrides: dict) -> dict[str, str]:
    """gunicorn's resolved settings (--print-config) with gunicorn.conf.py read as the Procfile reads it."""
    env = service_env(env_overrides)
    done = subprocess.run([str(BIN / "gunicorn"), "wsgi:app", "--print-config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return {name: value.strip() for name, _, value in
            (line.partition("=") for line in done.stdout.splitlines()) for name in [name.strip()] if value}


def test_gunicorn_timeout_stays_above_the_upstream_timeouts():
    assert int(gunicorn_settings({"PORT": "8123"})["timeout"]) >= 120
    slow = gunicorn_settings({"PORT": "8123", "FEEDPROXY_CONNECT_TIMEOUT": "60", "FEEDPROXY_TIMEOUT": "300"})
    assert int(slow["timeout"]) > 60 + 2 * 300
    assert slow["bind"] == "['0.0.0.0:8123']" and slow["control_socket_disable"] == "True"


# -- the systemd unit ------------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every Key=value of a unit file, values in order (keys such as Environment= repeat)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_sets_user_state_dir_restart_and_hardening():
    unit = unit_settings(DEPLOY / "feedproxy.service")
    expected = {
        "User": ["feedproxy"],
        "Restart": ["on-failure"],
        "StateDirectory": ["feedproxy"],
        "EnvironmentFile": ["-/etc/feedproxy.env"],
        "WorkingDirectory": ["/opt/feedproxy/app"],
        "ExecStart": ["/opt/feedproxy/venv/bin/gunicorn -c gunicorn.conf.py wsgi:app"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert unit.get(key) == value, key
    assert "FEEDPROXY_DATA_DIR=/var/lib/feedproxy" in unit["Environment"]
    # The file names only settings feedproxy reads, so a typo cannot hide in it.
    names = {value.split("=", 1)[0] for value in unit["Environment"]}
    assert names <= {"PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "FEEDPROXY_DATA_DIR"}


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    """systemd's own parser: unknown keys and bad values are warnings, so any output fails."""
    analyze = find_program("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this venv's gunicorn.
    text = (DEPLOY / "feedproxy.service").read_text().replace("/opt/feedproxy/venv/bin/gunicorn", str(BIN / "gunicorn"))
    unit = tmp_path / "feedproxy.service"
    unit.write_text(text)
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "System has not been booted with systemd" in done.stderr:
        pytest.skip("systemd-analyze cannot run here: " + done.stderr.strip())
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
