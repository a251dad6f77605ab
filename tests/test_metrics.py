"""/metrics in Prometheus text format, and the request log line."""

import logging

from prometheus_client.parser import text_string_to_metric_families

from feedproxy.app import create_app
from feedproxy.errors import UpstreamBadData, UpstreamHTTPError, UpstreamTimeout, UpstreamUnreachable, upstream_outcome

from .conftest import make_config
from .fakeupstream import Fault


def samples(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=")
    values = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values, name, **labels):
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_latency_and_cache_are_counted(client):
    before = samples(client)
    client.get("/feed?q=metricsprobe")
    client.get("/feed?q=metricsprobe")
    client.get("/feed?limit=0")
    client.get("/nowhere")
    after = samples(client)
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("feedproxy_http_requests_total", route="/feed", status="200") == 2
    assert delta("feedproxy_http_requests_total", route="/feed", status="400") == 1
    assert delta("feedproxy_http_requests_total", route="unmatched", status="404") == 1
    assert delta("feedproxy_http_request_duration_seconds_count", route="/feed") == 3
    assert delta("feedproxy_feed_cache_total", result="miss") == 1
    assert delta("feedproxy_feed_cache_total", result="hit") == 1


def test_upstream_outcomes_and_window_gauges(upstream, clock):
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    before = samples(client)
    client.get("/feed")
    upstream.always = Fault(status=500)
    clock.advance(1000)
    client.get("/feed")
    after = samples(client)
    assert value(after, "feedproxy_upstream_requests_total", outcome="ok") - \
        value(before, "feedproxy_upstream_requests_total", outcome="ok") == 1
    assert value(after, "feedproxy_upstream_requests_total", outcome="http_error") - \
        value(before, "feedproxy_upstream_requests_total", outcome="http_error") == 1
    assert value(after, "feedproxy_window_papers") == 40
    assert value(after, "feedproxy_snapshot_age_seconds") == 1000


def test_every_upstream_error_has_an_outcome_label():
    cases = {None: "ok", UpstreamTimeout("t"): "timeout", UpstreamHTTPError("h", 500): "http_error",
             UpstreamBadData("b"): "bad_data", UpstreamUnreachable("u"): "unreachable"}
    for error, label in cases.items():
        assert upstream_outcome(error) == label


def test_one_access_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="feedproxy.access"):
        client.get("/feed?q=logprobe", headers={"User-Agent": "Miniflux/2.2"})
    lines = [r.getMessage() for r in caplog.records if r.name == "feedproxy.access"]
    assert len(lines) == 1
    line = lines[0]
    for field in ("method=GET", "path=/feed", "status=200", "cache=miss", "q='logprobe'", "ua='Miniflux/2.2'", "ms="):
        assert field in line, field


def test_batched_access_lines_are_whole_and_at_most_4_kb_per_write(monkeypatch):
    import os

    from feedproxy.http import metrics
    from feedproxy.http.accesslog import BatchedLineHandler

    writes = []
    real_write = os.write
    monkeypatch.setattr(metrics.os, "write", lambda fd, b: writes.append(b) or real_write(fd, b))

    read_end, write_end = os.pipe()
    handler = BatchedLineHandler(write_end, max_delay=60)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("feedproxy.test-batch")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(100):
            logger.warning("request n=%03d %s", n, "x" * 150)
        handler.flush()
    finally:
        logger.removeHandler(handler)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    lines = data.decode().splitlines()
    assert [int(line.split()[1][2:]) for line in lines] == list(range(100))  # every line, whole, in order
    assert all(len(line) == len(lines[0]) for line in lines)
    assert len(writes) > 1 and all(len(w) <= 4096 and w.endswith(b"\n") for w in writes)


def test_pending_counts_reach_prometheus_in_bulk_with_the_right_buckets():
    from prometheus_client import REGISTRY

    from feedproxy.http.metrics import LATENCY_BUCKETS, PENDING

    bounds = [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    def bucket_counts():
        cumulative = [value("feedproxy_http_request_duration_seconds_bucket", route="/bulkprobe", le=b) for b in bounds]
        return ([c - p for c, p in zip(cumulative, [0.0, *cumulative[:-1]])],
                value("feedproxy_http_request_duration_seconds_sum", route="/bulkprobe"))

    before, sum_before = bucket_counts()
    requests_before = value("feedproxy_http_requests_total", route="/bulkprobe", status="200")
    for elapsed in (0.0005, 0.001, 0.003, 0.003, 20.0):
        PENDING.add("/bulkprobe", "200", None, elapsed)
    PENDING.flush()
    after, sum_after = bucket_counts()
    added = [a - b for a, b in zip(after, before)]
    # le=0.001 gets 0.0005 and 0.001 (bounds are inclusive), le=0.005 the two 3 ms, +Inf the 20 s one.
    assert added == [2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert abs((sum_after - sum_before) - 20.0075) < 1e-9
    assert value("feedproxy_http_requests_total", route="/bulkprobe", status="200") - requests_before == 5


def test_metrics_answer_503_with_the_reason_when_their_folder_was_removed(client, tmp_path, monkeypatch):
    """Someone removed the data folder (or /dev/shm was cleaned): feeds go on, /metrics says why it cannot answer."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "removed"))
    answer = client.get("/metrics")
    assert answer.status_code == 503 and answer.content_type == "text/plain; charset=utf-8"
    assert f"the metrics folder {tmp_path / 'removed'} was removed" in answer.get_data(as_text=True)
    assert client.get("/feed?q=agents").status_code == 200
    health = client.get("/healthz").get_json()
    assert health["metrics_folder"] == str(tmp_path / "removed") and "was removed" in health["metrics_error"]


def test_metrics_leave_out_a_garbled_file_and_sum_the_rest(client, tmp_path, monkeypatch):
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    readable = MmapedDict(str(tmp_path / "counter_101.db"))
    readable.write_value(mmap_key("feedproxy_probe", "feedproxy_probe_total", [], [], "A probe."), 7.0, 0.0)
    readable.close()
    (tmp_path / "counter_102.db").write_bytes(b"\x10\x00\x00\x00garbled")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert value(samples(client), "feedproxy_probe_total") == 7.0


def test_a_failing_metric_write_never_stops_serving_and_is_logged_once(upstream, clock, monkeypatch, caplog):
    """A metrics folder that is full or gone makes writes fail with OSError: the feed is served all the same."""
    from prometheus_client import Counter, Gauge

    from feedproxy.http import metrics

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Counter, "inc", full)
    monkeypatch.setattr(Gauge, "set", full)
    monkeypatch.setattr(metrics, "_write_error", None, raising=False)  # the first failure of the process
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    with caplog.at_level(logging.WARNING, logger="feedproxy.http.metrics"):
        for _ in range(3):
            assert client.get("/feed?q=agents").status_code == 200  # the first refreshes: an upstream count
            assert client.get("/metrics").status_code == 200  # adds this worker's pending counts
    warnings = [r.getMessage() for r in caplog.records if r.name == "feedproxy.http.metrics"]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert client.get("/healthz").get_json()["metrics_error"] == "a write failed: [Errno 28] No space left on device"


def test_the_upstream_requests_of_refresher_children_are_counted(upstream, tmp_path):
    """In service refresher children make the upstream requests; the worker that started one counts them."""
    def worker(folder):
        config = make_config(upstream.url, data_dir=str(tmp_path / folder), refresh_in_subprocess=True)
        return create_app(config).test_client()

    failing, serving = worker("a"), worker("b")
    before = samples(serving)
    upstream.faults = [Fault(status=500)]
    assert failing.get("/feed").status_code == 503  # cold: its child got the 500
    assert serving.get("/feed").status_code == 200  # cold: its child fetched one page
    after = samples(serving)
    assert len(upstream.requests) == 2
    delta = lambda outcome: value(after, "feedproxy_upstream_requests_total", outcome=outcome) - \
        value(before, "feedproxy_upstream_requests_total", outcome=outcome)  # noqa: E731
    assert (delta("ok"), delta("http_error")) == (1, 1)
