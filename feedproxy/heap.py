"""Keep a worker's C heap small: fewer malloc arenas, and freed memory handed back to the system.

glibc's malloc gives each thread that allocates at the same time as another an arena of its own
(up to 8 per core), and keeps freed memory in them for reuse. A worker has threads besides the
request's (the refresh that loads a new index, the WebSub hub, GUNICORN_THREADS > 1), and the
tokenizer (Rust) and numpy allocate outside the GIL: measured on the benchmark corpus, 500 concept
queries over 4 request threads grew a worker by about 45 MB of freed but kept memory with the
default arenas, and by none with one. Unpickling a 9,877-paper index leaves about 6 MB
of freed memory behind, loading the model another 6 MB.

Both calls are glibc's (``mallopt``, ``malloc_trim``); elsewhere (musl, macOS) they do nothing.
An operator's MALLOC_ARENA_MAX in the environment wins over ``limit_arenas``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

_M_ARENA_MAX = -8  # from glibc's malloc.h
ARENAS = 1  # for the whole process: the request threads take turns at the GIL anyway


@functools.cache
def _libc():
    """glibc, or None when the C library is another one."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both are glibc's, not C's
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Let threads created from now on share at most ``arenas`` malloc arenas; whether it was set.

    Call it before the request threads start (gunicorn.conf.py does, in the master).
    """
    libc = _libc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (after dropping an index, after loading the model)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
