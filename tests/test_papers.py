"""Paper model: every real item converts; bad items are refused with a reason."""

import pytest

from feedproxy.errors import InvalidItem
from feedproxy.upstream.papers import clean_text, paper_from_item, parse_timestamp, strip_xml_forbidden

from .conftest import all_items, load_items


def test_every_real_item_becomes_a_paper():
    papers = [paper_from_item(item) for item in all_items()]
    assert len(papers) == 40
    assert len({p.id for p in papers}) == 40
    for paper in papers:
        assert paper.title and "\n" not in paper.title and "  " not in paper.title
        assert "\n" not in paper.abstract
        assert paper.published.tzinfo is not None


def test_old_schema_hard_line_breaks_are_folded_and_mediaurl_is_the_thumbnail():
    item = next(i for i in load_items("2024-05-27") if i["paper"]["id"] == "2405.15738")
    assert "Multimodal\n  Models" in item["paper"]["title"]
    paper = paper_from_item(item)
    assert paper.title == "ConvLLaVA: Hierarchical Backbones as Visual Encoder for Large Multimodal Models"
    assert paper.abstract.startswith("High-resolution Large Multimodal Models (LMMs) encounter the challenges of excessive")
    assert paper.thumbnail == item.get("mediaUrl") or paper.thumbnail == item.get("thumbnail")
    assert paper.thumbnail is not None


def test_current_schema_fields():
    item = next(i for i in load_items("2026-08-21") if i["paper"]["id"] == "2608.19880")
    paper = paper_from_item(item)
    assert paper.upvotes == 163
    assert paper.comments == 1
    assert paper.github_repo == "https://github.com/google-research/envharness"
    assert paper.project_page == "https://envharness.com/"
    assert "reinforcement learning" in paper.ai_keywords
    assert paper.authors[0] == "Chengsong Huang" and len(paper.authors) == 17
    assert paper.url == "https://huggingface.co/papers/2608.19880"
    assert paper.arxiv_url == "https://arxiv.org/abs/2608.19880"
    assert paper.organization == "Google"


def test_minimal_item_needs_only_id_title_and_a_date():
    paper = paper_from_item({"paper": {"id": "2401.00001", "title": "T"}, "publishedAt": "2024-01-02T03:04:05Z"})
    assert (paper.id, paper.title, paper.abstract, paper.authors, paper.upvotes) == ("2401.00001", "T", "", (), 0)


@pytest.mark.parametrize(
    "item, reason",
    [
        ([], "not an object"),
        ({"title": "x"}, "no 'paper' object"),
        ({"paper": {"title": "x"}, "publishedAt": "2024-01-01T00:00:00Z"}, "no valid paper.id"),
        ({"paper": {"id": "../../etc", "title": "x"}, "publishedAt": "2024-01-01T00:00:00Z"}, "no valid paper.id"),
        ({"paper": {"id": 2401.1, "title": "x"}, "publishedAt": "2024-01-01T00:00:00Z"}, "no valid paper.id"),
        ({"paper": {"id": "2401.00001", "title": " \x00 "}, "publishedAt": "2024-01-01T00:00:00Z"}, "no title"),
        ({"paper": {"id": "2401.00001", "title": "x"}, "publishedAt": "yesterday"}, "no valid publishedAt"),
    ],
)
def test_invalid_items_are_refused_with_a_reason(item, reason):
    with pytest.raises(InvalidItem, match=reason):
        paper_from_item(item)


def test_wrongly_typed_optional_fields_are_ignored():
    paper = paper_from_item({
        "paper": {"id": "2401.00001", "title": "T", "authors": "nobody", "upvotes": "many",
                  "ai_keywords": [1, None, "kw"], "githubRepo": "javascript:alert(1)"},
        "publishedAt": "2024-01-02T03:04:05Z", "numComments": True, "thumbnail": 7,
    })
    assert paper.authors == () and paper.upvotes == 0 and paper.comments == 0
    assert paper.ai_keywords == ("kw",) and paper.github_repo is None and paper.thumbnail is None


def test_xml_forbidden_characters_are_stripped():
    assert strip_xml_forbidden("a\x00b\x0bc\ud800d\ufffee\tf\ng") == "abcde\tf\ng"
    assert clean_text("  Deep\x1b[31m \n\n  Learning\x7f ") == "Deep[31m Learning\x7f"


def test_timestamps_are_utc():
    assert parse_timestamp("2024-05-27T07:54:25.329Z").isoformat() == "2024-05-27T07:54:25.329000+00:00"
    assert parse_timestamp("2024-05-27T09:00:00+02:00").hour == 7
    assert parse_timestamp("2024-05-27").tzinfo is not None
    assert parse_timestamp(None) is None and parse_timestamp("") is None and parse_timestamp(5) is None
