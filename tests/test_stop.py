"""Stopping: Ctrl-C or SIGTERM while a refresher child works ends everything at once, cleanly."""

import os
import runpy
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .fakeupstream import Fault
from .servers import GUNICORN, ROOT, free_port, group_alive, service_env


def _refresher_children(pgid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and b"feedproxy.refresher" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def slow_upstream(upstream):
    """Each page takes a while, so a refresher child is mid-fetch when the stop comes."""
    upstream.always = Fault(delay=5.0)
    return upstream


def _start(upstream, data_dir: Path, threads: str) -> subprocess.Popen:
    env = service_env({"PORT": str(free_port()), "FEEDPROXY_UPSTREAM_URL": upstream.url,
                       "FEEDPROXY_WINDOW_DAYS": "1000", "FEEDPROXY_DATA_DIR": str(data_dir),
                       "GUNICORN_THREADS": threads})
    # Its own session and group, as a terminal gives `make run`: Ctrl-C signals the whole group.
    return subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _stopped(proc: subprocess.Popen, timeout: float = 15) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("gunicorn did not stop:\n" + out.decode(errors="replace")[-3000:])
    _wait_until(lambda: not group_alive(proc.pid), 5, "every process of the group ended")
    return out.decode(errors="replace")


def _left_in(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("threads", ["1", "4"], ids=["sync worker (default)", "gthread worker"])
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm to the master"])
def test_stopping_during_a_refresh_is_quick_and_clean(slow_upstream, tmp_path, how, threads):
    proc = _start(slow_upstream, tmp_path, threads)
    try:
        _wait_until(lambda: _refresher_children(proc.pid), 20, "a refresher child started")
        # The child is fetching once the upstream has its request (its stop handlers are in place by
        # then); the 5 s answer keeps it fetching whatever the machine's load.
        _wait_until(lambda: slow_upstream.requests, 20, "the refresher child asked the upstream")
        time.sleep(0.2)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            proc.send_signal(signal.SIGTERM)  # what systemd (KillMode=mixed) or a Procfile platform does
        log = _stopped(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in log and "SIGKILL" not in log, log
    assert f"Using worker: {'sync' if threads == '1' else 'gthread'}" in log, log
    assert "refresh stopped source=hf-daily" in log, log
    assert "refresh failed" not in log, log  # a stop is no failure of the upstream
    left = _left_in(tmp_path / "hf-daily")
    assert not any(name.endswith(".tmp") for name in left), left
    assert "failure.json" not in left and "snapshot.json.gz" not in left, left


def test_a_second_stop_signal_does_not_reenter_the_workers_quick_stop(tmp_path, monkeypatch):
    """gunicorn's gthread worker deadlocks when its SIGQUIT handler runs inside its own SIGINT handler."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    calls = []

    class Worker:
        def handle_quit(self, signum, frame):
            calls.append(signum)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGQUIT)  # the master's SIGQUIT, landing inside the first stop
                time.sleep(0.05)

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        settings["post_worker_init"](Worker())
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's SIGINT
        time.sleep(0.05)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert calls == [signal.SIGINT]


def test_the_childs_stop_is_taken_once():
    """A refresher child can get two stop signals (the service manager's SIGTERM, then its worker's
    through PR_SET_PDEATHSIG): the second must not raise again while the first unwinds or while the
    interpreter shuts down ("Exception ignored ... Stopped: SIGTERM" on stderr, seen in a make test run)."""
    from feedproxy import refresher

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, refresher._stop)
        with pytest.raises(refresher.Stopped, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the second: ignored
        os.kill(os.getpid(), signal.SIGINT)
        assert {signal.getsignal(s) for s in saved} == {signal.SIG_IGN}
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
