"""Time the search index build in-process, as the refresher child builds it, in its parts.

Usage: python bench/bench_build.py [CORPUS_PATH]

The corpus's distinct valid papers (as the store keeps them) are indexed as
feedproxy.search.index.PaperIndex does: the keyword index (PaperIndex with
concepts=False), loading the WordLlama model (search.concepts.shared_model,
once per process) and embedding every paper's concept_text (ConceptIndex.build).
Prints one JSON object: seconds (wall and CPU) and RSS growth of each part.
bench/run.py runs it after the server is stopped; bench/bench_concept.py
measures the concept index alone in more detail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from feedproxy.errors import InvalidItem  # noqa: E402
from feedproxy.search.concepts import ConceptIndex, shared_model  # noqa: E402
from feedproxy.search.index import PaperIndex, concept_text  # noqa: E402
from feedproxy.upstream.papers import paper_from_item  # noqa: E402


def timed(function, *args, **kwargs) -> tuple[object, dict]:
    """The call's result, and its wall and CPU seconds and growth of this process's RSS in MB."""
    rss, wall, cpu = harness.rss_mb("self"), time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                    "rss_growth_mb": harness.rss_mb("self") - rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=harness.DEFAULT_CORPUS)
    args = parser.parse_args(argv)
    items, _ = harness.load_corpus(args.corpus)
    papers = {}
    for item in items:
        try:
            paper = paper_from_item(item)
        except InvalidItem:
            continue
        papers.setdefault(paper.id, paper)
    _, keyword = timed(PaperIndex, papers.values(), concepts=False)
    model, load = timed(shared_model)
    index, embed = timed(ConceptIndex.build, [concept_text(p) for p in papers.values()], model)
    print(json.dumps({"papers": len(papers), "keyword_index": keyword, "model_load": load, "embed": embed,
                      "embeddings_mb": index.nbytes / 1e6, "model": model.fingerprint}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
