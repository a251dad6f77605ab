"""Searching several snapshots at once: trending counted to one moment, top across sources, weekly counts."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from feedproxy.search.index import PaperIndex
from feedproxy.search.merged import search_snapshots, weekly_counts
from feedproxy.search.query import parse_query
from feedproxy.store.snapshot import Snapshot
from feedproxy.upstream.papers import Paper

T = datetime(2026, 3, 12, 12, tzinfo=timezone.utc)  # a Thursday
NOW = T + timedelta(hours=1)


def paper(number: int, hours_before: float, upvotes: int, title: str = "Heron") -> Paper:
    return Paper(id=f"2603.{number:05d}", title=title, published=T - timedelta(hours=hours_before), upvotes=upvotes)


def snapshot(*papers: Paper) -> Snapshot:
    return Snapshot.build(papers, NOW, build_index=PaperIndex)


def ids(papers: list[Paper]) -> list[str]:
    return [p.id for p in papers]


def test_trending_counts_every_source_to_the_newest_paper_of_all():
    first = snapshot(paper(1, 0, 4))  # 4 / 2 = 2 an hour
    # Counted to this source's own newest paper (E), E would lead with 20 / 2 = 10 and F follow
    # with 100 / 20 = 5; counted to A's listing, E has 20 / 10 = 2 and F 100 / 30 = 3.3.
    second = snapshot(paper(5, 10, 20), paper(6, 30, 100))
    found = search_snapshots([first, second], parse_query("heron"), now=NOW, sort="trending", limit=1)
    assert ids(found) == ["2603.00006"]
    everything = search_snapshots([first, second], parse_query("heron"), now=NOW, sort="trending", limit=3)
    assert ids(everything) == ["2603.00006", "2603.00001", "2603.00005"]  # 3.3, then 2 and 2: the newer first


def test_top_takes_the_most_upvoted_of_all_sources_then_orders_them():
    first = snapshot(paper(1, 0, 5), paper(2, 50, 50))
    second = snapshot(paper(3, 10, 40), paper(4, 20, 30))
    query = parse_query("heron")
    top_two = search_snapshots([first, second], query, now=NOW, top=True, limit=2)
    assert ids(top_two) == ["2603.00003", "2603.00002"]  # 40 and 50 upvotes, newest first
    by_upvotes = search_snapshots([first, second], query, now=NOW, top=True, limit=2, sort="upvotes")
    assert ids(by_upvotes) == ["2603.00002", "2603.00003"]
    assert ids(search_snapshots([first, second], query, now=NOW, limit=2)) == ["2603.00001", "2603.00003"]


# Thursday 12:00, Monday 0:00 of the same week, the Sunday before, 16 days before (two weeks back).
WEEKLY = [paper(1, 0, 1), paper(2, 3 * 24 + 12, 1), paper(3, 3 * 24 + 13, 1, "Egret"), paper(4, 16 * 24, 1)]


def test_weekly_counts_list_every_week_from_the_oldest_paper_to_the_newest():
    one = [snapshot(*WEEKLY)]
    weeks = [date(2026, 2, 23), date(2026, 3, 2), date(2026, 3, 9)]  # Mondays
    assert weekly_counts(one, parse_query("heron"), now=NOW) == list(zip(weeks, [1, 0, 2]))
    assert weekly_counts(one, parse_query(""), now=NOW) == list(zip(weeks, [1, 1, 2]))
    # days=3: from Monday 2026-03-09 12:00 (three days before the newest paper), so one week.
    assert weekly_counts(one, parse_query(""), now=NOW, days=3) == [(date(2026, 3, 9), 1)]


def test_weekly_counts_of_several_sources_count_each_paper_once():
    both = [snapshot(*WEEKLY[:2]), snapshot(*WEEKLY[1:])]  # 2603.00002 is in both
    assert weekly_counts(both, parse_query("heron"), now=NOW) == [
        (date(2026, 2, 23), 1), (date(2026, 3, 2), 0), (date(2026, 3, 9), 2)]
    assert weekly_counts([snapshot()], parse_query("heron"), now=NOW) == []
