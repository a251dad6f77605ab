"""Measure the concept index on the benchmark corpus: build time, query latency, memory, matches.

Usage: python bench/bench_concept.py [CORPUS_PATH] [--runs N]

CORPUS_PATH is a gzipped JSON list of Daily Papers API items; it defaults to the shared
9,877-paper corpus beside the repository (it is not in the repository, so there is no fallback).
Prints markdown tables: model load, index build (best and median of N runs, wall and CPU time),
query latency (median and p99 over the relevance topics' concept sentences and 200 paper titles),
the size of the embeddings in memory and on disk, and, per relevance topic, how many corpus
papers a keyword substring match and the concept cut-off (z >= DEFAULT_MIN_ZSCORE) return.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from feedproxy.search.concepts import DEFAULT_MIN_ZSCORE, ConceptIndex, load_model  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "fixtures" / "daily_papers_corpus.json.gz"
JUDGEMENTS = REPO / "tests" / "fixtures" / "relevance" / "judgements.json"
TITLE_QUERIES = 200
REPEATS = 5  # each query is timed this many times


def paper_text(item: dict) -> str:
    """Title, abstract and keywords: what the concept index embeds for a paper."""
    paper = item["paper"]
    return "\n".join([paper["title"], paper["summary"], ", ".join(paper.get("ai_keywords") or [])])


def rss_mb() -> float:
    """This process's resident memory, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(function, *args):
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--runs", type=int, default=3, help="index builds to time")
    args = parser.parse_args(argv)

    items = json.loads(gzip.decompress(args.corpus.read_bytes()))
    texts = [paper_text(item) for item in items]
    judgements = json.loads(JUDGEMENTS.read_text(encoding="utf-8"))

    before = rss_mb()
    model, load_wall, load_cpu = timed(load_model)
    model_rss = rss_mb() - before

    builds = [timed(ConceptIndex.build, texts, model) for _ in range(args.runs)]
    index = builds[0][0]

    rng = random.Random(5)
    queries = [topic["concept"] for topic in judgements.values()]
    queries += [item["paper"]["title"] for item in rng.sample(items, TITLE_QUERIES)]
    rows = rng.sample(range(len(items)), TITLE_QUERIES)
    latency = {"nearest(k=20)": [], "zscores (all rows)": [], "embed query only": [], "similar_to(k=20)": []}
    for _ in range(REPEATS):
        for query in queries:
            latency["nearest(k=20)"].append(timed(index.nearest, query, 20)[1])
            latency["zscores (all rows)"].append(timed(index.zscores, query)[1])
            latency["embed query only"].append(timed(model.embed, [query])[1])
        for row in rows:
            latency["similar_to(k=20)"].append(timed(index.similar_to, row, 20)[1])

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "concepts.npz"
        index.save(path)
        saved_bytes = path.stat().st_size
        _, load_index_wall, _ = timed(ConceptIndex.load, path, model)
    pickled_bytes = len(pickle.dumps(index))
    binary_bytes = np.packbits(index.embeddings > 0, axis=1).nbytes

    print(f"Concept index on {len(items):,} papers ({args.corpus.name}), wordllama model "
          f"{model.fingerprint}, {args.runs} builds\n")
    print("| what | value |")
    print("|---|---|")
    print(f"| load model (import + 16 MB weights + fingerprint) | {load_wall * 1000:.0f} ms wall, "
          f"{load_cpu * 1000:.0f} ms CPU, +{model_rss:.0f} MB RSS |")
    walls = [wall for _, wall, _ in builds]
    cpus = [cpu for _, _, cpu in builds]
    print(f"| build index (embed {len(texts):,} texts) | best {min(walls):.2f} s, median "
          f"{statistics.median(walls):.2f} s wall; median {statistics.median(cpus):.2f} s CPU |")
    for name, values in latency.items():
        print(f"| {name} | median {statistics.median(values) * 1000:.2f} ms, "
              f"p99 {percentile(values, 0.99) * 1000:.2f} ms ({len(values)} calls) |")
    print(f"| embeddings in memory (float32, {index.embeddings.shape[1]} dims) | "
          f"{index.nbytes / 1e6:.1f} MB ({index.nbytes // len(index):,} B per paper) |")
    print(f"| same as sign bits (wordllama's binary form) | {binary_bytes / 1e6:.2f} MB |")
    print(f"| saved .npz / pickle | {saved_bytes / 1e6:.1f} MB / {pickled_bytes / 1e6:.1f} MB; "
          f"load .npz {load_index_wall * 1000:.0f} ms |")

    print(f"\nCorpus papers returned per relevance topic: keyword substring vs concept "
          f"z >= {DEFAULT_MIN_ZSCORE} (recall: of the topic's judged relevant papers)\n")
    print("| topic | substring: papers (recall) | concept: papers (recall) | both |")
    print("|---|---|---|---|")
    row_of = {item["paper"]["id"]: row for row, item in enumerate(items)}
    for name, topic in judgements.items():
        keyword = topic["query"].lower()
        substring = {row for row, text in enumerate(texts) if keyword in text.lower()}
        concept = set(np.flatnonzero(index.zscores(topic["concept"]) >= DEFAULT_MIN_ZSCORE).tolist())
        relevant = {row_of[pid] for pid in topic["relevant"]}
        print(f"| {name} | {len(substring)} ({len(substring & relevant) / len(relevant):.2f}) | "
              f"{len(concept)} ({len(concept & relevant) / len(relevant):.2f}) | {len(substring & concept)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
