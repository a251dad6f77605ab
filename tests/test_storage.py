"""The saved snapshot: atomic round trip, corrupt files moved aside, restarts, workers sharing one folder."""

import dataclasses
import gzip
import os
import pickle
import threading
from pathlib import Path

import pytest

from feedproxy.app import create_app
from feedproxy.store import files as storage
from feedproxy.upstream.papers import Paper, paper_from_item
from feedproxy.search.query import parse_query
from feedproxy.errors import NoData
from feedproxy.refresher import Stopped
from feedproxy.search.index import PaperIndex
from feedproxy.store.snapshot import SnapshotStore
from feedproxy.store.files import SNAPSHOT_NAME, SavedSnapshot, SnapshotFile, StorageError
from feedproxy.upstream.daily_papers import HttpListing

from .conftest import make_config
from .fakeupstream import Fault


def store_for(upstream, clock, data_dir, **kw):
    source = HttpListing(upstream.url, connect_timeout=1, read_timeout=2)
    kw.setdefault("background", False)
    return SnapshotStore(source, build_index=PaperIndex, clock=clock, window_days=1000,
                         storage=SnapshotFile(data_dir), **kw)


def test_round_trip_keeps_every_field(tmp_path, items, clock):
    papers = tuple(paper_from_item(i) for i in items)
    file = SnapshotFile(tmp_path)
    file.save(SavedSnapshot("src", clock(), papers))
    loaded = file.load()
    assert loaded.papers == papers and loaded.source == "src" and loaded.fetched_at == clock()
    assert [p.arxiv_published for p in loaded.papers] == [p.arxiv_published for p in papers]
    assert not list(tmp_path.glob(".snapshot-*"))  # no temporary file left behind


def test_a_file_saved_before_the_newer_fields_loads_with_their_defaults(tmp_path, items, clock):
    # Saved by the code of before issue 15: no organization_name, github_stars, submitter, author_users...
    papers = tuple(paper_from_item(i) for i in items)
    new_fields = ("organization_name", "organization_id", "github_stars", "submitter", "author_users")
    old = [{k: v for k, v in storage._paper_to_json(p).items() if k not in new_fields} for p in papers]
    document = {"format": 1, "source": "src", "fetched_at": clock().isoformat(), "papers": old}
    (tmp_path / SNAPSHOT_NAME).write_bytes(gzip.compress(storage.json.dumps(document).encode()))
    loaded = SnapshotFile(tmp_path).load()
    defaults = {f: Paper.__dataclass_fields__[f].default for f in new_fields}
    assert loaded.papers == tuple(dataclasses.replace(p, **defaults) for p in papers)


def test_a_stop_in_the_middle_of_a_save_leaves_the_saved_snapshot_whole(tmp_path, items, clock, monkeypatch):
    """(issue 16, item 3) Ctrl-C reaching the refresher child while it writes: no temporary file, the old snapshot."""
    papers = tuple(paper_from_item(i) for i in items)
    file = SnapshotFile(tmp_path)
    file.save(SavedSnapshot("src", clock(), papers[:10]))

    def stopped(fd):
        raise Stopped("SIGINT")  # what the child's signal handler raises, here with the body half on disk

    monkeypatch.setattr(storage.os, "fsync", stopped)
    with pytest.raises(Stopped):
        file.save(SavedSnapshot("src", clock(), papers))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [SNAPSHOT_NAME]
    assert file.load().papers == papers[:10]


_PAPER = '{"id": "2608.1", "title": "t", "published": "%s"}'
_SAVED = '{"format": 1, "fetched_at": "2026-01-01T00:00:00Z", "papers": [%s]}'


@pytest.mark.parametrize("content", [
    b"", b"garbage", gzip.compress(b"{not json"), gzip.compress(b'{"format": 99}'),
    gzip.compress(b'{"format": 1, "fetched_at": "2026-01-01T00:00:00Z", "papers": [{}]}'),
    # (issue 17) shapes a refresh would refuse must not stop a worker from starting either
    gzip.compress((_SAVED % (_PAPER % "0001-01-01T00:00:00+14:00")).encode()),
    gzip.compress(b"[" * 100_000 + b"]" * 100_000),
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff\xff",  # a gzip header, then no valid deflate data
])
def test_corrupt_file_is_moved_aside_and_reported(tmp_path, content):
    (tmp_path / SNAPSHOT_NAME).write_bytes(content)
    assert SnapshotFile(tmp_path).saved_source() is None  # what a worker with refresher children reads
    with pytest.raises(StorageError, match="unreadable.*moved it to"):
        SnapshotFile(tmp_path).load()
    assert not (tmp_path / SNAPSHOT_NAME).exists()
    assert (tmp_path / f"{SNAPSHOT_NAME}.corrupt").read_bytes() == content


def test_corrupt_file_at_start_is_no_crash_and_is_replaced(tmp_path, upstream, clock):
    (tmp_path / SNAPSHOT_NAME).write_bytes(b"\x1f\x8b broken")
    store = store_for(upstream, clock, tmp_path)
    assert "unreadable" in store.storage_error
    assert len(store.current().papers) == 40
    assert SnapshotFile(tmp_path).load() is not None  # saved anew after the fetch


def test_restart_during_an_outage_serves_the_last_papers(tmp_path, upstream, clock):
    client = create_app(make_config(upstream.url, data_dir=str(tmp_path)), clock=clock).test_client()
    before = client.get("/feed?q=model")
    upstream.always = Fault(status=503)
    clock.advance(3600)
    restarted = create_app(make_config(upstream.url, data_dir=str(tmp_path)), clock=clock).test_client()
    after = restarted.get("/feed?q=model")
    assert after.status_code == 200 and after.data == before.data
    health = restarted.get("/healthz").get_json()
    assert health["papers"] == 40 and "HTTP 503" in health["last_error"]


def test_a_saved_snapshot_of_another_source_is_ignored(tmp_path, upstream, clock, items):
    SnapshotFile(tmp_path).save(SavedSnapshot("http://elsewhere/", clock(), (paper_from_item(items[0]),)))
    store = store_for(upstream, clock, tmp_path)
    assert store.peek() is None


def test_a_saved_snapshot_of_another_source_is_reported_until_one_of_ours_replaces_it(tmp_path, upstream, clock, items):
    folder = tmp_path / "hf-daily"
    SnapshotFile(folder).save(SavedSnapshot("http://elsewhere/", clock(), (paper_from_item(items[0]),)))
    upstream.always = Fault(status=503)
    config = make_config(upstream.url, data_dir=str(tmp_path))
    first, second = (create_app(config, clock=clock).test_client() for _ in range(2))  # two workers
    ignored = (f"the saved snapshot in {folder} is from http://elsewhere/, not {upstream.url}, so it was not used; "
               f"fetching from {upstream.url}")
    feed = first.get("/feed")
    assert feed.status_code == 503 and ignored in feed.text and "HTTP 503" in feed.text
    health = first.get("/healthz")
    assert health.status_code == 503 and health.get_json()["saved_snapshot_ignored"] == ignored
    assert second.get("/healthz").get_json()["saved_snapshot_ignored"] == ignored

    upstream.always = None
    clock.advance(3600)
    assert first.get("/feed").status_code == 200  # fetched, and saved over the other source's file
    assert first.get("/healthz").get_json()["saved_snapshot_ignored"] is None
    assert second.get("/feed").status_code == 200  # loaded what the first saved
    assert second.get("/healthz").get_json()["saved_snapshot_ignored"] is None
    assert len(upstream.requests) == 2


def test_workers_sharing_a_folder_fetch_once(tmp_path, upstream, clock):
    workers = [store_for(upstream, clock, tmp_path) for _ in range(4)]
    assert len(workers[0].current().papers) == 40
    for worker in workers[1:]:
        assert worker.current().version == workers[0].current().version
    assert len(upstream.requests) == 1  # the others loaded the saved file
    clock.advance(901)
    for worker in workers:
        worker.current()
    assert len(upstream.requests) == 2  # one refresh for all of them, not one each


def test_cold_start_waits_for_the_worker_holding_the_lock(tmp_path, upstream, clock):
    upstream.faults.append(Fault(delay=0.5))
    a, b = store_for(upstream, clock, tmp_path), store_for(upstream, clock, tmp_path)
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.current().version)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert len(upstream.requests) == 1


def test_an_unwritable_folder_is_reported_and_feeds_still_work(tmp_path, upstream, clock):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = store_for(upstream, clock, blocker / "data")
    assert len(store.current().papers) == 40
    assert "storage:" in store.storage_error


def test_a_worker_that_found_the_lock_taken_at_start_still_serves_once_the_file_exists(tmp_path, upstream, clock):
    a, b = store_for(upstream, clock, tmp_path), store_for(upstream, clock, tmp_path)
    with SnapshotFile(tmp_path).refresh_lock() as holding:
        assert holding
        assert b.refresh_if_due() is True and b.peek() is None  # its start-up refresh found the lock taken
    a.current()  # a fetches and saves
    assert b.current().version == a.current().version  # no 5-second wait, no second fetch
    assert len(upstream.requests) == 1


def test_a_restart_adopts_the_saved_index_without_rebuilding(tmp_path, upstream, clock, monkeypatch):
    first = store_for(upstream, clock, tmp_path).current()
    assert SnapshotFile(tmp_path).index_path.exists()
    from feedproxy.search import index as index_module

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(index_module.PaperIndex, "__init__", no_rebuild)
    restarted = store_for(upstream, clock, tmp_path)
    snapshot = restarted.peek()
    assert snapshot.version == first.version and snapshot.papers == first.papers
    assert [p.id for p in snapshot.index.search(parse_query("model"))] == [
        p.id for p in first.index.search(parse_query("model"))]
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("spoil", ["corrupt", "older than the snapshot", "other window", "other code"])
def test_an_index_cache_that_does_not_match_is_ignored_and_rebuilt(tmp_path, upstream, clock, spoil):
    first = store_for(upstream, clock, tmp_path).current()
    cache = SnapshotFile(tmp_path).index_path
    if spoil == "corrupt":
        cache.write_bytes(b"\x80\x05garbage")
    elif spoil == "older than the snapshot":
        os.utime(cache, (1, 1))
    elif spoil == "other code":
        saved = SnapshotFile(tmp_path).load_index()
        SnapshotFile(tmp_path).save_index(dataclasses.replace(saved, code="elsewhere"))
    window = 999 if spoil == "other window" else 1000
    source = HttpListing(upstream.url, connect_timeout=1, read_timeout=2)
    restarted = SnapshotStore(source, build_index=PaperIndex, clock=clock, window_days=window, background=False, storage=SnapshotFile(tmp_path))
    assert restarted.peek().version == first.version  # rebuilt from the JSON snapshot
    assert SnapshotFile(tmp_path).load_index().window_days == window  # and the cache written anew


def test_a_change_to_the_text_analysis_makes_index_caches_stale(monkeypatch):
    # The index holds stems: one pickled under another analysis (another
    # query.py, e.g. before acronym plurals lost their s) must be rebuilt.
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: read_bytes(path) + b"#" * (path.name == "query.py"))
    assert storage.code_fingerprint() != storage.CODE_FINGERPRINT


def test_workers_back_off_together_during_an_outage(tmp_path, upstream, clock):
    upstream.always = Fault(status=503)
    workers = [store_for(upstream, clock, tmp_path) for _ in range(4)]
    for worker in workers:
        with pytest.raises(NoData) as err:
            worker.current()
        assert "HTTP 503" in err.value.reason
    assert len(upstream.requests) == 1  # the others adopted the first one's backoff
    clock.advance(5)
    for worker in workers:
        with pytest.raises(NoData):
            worker.current()
    assert len(upstream.requests) == 2  # one retry for all four, and the next wait is doubled
    assert all(w.retry_after() == 10 for w in workers)
    upstream.always = None
    clock.advance(10)
    assert all(len(w.current().papers) == 40 for w in workers)
    assert len(upstream.requests) == 3 and not (tmp_path / "failure.json").exists()


def test_any_worker_refreshes_conditionally_with_the_saved_validators(tmp_path, upstream, clock):
    upstream.etags = True
    fetcher_worker = store_for(upstream, clock, tmp_path)
    fetcher_worker.current()
    other = store_for(upstream, clock, tmp_path)  # loads the saved index: it never fetched itself
    clock.advance(901)
    other.current()
    assert len(upstream.requests) == 2
    assert upstream.requests[1]["headers"].get("If-None-Match") == upstream.requests_etag(0)
    assert other.last_error is None and other.last_success_at == clock()
    SnapshotFile(tmp_path).index_path.unlink()  # and through the JSON snapshot too
    third = store_for(upstream, clock, tmp_path)
    clock.advance(901)
    third.current()
    assert upstream.requests[2]["headers"].get("If-None-Match") == upstream.requests_etag(0)


def test_an_unchanged_upstream_is_checked_once_per_interval_for_all_workers(tmp_path, upstream, clock):
    upstream.etags = True
    workers = [store_for(upstream, clock, tmp_path) for _ in range(3)]
    for worker in workers:
        worker.current()
    for _ in range(3):
        clock.advance(901)
        for worker in workers:
            worker.current()
    # The first fetch, then one conditional request (answered 304) per interval, not one per worker.
    assert len(upstream.requests) == 4
    assert all(r["headers"].get("If-None-Match") for r in upstream.requests[1:])


class _Planted:
    """What an attacker able to write the data folder would leave there: loading it runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_index_cache_cannot_run_code(tmp_path, upstream, clock, caplog):
    """(issue 17) The index cache is a pickle: only the classes an index holds may be loaded from it."""
    first = store_for(upstream, clock, tmp_path).current()
    marker = tmp_path / "pwned"
    index = SnapshotFile(tmp_path).index_path
    index.write_bytes(pickle.dumps(_Planted(marker)))
    restarted = store_for(upstream, clock, tmp_path)  # finds the planted file, refuses it, rebuilds
    assert not marker.exists()
    assert restarted.peek().version == first.version
    assert "os.system is not allowed" in caplog.text or "posix.system is not allowed" in caplog.text
    assert SnapshotFile(tmp_path).load_index().version == first.version  # a real cache loads


def test_an_index_cache_holds_nothing_the_restricted_unpickler_refuses(tmp_path, upstream, clock):
    """Every class a real index pickles is on the allow-list: else every restart would rebuild the index."""
    store_for(upstream, clock, tmp_path).current()
    seen = set()

    class Spy(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    with SnapshotFile(tmp_path).index_path.open("rb") as handle:
        Spy(handle).load()
    assert seen and seen <= storage.INDEX_GLOBALS


def test_a_cold_worker_serves_what_another_workers_child_saved_without_a_503(tmp_path, upstream, clock):
    """In service: a worker that booted before anything was saved, whose own refresher child is still
    waiting on the folder's lock, takes up the index cache another worker's child saved at once."""
    child_started, child_may_end = threading.Event(), threading.Event()

    def slow_child(wait):  # stands for a child waiting on the lock another child holds
        child_started.set()
        child_may_end.wait(10)

    cold = store_for(upstream, clock, tmp_path, background=True, refresher=slow_child)
    with pytest.raises(NoData):
        cold.current()  # nothing saved yet: 503 at once, and its child starts
    assert child_started.wait(5)
    saved = store_for(upstream, clock, tmp_path).current()  # the other worker's child fetches and saves
    try:
        assert cold.current().version == saved.version  # this request, not a later one
    finally:
        child_may_end.set()
    assert len(upstream.requests) == 1


def test_a_cold_worker_reads_an_index_cache_it_cannot_use_once_not_at_every_request(tmp_path, upstream, clock,
                                                                                     monkeypatch):
    store_for(upstream, clock, tmp_path).current()  # saved for a 1000-day window
    child_started, child_may_end = threading.Event(), threading.Event()

    def child(wait):
        child_started.set()
        child_may_end.wait(10)

    cold = SnapshotStore(HttpListing(upstream.url, connect_timeout=1, read_timeout=2), build_index=PaperIndex,
                         clock=clock, window_days=30, storage=SnapshotFile(tmp_path), background=True,
                         refresher=child, load_saved=False)
    reads = []
    real_load_index = SnapshotFile.load_index
    monkeypatch.setattr(SnapshotFile, "load_index", lambda self: reads.append(1) or real_load_index(self))
    try:
        with pytest.raises(NoData):
            cold.current()  # a 30-day window cannot use a 1000-day index: 503, and its child starts
        assert child_started.wait(5)  # after its thread looked at the folder (one more read)
        for _ in range(5):
            with pytest.raises(NoData):
                cold.current()
    finally:
        child_may_end.set()
    assert len(reads) == 2  # the first request and the child's thread; not once per request
