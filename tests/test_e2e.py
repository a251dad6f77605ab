"""End to end: real gunicorn, the real wsgi.py and gunicorn.conf.py, a loopback fake upstream, feedparser."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import feedparser
import httpx
import pytest

from .atomcheck import check_atom, entry_ids

ROOT = Path(__file__).parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env_overrides: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDPROXY_")}
    env.update({"PORT": str(port), "WEB_CONCURRENCY": "2", "FEEDPROXY_DATA_DIR": tempfile.mkdtemp(prefix="feedproxy-e2e-")})
    env.update(env_overrides)
    proc = subprocess.Popen(
        [str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_for_feed(base: str, proc: subprocess.Popen, path: str = "/feed", timeout: float = 20) -> httpx.Response:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            response = httpx.get(base + path, timeout=5)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no 200 from {base}{path} within {timeout}s")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode()


def test_gunicorn_serves_a_filtered_feed_that_feedparser_reads(upstream):
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000"})
    try:
        response = wait_for_feed(base, proc, "/feed?q=benchmark&limit=500")
        assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
        root = check_atom(response.content, self_url=f"{base}/feed?q=benchmark&limit=500")
        parsed = feedparser.parse(response.content)
        assert not parsed.bozo and len(parsed.entries) >= 5
        assert entry_ids(root) == [e.id for e in parsed.entries]
        for entry in parsed.entries:
            assert "benchmark" in (entry.title + " " + entry.summary).lower()
        bad = httpx.get(base + "/feed?limit=zero", timeout=5)
        assert bad.status_code == 400 and "'limit'" in bad.text
    finally:
        log = stop(proc)
    assert "refresh ok" in log and "Traceback" not in log
    assert all(r["headers"]["User-Agent"].startswith("feedproxy/") for r in upstream.requests)


def test_offline_demo_from_a_file(tmp_path):
    listing = tmp_path / "listing.json"
    listing.write_text((ROOT / "tests/fixtures/daily_papers/2026-08-21.json").read_text(encoding="utf-8"))
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": listing.as_uri()})
    try:
        parsed = feedparser.parse(wait_for_feed(base, proc, "/feed?q=agents").content)
        assert not parsed.bozo and parsed.entries
    finally:
        stop(proc)


def test_unreachable_upstream_starts_and_answers_503(tmp_path):
    port = free_port()  # nothing listens here
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": f"http://127.0.0.1:{port}/api/daily_papers"})
    try:
        deadline = time.time() + 20
        while True:
            try:
                response = httpx.get(base + "/feed?q=x", timeout=15)
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert "unreachable" in response.text
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "env, words",
    [
        ({"FEEDPROXY_WINDOW_DAYS": "many"}, "FEEDPROXY_WINDOW_DAYS must be a whole number"),
        ({"PORT": "http"}, "PORT must be a whole number"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be a whole number from 1 to 64"),
    ],
)
def test_bad_configuration_stops_start_with_a_message(env, words):
    proc, _ = start_gunicorn(env)
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode != 0
    assert words in out and "Traceback" not in out
