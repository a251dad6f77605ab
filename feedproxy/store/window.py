"""The rolling window: merging fetched papers into held ones, pure functions with no I/O.

A half-published upstream day never shrinks a feed, because fetched papers are
merged into what is held; the window is counted back from the newest paper, so
a paused listing or an offline file still fills it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Iterable

from feedproxy.upstream.papers import Paper, newest_first


def window_start(newest: datetime, now: datetime, window: timedelta) -> datetime:
    """Return the oldest publication time the window keeps.

    The window is counted back from the newest paper (or from now, if the data
    claims a future date), so a listing that paused for a holiday, or an
    offline demo file, still fills the window instead of emptying the feed.
    """
    return min(newest, now) - window


def merge_window(held: Iterable[Paper], fetched: Iterable[Paper], window: timedelta, now: datetime) -> list[Paper]:
    """Merge fetched papers into held ones (fetched wins by id), keep the window, newest first."""
    by_id = {p.id: p for p in held}
    for paper in fetched:
        old = by_id.get(paper.id)
        if paper.undated and old is not None:
            # An undated entry keeps the date we first saw it with, or readers would see it as new again.
            paper = replace(paper, published=old.published)
        by_id[paper.id] = paper
    if not by_id:
        return []
    start = window_start(max(p.published for p in by_id.values()), now, window)
    return newest_first(p for p in by_id.values() if p.published >= start)


def content_version(papers: Iterable[Paper]) -> str:
    """Hash the papers' content: equal data gives an equal version in every process."""
    digest = hashlib.sha256()
    for paper in papers:
        digest.update(repr(paper).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]
