"""Load test: drive gunicorn with a realistic mix of feed-reader traffic for a bounded time, on loopback.

Usage: python bench/load.py [CORPUS] [--seconds 30] [--popular 60] [--conditional 25] [--json OUT] [--readme]

Set up as bench/run.py does (the corpus served by the loopback fake upstream,
real gunicorn with 2 workers and the production thread count, a window holding
every paper), then wrk with bench/wrk/mix.lua sends, each request drawn at
random:

- 60%: one of a handful of popular feeds (readers of one instance share
  subscriptions; the first feeds are asked most), answered from the
  rendered-feed cache;
- 25%: the same feeds revalidated with their current ETag, answered 304;
- 15%: a new query never asked before (3 words of real titles), filtered and
  rendered anew.

All requests accept gzip, as feed readers do. After a warm-up (with its own new
queries, so the measured ones are still new), it reports the throughput,
wrk's client-side latency percentiles, errors (socket errors and answers that
are neither 2xx nor 3xx), the server-side times of each kind of answer from
the app's access log, and each worker's resident memory before and after.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.harness import get, percentile, run_wrk  # noqa: E402

# What readers of a research-feed instance subscribe to: most popular first.
POPULAR = [
    "pretraining", "diffusion", '"language model"', "reinforcement learning", "agent", "video generation",
    "benchmark -survey", "speech OR audio",
]
GZIP = {"Accept-Encoding": "gzip"}


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    harness.ensure_wrk()
    began = time.monotonic()
    env = harness.environment()
    work = harness.new_workdir("feedproxy-load-")
    items, corpus = harness.load_corpus(options.corpus)
    expected = harness.valid_paper_count(items)
    words = harness.title_words(items)
    # More new queries than the run can use, split so the warm-up never sends a measured one.
    budget = int(options.seconds * 400)
    queries = harness.distinct_queries(words, budget + int(options.warmup * 400), seed=11)
    measured_file = harness.write_lines(queries[:budget], work, "new-queries.txt")
    warmup_file = harness.write_lines(queries[budget:], work, "warmup-queries.txt")

    results: dict = {"environment": env, "corpus": corpus, "papers": expected, "mix": mix_of(options)}
    upstream, server = harness.serve_corpus(items, work, name="load")
    try:
        harness.wait_until_serving(server, expected)
        popular_file = save_popular(server, work)
        settings = dict(script="mix.lua", headers=GZIP, threads=options.threads, connections=options.connections)
        mix_args = (options.popular, options.conditional)
        run_wrk(server.base + "/feed", options.warmup, args=(popular_file, warmup_file, options.threads, *mix_args),
                **settings)
        results["rss_before_mb"] = server.worker_rss_mb()
        results["cpu_busy_before"] = harness.wait_for_quiet(timeout=30, sample=1)  # others' test suites, if any
        results["load_average_before"] = harness.load_average()
        mark = server.access_offset()
        upstream_before = len(upstream.requests)
        client = run_wrk(server.base + "/feed", options.seconds,
                         args=(popular_file, measured_file, options.threads, *mix_args), **settings)
        results["upstream_requests"] = len(upstream.requests) - upstream_before
        results["rss_after_mb"] = server.worker_rss_mb()
        results["client"] = client
        results["server"] = server_side(server.access_lines(mark))
        results["server_errors"] = [l for l in server.errors().splitlines() if "Traceback" in l or " ERROR " in l][:20]
    finally:
        server.stop()
        upstream.stop()
    results["threads_per_worker"] = server.threads
    results["workers"] = server.worker_kind
    results["load_average_at_end"] = harness.load_average()
    results["run_seconds"] = time.monotonic() - began

    harness.publish("load", render_report(results, options), results, options.json, options.readme)
    harness.tidy_workdir(work)
    print(f"load: done in {results['run_seconds']:.0f} s; logs in {work}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=harness.DEFAULT_CORPUS,
                        help="gzipped JSON list of API items (default: %(default)s; synthetic when absent)")
    parser.add_argument("--seconds", type=float, default=30, help="length of the measured run (default 30)")
    parser.add_argument("--warmup", type=float, default=5, help="length of the warm-up run (default 5)")
    parser.add_argument("--popular", type=int, default=60, help="percent of requests for popular feeds (default 60)")
    parser.add_argument("--conditional", type=int, default=25, help="percent revalidated with an ETag (default 25)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--readme", action="store_true", help="put the report in README.md's Benchmarks section")
    options = parser.parse_args(argv)
    if options.popular + options.conditional > 100:
        parser.error("--popular and --conditional add up to more than 100")
    return options


def mix_of(options) -> str:
    new = 100 - options.popular - options.conditional
    return (f"{options.popular}% popular feeds ({len(POPULAR)}), {options.conditional}% conditional (If-None-Match), "
            f"{new}% new queries")


def save_popular(server: harness.Gunicorn, work: Path) -> Path:
    """Ask each popular feed once and save its path and current ETag for mix.lua."""
    lines = []
    for query in POPULAR:
        path = "/feed?q=" + quote_plus(query)
        status, headers, _ = get(server.base, path, GZIP)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        lines.append(f"{path}\t{headers['ETag']}")
    return harness.write_lines(lines, work, "popular.tsv")


def server_side(lines: list[dict]) -> dict:
    """Counts and server-side times (ms) of each kind of answer: cache hit, 304, new render, other."""
    feeds = [l for l in lines if l.get("path") == "/feed"]
    kinds = {
        "cache hit (200)": [l for l in feeds if l["status"] == 200 and l["cache"] == "hit"],
        "conditional (304)": [l for l in feeds if l["status"] == 304],
        "new query (200, rendered)": [l for l in feeds if l["status"] == 200 and l["cache"] == "miss"],
        "other statuses": [l for l in feeds if l["status"] not in (200, 304)],
    }
    summary = {}
    for kind, entries in kinds.items():
        ms = [l["ms"] for l in entries]
        summary[kind] = {"requests": len(entries), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
                         "p99_ms": percentile(ms, 99)}
    statuses: dict = {}
    for line in lines:
        statuses[str(line["status"])] = statuses.get(str(line["status"]), 0) + 1
    return {"requests": len(lines), "statuses": statuses, "kinds": summary}


def render_report(r: dict, options) -> str:
    client, server = r["client"], r["server"]
    latency = client["latency_us"]
    errors = client["errors"]
    lines = [
        f"Mix: {r['mix']}, Accept-Encoding: gzip; wrk -t{options.threads} -c{options.connections} "
        f"-d{options.seconds:g}s after {options.warmup:g} s of warm-up.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| throughput | {client['req_per_s']:,.0f} req/s ({client['requests']:,} requests) |",
        f"| latency, client side (wrk) | p50 {latency['p50'] / 1e3:.1f} ms, p90 {latency['p90'] / 1e3:.1f} ms, "
        f"p99 {latency['p99'] / 1e3:.1f} ms, max {latency['max'] / 1e3:.0f} ms |",
        f"| errors | {errors['status']} answers neither 2xx nor 3xx; socket errors: {errors['connect']} connect, "
        f"{errors['read']} read, {errors['write']} write, {errors['timeout']} timeouts |",
        f"| statuses logged by the app | {', '.join(f'{k}: {v:,}' for k, v in sorted(server['statuses'].items()))} |",
    ]
    for kind, k in server["kinds"].items():
        if k["requests"]:
            lines.append(f"| server side, {kind} | {k['requests']:,} requests; p50 {k['p50_ms']:.1f} ms, "
                         f"p90 {k['p90_ms']:.1f} ms, p99 {k['p99_ms']:.1f} ms |")
    before = " / ".join(f"{v:.0f}" for v in r["rss_before_mb"].values())
    after = " / ".join(f"{v:.0f}" for v in r["rss_after_mb"].values())
    lines += [
        f"| worker memory (RSS) | {before} MB before, {after} MB after |",
        f"| upstream requests during the run | {r['upstream_requests']} |",
        "",
        f"Measured by `python bench/load.py` (run by `make bench`) with {r['corpus']}, 2 workers × "
        f"{r['workers']}; load average {r['load_average_before']} before the run, "
        f"{r['load_average_at_end']} after. Environment as above.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
