"""Measure how fast the search index builds and answers, and how much memory it holds.

Usage: python bench/bench_query.py [CORPUS_PATH]

CORPUS_PATH is a gzipped JSON list of Daily Papers API items; it defaults to
the shared 9,877-paper corpus next to the repository. Without it, a synthetic
corpus of the same size and shape is generated from a fixed seed (and the
output says so). Prints a markdown report: build time, index memory
(tracemalloc), and per-request median and p99 of parse + search.
"""

from __future__ import annotations

import gc
import gzip
import json
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from feedproxy.search.index import PaperIndex  # noqa: E402
from feedproxy.errors import InvalidItem  # noqa: E402
from feedproxy.upstream.papers import paper_from_item  # noqa: E402
from feedproxy.search.query import parse_query  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "fixtures" / "daily_papers_corpus.json.gz"
CORPUS_SIZE = 9_877
REPETITIONS = 300

# (query, shape, sort): the 3-term queries are the target (< 2 ms each).
QUERIES = [
    ("large language model", "3 terms", "date"),
    ("video diffusion generation", "3 terms", "date"),
    ("reinforcement learning reasoning", "3 terms", "date"),
    ("multimodal benchmark evaluation", "3 terms", "date"),
    ("pretraining data scaling", "3 terms", "date"),
    ("agent tool use", "3 terms", "date"),
    ("gaussian splatting rendering", "3 terms", "date"),
    ("speech recognition robustness", "3 terms", "date"),
    ("pretraining", "1 term", "date"),
    ("model", "1 term (most common)", "date"),
    ('"language model"', "phrase", "date"),
    ('"reinforcement learning" agent', "phrase + term", "date"),
    ("diffusion OR flow", "OR", "date"),
    ("(diffusion | flow) video -survey", "group + NOT", "date"),
    ("agent -survey -benchmark", "negation", "date"),
    ("title:agent author:wang", "fields", "date"),
    ("large language model", "3 terms", "upvotes"),
    ("large language model", "3 terms", "relevance"),
    ("video diffusion generation", "3 terms", "relevance"),
    ("pretraining", "1 term", "relevance"),
    ('"language model"', "phrase", "upvotes"),
    ('"language model"', "phrase", "relevance"),
    ("", "empty (all papers)", "date"),
]


def load_items(path: Path) -> list[object]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return json.load(file)


def synthetic_items(count: int = CORPUS_SIZE, seed: int = 3) -> list[dict]:
    """Return ``count`` API items with Zipf-like text, newest first, from a fixed seed."""
    rng = random.Random(seed)
    topical = (
        "model models language large learning data training pretraining pre-training fine-tuning "
        "diffusion video generation image agent agents reasoning reinforcement benchmark evaluation "
        "multimodal vision-language scaling tool use gaussian splatting rendering speech recognition "
        "robustness flow policy survey transformer attention token tokens dataset performance method"
    ).split()
    filler = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 11))) for _ in range(40_000)
    ]
    vocabulary = topical + filler
    weights = [1 / (rank + 1) ** 1.05 for rank in range(len(vocabulary))]
    surnames = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)).title() for _ in range(20_000)]
    surnames[:5] = ["Wang", "Li", "Zhang", "Chen", "Liu"]
    name_weights = [1 / (rank + 1) ** 0.8 for rank in range(len(surnames))]

    def words(n: int) -> str:
        return " ".join(rng.choices(vocabulary, weights, k=n))

    start = datetime(2026, 8, 20, tzinfo=timezone.utc)
    items = []
    for number in range(count):
        published = start - timedelta(minutes=117 * number)
        authors = [
            {"name": f"{rng.choice(surnames)} {rng.choices(surnames, name_weights)[0]}"} for _ in range(rng.randint(2, 12))
        ]
        paper = {
            "id": f"{published:%y%m}.{number:05d}",
            "title": words(rng.randint(6, 14)).title(),
            "summary": words(rng.randint(120, 260)) + ".",
            "authors": authors,
            "upvotes": int(rng.paretovariate(1.3)) - 1,
            "ai_keywords": [words(rng.randint(1, 3)) for _ in range(rng.randint(0, 10))],
            "publishedAt": published.isoformat(),
        }
        items.append({"paper": paper, "publishedAt": published.isoformat(), "title": paper["title"]})
    return items


def papers_from(items: list[object]) -> list:
    papers = []
    for item in items:
        try:
            papers.append(paper_from_item(item))
        except InvalidItem:
            pass
    return papers


def worker_memory(papers: list) -> tuple[float, float, float]:
    """Return a fresh process's RSS in MB: with the papers, with the index, and its peak over a rebuild.

    A fresh process, because this one has parsed the whole corpus as JSON at
    once, which a worker never does, and Python keeps the freed arenas.
    """
    with tempfile.NamedTemporaryFile(suffix=".pickle") as file:
        pickle.dump(papers, file)
        file.flush()
        result = subprocess.run(
            [sys.executable, __file__, "--worker-rss", file.name], capture_output=True, text=True, check=True
        )
    papers_mb, index_mb, peak_mb = map(float, result.stdout.split())
    return papers_mb, index_mb, peak_mb


def _report_worker_rss(pickle_path: str) -> None:
    """Run in the child process: a worker holding papers and an index, then rebuilding it."""
    import flask  # noqa: F401  (a worker has Flask loaded)

    with open(pickle_path, "rb") as file:
        papers = pickle.load(file)
    gc.collect()
    with_papers = _status_mb("VmRSS")
    index = PaperIndex(papers)
    index.search(parse_query("large language model"))
    with_index = _status_mb("VmRSS")
    index = PaperIndex(papers)  # the old index stays alive until the new one is built
    print(with_papers, with_index, _status_mb("VmHWM"))


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1e3
    return float("nan")


def time_query(index: PaperIndex, text: str, sort: str) -> tuple[float, float, int]:
    """Return the median and p99 milliseconds of parse + search, and the number of matches."""
    matches = len(index.search(parse_query(text), sort=sort, limit=len(index)))
    for _ in range(5):
        index.search(parse_query(text), sort=sort)
    samples = []
    for _ in range(REPETITIONS):
        began = time.perf_counter()
        index.search(parse_query(text), sort=sort)
        samples.append(time.perf_counter() - began)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return statistics.median(samples) * 1e3, p99 * 1e3, matches


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--worker-rss":
        _report_worker_rss(argv[2])
        return
    corpus = Path(argv[1]) if len(argv) > 1 else DEFAULT_CORPUS
    if corpus.exists():
        source = f"`{corpus}`"
        items = load_items(corpus)
    else:
        source = f"synthetic corpus, seed 3 ({corpus} not found)"
        items = synthetic_items()
    papers = papers_from(items)
    del items
    gc.collect()

    began = time.perf_counter()
    index = PaperIndex(papers)
    build_seconds = time.perf_counter() - began

    # A second build under tracemalloc, which slows allocation several times over.
    del index
    gc.collect()
    tracemalloc.start()
    index = PaperIndex(papers)
    index_bytes, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"# feedproxy search benchmark\n\nCorpus: {source}: {len(papers):,} papers.\n")
    print(f"Python {sys.version.split()[0]}; {REPETITIONS} repetitions a query; times are parse + search.\n")
    print("| measure | value |\n|---|---|")
    print(f"| index build | {build_seconds:.2f} s |")
    print(f"| index memory (tracemalloc, after build) | {index_bytes / 1e6:.1f} MB |")
    print(f"| build peak (tracemalloc) | {peak_bytes / 1e6:.1f} MB |")
    if Path("/proc/self/status").exists():
        papers_mb, index_mb, peak_mb = worker_memory(papers)
        print(f"| worker RSS (fresh process, Flask imported): papers loaded | {papers_mb:.0f} MB |")
        print(f"| worker RSS: papers + index | {index_mb:.0f} MB |")
        print(f"| worker RSS peak: rebuilding while the old index is held | {peak_mb:.0f} MB |")
    print()
    print("| query | shape | sort | matches | median ms | p99 ms |\n|---|---|---|---:|---:|---:|")
    for text, shape, sort in QUERIES:
        median, p99, matches = time_query(index, text, sort)
        cell = text.replace("|", "\\|")
        print(f"| `{cell}` | {shape} | {sort} | {matches:,} | {median:.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main(sys.argv)
