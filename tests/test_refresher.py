"""Refreshing in a child process (feedproxy.refresher), as workers with a data folder do."""

import dataclasses
import functools
import time
from datetime import timedelta

import pytest

from feedproxy.app import create_app
from feedproxy.errors import NoData
from feedproxy.store.child import RefresherError, RefresherStopped, run_in_child
from feedproxy.search.index import PaperIndex
from feedproxy.store.snapshot import SnapshotStore, utcnow
from feedproxy.store.files import SNAPSHOT_NAME, SavedSnapshot, SnapshotFile
from feedproxy.upstream.papers import paper_from_item
from feedproxy.upstream.daily_papers import HttpListing

from .conftest import FakeClock, make_config
from .fakeupstream import Fault


def child_store(upstream, tmp_path, refresher=None):
    config = make_config(upstream.url, data_dir=str(tmp_path), refresh_in_subprocess=True)
    source = HttpListing(upstream.url, connect_timeout=1, read_timeout=2)
    return SnapshotStore(source, build_index=PaperIndex, window_days=1000, background=False, storage=SnapshotFile(tmp_path / "hf-daily"),
                         refresher=refresher or functools.partial(run_in_child, config, "hf-daily"))


def test_a_child_process_fetches_and_the_worker_loads_its_result(upstream, tmp_path):
    store = child_store(upstream, tmp_path)
    snapshot = store.current()
    assert len(snapshot.papers) == 40
    assert len(upstream.requests) == 1
    assert store.last_success_at is not None and store.last_error is None


def test_a_failure_in_the_child_is_seen_by_the_worker(upstream, tmp_path):
    upstream.always = Fault(status=503)
    store = child_store(upstream, tmp_path)
    with pytest.raises(NoData) as err:
        store.current()
    assert "HTTP 503" in err.value.reason and err.value.retry_after >= 1
    assert len(upstream.requests) == 1


def test_a_child_that_crashes_is_a_failure_not_a_crash(upstream, tmp_path):
    def crash(wait):
        raise RefresherError("refresher: hf-daily exited with status -9 (see the log above)")

    store = child_store(upstream, tmp_path, refresher=crash)
    with pytest.raises(NoData) as err:
        store.current()
    assert "exited with status -9" in err.value.reason


def test_create_app_from_the_environment_refreshes_in_a_child(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDPROXY_UPSTREAM_URL", upstream.url)
    monkeypatch.setenv("FEEDPROXY_WINDOW_DAYS", "1000")
    monkeypatch.setenv("FEEDPROXY_DATA_DIR", str(tmp_path))
    from feedproxy.config import Config

    app = create_app(Config.from_env().__class__(**{**Config.from_env().__dict__, "background_refresh": False}))
    store = app.extensions["feedproxy.store"]
    assert store.refresher is not None
    assert app.test_client().get("/feed").status_code == 200


def _failures_on_disk(tmp_path):
    return SnapshotFile(tmp_path / "hf-daily").load_failure()


def test_backoff_grows_across_refresher_children(upstream, tmp_path):
    """Each child is a new process: the run of failures must come from the folder, not start at 1."""
    upstream.always = Fault(status=503)
    store = child_store(upstream, tmp_path)
    with pytest.raises(NoData):
        store.current()
    assert _failures_on_disk(tmp_path).failures == 1 and store.retry_after() <= 5
    for failures, wait in ((2, 10), (3, 20), (4, 40)):
        # As when the wait has passed: the next attempt, in a new child, doubles it.
        state = _failures_on_disk(tmp_path)
        SnapshotFile(tmp_path / "hf-daily").save_failure(
            dataclasses.replace(state, next_attempt=utcnow() - timedelta(seconds=1)))
        fresh = child_store(upstream, tmp_path)  # a worker (or a restart) that never failed itself
        with pytest.raises(NoData) as err:
            fresh.current()
        assert _failures_on_disk(tmp_path).failures == failures
        assert wait - 2 <= err.value.retry_after <= wait
    assert len(upstream.requests) == 4


def test_no_child_is_started_while_the_folder_backs_off(upstream, tmp_path):
    upstream.always = Fault(status=503)
    with pytest.raises(NoData):
        child_store(upstream, tmp_path).current()
    started = []

    def counting(wait):
        started.append(wait)
        run_in_child(make_config(upstream.url, data_dir=str(tmp_path), refresh_in_subprocess=True), "hf-daily", wait)

    other_worker = child_store(upstream, tmp_path, refresher=counting)
    with pytest.raises(NoData) as err:
        other_worker.current()
    assert "HTTP 503" in err.value.reason and started == [] and len(upstream.requests) == 1


def test_a_stopped_child_pauses_refreshing_without_counting_a_failure(upstream, tmp_path):
    """A stopping worker's request threads must not start one child after another before it exits."""
    started = []

    def stopped(wait):
        started.append(wait)
        raise RefresherStopped("refresher: hf-daily was stopped before it finished (the service is stopping?)")

    store = child_store(upstream, tmp_path, refresher=stopped)
    for _ in range(3):
        with pytest.raises(NoData) as err:
            store.current()
        assert "was stopped" in err.value.reason and 1 <= err.value.retry_after <= 5
    assert len(started) == 1 and _failures_on_disk(tmp_path) is None


def test_a_child_reads_the_folders_state_before_loading_the_saved_index(upstream, tmp_path, capfd):
    """A child that finds the saved data fresh exits without loading it; one that will fetch loads it first."""
    config = make_config(upstream.url, data_dir=str(tmp_path), refresh_in_subprocess=True, refresh_seconds=600)
    run_in_child(config, "hf-daily", 0)  # nothing saved yet: it fetches and saves
    first = capfd.readouterr().err
    assert "refresh ok" in first and "loaded saved" not in first and len(upstream.requests) == 1
    run_in_child(config, "hf-daily", 0)  # another worker's child, started just after: nothing to do
    assert "loaded saved" not in capfd.readouterr().err and len(upstream.requests) == 1
    # A child with a 1-second interval, a second later: the saved data is due (the child reads the
    # interval from the config it is given, so no test has to wait out a whole interval).
    time.sleep(1.1)
    run_in_child(dataclasses.replace(config, refresh_seconds=1), "hf-daily", 0)
    err = capfd.readouterr().err
    assert "loaded saved index cache" in err and "refresh ok" in err and len(upstream.requests) == 2


def test_a_child_leaves_no_metrics_files(upstream, tmp_path, monkeypatch):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics))  # as gunicorn.conf.py sets it for workers
    child_store(upstream, tmp_path).current()
    assert len(upstream.requests) == 1 and list(metrics.iterdir()) == []


def test_a_worker_never_builds_an_index_its_child_builds_it(upstream, tmp_path, monkeypatch):
    """A worker finding a snapshot without a usable index cache (new code, or the child mid-save) must
    not rebuild the index itself: its child does, and saves it for every worker."""
    papers = tuple(paper_from_item(i) for i in upstream.items)
    SnapshotFile(tmp_path / "hf-daily").save(SavedSnapshot(upstream.url, utcnow(), papers))  # JSON, no index

    def built_here(*args, **kwargs):
        raise AssertionError("the worker built an index")

    monkeypatch.setattr(PaperIndex, "__init__", built_here)  # in this process only: the child is another
    store = child_store(upstream, tmp_path)
    assert len(store.current().papers) == 40
    assert SnapshotFile(tmp_path / "hf-daily").has_current_index() and len(upstream.requests) == 0


# --- a data folder that cannot be written (issue 17) ---------------------------------------

def child_app(upstream, data_dir, clock=None):
    """A worker as in service: it refreshes in a child process that saves to ``data_dir``."""
    return create_app(make_config(upstream.url, data_dir=str(data_dir), refresh_in_subprocess=True), clock=clock)


def entries(response) -> int:
    assert response.status_code == 200, response.text
    return response.data.count(b"<entry>")


def test_a_folder_that_cannot_be_written_is_served_from_the_worker_until_a_save_succeeds(upstream, tmp_path, clock):
    # The snapshot's path is a folder: no save can replace it (chmod would not stop root).
    blocked = tmp_path / "hf-daily" / SNAPSHOT_NAME
    blocked.mkdir(parents=True)
    client = child_app(upstream, tmp_path, clock).test_client()
    assert entries(client.get("/feed?limit=100")) == 40  # not 503 forever: the child's data never arrives
    health = client.get("/healthz").get_json()
    assert health["storage_error"].startswith(f"storage: cannot save {blocked}")
    assert health["in_process_fallback"] is True
    blocked.rmdir()  # the operator mends the folder: the next refresh saves
    clock.advance(901)
    client.get("/feed")
    health = client.get("/healthz").get_json()
    assert health["storage_error"] is None and health["in_process_fallback"] is False
    assert len(SnapshotFile(tmp_path / "hf-daily").load().papers) == 40


def test_a_folder_that_stops_taking_writes_does_not_leave_a_worker_stale(upstream, tmp_path, items):
    upstream.items = items[10:]  # what a refresh an hour ago saved
    create_app(make_config(upstream.url, data_dir=str(tmp_path)),
               clock=FakeClock(utcnow() - timedelta(hours=1))).test_client().get("/feed")
    upstream.items = items  # ten new papers since
    client = child_app(upstream, tmp_path).test_client()  # a worker starting: it loads what was saved
    assert client.get("/healthz").get_json()["papers"] == 30
    saved = tmp_path / "hf-daily" / SNAPSHOT_NAME
    saved.unlink()
    saved.mkdir()  # from now on no save can replace it
    assert entries(client.get("/feed?limit=100")) == 40
    health = client.get("/healthz").get_json()
    assert health["papers"] == 40 and health["in_process_fallback"] is True
    assert health["storage_error"].startswith(f"storage: cannot save {saved}")


def test_a_child_named_an_unknown_source_says_so_without_a_traceback(upstream, tmp_path, capfd):
    """Not an upstream failure (exit status 1) but a refusal of its argument: exit status 2 and one message."""
    config = make_config(upstream.url, data_dir=str(tmp_path), refresh_in_subprocess=True)
    with pytest.raises(RefresherError, match="exited with status 2"):
        run_in_child(config, "nope", 0)
    err = capfd.readouterr().err
    assert "unknown source 'nope'; known sources: hf-daily" in err and "Traceback" not in err
    assert upstream.requests == []


def test_a_worker_says_when_the_saved_snapshot_is_from_another_upstream(upstream, tmp_path, items):
    """(issue 16) The refresher child skips it; the worker, which never loads the JSON, must still say so."""
    folder = tmp_path / "hf-daily"
    SnapshotFile(folder).save(SavedSnapshot("http://elsewhere/", utcnow(), (paper_from_item(items[0]),)))
    upstream.always = Fault(status=503)
    clock = FakeClock(utcnow())
    client = child_app(upstream, tmp_path, clock).test_client()
    ignored = (f"the saved snapshot in {folder} is from http://elsewhere/, not {upstream.url}, so it was not used; "
               f"fetching from {upstream.url}")
    feed = client.get("/feed")
    assert feed.status_code == 503 and ignored in feed.text and "HTTP 503" in feed.text
    assert client.get("/healthz").get_json()["saved_snapshot_ignored"] == ignored

    upstream.always = None
    SnapshotFile(folder).save_failure(None)  # the backoff is over, for the next child too
    clock.advance(3600)
    assert entries(client.get("/feed?limit=100")) == 40  # the child fetched and saved over the other file
    assert client.get("/healthz").get_json()["saved_snapshot_ignored"] is None


TOKEN = "hf_TestTokenNotARealOne123"


def test_a_child_sends_the_hf_token_and_writes_it_nowhere(upstream, tmp_path, capfd):
    """(issue 15) In production every refresh runs in a child: the token must reach the upstream from there,
    and appear in none of its output, nor in the files it leaves for the workers (failure.json, the snapshot)."""
    failing, working = tmp_path / "failing", tmp_path / "working"
    upstream.faults.append(Fault(status=401, body=b'{"error":"Invalid credentials in Authorization header"}'))
    run_in_child(make_config(upstream.url, data_dir=str(failing), refresh_in_subprocess=True, hf_token=TOKEN),
                 "hf-daily", 0)
    run_in_child(make_config(upstream.url, data_dir=str(working), refresh_in_subprocess=True, hf_token=TOKEN),
                 "hf-daily", 0)
    assert [r["headers"].get("Authorization") for r in upstream.requests] == [f"Bearer {TOKEN}"] * 2
    assert "HTTP 401" in SnapshotFile(failing / "hf-daily").load_failure().last_error
    assert len(SnapshotFile(working / "hf-daily").load().papers) == 40
    out, err = capfd.readouterr()
    assert "refresh failed" in err and "refresh ok" in err
    assert TOKEN not in out + err
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert written and not [path for path in written if TOKEN.encode() in path.read_bytes()]
