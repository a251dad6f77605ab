"""Searching several sources' snapshots at once, as one merged, deduplicated list.

Merging sources deduplicates papers by id (an arXiv id is the same paper
wherever it is listed): the first source named wins, so a paper keeps one entry
id in a merged feed. Trending scores are counted to the newest paper of all the
snapshots searched, so they compare across sources.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable, Sequence

from feedproxy.errors import BadParameter
from feedproxy.search.index import concept_text, hours_between, trending_score
from feedproxy.search.query import And, Concept, Query, concept_leaves
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
    match: str = "keyword",
    similar: str | None = None,
    top: bool = False,
) -> list[Paper]:
    """Search each snapshot and merge the results: deduplicated by id (first wins), sorted, limited.

    ``match`` applies keyword, concept or hybrid matching to the whole query (Query.matching);
    ``similar`` keeps the papers near in meaning to the paper with that id (not the paper itself);
    ``top``: only the ``limit`` most upvoted matches, in ``sort`` order (see PaperIndex.search).
    """
    since = _since(snapshots, now, days)
    newest = _newest(snapshots)
    query = prepared(snapshots, query, match, similar)
    if similar is not None:
        limit += 1  # the paper itself is near itself: it is dropped below
    ranked: list[list[Paper]] = []
    for snapshot in snapshots:
        # With an announce filter the index cannot stop at `limit`: filter, then cut.
        wanted = len(snapshot.papers) if announce else limit
        found = snapshot.index.search(query, min_upvotes=min_upvotes, since=since, sort=sort, limit=wanted,
                                      top=top and not announce, trending_at=newest)
        if announce:
            found = _keep_top([p for p in found if p.announce_type in announce], limit, top)[:limit]
        ranked.append(found)
    if similar is not None:
        ranked = [[p for p in found if p.id != similar] for found in ranked]
        limit -= 1
    if len(ranked) == 1:
        return ranked[0][:limit]
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
    merged = _keep_top(merged, limit, top)
    if sort == "date":
        merged.sort(key=recency, reverse=True)
    elif sort == "upvotes":
        merged.sort(key=_upvotes, reverse=True)
    elif sort == "trending" and newest is not None:
        merged.sort(key=lambda p: (trending_score(p.upvotes, hours_between(p.published, newest)), *recency(p)),
                    reverse=True)
    return merged[:limit]


# A similar= feed lists the papers nearest to one paper: the closest sixth or so of the window
# qualifies (a concept query takes the closest 2-3 %), then sort=relevance puts the nearest first.
SIMILAR_MIN_ZSCORE = 1.0


def prepared(snapshots: Sequence[Snapshot], query: Query, match: str = "keyword", similar: str | None = None) -> Query:
    """The query as searched: ``match`` applied, and narrowed to the papers near paper ``similar`` in meaning.

    BadParameter when no snapshot holds the paper ``similar`` names.
    """
    query = query.matching(match)
    if similar is None:
        return query
    paper = _paper(snapshots, similar)
    if paper is None:
        raise BadParameter(f"parameter 'similar': no paper {similar[:60]!r} in this feed's window; "
                           "give the id of a paper the feed lists (e.g. from its link)", "similar")
    near = Concept(concept_text(paper), min_score=SIMILAR_MIN_ZSCORE, paper=paper.id)
    return Query(query.normalised, near if query.root is None else And((near, query.root)))


def _paper(snapshots: Sequence[Snapshot], paper_id: str) -> Paper | None:
    for snapshot in snapshots:
        number = snapshot.index.number_of(paper_id)
        if number is not None:
            return snapshot.papers[number]
    return None


def explain_matches(snapshots: Sequence[Snapshot], query: Query, papers: Sequence[Paper],
                    similar: str | None = None) -> dict[str, str]:
    """Why each of ``papers`` matched the (prepared) query, in words, by paper id.

    The words searched for that the paper holds and where ("pretraining" in title, abstract), and
    the concepts it is near, with how near (standard deviations above the window's mean).
    """
    if query.root is None:
        return {}
    similar_text = concept_text(_paper(snapshots, similar)) if similar else None
    concepts = concept_leaves(query.root)  # once, not per paper
    why: dict[str, str] = {}
    remaining = [paper.id for paper in papers]
    for snapshot in snapshots:
        held = snapshot.index.fields_matched(query.root, remaining)
        for paper_id, rows in held.items():
            parts = [f"{_shown(leaf)} in {', '.join(fields)}" for leaf, fields in rows if fields]
            for text, score in snapshot.index.concepts_near(concepts, paper_id):
                label = f"paper {similar}" if text == similar_text else f'~"{text}"'
                parts.append(f"near {label} in meaning ({score:.1f} σ)")
            if parts:
                why[paper_id] = "; ".join(parts)
        remaining = [paper_id for paper_id in remaining if paper_id not in held]  # the first source wins
    return why


def _shown(leaf) -> str:
    words = leaf.words or leaf.stems if hasattr(leaf, "words") else (leaf.word or leaf.stem,)
    return '"' + " ".join(words) + '"'

def _upvotes(paper: Paper) -> tuple:
    """The most-upvoted-first sort key (reversed), ties newest first, as the index orders them."""
    return paper.upvotes, *recency(paper)


def _keep_top(papers: list[Paper], limit: int, top: bool) -> list[Paper]:
    """With ``top``, only the ``limit`` most upvoted of ``papers``, in the order given; else all of them."""
    if not top:
        return papers
    kept = {p.id for p in sorted(papers, key=_upvotes, reverse=True)[:limit]}
    return [p for p in papers if p.id in kept]


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
    return len(_every_match(snapshots, query, min_upvotes, since, announce))


def _every_match(snapshots: Sequence[Snapshot], query: Query, min_upvotes: int, since: datetime | None,
                 announce: Sequence[str]) -> dict[str, Paper]:
    """Every paper matching, by id (the first source's copy), in no particular order."""
    found: dict[str, Paper] = {}
    for snapshot in snapshots:
        for paper in snapshot.index.search(query, min_upvotes=min_upvotes, since=since, limit=len(snapshot.papers)):
            if not announce or paper.announce_type in announce:
                found.setdefault(paper.id, paper)
    return found


def weekly_counts(
    snapshots: Sequence[Snapshot],
    query: Query,
    *,
    now: datetime,
    min_upvotes: int = 0,
    days: int | None = None,
    announce: Sequence[str] = (),
) -> list[tuple[date, int]]:
    """How many papers match in each week (Monday to Sunday, UTC), from the first week searched to the newest.

    Weeks run from the oldest paper held (or the start of ``days``) to the newest paper, every
    week listed, with matches or without. For one snapshot the index counts them (a bit count per week).
    """
    newest = _newest(snapshots)
    if newest is None:
        return []
    since = _since(snapshots, now, days)
    oldest = min(s.papers[-1].published for s in snapshots if s.papers)
    first, last = _monday(max(oldest, since) if since else oldest), _monday(newest)
    mondays = [first + timedelta(weeks=n) for n in range((last - first).days // 7 + 1)]
    starts = [datetime.combine(monday, time(), timezone.utc) for monday in mondays]
    if len(snapshots) == 1 and not announce:
        listed_since = snapshots[0].index.count_since(query, starts, min_upvotes=min_upvotes, since=since)
        counts = [n - later for n, later in zip(listed_since, [*listed_since[1:], 0])]
    else:
        found = _every_match(snapshots, query, min_upvotes, since, announce).values()
        by_week = Counter(_monday(p.published) for p in found)
        counts = [by_week[monday] for monday in mondays]
    return list(zip(mondays, counts))


def _monday(moment: datetime) -> date:
    """The Monday (UTC) of the week ``moment`` falls in."""
    day = moment.astimezone(timezone.utc).date()
    return day - timedelta(days=day.weekday())


def _newest(snapshots: Sequence[Snapshot]) -> datetime | None:
    return max((s.newest for s in snapshots if s.newest is not None), default=None)


def _since(snapshots: Sequence[Snapshot], now: datetime, days: int | None) -> datetime | None:
    """The oldest publication time ``days`` keeps, counted back from the newest paper of all snapshots."""
    newest = _newest(snapshots)
    return window_start(newest, now, timedelta(days=days)) if days is not None and newest else None


def _interleave(ranked: list[list[Paper]]) -> Iterable[list[Paper]]:
    for rank in range(max(len(r) for r in ranked)):
        yield [r[rank] for r in ranked if rank < len(r)]
