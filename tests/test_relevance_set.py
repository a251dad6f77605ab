"""The labelled relevance set for concept search is well-formed: tests/fixtures/relevance."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

RELEVANCE = Path(__file__).parent / "fixtures" / "relevance"
JUDGEMENTS = json.loads((RELEVANCE / "judgements.json").read_text(encoding="utf-8"))
ITEMS = json.loads(gzip.decompress((RELEVANCE / "papers.json.gz").read_bytes()))
PAPER_IDS = [item["paper"]["id"] for item in ITEMS]


def test_there_are_at_least_six_topics():
    assert len(JUDGEMENTS) >= 6


@pytest.mark.parametrize("topic", sorted(JUDGEMENTS))
def test_a_topic_has_a_query_a_concept_and_enough_judgements(topic):
    judged = JUDGEMENTS[topic]
    assert set(judged) == {"query", "concept", "relevant", "not_relevant"}
    assert judged["query"].strip() and judged["concept"].strip()
    assert len(judged["relevant"]) >= 15 and len(judged["not_relevant"]) >= 15


@pytest.mark.parametrize("topic", sorted(JUDGEMENTS))
def test_every_judged_paper_is_shipped_once_and_judged_once(topic):
    relevant, not_relevant = JUDGEMENTS[topic]["relevant"], JUDGEMENTS[topic]["not_relevant"]
    assert len(set(relevant)) == len(relevant) and len(set(not_relevant)) == len(not_relevant)
    assert not set(relevant) & set(not_relevant)
    assert set(relevant) | set(not_relevant) <= set(PAPER_IDS)


@pytest.mark.parametrize("topic", sorted(JUDGEMENTS))
def test_hard_cases_are_there_both_ways(topic):
    """Some relevant papers never use the query keyword; some papers that use it are not relevant."""
    keyword = JUDGEMENTS[topic]["query"].lower()
    text = {item["paper"]["id"]: f"{item['paper']['title']} {item['paper']['summary']}".lower() for item in ITEMS}
    assert any(keyword not in text[pid] for pid in JUDGEMENTS[topic]["relevant"])
    assert any(keyword in text[pid] for pid in JUDGEMENTS[topic]["not_relevant"])


def test_the_papers_are_unchanged_api_items_with_distractors():
    assert len(set(PAPER_IDS)) == len(PAPER_IDS)
    judged = {pid for topic in JUDGEMENTS.values() for label in ("relevant", "not_relevant") for pid in topic[label]}
    assert len(set(PAPER_IDS) - judged) >= 300  # unjudged distractors, so a snapshot-sized spread exists
    for item in ITEMS:
        assert {"paper", "publishedAt", "title"} <= set(item)
        assert {"id", "title", "summary", "authors", "upvotes"} <= set(item["paper"])
    assert (RELEVANCE / "papers.json.gz").stat().st_size < 1_100_000
