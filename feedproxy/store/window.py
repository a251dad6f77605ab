"""The rolling window: merging fetched papers into held ones, pure functions with no I/O.

A half-published upstream day never shrinks a feed, because fetched papers are
merged into what is held; the window is counted back from the newest paper, so
a paused listing or an offline file still fills it. Papers dated in the future
(beyond a day's slack for time zones) are refused: one would head every feed
and never leave the window. A window holds at most ``max_papers``, the newest,
so a source that renames its ids at every refresh cannot grow memory without end.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Iterable

from feedproxy.upstream.papers import Paper, newest_first


# Time zones run from -12:00 to +14:00, and a feed may date a post a little ahead: a day's slack.
FUTURE_SLACK = timedelta(days=1)


def dated_in_future(paper: Paper, now: datetime) -> bool:
    """True for a paper dated later than ``now`` plus a day's slack (refused everywhere)."""
    return paper.published > now + FUTURE_SLACK


def window_start(newest: datetime, now: datetime, window: timedelta) -> datetime:
    """Return the oldest publication time the window keeps.

    The window is counted back from the newest paper (or from now, if the data
    claims a future date), so a listing that paused for a holiday, or an
    offline demo file, still fills the window instead of emptying the feed.
    """
    return min(newest, now) - window


def merge_window(held: Iterable[Paper], fetched: Iterable[Paper], window: timedelta, now: datetime,
                 max_papers: int | None = None) -> list[Paper]:
    """Merge fetched papers into held ones (fetched wins by id), keep the window, newest first.

    Papers dated in the future are dropped; of the rest, at most ``max_papers`` (the newest) are kept.
    """
    by_id = {p.id: p for p in held if not dated_in_future(p, now)}
    for paper in fetched:
        if dated_in_future(paper, now):
            continue
        old = by_id.get(paper.id)
        if paper.undated and old is not None:
            # An undated entry keeps the date we first saw it with, or readers would see it as new again.
            paper = replace(paper, published=old.published)
        by_id[paper.id] = paper
    if not by_id:
        return []
    start = window_start(max(p.published for p in by_id.values()), now, window)
    return newest_first(p for p in by_id.values() if p.published >= start)[:max_papers]


def content_version(papers: Iterable[Paper]) -> str:
    """Hash the papers' content: equal data gives an equal version in every process."""
    digest = hashlib.sha256()
    for paper in papers:
        digest.update(repr(paper).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]
