"""The page at /, /preview.json and /opml through the Flask app, without a browser.

The page answers 400 (still the full page, the message next to the query box)
when a parameter is bad, as /feed and /preview.json do for the same input; 200
otherwise, also while no papers are loaded (it says so, and why).
"""

import json
import re
from datetime import datetime, timedelta, timezone
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import lxml.html
import pytest

from feedproxy.app import create_app
from feedproxy.search.query import parse_query

from .conftest import make_config
from .fakeupstream import Fault, FakeUpstream

PACKAGE = Path(__file__).parent.parent / "feedproxy"
HOSTILE_TITLE = '<script>alert("title")</script> & <img src=x onerror=alert(2)>'


def get_page(client, query: str = ""):
    response = client.get("/" + ("?" + query if query else ""))
    return response, lxml.html.fromstring(response.data)


def by_id(doc, element_id: str):
    (element,) = doc.xpath(f'//*[@id="{element_id}"]')
    return element


def preview_urls(doc) -> list[str]:
    return doc.xpath('//ol[@id="papers"]/li/a/@href')


def feed_ids(client, query: str) -> list[str]:
    """The ids /feed lists for ``query``, read from its JSON Feed."""
    response = client.get("/feed?" + query + ("&" if query else "") + "format=json")
    assert response.status_code == 200, response.data
    return [item["id"] for item in json.loads(response.data)["items"]]


def test_page_explains_itself_with_a_labelled_form(client):
    response, doc = get_page(client)
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert doc.xpath('//meta[@name="viewport"]/@content') == ["width=device-width, initial-scale=1"]
    assert "Hugging Face Daily Papers" in doc.xpath("//header/p")[0].text_content()
    form = by_id(doc, "feed-form")
    assert form.get("method") == "get" and form.get("action") == "/"
    controls = form.xpath(".//input[not(@type='hidden')] | .//select")
    assert sorted(c.get("name") for c in controls) == [
        "days", "digest", "format", "limit", "match", "min_upvotes", "q", "sort", "top"]
    labels = set(doc.xpath("//label/@for"))
    assert all(c.get("id") in labels for c in controls)  # every control has a label
    assert by_id(doc, "feed-url").get("value") == "http://localhost/feed"
    assert by_id(doc, "subscribe").get("href") == "http://localhost/feed"
    assert by_id(doc, "opml").get("href") == "http://localhost/opml?q="
    assert len(preview_urls(doc)) == 40  # the empty query: every paper of the sample, up to the limit of 50


def test_page_loads_nothing_from_other_hosts(client):
    response, doc = get_page(client, "q=diffusion")
    resources = doc.xpath("//script/@src | //link/@href | //img/@src | //iframe/@src")
    assert resources and all(url.startswith("/") or url.startswith("data:") for url in resources)
    assert not doc.xpath("//script[not(@src)]")  # no inline script: the CSP below forbids it anyway
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    for path in resources:
        if path.startswith("/"):
            with client.get(path) as static:  # a file response: close it
                assert static.status_code == 200, path


def test_syntax_help_examples_are_valid_queries_that_open_the_page(client):
    _, doc = get_page(client)
    examples = doc.xpath('//section[@id="syntax"]//dt/a')
    texts = [a.text_content() for a in examples]
    for needed in ("-survey", "OR", "|", "(", '"language model"', "title:", "author:", "pre-training"):
        assert any(needed in text for text in texts), needed
    for link, text in zip(examples, texts):
        parse_query(text)  # raises if the help shows a broken query
        assert dict(parse_qsl(urlsplit(link.get("href")).query)) == {"q": text}
        assert client.get(link.get("href")).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "",
        "q=diffusion",
        "q=video+(diffusion+|+flow)&limit=5",
        "q=model&sort=upvotes&min_upvotes=10",
        "q=agent&sort=relevance",
        "q=learning&days=3",  # the fake clock is 2026-08-21: only the newest days
        "min_upvotes=50&sort=upvotes&limit=3",
        'q=title:"language+model"+-survey',
    ],
)
def test_server_side_preview_lists_exactly_what_the_feed_lists(client, query):
    response, doc = get_page(client, query)
    assert response.status_code == 200
    expected = feed_ids(client, query)
    assert preview_urls(doc) == expected
    data = json.loads(client.get("/preview.json?" + query).data)
    assert [p["url"] for p in data["papers"]] == expected and data["count"] == len(expected)
    status = by_id(doc, "preview-status").text_content()
    assert (f"{len(expected)} paper" in status) if expected else ("No papers match" in status)


def test_preview_shows_each_papers_date_upvotes_organisation_and_code(client):
    _, doc = get_page(client, "q=4DAnyone")
    (item,) = doc.xpath('//ol[@id="papers"]/li')
    title = "4DAnyone: Create Anyone in 4D from a Casual Monocular Video"
    assert item.find("a").text_content() == title and item.find("a/mark").text == "4DAnyone"  # the word found
    assert item.find("a").get("href") == "https://huggingface.co/papers/2608.20335"
    assert item.xpath(".//time/@datetime") == ["2026-08-19T20:00:00+00:00"]
    text = "2026-08-19 · 38 upvotes · Ant Research · code (20 stars) · more like this"
    assert re.sub(r"\s+", " ", item.find("span").text_content()) == text
    assert item.xpath('.//a[@class="code"]/@href') == ["https://github.com/ant-research/4DAnyone"]
    why = '"4danyone" in title, abstract'
    assert item.find('span[@class="why"]').text == why
    data = json.loads(client.get("/preview.json?q=4DAnyone").data)
    assert data["papers"] == [{"id": "2608.20335", "title": title, "url": item.find("a").get("href"),
                               "published": "2026-08-19T20:00:00Z", "upvotes": 38, "organization": "Ant Research",
                               "github_repo": "https://github.com/ant-research/4DAnyone", "github_stars": 20,
                               "title_parts": [["4DAnyone", True], [title[8:], False]], "why": why,
                               "similar_url": "/?similar=2608.20335"}]


def test_preview_rows_without_organisation_or_code_show_neither(client):
    _, doc = get_page(client, "q=Seedance")  # 2506.09113: mid-2025, a project page only
    (item,) = doc.xpath('//ol[@id="papers"]/li')
    assert re.sub(r"\s+", " ", item.find("span").text_content()) == "2025-06-10 · 24 upvotes · more like this"
    (paper,) = json.loads(client.get("/preview.json?q=Seedance").data)["papers"]
    assert (paper["organization"], paper["github_repo"], paper["github_stars"]) == (None, None, None)


@pytest.mark.parametrize(
    "query, feed_url",
    [
        ("q=&min_upvotes=&days=&sort=date&format=atom&limit=50", "http://localhost/feed"),  # the no-JS form, untouched
        ("q=++Diffusion++&min_upvotes=0&sort=DATE&limit=50", "http://localhost/feed?q=Diffusion"),
        ("limit=7&format=json&sort=upvotes&days=30&min_upvotes=05&q=a+b",
         "http://localhost/feed?q=a%20b&min_upvotes=5&days=30&sort=upvotes&format=json&limit=7"),
        ('q="language+model"+%26+co', "http://localhost/feed?q=%22language%20model%22%20%26%20co"),
    ],
)
def test_feed_url_is_absolute_with_only_non_default_parameters_in_a_fixed_order(client, query, feed_url):
    _, doc = get_page(client, query)
    assert by_id(doc, "feed-url").get("value") == feed_url
    assert by_id(doc, "subscribe").get("href") == feed_url
    assert json.loads(client.get("/preview.json?" + query).data)["feed_url"] == feed_url
    assert client.get(feed_url).status_code == 200  # and it is a working feed


def test_feed_url_follows_the_host_the_page_was_asked_for(client):
    response = client.get("/preview.json?q=agents", base_url="https://feeds.example.org:8443")
    assert json.loads(response.data)["feed_url"] == "https://feeds.example.org:8443/feed?q=agents"


@pytest.mark.parametrize(
    "query, parameter",
    [
        ('q=%22unclosed', "q"),
        ("q=a+OR", "q"),
        ("q=diffusion&limit=0", "limit"),
        ("q=diffusion&days=2000", "days"),
        ("q=a&q=b", "q"),
    ],
)
def test_bad_parameter_is_shown_next_to_the_box_like_the_feeds_400(client, query, parameter):
    feed = client.get("/feed?" + query)
    assert feed.status_code == 400
    message = feed.get_data(as_text=True).strip()
    response, doc = get_page(client, query)
    assert response.status_code == 400
    error = by_id(doc, "form-error")
    assert error.text_content() == message and error.get("hidden") is None
    for control in by_id(doc, "feed-form").xpath(".//input[not(@type='hidden')] | .//select"):
        described = (control.get("aria-describedby") or "").split()
        is_named = control.get("name") == parameter
        assert ("form-error" in described) == is_named, control.get("name")
        assert (control.get("aria-invalid") == "true") == is_named
    assert by_id(doc, "feed-box").get("hidden") is not None  # no feed URL for a feed that would fail
    assert by_id(doc, "feed-missing").get("hidden") is None
    assert preview_urls(doc) == []
    live = client.get("/preview.json?" + query)
    assert live.status_code == 400
    assert json.loads(live.data) == {"error": message, "parameter": parameter}


def test_an_unknown_source_gets_the_feeds_status_and_is_kept_in_the_form(client):
    feed = client.get("/feed?q=agents&source=nope")
    assert feed.status_code == 404
    response, doc = get_page(client, "q=agents&source=nope")
    assert response.status_code == 404
    assert by_id(doc, "form-error").text_content() == feed.get_data(as_text=True).strip()
    assert by_id(doc, "q").get("aria-describedby") == "q-hint form-error"  # no control of its own: the box
    # Kept in a hidden field, so the next (live) preview asks for the same feed.
    assert doc.xpath('//form[@id="feed-form"]//input[@type="hidden"]/@name') == ["source"]
    assert doc.xpath('//input[@name="source"]/@value') == ["nope"]
    assert client.get("/preview.json?q=agents&source=nope").status_code == 404


def test_page_says_why_while_no_papers_are_loaded(upstream, clock):
    upstream.always = Fault(status=502)
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    response, doc = get_page(client, "q=diffusion")
    assert response.status_code == 200
    status = by_id(doc, "preview-status").text_content()
    assert "not loaded yet" in status and "HTTP 502" in status
    assert by_id(doc, "feed-url").get("value") == "http://localhost/feed?q=diffusion"  # subscribe now, papers later
    live = client.get("/preview.json?q=diffusion")
    assert live.status_code == 503 and int(live.headers["Retry-After"]) >= 1
    body = json.loads(live.data)
    assert body["error"].startswith("no papers yet:") and "HTTP 502" in body["error"]
    assert body["feed_url"] == "http://localhost/feed?q=diffusion"


def test_request_text_is_escaped_in_the_page(client):
    script = '"<script>alert(1)</script>'
    response, doc = get_page(client, "q=" + script.replace("<", "%3C").replace(">", "%3E").replace('"', "%22"))
    assert response.status_code == 400  # the unclosed quote: the message quotes the query back
    assert b"<script>aler" not in response.data and b"&lt;script&gt;aler" in response.data
    assert "<script>aler" in by_id(doc, "form-error").text_content()  # shown as text
    assert by_id(doc, "q").get("value") == script
    assert doc.xpath("//script") == doc.xpath("//script[@src]")  # only our own script element
    attribute = 'model "><svg onload=alert(1)>"'  # a valid query that would close an attribute
    response, doc = get_page(client, "q=model+%22%3E%3Csvg+onload%3Dalert%281%29%3E%22")
    assert response.status_code == 200 and doc.xpath("//svg/@id") == ["chart"]  # the chart's, no other
    assert by_id(doc, "q").get("value") == attribute
    assert by_id(doc, "feed-url").get("value") == "http://localhost/feed?q=model%20%22%3E%3Csvg%20onload%3Dalert%281%29%3E%22"


def test_paper_text_from_upstream_is_escaped(clock):
    hostile = {"paper": {"id": "2608.00001", "title": HOSTILE_TITLE, "upvotes": 3},
               "publishedAt": "2026-08-20T00:00:00Z"}
    fake = FakeUpstream([hostile]).start()
    try:
        client = create_app(make_config(fake.url), clock=clock).test_client()
        response, doc = get_page(client)
        live = json.loads(client.get("/preview.json").data)
    finally:
        fake.stop()
    assert doc.xpath('//ol[@id="papers"]/li/a')[0].text == HOSTILE_TITLE
    assert not doc.xpath("//img") and doc.xpath("//script") == doc.xpath("//script[@src]")
    assert live["papers"][0]["title"] == HOSTILE_TITLE  # data, drawn with textContent by the page's JS


def test_page_code_never_marks_data_safe_or_writes_html():
    script = (PACKAGE / "static/page.js").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)
    for template in (PACKAGE / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"\|\s*safe|autoescape\s+false|Markup", text), template.name


# --- OPML -------------------------------------------------------------------------


def outlines(response) -> list[dict]:
    root = ET.fromstring(response.data)
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.find("head/title").text
    return [o.attrib for o in root.findall("body/outline")]


def test_opml_lists_one_working_feed_per_query(client):
    response = client.get("/opml?q=diffusion&q=%22language+model%22&format=rss&min_upvotes=5")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/x-opml; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="feedproxy.opml"'
    assert response.data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    found = outlines(response)
    assert found == [
        {"type": "rss", "text": "Daily Papers: diffusion · 5+ upvotes", "title": "Daily Papers: diffusion · 5+ upvotes",
         "xmlUrl": "http://localhost/feed?q=diffusion&min_upvotes=5&format=rss",
         "htmlUrl": "http://localhost/?q=diffusion&min_upvotes=5&format=rss"},
        {"type": "rss", "text": 'Daily Papers: "language model" · 5+ upvotes',
         "title": 'Daily Papers: "language model" · 5+ upvotes',
         "xmlUrl": "http://localhost/feed?q=%22language%20model%22&min_upvotes=5&format=rss",
         "htmlUrl": "http://localhost/?q=%22language%20model%22&min_upvotes=5&format=rss"},
    ]
    for outline in found:
        feed = client.get(outline["xmlUrl"])
        assert feed.status_code == 200 and feed.content_type == "application/rss+xml; charset=utf-8"
        assert client.get(outline["htmlUrl"]).status_code == 200


def test_opml_escapes_every_value(client):
    hostile = 'diffusion "a<b>&c" </outline> x\'y <!-- \u0001z'
    response = client.get("/opml", query_string=[("q", hostile), ("q", "")])
    assert response.status_code == 200
    first, everything = outlines(response)
    assert first["text"] == "Daily Papers: " + hostile.replace("\u0001", "")  # XML 1.0 cannot carry U+0001
    assert dict(parse_qsl(urlsplit(first["xmlUrl"]).query)) == {"q": hostile}
    assert everything["text"] == "Daily Papers" and everything["xmlUrl"] == "http://localhost/feed"


def test_page_offers_the_opml_of_its_query(client):
    _, doc = get_page(client, "q=agents&sort=upvotes")
    href = by_id(doc, "opml").get("href")
    assert href == "http://localhost/opml?q=agents&sort=upvotes"
    (outline,) = outlines(client.get(href))
    assert outline["xmlUrl"] == by_id(doc, "feed-url").get("value")


@pytest.mark.parametrize(
    "query, status, words",
    [
        ("", 400, "give at least one 'q'"),
        ("format=rss", 400, "give at least one 'q'"),
        ("q=diffusion&q=a+OR&q=agents", 400, "'q' number 2 ('a OR') is not a valid query: \"OR\" needs a term after it"),
        ("q=diffusion&limit=0", 400, "parameter 'limit' must be from 1 to 500, got 0"),
        ("q=diffusion&format=pdf", 400, "parameter 'format' must be one of atom, rss, json"),
        ("&".join(["q=a"] * 51), 400, "at most 50"),
        ("&".join(["q=a"] * 50), 200, ""),
    ],
)
def test_opml_refuses_bad_requests_saying_why(client, query, status, words):
    response = client.get("/opml?" + query)
    assert response.status_code == status, response.data
    if status == 400:
        assert response.content_type == "text/plain; charset=utf-8"
        assert words in response.get_data(as_text=True)
    else:
        assert len(outlines(response)) == 50


def test_syntax_examples_keep_the_chosen_format_limit_and_upvotes(client):
    _, doc = get_page(client, "q=agents&format=rss&limit=7&min_upvotes=3&source=hf-daily")
    links = doc.xpath("//a[@class='example']")
    assert len(links) == 9
    assert links[0].get("href") == "/?q=pretraining%20-survey&format=rss&limit=7&min_upvotes=3&source=hf-daily"
    for link in links:
        _, followed = get_page(client, link.get("href").removeprefix("/?"))
        assert by_id(followed, "q").get("value") == link.get("data-q")
        assert by_id(followed, "feed-url").get("value").endswith("min_upvotes=3&format=rss&limit=7")


# --- The chart of matching papers per week ------------------------------------------


def chart_weeks(doc) -> list[tuple[str, int]]:
    """The text fallback of the chart: (Monday, papers) of each week with matches."""
    return [(row[0].text, int(row[1].text)) for row in by_id(doc, "chart-rows").findall("tr")]


def test_the_chart_counts_matching_papers_per_week_without_javascript(month_client):
    from .conftest import month_and_all_items

    response, doc = get_page(month_client, "q=has:code&days=30")
    assert response.status_code == 200
    # Worked out from the JSON: papers with a repository from 2026-07-21T04:02:55Z (30 days before the
    # newest), by the Monday of the week they were listed in.
    weeks: dict[str, int] = {}
    for item in month_and_all_items():
        listed = datetime.fromisoformat(item["publishedAt"].replace("Z", "+00:00"))
        if item["paper"].get("githubRepo") and listed >= datetime(2026, 7, 21, 4, 2, 55, tzinfo=timezone.utc):
            monday = (listed.date() - timedelta(days=listed.weekday())).isoformat()
            weeks[monday] = weeks.get(monday, 0) + 1
    assert chart_weeks(doc) == sorted(weeks.items()) == [
        ("2026-07-20", 5), ("2026-07-27", 5), ("2026-08-03", 4), ("2026-08-10", 7), ("2026-08-17", 12)]
    chart = by_id(doc, "chart")
    assert chart.get("role") == "img" and chart.get("aria-labelledby") == "chart-title"
    summary = ("33 papers matching in the 5 weeks from 2026-07-20 to 2026-08-17; the most, 12, in the week of "
               "2026-08-17.")
    assert by_id(doc, "chart-title").text == by_id(doc, "chart-summary").text == summary
    bars = chart.findall("rect")
    assert [b.findtext("title") for b in bars] == [f"week of {w}: {n} papers" for w, n in sorted(weeks.items())]
    # The busiest week is full height; the others in proportion: 5 of 12 is 25 of 60.
    assert [float(b.get("height")) for b in bars] == [25.0, 25.0, 20.0, 35.0, 60.0]
    assert [float(b.get("y")) + float(b.get("height")) for b in bars] == [60.0] * 5
    assert not doc.xpath("//*[@style]")  # the Content-Security-Policy allows no inline style
    data = json.loads(month_client.get("/preview.json?q=has:code&days=30").data)["chart"]
    assert data["summary"] == summary and [(b["week"], b["count"]) for b in data["bars"]] == chart_weeks(doc)
    assert [b["height"] for b in data["bars"]] == [25.0, 25.0, 20.0, 35.0, 60.0]


def test_the_chart_spans_every_week_held_with_gaps_for_weeks_without_matches(month_client):
    _, doc = get_page(month_client, "q=org:tencent")
    # 2607.24223 (week of 07-20), 2608.15265 and 2608.15930 (08-10), 2608.19758 and 2608.20336 (08-17).
    assert chart_weeks(doc) == [("2026-07-20", 1), ("2026-08-10", 2), ("2026-08-17", 2)]
    summary = by_id(doc, "chart-summary").text
    # From the oldest paper held (2024-05-27) to the newest: 117 weeks.
    assert summary == ("5 papers matching in the 117 weeks from 2024-05-27 to 2026-08-17; the most, 2, in the "
                       "week of 2026-08-17.")
    xs = [float(rect.get("x")) for rect in by_id(doc, "chart").findall("rect")]
    slot = 600 / 117
    assert xs == [round(n * slot + slot * 0.1, 2) for n in (112, 115, 116)]


def test_the_chart_follows_top_and_says_when_nothing_matches(month_client):
    _, doc = get_page(month_client, "top=week")
    # Every paper from 2026-08-13T04:02:55Z: four of the month and 2608.14022 in the week of 08-10, two of the
    # month and 14 of the 2026-08-21 file in that of 08-17.
    assert chart_weeks(doc) == [("2026-08-10", 5), ("2026-08-17", 16)]
    _, doc = get_page(month_client, "q=zzyzx")
    assert chart_weeks(doc) == [] and by_id(doc, "chart").findall("rect") == []
    assert by_id(doc, "chart-summary").text == "No matching papers in the 117 weeks from 2024-05-27 to 2026-08-17."
    _, doc = get_page(month_client, "q=%22unclosed")  # no feed, no chart
    assert by_id(doc, "chart-figure").get("hidden") is not None


def test_the_top_control_keeps_a_top_feeds_order(month_client):
    _, doc = get_page(month_client, "top=month&limit=3")
    assert doc.xpath('//select[@id="top"]/option[@selected]/@value') == ["month"]
    assert doc.xpath('//select[@id="sort"]/option[@selected]/@value') == ["upvotes"]  # a top feed's default
    assert by_id(doc, "feed-url").get("value") == "http://localhost/feed?top=month&limit=3"
    assert preview_urls(doc) == feed_ids(month_client, "top=month&limit=3")
    assert doc.xpath('//select[@id="sort"]/option/@value') == ["date", "upvotes", "relevance", "trending"]


def test_the_top_control_offers_only_what_the_window_holds(upstream, clock):
    client = create_app(make_config(upstream.url, window_days=10), clock=clock).test_client()
    _, doc = get_page(client)
    assert doc.xpath('//select[@id="top"]/option/@value') == ["", "week"]
