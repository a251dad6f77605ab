"""`make bench`: measure feedproxy under real gunicorn against the targets of issue 7, print a table.

Usage: python bench/run.py [CORPUS] [--seconds N] [--json OUT] [--readme] [--skip-refresh-check]

The scenario: the corpus (a gzipped JSON list of Daily Papers API items,
newest first; a synthetic one of the same shape when the file is absent) is
served by the tests' loopback fake upstream with ETags on; gunicorn runs
`-c gunicorn.conf.py wsgi:app` with 2 workers and the production thread
count, a window holding the whole corpus (FEEDPROXY_WINDOW_DAYS=1000,
FEEDPROXY_MAX_PAGES=200) and a fresh data folder; wrk is the load. Then:

1. cache hit: wrk repeats `/feed?q=pretraining` (Accept-Encoding: gzip), and the
   same wrk settings drive bench/bare_app.py, a bare Flask app under the same
   gunicorn settings returning the same bytes and headers; target: feedproxy
   >= 80% of the bare app.
2. 304: the same request with If-None-Match; target: at least the cache-hit
   rate. The three run in turn for 3 rounds, each run starting when the CPUs
   are idle, and the best of each is kept (other processes only slow a run).
3. a new distinct query every request (bench/wrk/distinct.lua): 3 words from
   real titles, never repeated; median and p99 of the `ms=` the app logs for
   them (server side; targets 10 ms and 30 ms), first 2,000 sent one at a time
   (the cost of a request), then 18,000 on 16 connections (the times include
   waiting for the worker's GIL). With py-spy installed, one worker is then
   profiled on more new queries, and on cache hits (bench/results/profile.txt).
4. memory: each worker's VmRSS once the index is loaded (< 150 MB) and after
   the distinct queries (< 200 MB).
4b. concept search (issue 13): the index build in the refresher child, read
   from the server's log (its last upstream request to its "refresh ok": build
   and save; < 60 s), beside the first 200 after process start and, once the
   server is stopped, the in-process build in its parts (bench/bench_build.py).
   Then new distinct queries of three kinds, each sent once: the same title
   words with match=concept and with match=hybrid, and similar=ID over random
   papers; median and p99 of their `ms=` (< 10 ms and < 30 ms), first 500 one
   at a time, then 2,000 on 16 connections. The first concept query a worker
   answers loads the model (one is timed before the runs). Then each worker's
   VmRSS with the model loaded (< 200 MB), and with py-spy one worker is
   profiled on more of them.
5. start with a saved snapshot: the first gunicorn stopped and its fake upstream
   gone, a second gunicorn on the same data folder and the same
   FEEDPROXY_UPSTREAM_URL (a snapshot is adopted only by the source that saved
   it), where nothing listens any more; time from process start to the first
   200 on the feed, polling every 20 ms (< 2 s), and no upstream request in its
   log (httpx logs each one, the store each refresh).
6. upstream: requests the fake upstream got during all the load above (the
   default 900 s refresh: expect none); then a run with
   FEEDPROXY_REFRESH_SECONDS=60 spanning one refresh, which should cost one
   request, conditional and answered 304 (about 80 s; --skip-refresh-check).
7. bench/bench_query.py, the in-process index benchmark: its 3-term queries
   (target: median and p99 under 2 ms).

Prints the markdown table and writes it with the environment to
bench/results/run.md (and JSON to bench/results/run.json, or --json OUT);
--readme also puts it in README.md's Benchmarks section.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.harness import Gunicorn, get, percentile, run_wrk  # noqa: E402

FEED = "/feed?q=pretraining"
DEFAULT_REFRESH_S = 900  # FEEDPROXY_REFRESH_SECONDS when unset
GZIP = {"Accept-Encoding": "gzip"}


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    harness.ensure_wrk()
    if options.wait_quiet:
        say(f"bench: CPU {harness.wait_for_quiet(options.wait_quiet):.0%} busy before starting")
    began = time.monotonic()
    env = harness.environment()
    work = harness.new_workdir("feedproxy-bench-")
    say(f"bench: working in {work}; load average {env['load_average_at_start']}")

    items, corpus = harness.load_corpus(options.corpus)
    expected = harness.valid_paper_count(items)
    words = harness.title_words(items)
    # Each run stops once its count of new queries is answered; its file holds a few more, since wrk
    # asks its script for one request it never sends, and a thread may run ahead of the others.
    under_load = options.distinct - options.sequential
    counts = [options.sequential + 50, under_load + under_load // 20 + 50, options.profile_queries]
    queries = iter(harness.distinct_queries(words, sum(counts), seed=7))
    one_at_a_time, for_load, for_profile = ([next(queries) for _ in range(n)] for n in counts)
    one_file = harness.write_lines(one_at_a_time, work, "distinct-one-at-a-time.txt")
    loaded_file = harness.write_lines(for_load, work, "distinct-under-load.txt")
    profile_file = harness.write_lines(for_profile, work, "profile-queries.txt")
    concept_files = write_concept_queries(words, harness.valid_paper_ids(items), work, options)

    results: dict = {"environment": env, "corpus": corpus, "papers": expected, "wrk": wrk_settings(options),
                     "words": len(words)}
    upstream, server = harness.serve_corpus(items, work)
    try:
        results["cold_start_s"] = harness.wait_until_serving(server, expected)
        results["cold_start_upstream_requests"] = len(upstream.requests)
        results["child_build"] = child_build_timing(server)
        results["threads_per_worker"] = server.threads
        results["workers"] = server.worker_kind
        say(f"bench: {expected:,} papers served {results['cold_start_s']:.1f} s after start, "
            f"from {len(upstream.requests)} upstream requests")
        time.sleep(1)
        results["rss_loaded_mb"] = server.worker_rss_mb()
        results["memory_loaded_detail"] = server.worker_memory_detail()
        steady_from = len(upstream.requests)
        steady_began = time.monotonic()

        results.update(measure_cache_hit_and_304(server, work, options))
        results["distinct_one"] = measure_distinct_queries(server, one_file, options.sequential, 1, 1)
        results["distinct_load"] = measure_distinct_queries(server, loaded_file, under_load, options.threads,
                                                            options.connections)
        results["distinct_total"] = results["distinct_one"]["distinct_q"] + results["distinct_load"]["distinct_q"]
        results["rss_after_distinct_mb"] = server.worker_rss_mb()
        results["memory_after_distinct_detail"] = server.worker_memory_detail()
        sample = one_at_a_time[: options.sequential: max(1, options.sequential // 200)]
        results["entries"] = entries_rendered(server, [f"q={query}" for query in sample])
        results["concepts"] = measure_concept_queries(server, concept_files, options)
        results["rss_after_concepts_mb"] = server.worker_rss_mb()
        results["memory_after_concepts_detail"] = server.worker_memory_detail()
        if options.profile and harness.py_spy():
            results["profiles"] = {
                "new queries": profile_worker(server, "new-queries", "/feed", work, options, script="distinct.lua",
                                              args=(profile_file, options.threads), headers=GZIP),
                "cache hits": profile_worker(server, "cache-hits", FEED, work, options, headers=GZIP),
                "concept queries": profile_worker(server, "concept-queries", "/feed", work, options,
                                                  script="distinct.lua", headers=GZIP,
                                                  args=(concept_files["profile"], options.threads, "/feed?")),
            }

        results["steady_upstream_requests"] = len(upstream.requests) - steady_from
        results["steady_seconds"] = time.monotonic() - steady_began
        # A slow run (a busy machine) may outlast the default refresh interval: each one due costs a request.
        results["steady_refreshes_due"] = int((time.monotonic() - server.started) // DEFAULT_REFRESH_S)
        results["server_errors"] = server_error_lines(server)
    finally:
        server.stop()
        upstream.stop()  # from here on nothing listens at the URL the snapshot came from

    results["restart"] = measure_start_from_snapshot(server, work, expected)
    if options.refresh_check:
        results["refresh"] = measure_one_refresh(items, work, expected)
    if options.query_bench:
        results["query_bench"] = run_query_bench(options.corpus, work)
    if options.build_bench:
        results["build_bench"] = run_build_bench(options.corpus)
    results["load_average_at_end"] = harness.load_average()
    results["run_seconds"] = time.monotonic() - began

    harness.publish("run", render_report(results), results, options.json, options.readme)
    if "profiles" in results:
        profiles = results["profiles"].items()
        text = "\n\n".join(f"== {name}: {harness.profile_text(p)}" for name, p in profiles if "error" not in p)
        (harness.RESULTS / "profile.txt").write_text(text + "\n", encoding="utf-8")
        say(f"bench: profiles of one worker ({', '.join(results['profiles'])}) in {harness.RESULTS / 'profile.txt'}")
    harness.tidy_workdir(work)
    say(f"bench: done in {results['run_seconds']:.0f} s; logs in {work}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=harness.DEFAULT_CORPUS,
                        help="gzipped JSON list of API items (default: %(default)s; synthetic when absent)")
    parser.add_argument("--seconds", type=float, default=8, help="length of each measured wrk run (default 8)")
    parser.add_argument("--warmup", type=float, default=3, help="length of the wrk run before each (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of cache hit, bare app, 304 in turn; the best of each is kept (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--distinct", type=int, default=20_000, help="distinct queries to answer (default 20000)")
    parser.add_argument("--sequential", type=int, default=2_000,
                        help="of which sent one at a time, on one connection (default 2000)")
    parser.add_argument("--concept-distinct", type=int, default=2_500,
                        help="new queries of each concept kind (match=concept, match=hybrid, similar=) to answer "
                             "(default 2500)")
    parser.add_argument("--concept-sequential", type=int, default=500,
                        help="of which sent one at a time, on one connection (default 500)")
    parser.add_argument("--profile-seconds", type=float, default=12, help="py-spy sampling time (default 12)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--readme", action="store_true", help="put the report in README.md's Benchmarks section")
    parser.add_argument("--skip-refresh-check", dest="refresh_check", action="store_false",
                        help="skip the run with FEEDPROXY_REFRESH_SECONDS=60 (saves about 80 s)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="do not run py-spy")
    parser.add_argument("--no-query-bench", dest="query_bench", action="store_false",
                        help="do not run bench/bench_query.py")
    parser.add_argument("--no-build-bench", dest="build_bench", action="store_false",
                        help="do not run bench/bench_build.py (the in-process index build, about 20 s)")
    parser.add_argument("--wait-quiet", type=float, default=0,
                        help="first wait up to this many seconds for the CPUs to be idle (other processes < 15%%)")
    options = parser.parse_args(argv)
    options.profile_queries = 6_000 if options.profile else 0
    return options


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wrk_settings(options) -> str:
    return (f"wrk -t{options.threads} -c{options.connections} -d{options.seconds:g}s "
            f"after {options.warmup:g} s of warm-up")


# -- 1 and 2: cache hits, the bare app, 304 -------------------------------------------


def measure_cache_hit_and_304(server: Gunicorn, work: Path, options) -> dict:
    """Throughput of repeated cache hits, of the bare Flask app with the same bytes, and of 304s."""
    status, headers, body = get(server.base, FEED, GZIP)
    if status != 200:
        raise RuntimeError(f"{FEED} answered {status}: {body[:200]!r}")
    saved = work / "feed-response.json"
    saved.write_text(json.dumps({"status": status, "headers": headers, "body": base64.b64encode(body).decode()}))
    etag = headers["ETag"]
    bare = Gunicorn.start("bare", work, {**harness.SERVICE_SETTINGS, "BENCH_BARE_RESPONSE": str(saved),
                                         "FEEDPROXY_DATA_DIR": str(work / "bare-data")}, app="bench.bare_app:app")
    try:
        wait_for_status(bare, FEED, 200)
        bare_status, bare_headers, bare_body = get(bare.base, FEED, GZIP)
        assert bare_body == body and bare_headers["ETag"] == etag, "the bare app must send the same bytes"
        hits, bares, conditionals = [], [], []
        for _ in range(options.rounds):
            hits.append(throughput(server, FEED, GZIP, options))
            bares.append(throughput(bare, FEED, GZIP, options))
            conditionals.append(throughput(server, FEED, {**GZIP, "If-None-Match": etag}, options))
    finally:
        bare.stop()

    def best(runs: list[dict]) -> dict:
        return {**max(runs, key=lambda r: r["req_per_s"]), "rounds": [round(r["req_per_s"]) for r in runs]}

    return {"feed_bytes": len(body), "feed_encoding": headers.get("Content-Encoding", "identity"), "etag": etag,
            "cache_hit": best(hits), "bare": best(bares), "not_modified": best(conditionals)}


def wait_for_status(server: Gunicorn, path: str, status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_running()
        try:
            if get(server.base, path, GZIP)[0] == status:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer {status} on {path} within {timeout:g} s")


def throughput(server: Gunicorn, path: str, headers: dict, options) -> dict:
    """A warm-up wrk run, then a measured one; with what the server logged about the measured requests."""
    settings = dict(headers=headers, threads=options.threads, connections=options.connections)
    # Other processes on this machine (test suites) come and go: start each run when they are quiet.
    busy = harness.wait_for_quiet(timeout=30, sample=1)
    run_wrk(server.base + path, options.warmup, **settings)
    mark = server.access_offset() if server.name != "bare" else None
    load = harness.load_average()
    result = run_wrk(server.base + path, options.seconds, **settings)
    result["load_average_before"] = load
    result["cpu_busy_before"] = busy
    if mark is not None:
        lines = server.access_lines(mark)
        result["server"] = {"requests": len(lines), "statuses": count_by(lines, "status"),
                            "cache": count_by(lines, "cache"), "median_ms": percentile([l["ms"] for l in lines], 50)}
    say(f"bench: {server.name} {path} {headers}: {result['req_per_s']:,.0f} req/s (CPU {busy:.0%} busy before)")
    return result


def count_by(lines: list[dict], key: str) -> dict:
    counts: dict = {}
    for line in lines:
        counts[str(line.get(key))] = counts.get(str(line.get(key)), 0) + 1
    return counts


# -- 3 and 4: new distinct queries, memory, profile -----------------------------------


# The access log is written in batches, at the latest a second after a line (feedproxy.http.accesslog).
LOG_FLUSH_S = 1.5


def measure_distinct_queries(server: Gunicorn, queries: Path, count: int, threads: int, connections: int,
                             prefix: str = "/feed?q=") -> dict:
    """Send the file's queries, each once (wrk, distinct.lua), until ``count`` are answered; read their times.

    Each request is ``prefix`` and a line of the file: with "/feed?" the lines
    are whole query strings.

    With one connection a request never waits for another, so the app's `ms=`
    is the cost of a request; with many, requests share each worker's GIL and
    the times include that wait.
    """
    time.sleep(LOG_FLUSH_S)  # the previous run's last lines are written before the mark, not counted here
    mark = server.access_offset()
    counter = harness.LogCounter(server.stdout_path, mark, b" cache=miss ")
    load = harness.load_average()
    started = time.monotonic()
    try:
        client = run_wrk(
            server.base + "/feed", 3600, script="distinct.lua", args=(queries, threads, prefix), headers=GZIP,
            threads=threads, connections=connections,
            # Stop once answered, or when none has been for a while (e.g. all fail: errors are no miss).
            stop_when=lambda: counter.update() >= count or counter.idle_for() > (5 if counter.count else 60),
        )
    finally:
        counter.close()
    seconds = time.monotonic() - started
    time.sleep(LOG_FLUSH_S)
    lines = [l for l in server.access_lines(mark) if l.get("path") == "/feed"]
    misses = [l for l in lines if l["cache"] == "miss"]
    ms = [l["ms"] for l in misses if l["status"] == 200]
    result = {
        "connections": connections, "requests_logged": len(lines), "misses": len(misses), "answered": len(ms),
        "distinct_q": len({l["q"] for l in misses}), "statuses": count_by(lines, "status"),
        "median_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=float("nan")), "median_bytes": percentile([l["bytes"] for l in misses], 50),
        "seconds": seconds, "load_average_before": load, "client": client,
    }
    say(f"bench: {result['answered']:,} new queries on {connections} connection(s): server median "
        f"{result['median_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; {client['req_per_s']:.0f} req/s")
    return result


def entries_rendered(server: Gunicorn, queries: list[str]) -> dict:
    """How many entries a sample of the queries (query strings) rendered (asked again as JSON Feed, a new render
    each)."""
    counts = []
    for query in queries:
        status, _, body = get(server.base, f"/feed?{query}&format=json")
        if status == 200:
            counts.append(len(json.loads(body).get("items", [])))
    return {"sample": len(counts), "full_pages": sum(c >= 50 for c in counts), "median": percentile(counts, 50)}


def profile_worker(server: Gunicorn, name: str, path: str, work: Path, options, **wrk_settings) -> dict:
    """Sample one worker with py-spy while wrk sends ``path`` (not part of any measured run)."""
    out = work / f"profile-{name}.raw"
    spy = harness.record_profile(server.worker_pids()[0], options.profile_seconds, out)
    run_wrk(server.base + path, options.profile_seconds + 2, threads=options.threads,
            connections=options.connections, **wrk_settings)
    output = spy.communicate(timeout=60)[0]
    if not out.exists():
        say(f"bench: py-spy produced no profile: {output.strip()[-500:]}")
        return {"error": output.strip()[-500:]}
    return harness.summarize_profile(out)


def server_error_lines(server: Gunicorn) -> list[str]:
    return [line for line in server.errors().splitlines() if "Traceback" in line or " ERROR " in line][:20]


# -- 4b: concept search -----------------------------------------------------------------

# The kinds of concept query, each a query string made of 3 title words or of a paper id.
CONCEPT_KINDS = {"concept": "q={}&match=concept", "hybrid": "q={}&match=hybrid", "similar": "similar={}"}


def write_concept_queries(words: list[str], paper_ids: list[str], work: Path, options) -> dict:
    """Files of whole query strings, never repeated: per kind, one for one at a time and one for load;
    and one for the profile, the kinds in turn. Words come from a seed of their own (not the keyword ones')."""
    under_load = options.concept_distinct - options.concept_sequential
    counts = {"one": options.concept_sequential + 50, "load": under_load + under_load // 20 + 50}
    profile = 3_000 if options.profile else 0
    per_kind = sum(counts.values()) + profile // len(CONCEPT_KINDS) + 1 + 20  # 1 first, 20 for entries_rendered
    triples = iter(harness.distinct_queries(words, per_kind * 2, seed=13))
    ids = iter(random.Random(13).sample(paper_ids, min(len(paper_ids), per_kind)))
    pools = {kind: iter([form.format(next(ids if kind == "similar" else triples)) for _ in range(per_kind)])
             for kind, form in CONCEPT_KINDS.items()}
    files: dict = {kind: {phase: harness.write_lines([next(pools[kind]) for _ in range(n)], work,
                                                     f"{kind}-{phase}.txt") for phase, n in counts.items()}
                   for kind in CONCEPT_KINDS}
    files["first"] = {kind: next(pools[kind]) for kind in CONCEPT_KINDS}
    files["sample"] = {kind: [next(pools[kind]) for _ in range(20)] for kind in CONCEPT_KINDS}
    files["profile"] = harness.write_lines([next(pools[kind]) for _ in range(profile // len(CONCEPT_KINDS))
                                            for kind in CONCEPT_KINDS], work, "concept-profile.txt")
    return files


def measure_concept_queries(server: Gunicorn, files: dict, options) -> dict:
    """Time the first concept query (it loads the model in the worker that answers), then each kind's
    new distinct queries one at a time and under load, and how many entries a sample of each rendered."""
    started = time.monotonic()
    status, _, body = get(server.base, f"/feed?{files['first']['concept']}", GZIP, timeout=60)
    result: dict = {"first_query": {"status": status, "client_ms": (time.monotonic() - started) * 1000},
                    "rss_after_first_query_mb": server.worker_rss_mb()}
    if status != 200:
        result["first_query"]["body"] = body[:300].decode(errors="replace")
        say(f"bench: concept query answered {status}: {body[:300]!r}; concept runs skipped")
        return result
    say(f"bench: first concept query (loads the model in one worker) {result['first_query']['client_ms']:.0f} ms")
    under_load = options.concept_distinct - options.concept_sequential
    for kind in CONCEPT_KINDS:
        say(f"bench: {kind} queries")
        result[kind] = {
            "one": measure_distinct_queries(server, files[kind]["one"], options.concept_sequential, 1, 1, "/feed?"),
            "load": measure_distinct_queries(server, files[kind]["load"], under_load, options.threads,
                                             options.connections, "/feed?"),
            "entries": entries_rendered(server, files["sample"][kind]),
        }
    result["seconds"] = time.monotonic() - started
    return result


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_time(line: str) -> float | None:
    """The time.time() of a line of the app's log (its asctime is local time, to the millisecond)."""
    match = _LOG_TIME.match(line)
    if match is None:
        return None
    return time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000


def child_build_timing(server: Gunicorn) -> dict:
    """The cold start's refresh as the log tells it: the refresher child's upstream requests (httpx logs
    each when answered), its "refresh ok" (logged once the index is built and saved), the workers'
    "loaded saved index cache"; as seconds after process start."""
    lines = server.errors().splitlines()
    done_at = next((i for i, line in enumerate(lines) if "refresh ok" in line and log_time(line)), None)
    if done_at is None:
        return {"error": "no 'refresh ok' line in the server's log"}
    requests = [log_time(line) for line in lines[:done_at] if "HTTP Request:" in line and log_time(line)]
    if not requests:
        return {"error": "no upstream request logged before 'refresh ok'"}
    done = log_time(lines[done_at])
    loaded = [log_time(line) for line in lines[done_at:] if "loaded saved index cache" in line and log_time(line)]
    start = server.started_wall
    result = {
        "first_request_s": requests[0] - start, "last_request_s": requests[-1] - start, "requests": len(requests),
        "refresh_ok_s": done - start, "build_and_save_s": done - requests[-1], "fetch_build_save_s": done - requests[0],
        "workers_loaded_s": [t - start for t in loaded], "first_feed_s": server.first_feed_s,
    }
    say(f"bench: refresher child: build and save {result['build_and_save_s']:.1f} s after its last upstream "
        f"request; first feed {server.first_feed_s} s after start")
    return result


def run_build_bench(corpus: Path) -> dict:
    """Run bench/bench_build.py: the in-process index build, keyword index, model load and embeddings apart."""
    out = subprocess.run([sys.executable, str(harness.BENCH / "bench_build.py"), str(corpus)],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    say(f"bench: bench_build.py: keyword index {result['keyword_index']['wall_s']:.1f} s, model load "
        f"{result['model_load']['wall_s']:.1f} s, embeddings {result['embed']['wall_s']:.1f} s")
    return result


# -- 5: start from the saved snapshot --------------------------------------------------


def measure_start_from_snapshot(first: Gunicorn, work: Path, expected: int) -> dict:
    """Start gunicorn again on the first one's data folder, its upstream gone; time the first feed."""
    snapshot = Path(first.env["FEEDPROXY_DATA_DIR"]) / "hf-daily" / "snapshot.json.gz"
    settings = {k: v for k, v in first.env.items()
                if k.startswith("FEEDPROXY_") or k in ("WEB_CONCURRENCY", "GUNICORN_THREADS")}
    server = Gunicorn.start("restart", work, settings)
    statuses: dict = {}
    first_feed = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first_feed is None:
            server.check_running()
            try:
                status = get(server.base, FEED, GZIP, timeout=30)[0]
            except OSError:
                status = "refused"
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                first_feed = time.monotonic() - server.started
            else:
                time.sleep(0.02)
        all_workers = harness.wait_until_serving(server, expected, timeout=60)
        time.sleep(1)
        log = server.errors()
    finally:
        server.stop()
    # httpx logs every request it completes; the store logs every refresh, failed or not.
    attempts = [line for line in log.splitlines()
                if "HTTP Request:" in line or "refresh ok" in line or "refresh failed" in line]
    result = {"snapshot_bytes": snapshot.stat().st_size if snapshot.exists() else None,
              "first_feed_s": first_feed, "all_workers_s": all_workers, "statuses_while_polling": statuses,
              "upstream_attempts": len(attempts), "attempt_lines": attempts[:5]}
    say(f"bench: restart from the saved snapshot: first feed after {first_feed} s, "
        f"{len(attempts)} upstream attempts")
    return result


# -- 6: one refresh at the shortest interval ------------------------------------------


def measure_one_refresh(items: list[dict], work: Path, expected: int, interval: int = 60) -> dict:
    """Run with FEEDPROXY_REFRESH_SECONDS=60 past one refresh; return the upstream requests it made."""
    upstream, server = harness.serve_corpus(items, work, name="refresh", FEEDPROXY_REFRESH_SECONDS=str(interval))
    try:
        harness.wait_until_serving(server, expected)
        initial = len(upstream.requests)
        # Refreshes happen when feeds are asked for: a reader every 0.2 s, each on a new connection
        # so both workers are asked, until 15 s past the first refresh and well before the second.
        until = server.started + interval + 15
        while time.monotonic() < until:
            server.check_running()
            try:
                get(server.base, FEED, GZIP)
            except OSError:
                pass
            time.sleep(0.2)
        later = upstream.requests[initial:]
        log = server.errors()
    finally:
        server.stop()
        upstream.stop()

    def header(request: dict, name: str) -> str | None:
        return next((v for k, v in request["headers"].items() if k.lower() == name.lower()), None)

    conditional = [r for r in later if header(r, "If-None-Match")]
    answered_304 = [r for r in conditional if header(r, "If-None-Match") == r.get("etag")]
    result = {
        "interval_s": interval, "initial_requests": initial, "requests": len(later),
        "conditional": len(conditional), "answered_304": len(answered_304),
        "pages": [int(r["params"].get("p", 0)) for r in later],
        "refresh_lines": [l for l in log.splitlines() if "refresh ok" in l or "loaded saved" in l][-6:],
    }
    say(f"bench: one {interval} s refresh: {len(later)} upstream requests, {len(conditional)} conditional, "
        f"{len(answered_304)} answered 304")
    return result


# -- 7: the in-process query benchmark -----------------------------------------------


def run_query_bench(corpus: Path, work: Path) -> dict:
    """Run bench/bench_query.py and read its 3-term, date-sorted rows."""
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(harness.BENCH / "bench_query.py"), str(corpus)],
                         capture_output=True, text=True, check=True).stdout
    (work / "bench_query.md").write_text(out)
    harness.RESULTS.mkdir(exist_ok=True)
    (harness.RESULTS / "bench_query.md").write_text(out)
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1] == "3 terms" and cells[2] == "date":
            rows.append({"query": cells[0].strip("`"), "median_ms": float(cells[4]), "p99_ms": float(cells[5])})
    papers = re.search(r"([\d,]+) papers", out)
    result = {"rows": rows, "papers": papers.group(1) if papers else "?", "seconds": time.monotonic() - started,
              "worst_median_ms": max((r["median_ms"] for r in rows), default=float("nan")),
              "worst_p99_ms": max((r["p99_ms"] for r in rows), default=float("nan"))}
    say(f"bench: bench_query.py: 3-term worst median {result['worst_median_ms']:.3f} ms, "
        f"worst p99 {result['worst_p99_ms']:.3f} ms")
    return result


# -- the report -------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def pages(numbers: list[int]) -> str:
    return f" (pages {min(numbers)} to {max(numbers)})" if len(numbers) > 1 else ""


def rounds(result: dict) -> str:
    return ", ".join(f"{rate:,}" for rate in result["rounds"])


def mb(values: dict) -> str:
    return " / ".join(f"{v:.0f}" for v in values.values()) + " MB"


def latency_row(label: str, d: dict, count: int) -> tuple[str, str, str, str]:
    """A row for a run of new queries: server-side median and p99 against 10 and 30 ms, and the client's view."""
    client = d["client"]["latency_us"]
    return (label, "median < 10 ms, p99 < 30 ms, server side",
            f"median {d['median_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms (max {d['max_ms']:.0f}) over {count:,} "
            f"queries; {d['client']['req_per_s']:,.0f} req/s, client side p50 {client['p50'] / 1e3:.1f} ms, "
            f"p99 {client['p99'] / 1e3:.1f} ms",
            f"{d['median_ms'] / 10:.1f}× / {d['p99_ms'] / 30:.1f}× the target "
            f"{verdict(d['median_ms'] < 10 and d['p99_ms'] < 30)}")


CONCEPT_LABELS = {"concept": "`q=w1+w2+w3&match=concept`", "hybrid": "`q=w1+w2+w3&match=hybrid`",
                  "similar": "`similar=ID` (random papers)"}


def concept_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """The rows of issue 13: the index build in the refresher child, and the concept queries' latency."""
    rows = []
    b, papers = r.get("child_build", {}), r["papers"]
    if "build_and_save_s" in b:
        first = f"{b['first_feed_s']:.1f} s" if b["first_feed_s"] is not None else "?"
        measured = (f"build and save {b['build_and_save_s']:.1f} s (its last upstream request to `refresh ok`); "
                    f"fetch, build and save {b['fetch_build_save_s']:.1f} s; first feed {first} after process start")
        if "build_bench" in r:
            k = r["build_bench"]
            measured += (f"; in-process (bench/bench_build.py): keyword index {k['keyword_index']['wall_s']:.1f} s, "
                         f"model load {k['model_load']['wall_s']:.1f} s, embeddings {k['embed']['wall_s']:.1f} s "
                         f"({k['embed']['cpu_s']:.1f} s CPU)")
        rows.append((f"index build in the refresher child ({papers:,} papers, keyword and concept)", "< 60 s",
                     measured, f"{b['build_and_save_s'] / 60:.0%} of target {verdict(b['build_and_save_s'] < 60)}"))
    else:
        rows.append((f"index build in the refresher child ({papers:,} papers, keyword and concept)", "< 60 s",
                     b.get("error", "not measured"), verdict(False)))
    concepts = r.get("concepts", {})
    if not any(kind in concepts for kind in CONCEPT_KINDS):
        first = concepts.get("first_query", {})
        rows.append(("concept queries", "median < 10 ms, p99 < 30 ms, server side",
                     f"not measured: answered {first.get('status')} {first.get('body', '')!s}"[:300], verdict(False)))
        return rows
    for kind, label in CONCEPT_LABELS.items():
        for phase, how in (("one", "one at a time"), ("load", f"{concepts[kind]['load']['connections']} connections")):
            d = concepts[kind][phase]
            rows.append(latency_row(f"a new {label} every request, {how}", d, d["answered"]))
    return rows


def render_report(r: dict) -> str:
    """The results table (path, target, measured, ratio and verdict) and the environment, as markdown."""
    rows = []
    hit, bare, cond = r["cache_hit"], r["bare"], r["not_modified"]
    ratio = hit["req_per_s"] / bare["req_per_s"]
    rows.append(("repeated `/feed?q=pretraining` (rendered-feed cache hit)", "≥ 80% of a bare Flask app",
                 f"{hit['req_per_s']:,.0f} req/s (rounds: {rounds(hit)}); bare Flask {bare['req_per_s']:,.0f} req/s "
                 f"(rounds: {rounds(bare)})",
                 f"{ratio:.0%} {verdict(ratio >= 0.8)}"))
    ratio_304 = cond["req_per_s"] / hit["req_per_s"]
    rows.append(("conditional request answered 304", "≥ the cache-hit throughput",
                 f"{cond['req_per_s']:,.0f} req/s (rounds: {rounds(cond)})",
                 f"{ratio_304:.2f}× {verdict(ratio_304 >= 1)}"))
    under_load = f"{r['distinct_load']['connections']} connections"
    for key, label in (("distinct_one", "one at a time"), ("distinct_load", under_load)):
        d = r[key]
        rows.append(latency_row(f"a new distinct query every request, {label} (filter {r['papers']:,} papers, "
                                f"render 50 entries)", d, d["distinct_q"]))
    rows += concept_rows(r)
    s = r["restart"]
    started_ok = s["first_feed_s"] is not None and s["first_feed_s"] <= 2 and s["upstream_attempts"] == 0
    first = f"{s['first_feed_s']:.2f} s" if s["first_feed_s"] is not None else "never (60 s)"
    rows.append(("start with a saved snapshot", "first feed within 2 s of process start, no upstream request",
                 f"first feed after {first} (both workers: {s['all_workers_s']:.2f} s); "
                 f"{s['upstream_attempts']} upstream requests",
                 f"{(s['first_feed_s'] or 60) / 2:.1f}× target {verdict(started_ok)}"))
    loaded, after = r["rss_loaded_mb"], r["rss_after_distinct_mb"]
    rows.append(("memory: a worker holding the index", "< 150 MB RSS", f"workers {mb(loaded)}",
                 f"{max(loaded.values()) / 150:.0%} of target {verdict(max(loaded.values()) < 150)}"))
    rows.append((f"memory: after {r['distinct_total']:,} distinct queries (shared by the 2 workers)", "< 200 MB RSS",
                 f"workers {mb(after)}",
                 f"{max(after.values()) / 200:.0%} of target {verdict(max(after.values()) < 200)}"))
    if r.get("rss_after_concepts_mb"):
        c, before = r["rss_after_concepts_mb"], r["rss_after_distinct_mb"]
        answered = sum(r["concepts"][kind][phase]["answered"] for kind in CONCEPT_KINDS if kind in r["concepts"]
                       for phase in ("one", "load"))
        first = r["concepts"].get("rss_after_first_query_mb")
        rows.append((f"memory: after {answered:,} concept, hybrid and similar= queries (model loaded)",
                     "< 200 MB RSS", f"workers {mb(c)}; before them {mb(before)}"
                     + (f", after the first (one worker loaded the model) {mb(first)}" if first else ""),
                     f"{max(c.values()) / 200:.0%} of target {verdict(max(c.values()) < 200)}"))
    rows.append(("upstream, steady state (default 900 s refresh)", "no request between refreshes",
                 f"{r['steady_upstream_requests']} requests in {r['steady_seconds']:.0f} s of load"
                 + (f" ({r['steady_refreshes_due']} refresh due in that time: one request each)"
                    if r.get("steady_refreshes_due") else ""),
                 verdict(r["steady_upstream_requests"] <= r.get("steady_refreshes_due", 0))))
    if "refresh" in r:
        f = r["refresh"]
        ok = f["requests"] == 1 and f["conditional"] == 1 and f["answered_304"] == 1
        rows.append((f"upstream, one refresh (FEEDPROXY_REFRESH_SECONDS={f['interval_s']})",
                     "one listing request per interval, conditional, answered 304",
                     f"{f['requests']} request{'' if f['requests'] == 1 else 's'}{pages(f['pages'])}: "
                     f"{f['conditional']} conditional, "
                     f"{f['answered_304']} answered 304",
                     verdict(ok)))
    if "query_bench" in r:
        q = r["query_bench"]
        ok = q["worst_median_ms"] < 2 and q["worst_p99_ms"] < 2
        rows.append((f"in-process 3-term query over {q['papers']} papers (bench/bench_query.py)",
                     "median and p99 < 2 ms",
                     f"worst of {len(q['rows'])} queries: median {q['worst_median_ms']:.2f} ms, "
                     f"p99 {q['worst_p99_ms']:.2f} ms", verdict(ok)))

    e = r["environment"]
    lines = ["| path | target | measured | ratio / verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {v} |" for a, b, c, v in rows]
    lines += [
        "",
        f"Measured by `make bench` (bench/run.py) at commit {e['code']}, on {e['cpu']}, {e['cores']} cores, "
        f"Linux {e['kernel']}; "
        f"Python {e['python']}, gunicorn {e['gunicorn']}, Flask {e['flask']}, wrk {e['wrk']}. "
        f"Load average (1, 5, 15 min) {e['load_average_at_start']} at start, {r['load_average_at_end']} at end; "
        f"wrk runs on the same 2 cores as the server.",
        f"Corpus: {r['corpus']} ({r['papers']:,} papers in the window); gunicorn: 2 workers × "
        f"{r['workers']}, cold start from the fake upstream "
        f"{r['cold_start_s']:.1f} s ({r['cold_start_upstream_requests']} requests). Load: {r['wrk']}, "
        f"Accept-Encoding: gzip ({hit['server']['cache'].get('hit', 0):,} of "
        f"{hit['server']['requests']:,} logged requests were cache hits; "
        f"the feed is {r['feed_bytes']:,} bytes gzipped). "
        f"Server-side times are the `ms=` of the app's access-log lines. New queries are 3 of the "
        f"{r['words']} words of real titles that most papers mention; {r['entries']['full_pages']} of a sample of "
        f"{r['entries']['sample']} rendered a full page of 50 entries (median {r['entries']['median']:.0f}).",
    ]
    concepts = r.get("concepts", {})
    if any(kind in concepts for kind in CONCEPT_KINDS):
        full = ", ".join(f"{kind} {concepts[kind]['entries']['full_pages']} of {concepts[kind]['entries']['sample']}"
                         for kind in CONCEPT_KINDS)
        lines.append(
            f"Concept queries: the same title words 3 at a time (another seed), as one concept (`match=concept`) "
            f"or keyword OR concept (`match=hybrid`), and `similar=` the ids of random papers, each query string "
            f"sent once; full pages of 50 entries in samples: {full}. The first concept query a worker answers "
            f"loads the model (timed before the runs: {concepts['first_query']['client_ms']:.0f} ms client side); "
            f"the other worker's first is among the measured ones.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
