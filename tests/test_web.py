"""GET /feed through the Flask app: Atom output, parameters, errors."""

import json
import re
from datetime import datetime, timezone

import feedparser
import pytest
from lxml import etree

from feedproxy.app import create_app

from .atomcheck import ATOM, check_atom, entry_ids
from .conftest import make_config
from .fakeupstream import Fault, FakeUpstream


def searchable_text(item: dict) -> str:
    p = item["paper"]
    return " ".join([item["title"], p["title"], item.get("summary", ""), p.get("summary", "")]
                    + p.get("ai_keywords", []) + [a["name"] for a in p.get("authors", [])]).lower()


def expected_ids(items, pattern: str) -> list[str]:
    """Ids of the papers whose text matches ``pattern``, newest first, computed without our code."""
    matching = [i for i in items if re.search(pattern, searchable_text(i))]
    matching.sort(key=lambda i: (i["publishedAt"], i["paper"]["id"]), reverse=True)
    return ["https://huggingface.co/papers/" + i["paper"]["id"] for i in matching]


def test_feed_lists_the_matching_papers_newest_first(client, items):
    response = client.get("/feed?q=benchmark&limit=500")
    assert response.status_code == 200
    assert response.content_type == "application/atom+xml; charset=utf-8"
    root = check_atom(response.data, self_url="http://localhost/feed?q=benchmark&limit=500")
    expected = expected_ids(items, r"\bbenchmark(s|ing|ed)?\b")
    assert len(expected) >= 5
    assert entry_ids(root) == expected
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo
    assert "benchmark" in parsed.feed.title


def test_match_is_case_insensitive_and_whole_words(client, items):
    upper = entry_ids(check_atom(client.get("/feed?q=BENCHMARK&limit=500").data))
    lower = entry_ids(check_atom(client.get("/feed?q=benchmark&limit=500").data))
    assert upper == lower and upper
    # "bench" is not a word of "benchmark": whole words, not substrings.
    bench = entry_ids(check_atom(client.get("/feed?q=bench&limit=500").data))
    assert bench == expected_ids(items, r"\bbench(es)?\b")


def test_entry_fields_come_from_the_data(client, items):
    source = next(i for i in items if i["paper"]["id"] == "2608.19880")
    parsed = feedparser.parse(client.get("/feed?q=EnvHarness").data)
    assert not parsed.bozo
    entry = next(e for e in parsed.entries if e.id == "https://huggingface.co/papers/2608.19880")
    assert entry.title == source["title"]
    assert entry.link == "https://huggingface.co/papers/2608.19880"
    assert [a.name for a in entry.authors][:2] == ["Chengsong Huang", "Zifeng Wang"]
    assert entry.summary == source["summary"]
    assert entry.published == entry.updated == "2026-08-19T20:00:00+00:00"
    assert parsed.feed.updated == max(e.updated for e in parsed.entries)


def test_dates_never_come_from_the_clock(client):
    body = client.get("/feed?limit=500").data.decode()
    this_year = str(datetime.now(timezone.utc).year)
    dates = re.findall(r"<(?:updated|published)>([^<]+)<", body)
    assert dates and not any(d.startswith(this_year) and d > "2026-08-22" for d in dates)


def test_same_paper_same_id_in_every_feed(client):
    a = entry_ids(check_atom(client.get("/feed?q=environment").data))
    b = entry_ids(check_atom(client.get("/feed?q=EnvRigger").data))
    assert "https://huggingface.co/papers/2608.19880" in set(a) & set(b)


def test_empty_query_is_every_paper_and_limit_caps(client, items):
    all_ids = entry_ids(check_atom(client.get("/feed?limit=500").data))
    assert len(all_ids) == 40 == len(items)
    assert entry_ids(check_atom(client.get("/feed").data)) == all_ids[:40]
    assert entry_ids(check_atom(client.get("/feed?q=&limit=3").data)) == all_ids[:3]


def test_feed_id_and_self_are_one_canonical_url_and_the_title_the_typed_query(client):
    """One spelling for one feed: parameters in a fixed order, defaults left out, percent-encoded."""
    canonical = "http://localhost/feed?q=Pre-Training%20models&sort=upvotes&limit=5"
    for asked in ("/feed?limit=5&sort=UPVOTES&q=Pre-Training%20%20models&format=atom&min_upvotes=0",
                  "/feed?q=Pre-Training+models&sort=upvotes&limit=5"):
        root = check_atom(client.get(asked).data, self_url=canonical)
        assert root.findtext(f"{ATOM}id") == canonical
        assert root.findtext(f"{ATOM}title") == "Daily Papers: Pre-Training models"
    # A parameter that changes the content changes the id: the newest and the most upvoted differ.
    by_date = check_atom(client.get("/feed?q=Pre-Training+models&limit=5").data)
    assert by_date.findtext(f"{ATOM}id") == "http://localhost/feed?q=Pre-Training%20models&limit=5"


def test_the_page_opml_and_the_feed_spell_one_feed_url_the_same_way(client):
    asked = "q=%22language+model%22+-survey&limit=20&format=rss&sort=relevance"
    page_url = json.loads(client.get("/preview.json?" + asked).data)["feed_url"]
    opml = client.get("/opml?" + asked).data
    feed = client.get("/feed?" + asked).data
    self_link = etree.fromstring(feed).find(f"channel/{ATOM}link[@rel='self']").get("href")
    assert page_url == self_link == "http://localhost/feed?q=%22language%20model%22%20-survey&sort=relevance&format=rss&limit=20"
    assert [o.get("xmlUrl") for o in etree.fromstring(opml).iter("outline")] == [page_url]


@pytest.mark.parametrize(
    "query, words",
    [
        ("limit=0", "'limit' must be from 1 to 500"),
        ("limit=501", "'limit' must be from 1 to 500"),
        ("limit=ten", "'limit' must be a whole number"),
        ("limit=-1", "'limit' must be a whole number"),
        ("limit=%EF%BC%95", "'limit' must be a whole number"),  # a full-width digit
        ("limit=1&limit=2", "'limit' is given 2 times"),
        ("q=a&q=b", "'q' is given 2 times"),
        ("q=%22unclosed", "parameter 'q' is not a valid query"),
        ("sort=random", "'sort' must be one of date, upvotes, relevance"),
        ("min_upvotes=-3", "'min_upvotes' must be a whole number"),
        ("days=0", "'days' must be from 1 to 1000"),
    ],
)
def test_bad_parameters_get_400_naming_them(client, query, words):
    response = client.get(f"/feed?{query}")
    assert response.status_code == 400
    assert response.content_type == "text/plain; charset=utf-8"
    assert words in response.get_data(as_text=True)


def test_no_data_yet_is_503_with_retry_after(upstream, clock):
    upstream.always = Fault(status=502)
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    response = client.get("/feed?q=x")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    text = response.get_data(as_text=True)
    assert text.startswith("no papers yet:") and "HTTP 502" in text and "Traceback" not in text


def test_unknown_routes_and_methods_are_plain_errors(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.content_type.startswith("text/plain")
    wrong = client.post("/feed")
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]


def test_text_xml_forbids_cannot_break_the_feed(clock):
    hostile = {
        "paper": {"id": "2608.00001", "title": "Bad\u0000 \u000bchars \ud800 and ]]> <b>tags</b> & co",
                  "summary": "An \u0001abstract\ufffe with <script>alert(1)</script>",
                  "authors": [{"name": "Eve\u0007 <x>"}]},
        "publishedAt": "2026-08-20T00:00:00Z",
    }
    fake = FakeUpstream([]).start()
    fake.faults.append(Fault(body=json.dumps([hostile]).encode()))
    try:
        client = create_app(make_config(fake.url), clock=clock).test_client()
        body = client.get("/feed").data
    finally:
        fake.stop()
    check_atom(body)
    parsed = feedparser.parse(body)
    assert not parsed.bozo
    assert parsed.entries[0].title == "Bad chars and ]]> <b>tags</b> & co"
    assert "<script>" in parsed.entries[0].summary  # shown as text, never as markup
    assert b"<script>" not in body


def test_a_repeated_bad_request_gets_the_same_message_every_time(client):
    answers = {client.get("/feed?limit=0").get_data(as_text=True) for _ in range(3)}
    assert answers == {"parameter 'limit' must be from 1 to 500, got 0\n"}


def test_the_readme_feed_urls_are_canonical_and_valid():
    """The README's table shows each feed URL exactly as the feed names itself (percent-encoded)."""
    from pathlib import Path
    from urllib.parse import parse_qsl, urlsplit

    from werkzeug.datastructures import MultiDict

    from feedproxy.http.params import parse_feed_request

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Feed URLs"):readme.index("**One URL per feed.**")]
    urls = re.findall(r"^\| `(/feed[^`]*)` \|", table, flags=re.M)
    assert len(urls) == 9
    for url in urls:
        query = urlsplit(url).query
        assert " " not in url and '"' not in url, url
        params = parse_feed_request(MultiDict(parse_qsl(query)), 30, ["hf-daily", "arxiv-cs-lg"], "hf-daily")
        assert params.query_string() == query, url
