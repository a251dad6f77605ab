"""End to end: real gunicorn, the real wsgi.py and gunicorn.conf.py, a loopback fake upstream, feedparser."""

import hashlib
import hmac
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import feedparser
import httpx
import pytest

from feedproxy.store.subscriptions import HubDatabase

from .atomcheck import check_atom, entry_ids
from .fakesubscriber import FakeSubscriber
from .fakeupstream import Fault
from .servers import ROOT, children, free_port, start_gunicorn, stop, wait_for_feed, wait_until, with_saved_data
from .test_digest import new_item


def test_gunicorn_serves_a_filtered_feed_that_feedparser_reads(upstream):
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000"})
    try:
        response = wait_for_feed(base, proc, "/feed?q=benchmark&limit=500")
        assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
        root = check_atom(response.content, self_url=f"{base}/feed?q=benchmark&limit=500")
        parsed = feedparser.parse(response.content)
        assert not parsed.bozo and len(parsed.entries) >= 5
        assert entry_ids(root) == [e.id for e in parsed.entries]
        for entry in parsed.entries:
            assert "benchmark" in (entry.title + " " + entry.summary).lower()
        bad = httpx.get(base + "/feed?limit=zero", timeout=5)
        assert bad.status_code == 400 and "'limit'" in bad.text
    finally:
        log = stop(proc)
    assert "refresh ok" in log and "Traceback" not in log
    assert all(r["headers"]["User-Agent"].startswith("feedproxy/") for r in upstream.requests)


def test_offline_demo_from_a_file(tmp_path):
    listing = tmp_path / "listing.json"
    listing.write_text((ROOT / "tests/fixtures/daily_papers/2026-08-21.json").read_text(encoding="utf-8"))
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": listing.as_uri()})
    try:
        parsed = feedparser.parse(wait_for_feed(base, proc, "/feed?q=agents").content)
        assert not parsed.bozo and parsed.entries
    finally:
        stop(proc)


def test_unreachable_upstream_starts_and_answers_503(tmp_path):
    port = free_port()  # nothing listens here
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": f"http://127.0.0.1:{port}/api/daily_papers"})
    try:
        deadline = time.time() + 20
        reasons = []
        while not reasons or "unreachable" not in reasons[-1]:
            assert time.time() < deadline and proc.poll() is None, reasons
            try:
                response = httpx.get(base + "/feed?q=x", timeout=15)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            # Every answer while there is no data: 503 at once, first "still running", then the reason.
            assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
            reasons.append(response.text)
            time.sleep(0.05)
        assert all("still running" in r for r in reasons[:-1])
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "env, words",
    [
        ({"FEEDPROXY_WINDOW_DAYS": "many"}, "FEEDPROXY_WINDOW_DAYS must be a whole number"),
        ({"PORT": "http"}, "PORT must be a whole number"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be from 1 to 64, got 0"),
    ],
)
def test_bad_configuration_stops_start_with_a_message(env, words):
    proc, _ = start_gunicorn(env)
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode != 0
    assert words in out and "Traceback" not in out


def test_metrics_count_every_workers_requests(upstream, tmp_path):
    # Both workers hold data from the start: every request is answered 200, whichever worker takes it.
    settings = with_saved_data({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000",
                                "FEEDPROXY_DATA_DIR": str(tmp_path)})
    proc, base = start_gunicorn({**settings, "WEB_CONCURRENCY": "2"})
    try:
        wait_for_feed(base, proc)
        with httpx.Client(base_url=base, timeout=5) as client:  # a new connection each time spreads workers
            for _ in range(40):
                assert httpx.get(base + "/feed?q=metricsprobe", timeout=5).status_code == 200
            time.sleep(1.5)  # each worker adds its counts to the shared files once a second
            seen = set()
            for _ in range(10):
                text = client.get("/metrics", headers={"Connection": "close"}).text
                line = next(l for l in text.splitlines()
                            if l.startswith('feedproxy_http_requests_total{route="/feed",status="200"}'))
                seen.add(float(line.rsplit(" ", 1)[1]))
            folder = client.get("/healthz").json()["metrics_folder"]
            assert Path(folder).is_dir() and not folder.startswith(str(tmp_path))  # in memory, off the data disk
    finally:
        stop(proc)
    # Whichever worker answers, /metrics reports the requests of both (41: the warm-up one too).
    assert seen == {41.0}


def _feed_requests_counted(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=5).text
    lines = [l for l in text.splitlines() if l.startswith('feedproxy_http_requests_total{route="/feed",status="200"}')]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_a_data_folder_that_cannot_be_written_still_serves_feeds(upstream, tmp_path):
    # (issue 17) Neither the snapshot nor the hub's database can be written (their paths are folders,
    # which stops root too): the workers boot, serve what they fetch themselves, and say why.
    (tmp_path / "hf-daily" / "snapshot.json.gz").mkdir(parents=True)
    (tmp_path / "hub.sqlite3").mkdir()
    # One worker: /healthz then reports on the worker that served the feed.
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000",
                                 "FEEDPROXY_DATA_DIR": str(tmp_path), "WEB_CONCURRENCY": "1"})
    try:
        parsed = feedparser.parse(wait_for_feed(base, proc, "/feed?limit=100").content)
        assert not parsed.bozo and len(parsed.entries) == 40
        assert "hub" not in {link.rel for link in parsed.feed.links}
        health = httpx.get(base + "/healthz", timeout=5).json()
        assert health["in_process_fallback"] is True and "cannot save" in health["storage_error"]
        assert health["websub_hub"].startswith("unavailable: storage: cannot open the hub's database")
        refused = httpx.post(base + "/websub", data={"hub.mode": "subscribe"}, timeout=5)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "60"
    finally:
        log = stop(proc)
    assert "Traceback" not in log


def test_a_second_instance_on_the_same_data_folder_keeps_apart_and_says_so(upstream, tmp_path):
    """Two `make run` of one user share ~/.cache/feedproxy: the second must not wipe the first's metrics."""
    settings = {"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000",
                "FEEDPROXY_DATA_DIR": str(tmp_path), "WEB_CONCURRENCY": "1"}
    first, first_base = start_gunicorn(settings)
    second = None
    try:
        wait_for_feed(first_base, first)
        root = Path(httpx.get(first_base + "/healthz", timeout=5).json()["metrics_folder"]).parent
        for _ in range(5):
            httpx.get(first_base + "/feed?q=probe", timeout=5)
        time.sleep(1.5)  # a worker adds its counts to the shared files once a second
        before = _feed_requests_counted(first_base)
        assert before >= 6
        second, second_base = start_gunicorn(settings)
        wait_for_feed(second_base, second)
        time.sleep(1.5)
        assert _feed_requests_counted(first_base) >= before  # its files were not deleted
        assert _feed_requests_counted(second_base) == 1  # nor added into the second's
    finally:
        second_log = stop(second) if second is not None else ""
        stop(first)
    assert "another instance (gunicorn master pid" in second_log and "uses the data folder" in second_log
    assert "Traceback" not in second_log
    assert not root.exists()  # each removed its own folder on exit, the last one the root too


def test_workers_still_boot_and_metrics_answer_after_the_metrics_folder_is_removed(upstream, tmp_path):
    """The data folder (or /dev/shm) cleaned under a running service: a worker that dies is replaced all the same."""
    settings = with_saved_data({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000"})
    proc, base = start_gunicorn({**settings, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
                                 "WEB_CONCURRENCY": "2"})
    try:
        wait_for_feed(base, proc)
        workers = children(proc.pid)
        assert len(workers) == 2
        shutil.rmtree(tmp_path / "metrics")
        os.kill(min(workers), signal.SIGKILL)
        assert wait_until(lambda: len(children(proc.pid) - workers) == 1 and len(children(proc.pid)) == 2)
        assert wait_until(lambda: _every_worker_serves(base), timeout=30)  # the new one has loaded the snapshot
        for _ in range(10):  # a new connection each time: both workers answer
            assert httpx.get(base + "/feed?q=agents", timeout=5).status_code == 200
            assert httpx.get(base + "/metrics", timeout=5).status_code == 200
            assert httpx.get(base + "/healthz", timeout=5).json()["metrics_error"] is None
    finally:
        log = stop(proc)
    assert "Worker failed to boot" not in log and "Traceback" not in log


def _every_worker_serves(base: str, path: str = "/feed?q=agents") -> bool:
    """Whether six requests in a row, each on a new connection (so on either worker), answer 200."""
    try:
        return all(httpx.get(base + path, timeout=5).status_code == 200 for _ in range(6))
    except httpx.TransportError:
        return False


def test_a_worker_that_cannot_write_its_metrics_folder_serves_and_counts_in_its_own_memory(upstream, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000",
                                 "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "a-file" / "metrics"),
                                 "WEB_CONCURRENCY": "1"})
    try:
        wait_for_feed(base, proc, "/feed?q=agents")
        counted = _feed_requests_counted(base)
        health = httpx.get(base + "/healthz", timeout=5).json()
        # The master loads prometheus-client when a worker dies (child_exit): the next worker must choose again.
        [worker] = children(proc.pid)
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: children(proc.pid) not in (set(), {worker}))
        assert wait_until(lambda: _every_worker_serves(base), timeout=30)
        counted_by_the_next = _feed_requests_counted(base)
    finally:
        log = stop(proc)
    assert counted == 1 and counted_by_the_next == 6
    assert health["metrics_folder"] is None
    assert health["metrics_error"].startswith(f"the metrics folder {tmp_path / 'a-file' / 'metrics'}/instance-")
    assert log.count("this worker counts in its own memory") == 2 and "Traceback" not in log


def test_a_websub_subscriber_gets_one_signed_push_within_a_refresh_of_a_new_paper(upstream, items):
    """As FreshRSS does: find the hub in the feed, subscribe, verify, then receive the new feed once.

    "Within one refresh" is shown by counting, not timing: the upstream lists the new paper to one
    request only and fails every request after it, so the push can come only from the one refresh
    that saw the paper (a hub that waited for a second refresh would never push).
    """
    new = "2608.99001"
    with FakeSubscriber() as subscriber:
        proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000",
                                     "TEST_SUBSCRIBER_PORT": str(subscriber.port)}, app="tests.websub_wsgi:app")
        try:
            feed = feedparser.parse(wait_for_feed(base, proc, "/feed?q=zeitgeist").content)
            links = {link.rel: link.href for link in feed.feed.links}
            assert links["hub"] == f"{base}/websub" and not feed.entries
            answer = httpx.post(links["hub"], timeout=5, data={
                "hub.mode": "subscribe", "hub.topic": links["self"], "hub.secret": "e2e-secret", "hub.verify": "sync",
                "hub.callback": "http://subscriber.example/freshrss/api/pshb.php?k=abc"})
            assert answer.status_code == 202
            assert subscriber.wait_for(lambda s: s.verifications, timeout=10)
            assert wait_until(lambda: "feedproxy_websub_active_subscriptions 1.0" in httpx.get(base + "/metrics").text)
            upstream.add_then_fail(new_item(items, new, "Zeitgeist: pretraining", "2026-08-21T15:00:00.000Z"),
                                   Fault(status=500, body=b'{"error":"down"}'))
            assert subscriber.wait_for(lambda s: s.pushes, timeout=60), "no push"  # a generous wait, no deadline
            assert upstream.listed(new) == 1  # the one refresh that saw the paper
            # The upstream recovers: three more refreshes list the paper, in both workers' hubs' sight.
            upstream.always = None
            assert wait_until(lambda: upstream.listed(new) >= 4, timeout=60)
            [push] = subscriber.pushes  # still one push
        finally:
            log = stop(proc)
    assert push["path"] == "/freshrss/api/pshb.php?k=abc"
    assert push["headers"]["X-Hub-Signature"] == "sha256=" + hmac.new(b"e2e-secret", push["body"],
                                                                        hashlib.sha256).hexdigest()
    assert [e.id for e in feedparser.parse(push["body"]).entries] == [f"https://huggingface.co/papers/{new}"]
    assert "Traceback" not in log and "websub subscribe outcome=verified" in log


def test_a_worker_stopped_mid_delivery_finishes_it_so_a_restart_never_sends_it_again(upstream, items, tmp_path):
    """A restart while the hub is sending: the worker waits for the answer and records it before exiting.

    Left claimed in the outbox, the delivery would be sent again by the next worker once its claim ran
    out: the same feed (or notification, which the same outbox sends) twice.
    """
    data, log_file = tmp_path / "data", tmp_path / "gunicorn.log"
    with FakeSubscriber() as subscriber, open(log_file, "wb") as output:
        subscriber.hold_pushes = threading.Event()
        proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_WINDOW_DAYS": "1000",
                                     "FEEDPROXY_DATA_DIR": str(data), "WEB_CONCURRENCY": "1",
                                     "TEST_SUBSCRIBER_PORT": str(subscriber.port)},
                                    output=output, app="tests.websub_wsgi:app")
        try:
            links = feedparser.parse(wait_for_feed(base, proc, "/feed?q=zeitgeist").content).feed.links
            topic = next(link.href for link in links if link.rel == "self")
            answer = httpx.post(base + "/websub", timeout=5, data={
                "hub.mode": "subscribe", "hub.topic": topic, "hub.callback": "http://subscriber.example/cb"})
            assert answer.status_code == 202
            assert wait_until(lambda: "feedproxy_websub_active_subscriptions 1.0" in httpx.get(base + "/metrics").text)
            upstream.items.insert(0, new_item(items, "2608.99001", "Zeitgeist", "2026-08-21T15:00:00.000Z"))
            assert subscriber.wait_for(lambda s: s.pushes, timeout=20)  # being sent: the subscriber holds its answer
            proc.send_signal(signal.SIGTERM)
            waiting = "waiting up to 20 s for the send in progress to finish"
            assert wait_until(lambda: waiting in log_file.read_text() or proc.poll() is not None, timeout=30)
            subscriber.hold_pushes.set()
            proc.wait(timeout=30)
        finally:
            subscriber.hold_pushes.set()
            stop(proc)
    assert HubDatabase(str(data)).pending() == 0  # nothing left claimed for the next start to send again
    log = log_file.read_text()
    assert waiting in log and "websub delivery outcome=delivered" in log and "Traceback" not in log
