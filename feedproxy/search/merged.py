"""Searching several sources' snapshots at once, as one merged, deduplicated list.

Merging sources deduplicates papers by id (an arXiv id is the same paper
wherever it is listed): the first source named wins, so a paper keeps one entry
id in a merged feed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable, Sequence

from feedproxy.search.query import Query
from feedproxy.store.snapshot import Snapshot
from feedproxy.store.window import window_start
from feedproxy.upstream.papers import Paper, recency


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
        merged.sort(key=recency, reverse=True)
    elif sort == "upvotes":
        merged.sort(key=lambda p: (p.upvotes, *recency(p)), reverse=True)
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
