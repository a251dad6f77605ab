"""Real servers for end-to-end tests: gunicorn (or any server process) on a free loopback port.

Shared by test_e2e.py and test_deploy.py. A server's output goes to a pipe, or to a
file when a test needs to read it while the server runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
GUNICORN = BIN / "gunicorn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(env_overrides: dict) -> dict:
    """The test's environment without FEEDPROXY_* settings, with the venv first on PATH, then the overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDPROXY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"WEB_CONCURRENCY": "2", "FEEDPROXY_DATA_DIR": tempfile.mkdtemp(prefix="feedproxy-e2e-")})
    env.update(env_overrides)
    return env


def start_gunicorn(env_overrides: dict, output: IO | int = subprocess.PIPE,
                   app: str = "wsgi:app") -> tuple[subprocess.Popen, str]:
    """Start gunicorn as `make run` does (or with another ``app``), on a free port; return the process and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [str(GUNICORN), "-c", "gunicorn.conf.py", app],
        cwd=ROOT, env=service_env({"PORT": str(port), **env_overrides}), stdout=output, stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def with_saved_data(settings: dict) -> dict:
    """``settings`` with a data folder a one-worker instance has fetched into (then stopped).

    Each worker of an instance started on it loads the saved data as it boots, before it takes a
    connection, so whichever worker answers has data. Started cold, a worker answers 503 until its
    refresh child has looked at the folder, seconds later on a loaded machine.
    """
    settings = {"FEEDPROXY_DATA_DIR": tempfile.mkdtemp(prefix="feedproxy-e2e-"), **settings}
    proc, base = start_gunicorn({**settings, "WEB_CONCURRENCY": "1"})
    try:
        wait_for_feed(base, proc)
    finally:
        stop(proc)
    return settings


def _output(proc: subprocess.Popen) -> str:
    return proc.stdout.read().decode() if proc.stdout else f"(exit status {proc.returncode}; output in its file)"


def wait_for_feed(base: str, proc: subprocess.Popen, path: str = "/feed", timeout: float = 20) -> httpx.Response:
    """Poll base+path until it answers 200, failing at once if the process exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, _output(proc)
        try:
            response = httpx.get(base + path, timeout=5)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no 200 from {base}{path} within {timeout}s")


def wait_until(condition, timeout: float = 10) -> bool:
    """Poll ``condition`` every 0.2 s until it holds; return whether it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def stop(proc: subprocess.Popen) -> str:
    """SIGTERM the process, wait for it, and return what it printed (empty when it printed to a file)."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return (out or b"").decode()


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> bool:
    """SIGTERM the group of a process started with start_new_session=True; SIGKILL what outlives timeout.

    Return whether the whole group exited on SIGTERM alone.
    """
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and (proc.poll() is None or group_alive(proc.pid)):
        time.sleep(0.05)
    clean = proc.poll() is not None and not group_alive(proc.pid)
    if not clean:
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    return clean


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies waiting to be reaped do not count (Linux /proc)."""
    return any(group == pgid for _, _, group in _running_processes())


def children(pid: int) -> set[int]:
    """The running (not zombie) child processes of pid: a gunicorn master's are its workers (Linux /proc)."""
    return {child for child, parent, _ in _running_processes() if parent == pid}


def _running_processes():
    """(pid, parent pid, process group) of each process that is not a zombie."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            yield int(stat.parent.name), int(fields[1]), int(fields[2])
