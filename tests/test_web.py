"""GET /feed through the Flask app: Atom output, parameters, errors."""

import json
import re
from datetime import datetime, timedelta, timezone

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
        ("sort=hot", "'sort' must be one of date, upvotes, relevance, trending"),
        ("top=year", "'top' must be one of week, month, got 'year'"),
        ("top=week&days=3", "give either 'days' or 'top', not both"),
        ("q=has:nothing", 'parameter \'q\' is not a valid query: "has:" takes code or project, not "nothing" at column 1'),
        ("q=agent%20stars%3E%3Dabc", '"stars>=" needs a whole number from 0 to 999999999 right after it at column 7'),
    ],
)
def test_bad_parameters_get_400_naming_them(client, query, words):
    response = client.get(f"/feed?{query}")
    assert response.status_code == 400
    assert response.content_type == "text/plain; charset=utf-8"
    assert words in response.get_data(as_text=True)


@pytest.mark.parametrize("host", ["", "a b", "x:99999", "example.org:abc", "@", "a/b", "\x00",
                                  "example.org,evil.example"])
@pytest.mark.parametrize("path", ["/feed?q=agent", "/", "/opml?q=agent"])
def test_a_host_header_that_is_no_host_name_is_400_never_ids_without_a_host(client, host, path):
    assert client.get(path, headers={"Host": "example.org"}).status_code == 200  # known to the fast path
    response = client.get(path, headers={"Host": host})
    assert (response.status_code, response.mimetype) == (400, "text/plain")
    assert response.text == f"the Host header {host!r} is not a valid host name (and port)\n"


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
    assert len(urls) == 11
    for url in urls:
        query = urlsplit(url).query
        assert " " not in url and '"' not in url, url
        params = parse_feed_request(MultiDict(parse_qsl(query)), 30, ["hf-daily", "arxiv-cs-lg"], "hf-daily")
        assert params.query_string() == query, url


# --- Issue 15: organisations, code, stars, submitters; trending; top of the week and month ---------------

def _hf(ids: list[str]) -> list[str]:
    return ["https://huggingface.co/papers/" + i for i in ids]


def _by_date(items: list[dict]) -> list[str]:
    return [i["paper"]["id"] for i in sorted(items, key=lambda i: (i["publishedAt"], i["paper"]["id"]), reverse=True)]


def test_fields_and_filters_select_papers_through_the_feed(month_client):
    from .conftest import month_and_all_items

    items = month_and_all_items()
    tencent_with_code = [i for i in items if "tencent" in (i.get("organization") or {}).get("name", "").lower()
                         and i["paper"].get("githubRepo")]
    found = entry_ids(check_atom(month_client.get("/feed?q=org:tencent%20has:code&limit=500").data))
    assert found == _hf(_by_date(tencent_with_code)) and len(found) == 5
    popular = [i for i in items if (i["paper"].get("githubStars") or 0) >= 100]
    assert entry_ids(check_atom(month_client.get("/feed?q=stars%3E%3D100").data)) == _hf(_by_date(popular))
    taesiri = [i for i in items if (i["paper"].get("submittedOnDailyBy") or {}).get("user") == "taesiri"]
    assert entry_ids(check_atom(month_client.get("/feed?q=submitter:taesiri").data)) == _hf(_by_date(taesiri))
    assert entry_ids(check_atom(month_client.get("/feed?q=author:xidulu").data)) == _hf(["2608.08888"])


def test_comments_project_pages_org_ids_and_author_user_names_select_papers_through_the_feed(month_client):
    """The rest of the issue's query syntax, through /feed and the loopback fake, worked out from the JSON."""
    from .conftest import month_and_all_items

    items = month_and_all_items()
    discussed = [i for i in items if i["numComments"] >= 3]
    found = entry_ids(check_atom(month_client.get("/feed?q=comments%3E%3D3&limit=500").data))
    assert found == _hf(_by_date(discussed)) and len(found) == 7
    project_only = [i for i in items if i["paper"].get("projectPage") and not i["paper"].get("githubRepo")]
    found = entry_ids(check_atom(month_client.get("/feed?q=has:project%20-has:code&limit=500").data))
    assert found == _hf(_by_date(project_only)) and len(found) == 6
    google = [i for i in items if (i.get("organization") or {}).get("_id") == "5e6aca39878b8b2bf9806447"]
    found = entry_ids(check_atom(month_client.get("/feed?q=org:5e6aca39878b8b2bf9806447").data))
    assert found == _hf(_by_date(google)) == _hf(["2608.19880"])
    # An author's user name, on a paper someone else submitted: ruichen9618 is "Rui Chen"'s user name.
    assert entry_ids(check_atom(month_client.get("/feed?q=author:ruichen9618").data)) == _hf(["2608.13489"])
    assert entry_ids(check_atom(month_client.get("/feed?q=submitter:ruichen9618").data)) == []


def _trending_ids(items: list[dict], limit: int) -> list[str]:
    """The README's formula, worked out from the JSON: upvotes / max(hours before the newest listing, 2)."""
    def listed(item):
        return datetime.fromisoformat(item["publishedAt"].replace("Z", "+00:00"))

    newest = max(map(listed, items))
    def key(item):
        hours = (newest - listed(item)).total_seconds() / 3600
        return item["paper"]["upvotes"] / max(hours, 2), item["publishedAt"], item["paper"]["id"]
    return [i["paper"]["id"] for i in sorted(items, key=key, reverse=True)][:limit]


def test_sort_trending_is_upvotes_per_hour_since_listed(month_client):
    from .conftest import month_and_all_items

    found = entry_ids(check_atom(month_client.get("/feed?sort=trending&limit=10").data))
    assert found == _hf(_trending_ids(month_and_all_items(), 10))
    # Not simply the most upvoted: 2607.28624 (145 upvotes, three weeks old) is not among them.
    assert _hf(["2607.28624"])[0] not in found


def _week_top(items: list[dict], days: int, limit: int) -> list[str]:
    newest = max(i["publishedAt"] for i in items)  # 2026-08-20T04:02:55.000Z
    start = (datetime.fromisoformat(newest.replace("Z", "+00:00")) - timedelta(days=days)).isoformat()
    recent = [i for i in items if datetime.fromisoformat(i["publishedAt"].replace("Z", "+00:00")).isoformat() >= start]
    ranked = sorted(recent, key=lambda i: (i["paper"]["upvotes"], i["publishedAt"], i["paper"]["id"]), reverse=True)
    return [i["paper"]["id"] for i in ranked[:limit]]


@pytest.mark.parametrize(("top", "days"), [("week", 7), ("month", 30)])
def test_top_lists_the_most_upvoted_of_the_last_week_or_month(month_client, top, days):
    from .conftest import month_and_all_items

    response = month_client.get(f"/feed?top={top}&limit=5")
    root = check_atom(response.data, self_url=f"http://localhost/feed?top={top}&limit=5")
    assert entry_ids(root) == _hf(_week_top(month_and_all_items(), days, 5))
    assert root.findtext(f"{ATOM}title") == f"Daily Papers · top 5 of the {top}"


def test_top_week_and_month_differ(month_client):
    week = entry_ids(check_atom(month_client.get("/feed?top=week&limit=3").data))
    month = entry_ids(check_atom(month_client.get("/feed?top=month&limit=3").data))
    assert week == _hf(["2608.19880", "2608.16590", "2608.17253"])  # 163, 92, 74 upvotes
    assert month == _hf(["2608.19880", "2607.28624", "2607.26760"])  # 163, 145, 102


def test_a_top_feed_keeps_its_entries_while_their_order_changes(month_client, month_upstream, clock):
    before = month_client.get("/feed?top=week&limit=3")
    third = next(i for i in month_upstream.items if i["paper"]["id"] == "2608.17253")
    third["paper"] = dict(third["paper"], upvotes=500)  # the third gains upvotes and leads
    clock.advance(901)
    after = month_client.get("/feed?top=week&limit=3")  # this request refreshes
    assert entry_ids(check_atom(after.data)) == _hf(["2608.17253", "2608.19880", "2608.16590"])
    assert set(entry_ids(check_atom(before.data))) == set(entry_ids(check_atom(after.data)))
    assert after.headers["ETag"] != before.headers["ETag"]
    # Nor do their dates move, so a reader marks none of them new or updated: only their order changed.
    listed = {"2608.17253": "2026-08-18T20:00:00+00:00", "2608.19880": "2026-08-19T20:00:00+00:00",
              "2608.16590": "2026-08-16T20:00:00+00:00"}  # their publishedAt
    assert _entry_dates(after) == _entry_dates(before) == {_hf([i])[0]: (d, d) for i, d in listed.items()}
    assert check_atom(after.data).findtext(f"{ATOM}updated") == check_atom(before.data).findtext(f"{ATOM}updated")


def _entry_dates(response) -> dict[str, tuple[str, str]]:
    """Each entry's (published, updated), by its id."""
    return {entry.findtext(f"{ATOM}id"): (entry.findtext(f"{ATOM}published"), entry.findtext(f"{ATOM}updated"))
            for entry in check_atom(response.data).iter(f"{ATOM}entry")}


def test_top_orders_by_upvotes_unless_sort_is_given_and_names_itself_once(month_client):
    by_date = check_atom(month_client.get("/feed?sort=date&top=week&limit=3").data,
                         self_url="http://localhost/feed?sort=date&top=week&limit=3")
    assert entry_ids(by_date) == _hf(["2608.19880", "2608.17253", "2608.16590"])  # the same three, newest first
    # sort=upvotes is a top feed's default: left out of its one URL.
    check_atom(month_client.get("/feed?top=WEEK&sort=upvotes&limit=3").data,
               self_url="http://localhost/feed?top=week&limit=3")


def test_top_longer_than_the_window_is_refused(upstream, clock):
    client = create_app(make_config(upstream.url, window_days=7), clock=clock).test_client()
    assert client.get("/feed?top=week").status_code == 200
    refused = client.get("/feed?top=month")
    assert refused.status_code == 400
    assert refused.text == ("parameter 'top' cannot be month: this server keeps only the last 7 days of papers "
                            "(FEEDPROXY_WINDOW_DAYS)\n")


def test_behind_a_proxy_the_public_host_comes_from_x_forwarded_host_not_port(upstream, clock):
    """(issue 17) A client's X-Forwarded-Port passed on by a proxy must not change a feed's links."""
    client = create_app(make_config(upstream.url, proxy_count=1), clock=clock).test_client()
    headers = {"X-Forwarded-Host": "feeds.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "6666"}
    root = check_atom(client.get("/feed?q=agent", headers=headers).data)
    assert root.findtext(f"{ATOM}id") == "https://feeds.example.org/feed?q=agent"


def test_plain_text_errors_are_never_sniffed_as_html(client):
    """(issue 17) Error messages quote the request: a browser must not render one as HTML."""
    response = client.get("/feed?q=%3Cscript%3Ealert(1)%3C/script%3E%20%22")
    assert response.status_code == 400 and response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.content_type == "text/plain; charset=utf-8"
    assert client.get("/no-such-page").headers["X-Content-Type-Options"] == "nosniff"
