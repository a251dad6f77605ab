"""The refresher child's entry point: refresh one source through the data folder, then exit.

Started by store.child.run_in_child (see there for why and for its exit
statuses). It builds the one source it is named with wiring.build_sources and
imports neither Flask nor the metrics, so it starts fast and leaves no files
behind (it tells its worker the outcome of each upstream request on stdout, for
the worker to count); it loads the saved snapshot only once it knows it will fetch.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import pickle
import signal
import sys
from dataclasses import replace

from feedproxy.errors import UnknownSource
from feedproxy.logs import configure_logging
from feedproxy.store.child import (
    CANNOT_SAVE,
    CANNOT_SAVE_REASON,
    STOPPED,
    UPSTREAM,
    child_line,
)
from feedproxy.wiring import build_sources

log = logging.getLogger(__name__)


class Stopped(BaseException):
    """SIGINT or SIGTERM reached the child: unwind (removing any temporary file) and exit quietly."""


def _stop(signum: int, frame) -> None:
    # Once: a second signal (the worker's SIGTERM from PR_SET_PDEATHSIG after the service manager's,
    # or Ctrl-C's SIGINT and then the worker's) would otherwise raise again while the child unwinds or
    # while the interpreter shuts down, printing a traceback for a stop that is already under way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def _stop_with_parent(parent: int | None) -> None:
    """Ask Linux to send SIGTERM when the worker that started us exits; exit now if it already has."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: Ctrl-C and the service manager still reach the whole process group
    if parent is not None and os.getppid() != parent:
        raise Stopped("its worker exited")


def _tell_upstream_request(outcome: str) -> None:
    """Tell the worker, which counts it in its metrics (this process imports none)."""
    print(child_line(UPSTREAM, outcome), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feedproxy.refresher")
    parser.add_argument("source", help="the source's name, e.g. hf-daily")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the refresh lock")
    parser.add_argument("--parent", type=int, default=None, help="the worker's pid: stop when it exits")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        # From here a stop unwinds (removing temporary files) and is logged; before, _CHILD_START's exit.
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        _stop_with_parent(args.parent)
        config = pickle.load(sys.stdin.buffer)
        # The child refreshes in its own process: it must not start children or threads itself.
        config = replace(config, refresh_in_subprocess=False, background_refresh=False)
        try:
            registry = build_sources(config, only=args.source, load_saved=False,
                                     on_upstream_request=_tell_upstream_request)
        except UnknownSource as exc:
            parser.error(str(exc))  # exit status 2, the message and no traceback
        store = registry.get([args.source])[0].store
        ok = store.refresh_now(wait=args.wait)
        if store.cannot_save:
            print(child_line(CANNOT_SAVE_REASON, store.storage_error or ""), flush=True)  # the worker fetches itself
            return CANNOT_SAVE
    except Stopped as reason:
        log.info("refresh stopped source=%s by=%s: the service is stopping; nothing half-written is left",
                 args.source, reason)
        return STOPPED
    finally:
        logging.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
