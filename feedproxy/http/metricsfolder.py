"""Where the workers' Prometheus files live: a private folder in memory when there is one, checked per worker.

prometheus-client's multiprocess mode keeps each worker's values in sparse
memory-mapped files. When the disk under them fills up, a write into a new page
is no error Python can catch but a SIGBUS that kills the worker, and the next
one, and the next. In memory (``$XDG_RUNTIME_DIR``, ``/dev/shm``) the files are
off the data disk and cost a few pages. A worker that still cannot write its
folder counts in its own memory instead of failing to boot, and says why in
/healthz. Imports nothing of prometheus-client at the top: gunicorn's master
uses this module before its workers set up the metrics.
"""

from __future__ import annotations

import hashlib
import os
import stat

FOLDER_SETTING = "PROMETHEUS_MULTIPROC_DIR"
SHARED_MEMORY = "/dev/shm"  # a tmpfs on Linux
_PROBE_BYTES = 64 * 1024  # a few pages, as a worker's first files take

# Why this worker counts in its own memory (None: it writes the shared folder, or never tried).
_boot_problem: str | None = None


def metrics_root(data_dir: str) -> str:
    """The folder holding one metrics folder per running instance.

    The operator's PROMETHEUS_MULTIPROC_DIR when set; else a private folder in
    memory named after the data folder (instances sharing a data folder share
    it, others keep apart); else ``<data dir>/metrics``.
    """
    chosen = os.environ.get(FOLDER_SETTING)
    if chosen:
        return chosen
    data_dir = os.path.abspath(data_dir)
    name = "metrics-" + hashlib.sha256(data_dir.encode()).hexdigest()[:12]
    for folder in _memory_folders():
        if _is_private_folder(folder):
            return os.path.join(folder, name)
    return os.path.join(data_dir, "metrics")


def _memory_folders():
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:  # the user's own, in memory, by the XDG spec
        yield os.path.join(runtime, "feedproxy")
    yield os.path.join(SHARED_MEMORY, f"feedproxy-{os.getuid()}")


def _is_private_folder(path: str) -> bool:
    """Create ``path`` (mode 0700) if need be; whether it is a real folder of this user that only they can write.

    /dev/shm is writable by every user: a name another user took first is refused.
    """
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return False
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def prepare_worker() -> str | None:
    """In a new worker, before the app loads: recreate its metrics folder and try a write there.

    When that fails, the worker counts in its own memory (its /metrics then shows
    only its own requests) rather than failing to boot: return why, for one
    warning in the log; /healthz reports it too.
    """
    global _boot_problem
    folder = os.environ.get(FOLDER_SETTING)
    if not folder:
        return None
    try:
        os.makedirs(folder, exist_ok=True)
        _try_a_write(folder)
    except OSError as exc:
        _boot_problem = f"the metrics folder {folder} cannot be written ({exc}): this worker counts in its own memory"
        _count_in_process_memory()
        return _boot_problem
    return None


def _try_a_write(folder: str) -> None:
    probe = os.path.join(folder, f"probe-{os.getpid()}.tmp")  # not *.db: /metrics reads only those
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * _PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def _count_in_process_memory() -> None:
    del os.environ[FOLDER_SETTING]
    # Choose again: the master may have loaded prometheus-client already, choosing files for every worker.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def boot_problem() -> str | None:
    """Why this worker counts in its own memory, or None."""
    return _boot_problem
