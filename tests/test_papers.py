"""Paper model: every real item converts; bad items are refused with a reason."""

import pytest

from feedproxy.errors import InvalidItem
from feedproxy.upstream.papers import clean_text, paper_from_item, parse_timestamp, strip_xml_forbidden

from .conftest import all_items, load_items, month_items


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
    assert (paper.organization_name, paper.organization_id) == ("google", "5e6aca39878b8b2bf9806447")
    assert paper.github_stars == 8
    assert paper.submitter == "taesiri"  # paper.submittedOnDailyBy.user
    assert paper.author_users == ()  # no author has claimed it


def test_every_item_of_the_month_fixture_keeps_the_fields_it_carries():
    papers = [paper_from_item(item) for item in month_items()]
    assert len(papers) == 30
    for item, paper in zip(month_items(), papers):
        inner, org = item["paper"], item.get("organization") or {}
        assert paper.organization_name == org.get("name", "")
        assert paper.organization_id == org.get("_id", "")
        assert paper.github_stars == inner.get("githubStars")
        assert paper.submitter == inner["submittedOnDailyBy"]["user"]
        assert paper.comments == item["numComments"]
    assert sum(bool(p.organization_name) for p in papers) == 22
    assert sum(p.github_stars is not None for p in papers) == 22


def test_author_user_names_are_kept_in_author_order_once_each():
    by_id = {i["paper"]["id"]: paper_from_item(i) for i in load_items("2024-05-27")}
    assert by_id["2405.15738"].author_users == ("ChunjiangGe", "SijieCheng", "bzheng")
    assert by_id["2405.14979"].author_users == ("wyysf", "XuelinChen", "lyxun")  # XuelinChen is listed twice
    assert by_id["2405.15738"].submitter == ""  # the 2024-05 schema names no submitter


def test_the_submitter_of_the_2024_schema_is_the_user_name_of_the_outer_submitted_by():
    # Items from 2024-06 to 2025-02 carry only the outer submittedBy, whose user name is "name" (its
    # "fullname" can be an email address). This one is real, with the newer paper.submittedOnDailyBy removed.
    item = next(i for i in load_items("2025-06-12") if i["paper"]["id"] == "2506.09113")
    assert item["submittedBy"]["fullname"] == "wujie10558@gmail.com"
    del item["paper"]["submittedOnDailyBy"]
    assert paper_from_item(item).submitter == "wujie10"


def test_stars_are_unknown_without_a_count_or_a_repository():
    by_id = {i["paper"]["id"]: paper_from_item(i) for i in load_items("2025-06-12") + load_items("2026-08-21")}
    assert by_id["2506.09003"].github_repo and by_id["2506.09003"].github_stars is None  # mid-2025: no githubStars
    assert by_id["2608.19861"].github_stars == 0  # a repository with no stars
    assert by_id["2608.13120"].github_repo is None and by_id["2608.13120"].github_stars is None
    assert by_id["2506.09113"].organization_name == "" and by_id["2506.09113"].organization == ""


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
                  "ai_keywords": [1, None, "kw"], "githubRepo": "javascript:alert(1)", "githubStars": 5,
                  "submittedOnDailyBy": {"user": "two words"}},
        "publishedAt": "2024-01-02T03:04:05Z", "numComments": True, "thumbnail": 7,
        "organization": {"_id": 5, "name": "<b>x</b>"}, "submittedBy": "someone",
    })
    assert paper.authors == () and paper.upvotes == 0 and paper.comments == 0
    assert paper.ai_keywords == ("kw",) and paper.github_repo is None and paper.thumbnail is None
    assert paper.github_stars is None  # stars without a repository are not kept
    assert (paper.organization_name, paper.organization_id, paper.submitter) == ("", "", "")


def test_user_names_in_authors_must_be_user_names():
    paper = paper_from_item({
        "paper": {"id": "2401.00001", "title": "T", "authors": [
            {"name": "A", "user": {"user": "ok-name_1.x"}}, {"name": "B", "user": {"user": "bad name"}},
            {"name": "C", "user": "c"}, {"name": "D", "user": {"name": "from-name"}}]},
        "publishedAt": "2024-01-02T03:04:05Z",
    })
    assert paper.authors == ("A", "B", "C", "D")
    assert paper.author_users == ("ok-name_1.x", "from-name")


def test_xml_forbidden_characters_are_stripped():
    assert strip_xml_forbidden("a\x00b\x0bc\ud800d\ufffee\tf\ng") == "abcde\tf\ng"
    assert clean_text("  Deep\x1b[31m \n\n  Learning\x7f ") == "Deep[31m Learning\x7f"


def test_timestamps_are_utc():
    assert parse_timestamp("2024-05-27T07:54:25.329Z").isoformat() == "2024-05-27T07:54:25.329000+00:00"
    assert parse_timestamp("2024-05-27T09:00:00+02:00").hour == 7
    assert parse_timestamp("2024-05-27").tzinfo is not None
    assert parse_timestamp(None) is None and parse_timestamp("") is None and parse_timestamp(5) is None


def test_sizes_no_paper_reaches_are_capped_at_parse_time(items):
    """(issue 17) 50,000 authors made rendering take 40 s (feedgen is quadratic in authors)."""
    from feedproxy.upstream.papers import MAX_AUTHORS, MAX_KEYWORDS, MAX_TEXT_CHARS, MAX_TITLE_CHARS

    item = dict(items[0], title="T" * 50_000, summary="a " * 50_000,
                paper=dict(items[0]["paper"], authors=[{"name": f"Author {n}"} for n in range(50_000)],
                           ai_keywords=[f"k{n}" for n in range(5_000)], ai_summary="s" * 50_000))
    paper = paper_from_item(item)
    assert len(paper.authors) == MAX_AUTHORS and paper.authors[0] == "Author 0"
    assert len(paper.ai_keywords) == MAX_KEYWORDS and len(paper.title) == MAX_TITLE_CHARS
    assert len(paper.abstract) <= MAX_TEXT_CHARS and len(paper.ai_summary) == MAX_TEXT_CHARS


def test_stripping_agrees_with_the_xml_rule_for_every_code_point(monkeypatch):
    """Printable text skips the regular expression: check no code point is printable yet forbidden,
    and that printable text never reaches the expression."""
    import sys

    from feedproxy.upstream import papers

    forbidden = papers._XML_FORBIDDEN
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert strip_xml_forbidden(every) == forbidden.sub("", every)
    assert not [c for c in every if c.isprintable() and forbidden.match(c)]

    class Refused:
        def sub(self, replacement, text):
            raise AssertionError("printable text went through the regular expression")

    monkeypatch.setattr(papers, "_XML_FORBIDDEN", Refused())
    assert strip_xml_forbidden("Pre-Trained Transformers, ∑ and 日本語") == "Pre-Trained Transformers, ∑ and 日本語"
