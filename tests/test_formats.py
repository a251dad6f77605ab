"""Atom, RSS 2.0 and JSON Feed output: read back with real parsers, checked against their rules."""

import email.utils
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import feedparser
import feedparser_rs
import jsonschema
import pytest
from lxml import etree

from feedproxy.app import create_app

from .atomcheck import ATOM, check_atom
from .conftest import make_config

SCHEMA = json.loads((Path(__file__).parent / "jsonfeed-1.1.schema.json").read_text())
RFC822 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                    r"\d{2}:\d{2}:\d{2} [+-]\d{4}$")
ENVHARNESS = "https://huggingface.co/papers/2608.19880"
# The prefixes readers expect, declared once on <rss>.
RSS_NAMESPACES = {
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
    "dc": "http://purl.org/dc/elements/1.1/",
}
JS = Path(__file__).parent / "js"  # package.json and package-lock.json of the JavaScript parsers


def installed_version(package: str) -> str | None:
    manifest = JS / "node_modules" / package / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


@pytest.fixture(scope="session")
def rss_parser():
    """npm's rss-parser run by node: a function from feed bytes to the object JavaScript programs get.

    Installed into tests/js/node_modules with `npm ci` (the only time npm reaches the registry) when
    missing or not the version package.json pins. Without node: fails under CI, skipped elsewhere.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed to run rss-parser: run `bash .ci/install-node.sh`"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(message)
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]["rss-parser"]
    if installed_version("rss-parser") != wanted:
        done = subprocess.run([npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"npm ci --prefix {JS} failed:\n{done.stderr}", pytrace=False)

    def parse(feed: bytes) -> dict:
        done = subprocess.run([node, str(JS / "read_feed.js")], input=feed, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    return parse


def test_atom_is_the_default_and_valid(client):
    response = client.get("/feed?q=agent")
    assert response.content_type == "application/atom+xml; charset=utf-8"
    check_atom(response.data, self_url="http://localhost/feed?q=agent")
    assert client.get("/feed?q=agent&format=atom").data.count(b"<entry>") == response.data.count(b"<entry>")


def test_rss_is_valid_rss_2(client):
    response = client.get("/feed?q=agent&format=rss")
    assert response.content_type == "application/rss+xml; charset=utf-8"
    root = etree.fromstring(response.data)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    for name in ("title", "link", "description"):
        assert channel.findtext(name)
    assert RFC822.match(channel.findtext("lastBuildDate"))
    self_link = channel.find(f"{ATOM}link[@rel='self']")
    assert self_link.get("href") == "http://localhost/feed?q=agent&format=rss"
    items = channel.findall("item")
    assert items
    for item in items:
        guid = item.find("guid")
        assert guid.get("isPermaLink") == "true" and guid.text.startswith("https://huggingface.co/papers/")
        assert item.findtext("link") == guid.text
        assert RFC822.match(item.findtext("pubDate"))
        assert email.utils.parsedate_to_datetime(item.findtext("pubDate")).tzinfo is not None
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo and parsed.version == "rss20" and len(parsed.entries) == len(items)
    entry = next(e for e in parsed.entries if e.id == ENVHARNESS)
    assert entry.author.startswith("Chengsong Huang, Zifeng Wang, ")  # one dc:creator with every name


def test_rss_namespaces_are_declared_once_on_the_root_with_the_usual_prefixes(client):
    # Parsers such as rss-parser match "content:encoded" and "dc:creator" literally, so the prefixes
    # matter: <ns0:encoded xmlns:ns0="...content/"> is the same XML to lxml and no content to them.
    document = client.get("/feed?q=agent&format=rss").data
    root = etree.fromstring(document)
    assert root.nsmap == RSS_NAMESPACES
    declarations = re.findall(rb'xmlns:?([\w.-]*)="([^"]*)"', document)
    assert sorted(declarations) == sorted((p.encode(), u.encode()) for p, u in RSS_NAMESPACES.items())
    assert re.match(rb"<\?xml [^>]*\?>\s*<rss [^>]*>", document).group().count(b"xmlns:") == 3
    prefixes = {el.prefix for el in root.iter() if el.prefix is not None}
    assert prefixes == {"atom", "content", "dc"} and b"ns0:" not in document
    items = root.findall("channel/item")
    assert document.count(b"<content:encoded>") == len(items) > 0


def test_rss_has_one_dc_creator_per_item_with_every_author(client):
    # newsboat and others keep only the last of several dc:creator: arXiv's RSS gives one with all names.
    root = etree.fromstring(client.get("/feed?q=agent&format=rss").data)
    authors = {i["id"]: [a["name"] for a in i.get("authors", [])]
               for i in json.loads(client.get("/feed?q=agent&format=json").data)["items"]}
    creator = f"{{{RSS_NAMESPACES['dc']}}}creator"
    for item in root.findall("channel/item"):
        names = authors[item.findtext("guid")]
        assert [c.text for c in item.findall(creator)] == ([", ".join(names)] if names else [])
    assert len(authors[ENVHARNESS]) > 2


def test_rss_parser_reads_every_items_content_and_authors(client, rss_parser):
    """npm's rss-parser, the feed parser of many JavaScript programs, finds content:encoded by its prefix."""
    feed = rss_parser(client.get("/feed?q=agent&format=rss").data)
    expected = json.loads(client.get("/feed?q=agent&format=json").data)["items"]
    assert [i["guid"] for i in feed["items"]] == [i["id"] for i in expected] and expected
    for item, want in zip(feed["items"], expected):
        assert item.get("content:encoded") == want["content_html"]
        assert item.get("creator") == (", ".join(a["name"] for a in want["authors"]) if "authors" in want else None)


def test_json_feed_is_valid_json_feed_1_1(client):
    response = client.get("/feed?q=agent&format=json")
    assert response.content_type == "application/feed+json"
    document = json.loads(response.data)
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(document)
    assert document["feed_url"] == "http://localhost/feed?q=agent&format=json"
    parsed = feedparser_rs.parse(response.data)
    assert not parsed.bozo and parsed.version == "json11"
    assert [e.id for e in parsed.entries] == [i["id"] for i in document["items"]]
    item = next(i for i in document["items"] if i["id"] == ENVHARNESS)
    assert item["date_published"] == "2026-08-19T20:00:00Z"
    assert "reinforcement learning" in item["tags"]


def test_same_entry_ids_in_every_format(client):
    atom = [e.id for e in feedparser.parse(client.get("/feed?q=agent").data).entries]
    rss = [e.id for e in feedparser.parse(client.get("/feed?q=agent&format=rss").data).entries]
    jsn = [i["id"] for i in json.loads(client.get("/feed?q=agent&format=json").data)["items"]]
    assert atom == rss == jsn and atom


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_rich_entry_content(client, fmt):
    response = client.get(f"/feed?q=EnvHarness&format={fmt}")
    if fmt == "json":
        html = next(i for i in json.loads(response.data)["items"] if i["id"] == ENVHARNESS)["content_html"]
    else:
        entry = next(e for e in feedparser.parse(response.data).entries if e.id == ENVHARNESS)
        html = entry.content[0].value
        assert [t.term for t in entry.tags][:2] == ["LLM agents", "Environment Harness"]
    for expected in (
        "<strong>TL;DR:</strong> EnvHarness and EnvRigger dynamically reshape",
        "LLM agents learn by interacting with environments",
        "Chengsong Huang, Zifeng Wang",
        "163 upvotes · 1 comment · Google",
        '<a href="https://huggingface.co/papers/2608.19880">Hugging Face</a>',
        '<a href="https://arxiv.org/abs/2608.19880">arXiv</a>',
        '<a href="https://arxiv.org/pdf/2608.19880">PDF</a>',
        '<a href="https://github.com/google-research/envharness">GitHub</a> (8 stars) · ',
        '<a href="https://envharness.com/">Project page</a>',
    ):
        assert expected in html, expected
    # feedparser sanitises and reorders attributes; the thumbnail must survive as an image.
    assert re.search(r'<img [^>]*src="https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2608.19880.png"', html)


def test_stars_follow_the_github_link_when_known():
    from feedproxy.render.formats import entry_html
    from feedproxy.upstream.papers import paper_from_item

    from .conftest import load_items

    by_id = {i["paper"]["id"]: paper_from_item(i) for i in load_items("2025-06-12") + load_items("2026-08-21")}
    assert '<a href="https://github.com/erjui/PolicyGuide">GitHub</a> (0 stars)' in entry_html(by_id["2608.19861"])
    # Mid-2025 items have a repository and no count: nothing is made up.
    assert '<a href="https://github.com/Hambaobao/SWE-Flow">GitHub</a></p>' in entry_html(by_id["2506.09003"])


def test_upstream_markup_is_escaped_in_content(upstream, clock):
    hostile = {"paper": {"id": "2608.00002", "title": "<img src=x onerror=alert(1)>",
                         "summary": "a <script>alert(1)</script> & b", "ai_summary": "<b>bold</b>",
                         "githubRepo": "https://github.com/x\"onmouseover=\"alert(1)"},
               "publishedAt": "2026-08-21T00:00:00Z"}
    upstream.items = [hostile]
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    for fmt in ("atom", "rss"):
        entry = feedparser.parse(client.get(f"/feed?format={fmt}").data).entries[0]
        html = entry.content[0].value
        assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; b" in html
        assert "<b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    item = json.loads(client.get("/feed?format=json").data)["items"][0]
    assert "&lt;script&gt;" in item["content_html"] and "<script>" not in item["content_html"]
    assert 'href="https://github.com/x&quot;onmouseover=&quot;alert(1)"' in item["content_html"]


def test_bad_format_is_400(client):
    response = client.get("/feed?format=xml")
    assert response.status_code == 400 and "'format' must be one of atom, rss, json" in response.get_data(as_text=True)


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_same_data_gives_identical_bytes_across_instances(upstream, clock, fmt):
    a = create_app(make_config(upstream.url), clock=clock).test_client()
    clock.advance(3600 * 24 * 40)  # a later restart: nothing in the output may depend on the clock
    b = create_app(make_config(upstream.url), clock=clock).test_client()
    first, second = a.get(f"/feed?q=model&format={fmt}"), b.get(f"/feed?q=model&format={fmt}")
    assert first.data == second.data and first.headers["ETag"] == second.headers["ETag"]
    assert first.headers["Last-Modified"] == second.headers["Last-Modified"]


def entry(cache, fmt, paper, render) -> bytes:
    """One paper's entry through the cache, as a feed gets it (whole, not cut at slots)."""
    return b"".join(cache.get_parts(fmt, [paper], lambda p: (render(p),))[0])


def test_entries_are_rendered_once_and_again_only_when_the_paper_changes(items):
    from dataclasses import replace

    from feedproxy.upstream.papers import paper_from_item
    from feedproxy.render.formats import EntryCache

    cache, calls = EntryCache(), []
    paper = paper_from_item(items[0])
    render = lambda p: calls.append(p.id) or p.title.encode()  # noqa: E731
    assert entry(cache, "atom", paper, render) == entry(cache, "atom", paper, render) == paper.title.encode()
    assert len(calls) == 1
    entry(cache, "rss", paper, render)
    changed = replace(paper, upvotes=paper.upvotes + 1)
    entry(cache, "atom", changed, render)
    assert len(calls) == 3  # another format, and changed data, are rendered anew


def test_rss_descriptions_are_escaped_as_html(upstream, clock):
    """(issue 17) Readers render <description> as HTML: "<swi>" in an abstract must show, "<script>" must not run."""
    item = {"paper": {"id": "2608.00003", "title": "SWI", "summary": "We add a <swi> token; a <script>x</script> & b."},
            "publishedAt": "2026-08-21T00:00:00Z"}
    upstream.items = [item]
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    rss = etree.fromstring(client.get("/feed?format=rss").data)
    description = rss.find("channel/item/description").text
    assert description == "We add a &lt;swi&gt; token; a &lt;script&gt;x&lt;/script&gt; &amp; b."
    summary = feedparser.parse(client.get("/feed?format=rss").data).entries[0].summary
    # What a reader renders as HTML: the text with its angle brackets, no element.
    assert summary == "We add a &lt;swi&gt; token; a &lt;script&gt;x&lt;/script&gt; &amp; b."
    atom = etree.fromstring(client.get("/feed").data)
    atom_summary = atom.find("{http://www.w3.org/2005/Atom}entry/{http://www.w3.org/2005/Atom}summary").text
    assert atom_summary == "We add a <swi> token; a <script>x</script> & b."


def _feedgen_entry(paper, dc_creator=False):
    """The entry as feedgen's FeedEntry builds it: the reference formats.py's lxml entries must equal."""
    from html import escape as html_escape

    from feedgen.entry import FeedEntry

    from feedproxy.render.formats import _text, entry_html

    entry = FeedEntry()
    if dc_creator and paper.authors:
        entry.load_extension("dc", atom=False, rss=True)
        entry.dc.dc_creator(", ".join(_text(name) for name in paper.authors))
    entry.id(paper.url)
    entry.guid(paper.url, permalink=True)
    entry.title(_text(paper.title))
    entry.link(href=paper.url, rel="alternate", type="text/html")
    for name in paper.authors:
        entry.author({"name": _text(name)})
    if paper.abstract:
        text = _text(paper.abstract)
        entry.summary(html_escape(text, quote=False) if dc_creator else text, type="text")
    entry.content(entry_html(paper), type="html")
    for keyword in paper.ai_keywords:
        entry.category({"term": _text(keyword)})
    entry.published(paper.published)
    entry.updated(paper.published)
    return entry


def _papers_of_every_shape():
    from dataclasses import replace

    from feedproxy.upstream.papers import paper_from_item

    from .conftest import month_and_all_items
    from .test_relevance_set import ITEMS

    papers = [paper_from_item(item) for item in month_and_all_items() + ITEMS]
    odd = papers[0]
    return papers + [
        replace(odd, abstract="", authors=(), ai_keywords=()),
        replace(odd, abstract="a <swi> & \"b\" ]]> \x85 \u2028 \U0001f600", authors=("", "A & B <c>")),
        replace(odd, title="x\x00y\ud800z", ai_keywords=("k<1>", "")),
        # What XML escapes differently in text and in attributes (the category's term is one).
        replace(odd, title='a\rb\tc\n"q" \'x\' <>&', abstract='l1\r\nl2\t"', authors=('a\r"b', "c\td"),
                ai_keywords=('k"1\n\t\r<&>',)),
        replace(odd, authors=("",), abstract=""),
    ]


def test_entries_are_the_bytes_feedgen_would_write_for_every_paper():
    from feedproxy.render.formats import _atom_entry, _rss_item, RSS_NAMESPACES

    papers = _papers_of_every_shape()
    assert len(papers) > 500
    for paper in papers:
        assert _atom_entry(paper) == etree.tostring(_feedgen_entry(paper).atom_entry(), encoding="UTF-8")
        scope = etree.Element("scope", nsmap=RSS_NAMESPACES)
        scope.append(_feedgen_entry(paper, dc_creator=True).rss_entry())
        expected = etree.tostring(scope, encoding="UTF-8")
        assert _rss_item(paper) == expected[expected.index(b">") + 1 : -len(b"</scope>")]


def test_paper_entries_are_built_without_feedgens_entry_objects(monkeypatch):
    """The optimisation itself: feedgen's FeedEntry cost about 1 ms a paper; only the feed head uses feedgen."""
    from datetime import datetime, timezone

    from feedgen.entry import FeedEntry

    from feedproxy.render.formats import FORMATS, FeedInfo

    def refuse(*args, **kwargs):
        raise AssertionError("a paper's entry was built with feedgen's FeedEntry")

    monkeypatch.setattr(FeedEntry, "__init__", refuse)
    info = FeedInfo(id="urn:x", title="t", self_url="http://h/feed", updated=datetime(2026, 1, 1, tzinfo=timezone.utc))
    papers = _papers_of_every_shape()[:5]
    for fmt in ("atom", "rss"):
        assert FORMATS[fmt].render(info, papers, None).count(papers[0].url.encode()) >= 1


def test_the_entry_cache_never_hashes_a_paper(items, monkeypatch):
    """Hashing a Paper hashes all its fields: the cache looks entries up by id and keeps the Paper to
    compare, so a feed of 50 cached entries costs 50 string lookups. An equal Paper from a new
    snapshot is a hit, not a new render."""
    from dataclasses import replace

    from feedproxy.render.formats import EntryCache
    from feedproxy.upstream.papers import Paper, paper_from_item

    def no_hash(paper):
        raise AssertionError("a Paper was hashed")

    monkeypatch.setattr(Paper, "__hash__", no_hash)
    cache, calls = EntryCache(), []
    render = lambda p: calls.append(p.id) or p.title.encode()  # noqa: E731
    papers = [paper_from_item(item) for item in items[:3]]
    first = [entry(cache, "atom", p, render) for p in papers]
    again = [entry(cache, "atom", replace(p), render) for p in papers]  # equal, not the same objects
    assert first == again == [p.title.encode() for p in papers] and len(calls) == 3
