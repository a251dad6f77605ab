"""The snapshot store: windowing, merging, single-flight refresh, backoff, stale-while-revalidate."""

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from feedproxy.errors import NoData
from feedproxy.upstream.papers import Paper
from feedproxy.search.index import PaperIndex
from feedproxy.upstream.http import NO_VALIDATORS
from feedproxy.store.snapshot import SnapshotStore, content_version, merge_window
from feedproxy.upstream.daily_papers import HttpListing

from .fakeupstream import Fault, FakeUpstream
from .servers import wait_until

T0 = datetime(2026, 8, 21, 12, 0, tzinfo=timezone.utc)


def paper(n: int, days_old: float, **kw) -> Paper:
    return Paper(id=f"2608.{n:05d}", title=f"Paper {n}", published=T0 - timedelta(days=days_old), **kw)


def item(n: int, days_old: float, upvotes: int = 0) -> dict:
    published = (T0 - timedelta(days=days_old)).isoformat().replace("+00:00", "Z")
    return {"paper": {"id": f"2608.{n:05d}", "title": f"Paper {n}", "upvotes": upvotes}, "publishedAt": published}


def store_for(upstream, clock, **kw):
    kw.setdefault("window_days", 30)
    kw.setdefault("background", False)
    source = HttpListing(upstream.url, connect_timeout=1, read_timeout=2, max_pages=kw.pop("max_pages", 100))
    return SnapshotStore(source, build_index=PaperIndex, clock=clock, **kw)


def test_merge_keeps_held_papers_and_prefers_fetched_copies():
    held = [paper(1, 1, upvotes=3), paper(2, 2)]
    fetched = [paper(1, 1, upvotes=9), paper(3, 0.5)]
    merged = merge_window(held, fetched, timedelta(days=30), T0)
    assert [p.id for p in merged] == ["2608.00003", "2608.00001", "2608.00002"]
    assert merged[1].upvotes == 9


def test_window_is_counted_back_from_the_newest_paper():
    papers = [paper(1, 100), paper(2, 105), paper(3, 131)]  # listing paused 100 days ago
    merged = merge_window([], papers, timedelta(days=30), T0)
    assert [p.id for p in merged] == ["2608.00001", "2608.00002"]


def test_papers_dated_past_a_days_slack_are_refused_held_or_fetched():
    ahead = Paper(id="9999.00001", title="From the future", published=datetime(9999, 12, 31, tzinfo=timezone.utc))
    merged = merge_window([ahead, paper(1, 1)], [paper(2, -0.9), paper(3, -1.1)], timedelta(days=30), T0)
    assert [p.id for p in merged] == ["2608.00002", "2608.00001"]  # 0.9 days ahead is within the slack


def test_a_window_holds_the_newest_max_papers():
    merged = merge_window([paper(n, n / 10) for n in range(50)], [paper(99, 0)], timedelta(days=30), T0, 20)
    assert [p.id for p in merged] == ["2608.00099"] + [f"2608.{n:05d}" for n in range(19)]


def test_a_year_9999_item_never_heads_the_feed_and_is_counted_as_skipped(clock, caplog):
    items = [item(n, n) for n in range(5)]
    items.insert(0, {"paper": {"id": "2608.99999", "title": "Typo year"}, "publishedAt": "9999-01-01T00:00:00Z"})
    fake = FakeUpstream(items).start()
    try:
        with caplog.at_level("INFO", logger="feedproxy.store.snapshot"):
            snapshot = store_for(fake, clock).current()
    finally:
        fake.stop()
    assert [p.id for p in snapshot.papers] == [f"2608.{n:05d}" for n in range(5)]
    assert "fetched=5 skipped=1 window_papers=5" in caplog.text


def test_a_source_renaming_its_ids_at_every_refresh_stays_within_max_papers(clock):
    fake = FakeUpstream([item(n, n / 100) for n in range(1000)]).start()
    try:
        store = store_for(fake, clock, max_papers=150, refresh_seconds=900)
        first = store.current()
        assert fake.page_requests() == [0, 1]  # stops reading once it has 150
        fake.items = [item(1000 + n, n / 100) for n in range(1000)]  # the same papers under new ids
        clock.advance(901)
        second = store.current()
    finally:
        fake.stop()
    assert len(first.papers) == 150 and len(second.papers) == 150
    assert second.papers[0].id == "2608.01000" and first.papers[0].id == "2608.00000"


def test_content_version_depends_only_on_content():
    a = [paper(1, 1), paper(2, 2)]
    assert content_version(a) == content_version(list(a))
    assert content_version(a) != content_version([paper(1, 1, upvotes=1), paper(2, 2)])


def test_paging_stops_once_a_page_reaches_past_the_window(clock):
    # 100 papers a day for 10 days: a 3-day window needs pages 0..3 (page 3 reaches day 3).
    items = [item(n, n / 100) for n in range(1000)]
    fake = FakeUpstream(items).start()
    try:
        store = store_for(fake, clock, window_days=3)
        snapshot = store.current()
    finally:
        fake.stop()
    assert fake.page_requests() == [0, 1, 2, 3]
    assert len(snapshot.papers) == 301  # days 0.00 .. 3.00 inclusive
    assert all(p.published >= T0 - timedelta(days=3) for p in snapshot.papers)


def test_a_half_published_upstream_never_shrinks_the_window(clock):
    fake = FakeUpstream([item(n, n) for n in range(10)]).start()
    try:
        store = store_for(fake, clock, refresh_seconds=900)
        first = store.current()
        assert len(first.papers) == 10
        fake.items = [item(10, -0.1)] + [item(n, n) for n in range(3)]  # upstream lost most of them
        clock.advance(901)
        second = store.current()
    finally:
        fake.stop()
    assert len(second.papers) == 11 and second.papers[0].id == "2608.00010"
    assert second.version != first.version


def test_fresh_snapshot_is_served_without_fetching(upstream, clock):
    store = store_for(upstream, clock, window_days=1000, refresh_seconds=900)
    store.current()
    clock.advance(899)
    store.current()
    assert len(upstream.requests) == 1
    clock.advance(2)
    store.current()
    assert len(upstream.requests) == 2


def test_unchanged_data_keeps_the_version_and_index(upstream, clock):
    store = store_for(upstream, clock, window_days=1000)
    first = store.current()
    clock.advance(1000)
    second = store.current()
    assert second.version == first.version and second.index is first.index
    assert second.fetched_at > first.fetched_at


def test_cold_start_with_upstream_down_is_no_data_with_retry_after_and_backs_off(upstream, clock):
    upstream.always = Fault(status=503)
    store = store_for(upstream, clock)
    with pytest.raises(NoData) as err:
        store.current()
    assert "HTTP 503" in err.value.reason and err.value.retry_after == 5
    with pytest.raises(NoData):
        store.current()  # within the backoff: no new fetch
    assert len(upstream.requests) == 1
    clock.advance(5)
    with pytest.raises(NoData) as err:
        store.current()
    assert len(upstream.requests) == 2 and err.value.retry_after == 10  # doubled
    upstream.always = None
    clock.advance(10)
    assert len(store.current().papers) == 17  # the 2026-08-21 sample; older ones are outside 30 days


def test_retry_after_from_upstream_is_honoured(upstream, clock):
    upstream.faults.append(Fault(status=429, headers={"Retry-After": "300"}))
    store = store_for(upstream, clock)
    with pytest.raises(NoData) as err:
        store.current()
    assert err.value.retry_after == 300
    clock.advance(299)
    with pytest.raises(NoData):
        store.current()
    assert len(upstream.requests) == 1


def test_failed_refresh_keeps_serving_the_last_snapshot(upstream, clock):
    store = store_for(upstream, clock, window_days=1000)
    first = store.current()
    upstream.always = Fault(body=b"not json")
    clock.advance(1000)
    assert store.current() is first
    assert "not valid JSON" in store.last_error


def test_fifty_concurrent_cold_requests_cause_one_fetch(upstream, clock):
    upstream.faults.append(Fault(delay=0.3))
    store = store_for(upstream, clock, window_days=1000)
    results, barrier = [], threading.Barrier(50)

    def read():
        barrier.wait()
        results.append(store.current().version)

    threads = [threading.Thread(target=read) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 50 and len(set(results)) == 1
    assert len(upstream.requests) == 1


def test_a_stalled_refresh_does_not_slow_readers(upstream, clock):
    store = store_for(upstream, clock, window_days=1000, background=True)
    store.refresh_now()  # warm: fetched in this thread
    first, checked = store.current(), store.last_success_at
    answer = threading.Event()
    upstream.always = Fault(hold=answer)  # the upstream answers the refresh only once told to
    clock.advance(1000)
    try:
        for _ in range(20):
            assert store.current() is first
        # The refresh has not ended: no reader waited for it (one that had would have waited until the
        # read timeout, and the refresh would have failed).
        assert store.last_success_at == checked and store.last_error is None
        assert wait_until(lambda: len(upstream.requests) == 2)
    finally:
        answer.set()
    assert len(upstream.requests) == 2  # one background refresh, not one per reader


def test_an_unchanged_upstream_costs_one_conditional_request_per_refresh(upstream, clock):
    upstream.etags = True
    store = store_for(upstream, clock, window_days=1000)
    first = store.current()
    for _ in range(3):
        clock.advance(901)
        assert store.current().version == first.version  # answered 304: the same papers, checked again
    assert len(upstream.requests) == 4
    assert all(r["headers"].get("If-None-Match") for r in upstream.requests[1:])
    assert store.last_success_at == clock() and store.last_error is None


def test_undated_entries_keep_the_date_they_were_first_seen():
    first = merge_window([], [paper(1, 2, undated=True)], timedelta(days=30), T0)
    again = merge_window(first, [paper(1, 0, undated=True, upvotes=5)], timedelta(days=30), T0)
    assert again[0].published == first[0].published and again[0].upvotes == 5


def test_each_new_version_is_stamped_later_than_the_last_in_whole_seconds(upstream, clock):
    """changed_at is the feeds' Last-Modified: two versions within one second must still differ."""
    store = store_for(upstream, clock, window_days=1000)
    first = store.current()
    assert first.changed_at == clock.now.replace(microsecond=0)
    upstream.items[0] = dict(upstream.items[0], paper=dict(upstream.items[0]["paper"], upvotes=31337))
    clock.advance(0.2)
    assert store.refresh_now()  # what the refresher child runs: a fetch whatever is due
    second = store.peek()
    assert second.version != first.version and second.changed_at > first.changed_at
    assert second.changed_at.microsecond == 0
    clock.advance(0.2)
    store.refresh_now()  # nothing changed: the version keeps its time
    assert store.peek().changed_at == second.changed_at and store.peek().fetched_at == clock.now


def test_a_fetch_cut_short_is_never_revalidated(clock):
    """Page 0 answered, page 1 failed: the next refresh must not be told 304 on page 0's ETag."""
    fake = FakeUpstream([item(n, n / 100) for n in range(150)]).start()
    fake.etags = True
    try:
        store = store_for(fake, clock, window_days=30)
        fake.faults = [None, Fault(status=500)]  # page 0 as usual, then page 1 fails
        store.current()  # page 0's papers are served; the refresh failed
        assert store.last_error and store.peek().validators == NO_VALIDATORS
        clock.advance(5)
        assert len(store.current().papers) == 150
        assert "If-None-Match" not in fake.requests[2]["headers"]
        clock.advance(901)
        store.current()  # a whole answer's validators are used
        assert fake.requests[4]["headers"]["If-None-Match"] == fake.requests_etag(2)
    finally:
        fake.stop()


def test_only_one_refresh_thread_starts_while_a_refresh_runs(upstream, clock, monkeypatch):
    """Every request during a slow refresh finds it due; one thread must do it, not one per request."""
    store = store_for(upstream, clock, window_days=1000, background=True)
    store.refresh_now()  # warm: fetched in this thread
    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda thread: (started.append(thread), start(thread))[1])
    upstream.always = Fault(delay=1.0)
    clock.advance(901)
    for _ in range(20):
        store.current()
        time.sleep(0.01)
    refreshes = [t for t in started if t.name.startswith("feedproxy")]  # not the fake upstream's own
    assert [t.name for t in refreshes] == ["feedproxy-refresh"]
    refreshes[0].join(timeout=10)
    assert len(upstream.requests) == 2


def test_cold_requests_get_no_data_at_once_while_the_first_fetch_runs(upstream, clock, monkeypatch):
    """(issue 17) In service a cold store holds no request thread: one background fetch, 503s meanwhile."""
    answer = threading.Event()
    upstream.faults.append(Fault(hold=answer))  # the first fetch is answered only once told to
    store = store_for(upstream, clock, window_days=1000, background=True)
    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda thread: (started.append(thread), start(thread))[1])
    try:
        for _ in range(20):
            with pytest.raises(NoData) as err:
                store.current()
        # Each answered while the fetch is unanswered: one that waited for it would have got its
        # failure (the read timeout), not "still running".
        assert err.value.retry_after == 5 and store.last_error is None
        assert "still running" in err.value.reason
    finally:
        answer.set()
    fetches = [t for t in started if t.name == "feedproxy-first-fetch"]
    assert len(fetches) == 1
    fetches[0].join(timeout=10)
    assert len(store.current().papers) == 40 and len(upstream.requests) == 1
