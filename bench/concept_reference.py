"""Write feedproxy/search/concept_reference.npz: how paper embeddings spread, for small indexes.

Usage: python bench/concept_reference.py [CORPUS]   (default ../shared/fixtures/daily_papers_corpus.json.gz)

A concept match is a paper whose similarity to the query stands DEFAULT_MIN_ZSCORE standard
deviations above the mean (search.concepts). Over thousands of papers the index's own mean and
spread are the right yardstick, and the cut-off was calibrated that way. Over a handful (a blog,
a day's arXiv listing, a url= feed) they are noise: with n papers no paper can stand more than
sqrt(n - 1) deviations above the mean, so a 5-paper feed could never match. Such an index measures
against the corpus instead: for a query vector q, the mean similarity of the corpus's papers is
q . mean and its variance q' C q (C the papers' covariance), exactly what the index computes over
the corpus's own rows. This script embeds the corpus and saves the mean, C and the model's
fingerprint (a different model makes the file unusable, and the index then uses its own papers).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from feedproxy.search.concepts import REFERENCE_FILE, ConceptIndex, shared_model  # noqa: E402
from feedproxy.search.index import concept_text  # noqa: E402
from feedproxy.upstream.papers import paper_from_item  # noqa: E402


def main() -> None:
    corpus = Path(sys.argv[1] if len(sys.argv) > 1 else REPO.parent / "shared" / "fixtures" / "daily_papers_corpus.json.gz")
    items = json.loads(gzip.decompress(corpus.read_bytes()))
    papers = {}
    for item in items:
        paper = paper_from_item(item)
        papers.setdefault(paper.id, paper)
    model = shared_model()
    embeddings = ConceptIndex.build([concept_text(p) for p in papers.values()], model).embeddings.astype(np.float64)
    mean = embeddings.mean(axis=0)
    covariance = np.cov(embeddings, rowvar=False, bias=True)  # over the papers, as np.std is
    with open(REFERENCE_FILE, "wb") as out:
        np.savez(out, mean=mean.astype(np.float32), covariance=covariance.astype(np.float32),
                 fingerprint=np.array(model.fingerprint), papers=np.array(len(papers)))
    print(f"{REFERENCE_FILE}: {len(papers):,} papers of {corpus.name}, model {model.fingerprint}")


if __name__ == "__main__":
    main()
