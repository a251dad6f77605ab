"""Named sources of papers, each with its own snapshot store, and searching several at once.

``hf-daily`` (the Daily Papers listing) is always there; the operator adds RSS
or Atom feeds with FEEDPROXY_FEEDS. Merging sources deduplicates papers by id
(an arXiv id is the same paper wherever it is listed): the first source named
wins, so a paper keeps one entry id in a merged feed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable, Sequence

from cachetools import LRUCache

from .errors import NoData
from .papers import Paper
from .query import Query
from .snapshot import Snapshot, SnapshotStore, window_start


@dataclass(frozen=True)
class Source:
    """One place papers come from."""

    name: str
    url: str
    title: str
    store: SnapshotStore

    def carries_announce_types(self) -> bool | None:
        """Whether this source's papers carry arXiv announce types; None while it holds none to tell by.

        Read off the papers held, not the URL: arXiv's announcement listings give a type per entry
        (feeds.py reads it), so a mirror of one counts; Daily Papers and other feeds never do.
        """
        snapshot = self.store.peek()
        return snapshot.has_announce_types if snapshot is not None and snapshot.papers else None


class SourceRegistry:
    """The configured sources by name, the default first, plus a bounded set of ad-hoc URL sources."""

    def __init__(self, sources: Sequence[Source], url_source_factory: Callable[[str], Source] | None = None):
        self._sources = {s.name: s for s in sources}
        self.default = sources[0]
        self._url_factory = url_source_factory
        self._by_url: LRUCache = LRUCache(maxsize=32)  # each holds a store: keep them few
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    def __iter__(self):
        return iter(self._sources.values())

    def get(self, names: Sequence[str]) -> list[Source]:
        """The named sources (already validated), or the default one for an empty list."""
        return [self._sources[n] for n in names] if names else [self.default]

    @property
    def allows_urls(self) -> bool:
        return self._url_factory is not None

    def for_url(self, url: str) -> Source:
        """The ad-hoc source for a user-supplied URL (the caller has checked it is allowed)."""
        with self._lock:
            source = self._by_url.get(url)
            if source is None:
                source = self._url_factory(url)
                self._by_url[url] = source
            return source


def current_snapshots(sources: Iterable[Source]) -> list[tuple[Source, Snapshot]]:
    """The current snapshot of each source that has one; NoData only when none has.

    A merged feed is served from the sources that have data rather than refused
    because one of them is still starting or down.
    """
    found, first_error = [], None
    for source in sources:
        try:
            found.append((source, source.store.current()))
        except NoData as exc:
            first_error = first_error or NoData(f"{source.name}: {exc.reason}", exc.retry_after)
    if not found:
        raise first_error
    return found


def search_snapshots(
    snapshots: Sequence[Snapshot],
    query: Query,
    *,
    now: datetime,
    min_upvotes: int = 0,
    days: int | None = None,
    sort: str = "date",
    limit: int = 50,
    announce: Sequence[str] = (),
) -> list[Paper]:
    """Search each snapshot and merge the results: deduplicated by id (first wins), sorted, limited."""
    since = _since(snapshots, now, days)
    ranked: list[list[Paper]] = []
    for snapshot in snapshots:
        # With an announce filter the index cannot stop at `limit`: filter, then cut.
        wanted = len(snapshot.papers) if announce else limit
        found = snapshot.index.search(query, min_upvotes=min_upvotes, since=since, sort=sort, limit=wanted)
        if announce:
            found = [p for p in found if p.announce_type in announce][:limit]
        ranked.append(found)
    if len(ranked) == 1:
        return ranked[0]
    seen: set[str] = set()
    merged: list[Paper] = []
    if sort == "relevance":
        # Scores of different indexes are not comparable: interleave the rankings.
        candidates = [p for group in _interleave(ranked) for p in group]
    else:
        candidates = [p for result in ranked for p in result]
    for paper in candidates:
        if paper.id not in seen:
            seen.add(paper.id)
            merged.append(paper)
    if sort == "date":
        merged.sort(key=lambda p: (p.published, p.id), reverse=True)
    elif sort == "upvotes":
        merged.sort(key=lambda p: (p.upvotes, p.published, p.id), reverse=True)
    return merged[:limit]


def count_matches(
    snapshots: Sequence[Snapshot],
    query: Query,
    *,
    now: datetime,
    min_upvotes: int = 0,
    days: int | None = None,
    announce: Sequence[str] = (),
) -> int:
    """How many papers search_snapshots would find with no limit, without sorting or listing them."""
    since = _since(snapshots, now, days)
    if len(snapshots) == 1 and not announce:
        return snapshots[0].index.count(query, min_upvotes=min_upvotes, since=since)
    ids: set[str] = set()
    for snapshot in snapshots:
        found = snapshot.index.search(query, min_upvotes=min_upvotes, since=since, limit=len(snapshot.papers))
        ids.update(p.id for p in found if not announce or p.announce_type in announce)
    return len(ids)


def _since(snapshots: Sequence[Snapshot], now: datetime, days: int | None) -> datetime | None:
    """The oldest publication time ``days`` keeps, counted back from the newest paper of all snapshots."""
    newest = max((s.newest for s in snapshots if s.newest is not None), default=None)
    return window_start(newest, now, timedelta(days=days)) if days is not None and newest else None


def _interleave(ranked: list[list[Paper]]) -> Iterable[list[Paper]]:
    for rank in range(max(len(r) for r in ranked)):
        yield [r[rank] for r in ranked if rank < len(r)]
