"""Digests (digest=daily|weekly): one entry per finished day or ISO week, stable ids, every format."""

import copy
from datetime import datetime, timezone

import feedparser
import jsonschema
import pytest
from lxml import html

from feedproxy.render.digest import group_digests, one_line_tldr, period_key
from feedproxy.upstream.papers import Paper

from .atomcheck import check_atom, entry_ids
from .test_formats import SCHEMA

ATOM_NS = "{http://www.w3.org/2005/Atom}"
BASE = "http://localhost/feed"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def paper(pid: str, published: str, **fields) -> Paper:
    return Paper(id=pid, title=f"Paper {pid}", published=at(published), **fields)


def new_item(items: list[dict], paper_id: str, title: str, published: str) -> dict:
    """A copy of a real item with another id, title and Daily Papers date."""
    item = copy.deepcopy(items[0])
    item["paper"]["id"] = paper_id
    item["title"] = item["paper"]["title"] = title
    item["publishedAt"] = published
    return item


@pytest.mark.parametrize("moment, daily, weekly", [
    ("2026-08-21T23:59:59", "2026-08-21", "2026-W34"),
    ("2026-08-17T00:00:00", "2026-08-17", "2026-W34"),  # a Monday starts the ISO week
    ("2026-08-16T23:59:59", "2026-08-16", "2026-W33"),
    ("2027-01-01T12:00:00", "2027-01-01", "2026-W53"),  # ISO years: early January can be last year's week
    ("2025-12-29T12:00:00", "2025-12-29", "2026-W01"),  # and late December next year's
])
def test_period_keys_are_utc_days_and_iso_weeks(moment, daily, weekly):
    assert period_key(at(moment), "daily") == daily
    assert period_key(at(moment), "weekly") == weekly


def test_only_finished_periods_newest_first_papers_in_the_order_given():
    papers = [paper("2608.00003", "2026-08-18T10:00:00"), paper("2608.00001", "2026-08-10T10:00:00"),
              paper("2608.00002", "2026-08-14T10:00:00"), paper("2607.00001", "2026-07-01T10:00:00")]
    digests = group_digests(papers, "weekly", newest=at("2026-08-18T10:00:00"))
    assert [d.key for d in digests] == ["2026-W33", "2026-W27"]  # W34 is still filling up
    assert [p.id for p in digests[0].papers] == ["2608.00001", "2608.00002"]  # as given, not re-sorted
    assert digests[0].updated == at("2026-08-14T10:00:00")  # the newest paper's date
    assert digests[0].label == "Week 2026-W33 (2026-08-10 to 2026-08-16)"
    assert group_digests(papers, "daily", None) == []


def test_one_line_tldr_is_the_ai_summary_or_the_abstracts_first_sentence():
    assert one_line_tldr(paper("1", "2026-08-18T10:00:00", ai_summary="Short.", abstract="A. B.")) == "Short."
    assert one_line_tldr(paper("1", "2026-08-18T10:00:00", abstract="First one. Second one.")) == "First one."
    long = one_line_tldr(paper("1", "2026-08-18T10:00:00", abstract="word " * 200))
    assert len(long) == 300 and long.endswith("…")


def weekly_atom(client, query: str = "limit=500&digest=weekly"):
    """The Atom feed of ``query`` (written in canonical order, so it is also the feed's rel=self)."""
    response = client.get("/feed?" + query)
    assert response.status_code == 200, response.text
    return check_atom(response.data, self_url=f"{BASE}?{query}" if query.strip("digest=") else BASE)


def test_a_weekly_digest_lists_each_finished_week_once_with_all_its_papers(client, items):
    root = weekly_atom(client)
    parsed = feedparser.parse(client.get("/feed?limit=500&digest=weekly").data)
    assert not parsed.bozo
    assert root.findtext(f"{ATOM_NS}title") == "Daily Papers · weekly digest"
    ids = entry_ids(root)
    weeks = sorted({period_key(at(i["publishedAt"][:19]), "weekly") for i in items}, reverse=True)
    assert weeks[0] == "2026-W34"  # the sample's newest week is not over: no entry for it yet
    assert ids == [f"{BASE}?limit=500&digest=weekly#digest-{week}" for week in weeks[1:]]
    listed = [a for e in parsed.entries for a in e.content[0].value.split('<a href="')[1:]]
    finished = [i for i in items if not i["publishedAt"].startswith(("2026-08-17", "2026-08-18", "2026-08-19",
                                                                     "2026-08-20", "2026-08-21"))]
    assert len(listed) == len(finished)  # every paper of a finished week, once
    first = parsed.entries[0]
    assert first.title == "Week 2026-W33 (2026-08-10 to 2026-08-16): 3 papers"
    assert first.updated == "2026-08-14T03:13:34+00:00"
    assert "· 12 upvotes<br" in first.content[0].value  # title and link, upvotes, then the TL;DR


def test_digest_ids_stay_and_a_finished_week_appears_when_the_next_one_starts(client, upstream, items, clock):
    before = entry_ids(weekly_atom(client))
    # A paper in the current week: the week is still open, nothing changes.
    upstream.items.insert(0, new_item(items, "2608.99001", "Late arrival", "2026-08-21T18:00:00.000Z"))
    clock.advance(901)
    assert entry_ids(weekly_atom(client)) == before
    # The first paper of the next week closes week 34: its entry comes first, the others keep their ids.
    upstream.items.insert(0, new_item(items, "2608.99002", "Next week", "2026-08-24T09:00:00.000Z"))
    clock.now = datetime(2026, 8, 24, 9, 30, tzinfo=timezone.utc)  # its day has come (no paper is dated ahead)
    root = weekly_atom(client)
    assert entry_ids(root) == [f"{BASE}?limit=500&digest=weekly#digest-2026-W34"] + before
    newest = root.find(f"{ATOM_NS}entry")
    assert newest.findtext(f"{ATOM_NS}updated") == "2026-08-21T18:00:00+00:00"
    assert "Late arrival" in newest.findtext(f"{ATOM_NS}content")


def test_limit_counts_days_and_each_day_lists_all_its_papers(client, items):
    root = weekly_atom(client, "limit=2&digest=daily")
    assert entry_ids(root) == [f"{BASE}?limit=2&digest=daily#digest-2026-08-19",
                               f"{BASE}?limit=2&digest=daily#digest-2026-08-18"]
    on_the_19th = sum(i["publishedAt"].startswith("2026-08-19") for i in items)
    assert on_the_19th > 1
    assert root.find(f"{ATOM_NS}entry").findtext(f"{ATOM_NS}content").count("<li>") == on_the_19th


def test_digest_ids_are_the_same_in_every_format(client):
    atom = entry_ids(weekly_atom(client, "q=video&digest=weekly"))
    rss = feedparser.parse(client.get("/feed?q=video&digest=weekly&format=rss").data)
    assert not rss.bozo and [e.id for e in rss.entries] == atom
    document = client.get("/feed?q=video&digest=weekly&format=json").get_json()
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(
        document)
    assert [item["id"] for item in document["items"]] == atom
    assert atom[0] == f"{BASE}?q=video&digest=weekly#digest-2026-W33"


def test_digest_is_part_of_the_canonical_url_after_limit(client):
    response = client.get("/feed?digest=WEEKLY&limit=7&q=video&format=rss")
    parsed = feedparser.parse(response.data)
    assert parsed.feed.title == "Daily Papers: video · weekly digest"
    assert [l.href for l in parsed.feed.links if l.rel == "self"] == [
        f"{BASE}?q=video&format=rss&limit=7&digest=weekly"]
    assert weekly_atom(client, "digest=").findtext(f"{ATOM_NS}id") == BASE  # empty: no digest, the plain feed


def test_an_unknown_digest_is_400_naming_the_choices(client):
    response = client.get("/feed?digest=monthly")
    assert response.status_code == 400
    assert response.text == "parameter 'digest' must be one of daily, weekly, got 'monthly'\n"


def test_the_page_offers_digests(client):
    doc = html.fromstring(client.get("/?q=video&digest=weekly").data)
    select = doc.get_element_by_id("digest")
    assert [o.get("value") for o in select.xpath("option")] == ["", "daily", "weekly"]
    assert select.xpath("option[@selected]/@value") == ["weekly"]
    assert doc.get_element_by_id("feed-url").get("value") == f"{BASE}?q=video&digest=weekly"
    bad = client.get("/?digest=hourly")
    assert bad.status_code == 400
    assert html.fromstring(bad.data).get_element_by_id("digest").get("aria-invalid") == "true"
