"""Prometheus metrics at /metrics, and the per-request hooks that count and log every request.

Correct with several gunicorn workers: when PROMETHEUS_MULTIPROC_DIR is set
(gunicorn.conf.py sets it before the workers start, see metricsfolder.py),
prometheus-client keeps each worker's values in files there and /metrics sums
them, whichever worker answers. Without it (tests, `flask run`) values live in
this process. Metrics never stop serving: a failed write is logged once and
skipped, and /metrics answers 503 with the reason when the files cannot be read.
"""

from __future__ import annotations

import atexit
import bisect
import glob
import logging
import os
import threading
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY

from feedproxy.errors import MetricsUnreadable
from feedproxy.http.accesslog import log_request
from feedproxy.http.metricsfolder import FOLDER_SETTING, boot_problem

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)

# The latency histogram's bucket bounds; PendingCounts fills the same buckets in bulk.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REQUESTS = Counter("feedproxy_http_requests", "HTTP requests answered, by route and status.", ["route", "status"])
LATENCY = Histogram(
    "feedproxy_http_request_duration_seconds", "Time to answer a request, by route.", ["route"],
    buckets=LATENCY_BUCKETS,
)
FEED_CACHE = Counter("feedproxy_feed_cache", "Rendered-feed cache lookups, by result.", ["result"])
UPSTREAM = Counter("feedproxy_upstream_requests", "Upstream page requests, by outcome.", ["outcome"])
SNAPSHOT_AGE = Gauge("feedproxy_snapshot_age_seconds", "Seconds since the last successful refresh.",
                     multiprocess_mode="mostrecent")
PAPERS = Gauge("feedproxy_window_papers", "Papers in the window being served.", multiprocess_mode="mostrecent")
WEBSUB_SUBSCRIPTIONS = Counter(
    "feedproxy_websub_subscriptions",
    "WebSub subscription requests, by outcome (verified, unsubscribed, rejected, not_confirmed, challenge_mismatch, "
    "unreachable, timeout, private_address, bad_response, denied, expired, error).", ["outcome"])
WEBSUB_ACTIVE = Gauge("feedproxy_websub_active_subscriptions", "WebSub subscriptions in force.",
                      multiprocess_mode="mostrecent")
WEBSUB_DELIVERIES = Counter(
    "feedproxy_websub_deliveries", "Feed deliveries to WebSub subscribers, by outcome (delivered, retry, failed, "
    "gone, dropped).", ["outcome"])
NOTIFICATIONS = Counter(
    "feedproxy_notifications", "FEEDPROXY_NOTIFY notifications, by outcome (sent, retry, failed, dropped).",
    ["outcome"])

def record_upstream(outcome: str) -> None:
    """Count one upstream request by its outcome (errors.upstream_outcome), made here or in a refresher child."""
    count(UPSTREAM, outcome)


def count(counter: Counter, *labels: str, amount: float = 1) -> None:
    """counter.labels(*labels).inc(amount), never failing the caller: see write_safely."""
    write_safely(lambda: _child(counter, *labels).inc(amount))


_write_error: str | None = None  # why the latest metric write failed in this worker; the first is logged


def write_safely(write) -> None:
    """Run one metric write; an OSError (a full or removed metrics folder) is logged once and skipped."""
    global _write_error
    try:
        write()
    except OSError as exc:
        if _write_error is None:
            log.warning("metrics: a write failed, counts are incomplete from now on (logged once): %s", exc)
        _write_error = f"a write failed: {exc}"


def metrics_health() -> dict:
    """Where this worker's metrics live (null: in its own memory) and why they are degraded (null: they are not)."""
    folder = os.environ.get(FOLDER_SETTING)
    problem = boot_problem()
    if folder and not os.path.isdir(folder):
        problem = _removed(folder)
    return {"metrics_folder": folder or None, "metrics_error": problem or _write_error}


def _removed(folder: str) -> str:
    return f"the metrics folder {folder} was removed: workers recreate it as they restart"


class ReadableFilesCollector:
    """Sums the workers' files as prometheus-client's MultiProcessCollector does, leaving out any it cannot read."""

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise MetricsUnreadable(_removed(folder))
        self.folder = folder

    def collect(self):
        files = glob.glob(os.path.join(self.folder, "*.db"))
        try:
            return multiprocess.MultiProcessCollector.merge(files, accumulate=True)
        except Exception:  # noqa: BLE001 - a removed, cut or garbled file: find which, leave it out
            return multiprocess.MultiProcessCollector.merge([f for f in files if _readable(f)], accumulate=True)


_unreadable_reported: set[str] = set()


def _readable(path: str) -> bool:
    try:
        multiprocess.MultiProcessCollector.merge([path], accumulate=True)
        return True
    except Exception as exc:  # noqa: BLE001 - whatever a garbled file makes the parser raise
        if path not in _unreadable_reported:  # once per file, not at every scrape
            _unreadable_reported.add(path)
            log.warning("metrics: left out %s, which cannot be read: %r", path, exc)
        return False


def _registry() -> CollectorRegistry:
    folder = os.environ.get(FOLDER_SETTING)
    if folder:
        registry = CollectorRegistry()
        registry.register(ReadableFilesCollector(folder))
        return registry
    return REGISTRY


@bp.get("/metrics")
def metrics() -> Response:
    from flask import current_app

    store = current_app.extensions["feedproxy.store"]
    PENDING.flush()  # this worker's own counts are current; the others' at most a second behind
    snapshot = store.peek()
    if store.last_success_at is not None:
        write_safely(lambda: SNAPSHOT_AGE.set((store.clock() - store.last_success_at).total_seconds()))
    write_safely(lambda: PAPERS.set(len(snapshot.papers) if snapshot else 0))
    hub = current_app.extensions.get("feedproxy.hub")
    if hub is not None:
        write_safely(lambda: WEBSUB_ACTIVE.set(hub.active_subscriptions()))
    try:
        body = generate_latest(_registry())
    except MetricsUnreadable as exc:
        return Response(f"metrics unavailable: {exc}\n", status=503, content_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-store", "Retry-After": "60",
                                 "X-Content-Type-Options": "nosniff"})
    return Response(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


_children: dict = {}


def _child(metric, *labels):
    """metric.labels(*labels), remembered: routes and statuses are few, and labels() takes a lock each call."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def _start_timer() -> None:
    g.feedproxy_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("feedproxy_started", None)
    if started is None:
        return response
    elapsed = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    cache = g.get("feedproxy_cache")
    PENDING.add(route, str(response.status_code), cache, elapsed)
    log_request(request.method, request.path, response.status_code, response.content_length or 0, elapsed,
                cache, response.headers.get("Content-Encoding") == "gzip", request.args.get("q", ""),
                request.headers.get("User-Agent", ""))
    return response


class PendingCounts:
    """Per-request metric updates kept in plain Python and added to the Prometheus values once a second.

    In multiprocess mode every increment is a locked write to a memory-mapped
    file with a process-id check: four of them per request cost about 15% of a
    cache hit. Summed here and applied in bulk, /metrics is at most a second
    behind for other workers (the answering worker applies its own first).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.requests: dict = {}
        self.cache: dict = {}
        self.latency: dict = {}  # route -> [sum, count per bucket]

    def add(self, route: str, status: str, cache: str | None, elapsed: float) -> None:
        bucket = bisect.bisect_left(LATENCY_BUCKETS, elapsed)
        with self._lock:
            key = (route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if cache is not None:
                self.cache[cache] = self.cache.get(cache, 0) + 1
            totals = self.latency.get(route)
            if totals is None:
                totals = self.latency[route] = [0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
            totals[0] += elapsed
            totals[1][bucket] += 1

    def flush(self) -> None:
        """Add the pending counts to the Prometheus values; a failed write loses them (logged once)."""
        with self._lock:
            requests, cache, latency = self.requests, self.cache, self.latency
            self._reset()
        write_safely(lambda: self._apply(requests, cache, latency))

    @staticmethod
    def _apply(requests: dict, cache: dict, latency: dict) -> None:
        for labels, n in requests.items():
            _child(REQUESTS, *labels).inc(n)
        for label, n in cache.items():
            _child(FEED_CACHE, label).inc(n)
        for route, (total, counts) in latency.items():
            child = _child(LATENCY, route)
            child._sum.inc(total)  # prometheus-client has no bulk observe: fill the buckets directly
            for i, n in enumerate(counts):
                if n:
                    child._buckets[i].inc(n)

    def flush_now_and_then(self, interval: float = 1.0) -> None:
        while True:
            time.sleep(interval)
            self.flush()


PENDING = PendingCounts()


def install(app: Flask) -> None:
    """Add /metrics and per-request timing, counting and logging to the app."""
    app.register_blueprint(bp)
    app.before_request(_start_timer)
    app.after_request(_observe)
    _start_flusher()


_flusher_started = threading.Event()


def _start_flusher() -> None:
    if not _flusher_started.is_set():
        _flusher_started.set()
        threading.Thread(target=PENDING.flush_now_and_then, name="feedproxy-metrics", daemon=True).start()
        atexit.register(PENDING.flush)
