"""Running a source's refresh in a child process, so the serving worker's heap and GIL stay out of it.

Fetching 99 pages and indexing 9,877 papers takes seconds of CPU that would
hold the GIL away from the worker's request threads, and leaves the worker's
heap fragmented (a worker that built an index once measured 162 MB against 118 MB for one that
loaded it). So a worker with a data folder runs each refresh as

    python -c _CHILD_START SOURCE --wait SECONDS --parent PID   (the Config pickled on stdin)

which runs feedproxy.refresher.main: exactly what an in-process refresh does (take the folder's
refresh lock, fetch, merge, index, save the snapshot and its index), then exit; the
worker then loads the saved index. Exit status 0: refreshed or nothing due;
1: the upstream failed (recorded in failure.json for every worker to see);
3: stopped by SIGINT or SIGTERM before it finished (nothing half-written: each
file is replaced whole or not at all), which is no failure of the upstream;
4: the data folder cannot be written (the reason on its stdout), so the worker
would never see the result: the worker then refreshes in its own process.
The child also writes on its stdout the outcome of each upstream request it
makes, which the worker counts as its own (feedproxy_upstream_requests_total):
the child itself imports no metrics and leaves no metric files behind.

The child stops with its worker: Ctrl-C reaches it with the rest of the process
group, and a worker that exits for any reason takes it along (the kernel sends
it SIGTERM), so a stopping service never leaves a refresh running behind it.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from typing import Callable

from feedproxy.errors import RefresherCannotSave, RefresherError, RefresherStopped

REFRESH_TIMEOUT_SECONDS = 900
STOPPED = 3  # the child's exit status when a signal stopped it
CANNOT_SAVE = 4  # the child's exit status when the data folder cannot be written; the reason is on its stdout

# What the child tells its worker on stdout, one line each: "upstream <outcome>" for each upstream request
# (errors.upstream_outcome: ok, timeout, ...) and "cannot_save <reason>" before it exits with CANNOT_SAVE.
UPSTREAM = "upstream"
CANNOT_SAVE_REASON = "cannot_save"


def child_line(kind: str, text: str) -> str:
    """One line of what the child tells its worker (``text`` on one line)."""
    return f"{kind} {' '.join(text.split())}"

# The child's first lines, run before any slow import: from its first moment, SIGINT (Ctrl-C reaches the
# whole process group) and SIGTERM end it quietly with STOPPED; main() then installs handlers that also
# unwind and log. `python -m feedproxy.refresher` would import the package first, open to a traceback.
_CHILD_START = f"""import signal, sys
def stop(signum, frame):
    raise SystemExit({STOPPED})
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
from feedproxy.refresher import main
sys.exit(main(sys.argv[1:]))
"""


def run_in_child(config, source_name: str, wait: float,
                 on_upstream_request: Callable[[str], None] | None = None) -> None:
    """Refresh ``source_name`` in a child process; raise RefresherError unless it exits 0 or 1.

    RefresherCannotSave (with the child's reason) when it could not save to the data folder.
    ``on_upstream_request`` is told the outcome of each upstream request the child made, as a store
    refreshing in this process tells it.
    """
    command = [sys.executable, "-c", _CHILD_START, source_name, "--wait", f"{wait:g}", "--parent", str(os.getpid())]
    try:
        done = subprocess.run(command, input=pickle.dumps(config), timeout=REFRESH_TIMEOUT_SECONDS,
                              stdout=subprocess.PIPE)
    except subprocess.TimeoutExpired as exc:
        _heard(exc.stdout or b"", on_upstream_request)  # the requests it made before it was killed
        raise RefresherError(f"refresher: {source_name} took longer than {REFRESH_TIMEOUT_SECONDS} s; killed") from None
    except OSError as exc:
        raise RefresherError(f"refresher: cannot start {sys.executable}: {exc.strerror}") from None
    reason = _heard(done.stdout, on_upstream_request)
    if done.returncode in (STOPPED, -signal.SIGINT, -signal.SIGTERM):
        raise RefresherStopped(f"refresher: {source_name} was stopped before it finished (the service is stopping?)")
    if done.returncode == CANNOT_SAVE:
        raise RefresherCannotSave(reason[:500] or "no reason given")
    if done.returncode not in (0, 1):
        raise RefresherError(f"refresher: {source_name} exited with status {done.returncode} (see the log above)")


def _heard(stdout: bytes, on_upstream_request: Callable[[str], None] | None) -> str:
    """Pass on the outcomes of the child's upstream requests; return why it cannot save ("" if it did not say)."""
    reason = ""
    for line in stdout.decode("utf-8", "replace").splitlines():
        kind, _, text = line.partition(" ")
        if kind == UPSTREAM and on_upstream_request is not None:
            on_upstream_request(text)
        elif kind == CANNOT_SAVE_REASON:
            reason = text
    return reason
