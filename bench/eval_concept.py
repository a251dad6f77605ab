"""Does concept search find what keyword search misses? Precision and recall on the relevance set.

Usage: python bench/eval_concept.py

Reads tests/fixtures/relevance (judged papers plus 400 random distractors; see its README), so
it needs no corpus and gives the same numbers on every machine. For each topic it compares, on
the judged papers only:

- substring: the topic's query keyword as a case-insensitive substring of title, abstract and
  keywords (what a naive filter does);
- feedproxy: the same keyword through feedproxy's own query matcher (stems, hyphens), as a
  quoted phrase; skipped if that API has moved;
- cosine >= T: ConceptIndex similarity of the topic's concept sentence, one raw cut-off T for
  all topics, chosen to maximise the mean F1 over topics;
- z >= Z: the same similarity standardised per query against the 400 random distractors (a
  stand-in for a whole snapshot), Z = DEFAULT_MIN_ZSCORE.

Precision and recall here are over a set built to be hard (about half the judged papers are
relevant, and the rest are near misses), not over the corpus: bench/bench_concept.py counts how
many corpus papers each method returns. AP is the average precision of ranking the judged
papers by similarity (1.0: every relevant paper above every other), for the float32 embeddings
and for their sign bits (the binarised form wordllama offers), compared by Hamming similarity.
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from feedproxy.search.concepts import DEFAULT_MIN_ZSCORE, ConceptIndex, load_model  # noqa: E402

RELEVANCE = REPO / "tests" / "fixtures" / "relevance"
COSINE_GRID = np.round(np.arange(0.10, 0.70, 0.01), 2)


def paper_text(item: dict) -> str:
    """Title, abstract and keywords: what the concept index embeds for a paper."""
    paper = item["paper"]
    return "\n".join([paper["title"], paper["summary"], ", ".join(paper.get("ai_keywords") or [])])


def precision_recall(found: set[str], relevant: list[str], not_relevant: list[str]) -> tuple[float, float, float]:
    true = len(found & set(relevant))
    false = len(found & set(not_relevant))
    precision = true / (true + false) if true + false else 0.0
    recall = true / len(relevant)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def average_precision(scores: dict[str, float], relevant: list[str], not_relevant: list[str]) -> float:
    ranked = sorted(relevant + not_relevant, key=lambda pid: -scores[pid])
    hits, total = 0, 0.0
    for rank, pid in enumerate(ranked, start=1):
        if pid in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def feedproxy_matches(items: list[dict], query: str) -> set[str] | None:
    """Papers the service's own matcher finds for the quoted query, or None if its API moved."""
    try:
        from feedproxy.index import PaperIndex
        from feedproxy.papers import paper_from_item
        from feedproxy.query import parse_query
        index = PaperIndex([paper_from_item(item) for item in items])
        return {paper.id for paper in index.search(parse_query(f'"{query}"'), limit=len(items))}
    except (ImportError, AttributeError, TypeError):
        return None


def binary_similarity(embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """1 - Hamming distance / bits, over the signs of the embeddings (wordllama's binary form)."""
    bits = np.packbits(embeddings > 0, axis=1).view(np.uint64)
    query_bits = np.packbits(query > 0).view(np.uint64)
    distance = np.bitwise_count(bits ^ query_bits).sum(axis=1)
    return 1.0 - distance / embeddings.shape[1]


def main() -> int:
    items = json.loads(gzip.decompress((RELEVANCE / "papers.json.gz").read_bytes()))
    judgements = json.loads((RELEVANCE / "judgements.json").read_text(encoding="utf-8"))
    ids = [item["paper"]["id"] for item in items]
    texts = [paper_text(item) for item in items]
    judged = {pid for topic in judgements.values() for label in ("relevant", "not_relevant") for pid in topic[label]}
    distractors = np.array([pid not in judged for pid in ids])

    model = load_model()
    index = ConceptIndex.build(texts, model)
    topics = {}
    for name, topic in judgements.items():
        scores = index.similarity(topic["concept"])
        sample = scores[distractors]
        binary = binary_similarity(index.embeddings, model.embed([topic["concept"]])[0])
        topics[name] = {
            "cosine": dict(zip(ids, scores.tolist())),
            "z": dict(zip(ids, ((scores - sample.mean()) / sample.std()).tolist())),
            "binary": dict(zip(ids, binary.tolist())),
            "substring": {pid for pid, text in zip(ids, texts) if topic["query"].lower() in text.lower()},
            "feedproxy": feedproxy_matches(items, topic["query"]),
        }

    def above(name: str, kind: str, cut: float) -> set[str]:
        return {pid for pid, score in topics[name][kind].items() if score >= cut}

    def mean_f1(cut: float, names: list[str]) -> float:
        return statistics.mean(precision_recall(above(name, "cosine", cut), judgements[name]["relevant"],
                                                judgements[name]["not_relevant"])[2] for name in names)

    names = list(judgements)
    best = max(COSINE_GRID, key=lambda cut: mean_f1(cut, names))
    # Leave one topic out: the cut-off a topic gets when chosen on the other five.
    held_out = {name: max(COSINE_GRID, key=lambda cut: mean_f1(cut, [n for n in names if n != name]))
                for name in names}

    columns = ["substring", "feedproxy", f"cosine>={best:.2f}", f"z>={DEFAULT_MIN_ZSCORE}"]
    print(f"Precision / recall on the judged papers ({len(judged)} judged, "
          f"{int(distractors.sum())} distractors). cosine cut-off chosen on all six topics; "
          "in brackets, chosen on the other five.\n")
    print("| topic (query) | relevant / not | " + " | ".join(columns) + " | AP float32 | AP binary |")
    print("|---|---|" + "---|" * (len(columns) + 2))
    for name in names:
        topic, found = judgements[name], topics[name]
        rel, non = topic["relevant"], topic["not_relevant"]
        cells = []
        for kind, matches in (("substring", found["substring"]), ("feedproxy", found["feedproxy"]),
                              ("cosine", above(name, "cosine", best)),
                              ("z", above(name, "z", DEFAULT_MIN_ZSCORE))):
            if matches is None:
                cells.append("n/a")
                continue
            precision, recall, _ = precision_recall(matches, rel, non)
            cell = f"{precision:.2f} / {recall:.2f}"
            if kind == "cosine":
                p, r, _ = precision_recall(above(name, "cosine", held_out[name]), rel, non)
                cell += f" ({p:.2f} / {r:.2f} at {held_out[name]:.2f})"
            cells.append(cell)
        ap = average_precision(found["cosine"], rel, non)
        ap_binary = average_precision(found["binary"], rel, non)
        print(f"| {name} (`{topic['query']}`) | {len(rel)} / {len(non)} | " + " | ".join(cells)
              + f" | {ap:.2f} | {ap_binary:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
