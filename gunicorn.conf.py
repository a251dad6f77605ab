"""gunicorn settings, read from the environment (PORT, WEB_CONCURRENCY, FEEDPROXY_*).

gunicorn reads ./gunicorn.conf.py by itself, so the Procfile's `gunicorn wsgi:app`
uses this file when started from the project folder. Settings are validated
here, in the master, so a bad value stops start with one clear line instead of
every worker failing to boot with a traceback.
"""

import fcntl
import math
import os
import shutil
import signal
import sys

# One thread for numpy's BLAS (OpenBLAS), set before anything imports numpy: its matrix-vector
# product over 9,877 embeddings takes a fraction of a millisecond, and a pool of one thread per
# core in each worker only competes with the workers (one per core) for the cores.
# An operator's value wins.
for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")

from feedproxy.config import DEFAULT_THREADS, Config  # noqa: E402 - after the BLAS setting
from feedproxy.errors import ConfigError  # noqa: E402
from feedproxy.heap import limit_arenas  # noqa: E402
from feedproxy.http.metricsfolder import FOLDER_SETTING, metrics_root, prepare_worker  # noqa: E402
from feedproxy.notify import check_notifications  # noqa: E402
from feedproxy.numbers import parse_whole_number  # noqa: E402


def _whole(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        return parse_whole_number(raw, low, high)
    except ValueError as exc:
        sys.exit(f"feedproxy: configuration error: {name} {exc}")


try:
    feedproxy_config = Config.from_env()  # not `config`: that name is a gunicorn setting
    check_notifications(feedproxy_config)  # the queries and apprise URLs of FEEDPROXY_NOTIFY
except ConfigError as exc:
    sys.exit(f"feedproxy: configuration error: {exc}")

# One malloc arena for all threads, set in the master so every worker inherits it: with the default
# (one per thread that allocates while another does), a worker's 4 threads grew it by tens of MB of
# freed memory glibc kept (feedproxy/heap.py has the numbers).
limit_arenas()

# All interfaces, as Procfile platforms need. With nginx on the same host, listen on loopback
# only with GUNICORN_CMD_ARGS=--bind=127.0.0.1:8000 (gunicorn lets it override this file).
bind = f"0.0.0.0:{_whole('PORT', 8000, 1, 65535)}"
# One worker per core, each answering one request at a time (gunicorn's sync worker, its own advice
# behind a buffering proxy such as nginx). A query is CPU work under the GIL: threads in a worker only
# queue for it, so a request on 4 threads measured 4 times longer server side (concept queries on
# 16 connections: median 42.8 ms against 10.2 ms with one thread) for less throughput (132 a second
# against 151). GUNICORN_THREADS above 1 selects the gthread worker (keep-alive; nginx still in front).
workers = _whole("WEB_CONCURRENCY", 2, 1, 64)
threads = _whole("GUNICORN_THREADS", DEFAULT_THREADS, 1, 64)

# A sync worker (the default) is killed when one request outlasts `timeout`. No request waits
# for the upstream (a cold worker answers 503 at once and fetches in a background thread);
# still keep a minute above one upstream page's deadline (connect + 2 x read seconds) so a
# setting of long upstream timeouts never turns a slow moment into killed workers.
_page_deadline = feedproxy_config.connect_timeout + 2 * feedproxy_config.read_timeout
timeout = max(120, math.ceil(_page_deadline) + 60)
graceful_timeout = 25  # below the stop timeouts of systemd (90 s) and Procfile platforms (often 30 s)

# The app writes one access line per request to stdout (logger feedproxy.access,
# with the rendered-feed cache result); gunicorn's own access log would double it.
accesslog = None
errorlog = "-"

# gunicorn 25.1+ opens a control socket at ~/.gunicorn/gunicorn.ctl by default: two
# instances on one host would share that path, and a service user may have no home.
control_socket_disable = True

# Prometheus multiprocess mode: each worker writes its metric values to files in
# one folder and /metrics sums them, whichever worker answers. The folder must be
# set before the workers import prometheus_client. It lives in memory when it can
# (see feedproxy/http/metricsfolder.py: files there cannot take a worker down with
# SIGBUS when the data disk fills up). Each instance (gunicorn master) has a folder
# of its own below the metrics root, named by its pid and locked while it runs, so a
# second instance on the same data folder (two `make run` of one user share
# ~/.cache/feedproxy) neither adds in nor deletes the first one's counters.
_root_chosen_by_operator = bool(os.environ.get(FOLDER_SETTING))
_metrics_root = metrics_root(feedproxy_config.data_dir)
_metrics_dir = os.path.join(_metrics_root, f"instance-{os.getpid()}")
os.environ[FOLDER_SETTING] = _metrics_dir
_INSTANCE_LOCK = "instance.lock"
_held_locks = []  # the open lock file of this instance's folder: closed (released) when the master exits


def _hold_instance_lock() -> None:
    """Create and lock this instance's folder, again if someone removed it (the old lock is then on no file)."""
    path = os.path.join(_metrics_dir, _INSTANCE_LOCK)
    if _held_locks and _same_file(_held_locks[-1], path):
        return
    os.makedirs(_metrics_dir, exist_ok=True)
    handle = open(path, "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    for old in _held_locks:
        old.close()
    _held_locks[:] = [handle]


def _same_file(handle, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


try:  # now, not at on_starting: `gunicorn --print-config` and --check-config load the app without starting
    os.makedirs(_metrics_dir, exist_ok=True)
except OSError:
    pass  # said in on_starting; each worker tries again, else counts in its own memory


def _locked_by_a_running_instance(folder: str) -> bool:
    try:
        handle = open(os.path.join(folder, _INSTANCE_LOCK), "a+")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def on_starting(server):
    """Lock this instance's metrics folder; remove those of instances that no longer run; say who shares."""
    try:
        _hold_instance_lock()
        _remove_stopped_instances(server)
    except OSError as exc:
        server.log.warning("feedproxy: the metrics folder %s cannot be used (%s): each worker tries again, "
                           "else counts in its own memory", _metrics_dir, exc)


def _remove_stopped_instances(server):
    for name in os.listdir(_metrics_root):
        folder = os.path.join(_metrics_root, name)
        if folder == _metrics_dir or not os.path.isdir(folder):
            continue
        if name.startswith("instance-") and _locked_by_a_running_instance(folder):
            server.log.warning(
                "feedproxy: another instance (gunicorn master pid %s) uses the data folder %s: the two share "
                "saved snapshots (fine for the same FEEDPROXY_UPSTREAM_URL) and keep their metrics apart; "
                "give each its own FEEDPROXY_DATA_DIR to keep them fully apart",
                name.removeprefix("instance-"), feedproxy_config.data_dir)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # an instance that has stopped: its counts are over
    for name in os.listdir(_metrics_root):
        if name.endswith(".db"):  # left by versions that wrote straight into the root
            os.unlink(os.path.join(_metrics_root, name))


def pre_fork(server, worker):
    """Before each new worker: put this instance's folder and lock back if someone removed them."""
    try:
        _hold_instance_lock()
    except OSError:
        pass  # the worker tries again and says why if it cannot


def post_fork(server, worker):
    """In the new worker, before the app loads: recreate its metrics folder, else count in its own memory."""
    problem = prepare_worker()
    if problem:
        worker.log.warning("feedproxy: %s", problem)


def on_exit(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    if _root_chosen_by_operator:
        return
    try:
        os.rmdir(_metrics_root)  # when it was the last instance on this data folder: leave nothing in memory
    except OSError:
        pass


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Let a worker's quick stop run once, however many stop signals arrive.

    Ctrl-C reaches a worker twice: SIGINT from the terminal and SIGQUIT from the
    master. gunicorn's gthread worker handles each by shutting its thread pool down;
    a second signal landing inside the first shutdown (likely while a thread holds
    the GIL, loading a fresh index) waits forever on the pool's own lock, and the
    master SIGKILLs the worker after graceful_timeout (about 27 s). Later signals
    now do nothing: the first one is already stopping the worker.
    """
    quit_now = worker.handle_quit

    def quit_once(signum, frame):
        for stop_signal in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(stop_signal, _already_stopping)
        quit_now(signum, frame)

    for stop_signal in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(stop_signal, quit_once)


def _already_stopping(signum, frame):
    pass
