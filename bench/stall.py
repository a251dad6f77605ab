"""Readers while the upstream stalls: feed latency during a refresh that hangs (issue 5: p99 under 100 ms).

Usage: python bench/stall.py [CORPUS] [--stall 30] [--seconds 25] [--json OUT] [--readme]

Set up as bench/load.py does (the corpus from the loopback fake upstream, real
gunicorn with 2 workers), but with FEEDPROXY_REFRESH_SECONDS=60, the shortest
allowed. Once the window is loaded, the fake upstream is told to hold every
request for --stall seconds; when the next refresh falls due, the same mix of
reader traffic as bench/load.py runs for --seconds while that refresh hangs.
It reports the server-side and client-side latency of those requests, and
checks that the refresh really was stuck the whole time: the upstream received
it before the measured run started and /healthz still shows the old refresh
when the run ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.harness import get, percentile, run_wrk  # noqa: E402
from bench.load import GZIP, save_popular  # noqa: E402
from tests.fakeupstream import Fault  # noqa: E402

TARGET_P99_MS = 100


def health(server: harness.Gunicorn) -> dict:
    return json.loads(get(server.base, "/healthz", timeout=5)[2])


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    harness.ensure_wrk()
    began = time.monotonic()
    work = harness.new_workdir("feedproxy-stall-")
    items, corpus = harness.load_corpus(options.corpus)
    expected = harness.valid_paper_count(items)
    queries = harness.distinct_queries(harness.title_words(items), int(options.seconds * 400), seed=23)
    new_file = harness.write_lines(queries, work, "new-queries.txt")
    results: dict = {"corpus": corpus, "papers": expected, "stall_seconds": options.stall}
    # A read timeout above the stall, so the refresh really hangs for all of it.
    upstream, server = harness.serve_corpus(items, work, name="stall", FEEDPROXY_REFRESH_SECONDS="60",
                                            FEEDPROXY_TIMEOUT=str(options.stall + 30))
    try:
        harness.wait_until_serving(server, expected)
        popular_file = save_popular(server, work)
        before = health(server)
        upstream.always = Fault(delay=options.stall)
        asked = len(upstream.requests)
        # Wait for the refresh to fall due, then let a feed request start it.
        deadline = time.monotonic() + 90
        while len(upstream.requests) == asked:
            if time.monotonic() > deadline:
                raise RuntimeError("no refresh reached the upstream within 90 s")
            get(server.base, "/feed?q=pretraining", GZIP)
            time.sleep(0.25)
        stalled_at = time.monotonic()
        mark = server.access_offset()
        client = run_wrk(server.base + "/feed", min(options.seconds, options.stall - 2), script="mix.lua",
                         headers=GZIP, args=(popular_file, new_file, 2, 60, 25))
        during = health(server)
        results["refresh_stuck_throughout"] = (
            during["last_success"] == before["last_success"] and time.monotonic() - stalled_at < options.stall)
        lines = [l for l in server.access_lines(mark) if l.get("path") == "/feed"]
        ms = [l["ms"] for l in lines]
        results["server"] = {"requests": len(lines), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
                             "max_ms": max(ms) if ms else None,
                             "non_2xx_3xx": sum(1 for l in lines if l["status"] >= 400)}
        results["client"] = client
    finally:
        server.stop()
        upstream.stop()
    results["run_seconds"] = time.monotonic() - began
    harness.publish("stall", render(results, options), results, options.json, options.readme)
    harness.tidy_workdir(work)
    return 0


def render(r: dict, options) -> str:
    s, c = r["server"], r["client"]["latency_us"]
    verdict = "PASS" if s["p99_ms"] < TARGET_P99_MS and r["refresh_stuck_throughout"] else "**FAIL**"
    return "\n".join([
        "| measure | value |",
        "|---|---|",
        f"| upstream | every request held {r['stall_seconds']:g} s; a refresh stuck on it for the whole run: "
        f"{'yes' if r['refresh_stuck_throughout'] else 'NO'} |",
        f"| feed requests during the stall | {s['requests']:,} ({r['client']['req_per_s']:,.0f} req/s), "
        f"{s['non_2xx_3xx']} errors |",
        f"| server side | p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.0f} ms |",
        f"| client side (wrk) | p50 {c['p50'] / 1e3:.1f} ms, p99 {c['p99'] / 1e3:.1f} ms |",
        f"| target: p99 under {TARGET_P99_MS} ms while the refresh hangs | {verdict} |",
        "",
        f"Measured by `python bench/stall.py` with {r['corpus']}: the bench/load.py mix (60% popular, 25% "
        "conditional, 15% new queries) on 16 connections, 2 workers.",
    ])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=harness.DEFAULT_CORPUS)
    parser.add_argument("--stall", type=float, default=30, help="seconds the upstream holds each request")
    parser.add_argument("--seconds", type=float, default=25, help="length of the measured run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--readme", action="store_true", help="put the report in README.md's Benchmarks section")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
