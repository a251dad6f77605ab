"""feedproxy.heap: one malloc arena for a worker's threads, and freed heap handed back (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from feedproxy import heap

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(heap._libc() is None, reason="glibc's mallopt and malloc_trim are not here")

THREADS_ALLOCATE = """
import ctypes, threading
barrier = threading.Barrier(4)
def allocate():
    barrier.wait()
    kept = [bytes(2048) for _ in range(200)]  # above pymalloc's 512 bytes: glibc's malloc
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def arenas_after_four_threads(setup: str, tmp_path: Path) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "PROMETHEUS_MULTIPROC_DIR") and not k.startswith("FEEDPROXY_")}
    env.update(FEEDPROXY_DATA_DIR=str(tmp_path / "data"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(setup) + THREADS_ALLOCATE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_threads_get_arenas_of_their_own_by_default(tmp_path):
    assert arenas_after_four_threads("", tmp_path) == 5  # the main thread's and one per thread


def test_gunicorn_conf_gives_the_workers_threads_one_arena(tmp_path):
    """Set in the master by gunicorn.conf.py; a forked worker inherits it."""
    setup = """
        import os, runpy
        runpy.run_path("gunicorn.conf.py")
        if os.fork() == 0:
            pass  # the worker: it runs the threads below
        else:
            _, status = os.wait(); raise SystemExit(os.waitstatus_to_exitcode(status))
    """
    assert arenas_after_four_threads(setup, tmp_path) == 1


def test_an_operators_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert heap.limit_arenas() is False


def test_freed_heap_goes_back_to_the_system():
    script = """
        from pathlib import Path
        from feedproxy.heap import release_free_memory
        def rss_mb():
            line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS"))
            return int(line.split()[1]) // 1024
        blocks = [bytes(1024) for _ in range(60_000)]
        pin = bytes(1024)  # allocated last: the freed blocks are below it, not at the heap's top
        del blocks
        before = rss_mb()
        assert release_free_memory()
        print(before - rss_mb())
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 40  # of about 60 MB freed


def test_gunicorn_conf_gives_numpy_one_blas_thread(tmp_path):
    """OpenBLAS starts a thread per core in each worker; next to 4 request threads they only took
    turns at the same cores (16 connections of concept queries: 79 -> 135 a second with one)."""
    setup = """
        import ctypes, glob, os, runpy
        runpy.run_path("gunicorn.conf.py")
        import numpy
        libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "libscipy_openblas*.so"))
        blas = ctypes.CDLL(libs[0])
        print(blas.scipy_openblas_get_num_threads64_())
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_ARENA_MAX", "PROMETHEUS_MULTIPROC_DIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                        "MKL_NUM_THREADS") and not k.startswith("FEEDPROXY_")}
    env.update(FEEDPROXY_DATA_DIR=str(tmp_path / "data"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(setup)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]
