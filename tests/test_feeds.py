"""RSS and Atom feeds into Papers: arXiv listings, HTML-laden blogs, malformed and hostile documents."""

import logging
from datetime import datetime, timezone

import feedparser
import pytest

from feedproxy.errors import UpstreamBadData, UpstreamHTTPError
from feedproxy.search.index import PaperIndex
from feedproxy.store.snapshot import SnapshotStore
from feedproxy.upstream.feeds import (
    MAX_ABSTRACT_CHARS, UNDATED_FALLBACK, FeedListing, arxiv_id_from, declares_entities, html_to_text, parse_feed, split_authors,
)
from feedproxy.upstream.http import HttpFetcher

from .conftest import FakeClock
from .fakefeeds import FakeFeeds, fixture

NOW = datetime(2025, 8, 21, 6, 0, tzinfo=timezone.utc)
ANNOUNCED = datetime(2025, 8, 20, 4, 0, tzinfo=timezone.utc)  # "Wed, 20 Aug 2025 00:00:00 -0400"


def parse(name: str):
    return parse_feed(fixture(name), f"feed {name}")


def by_id(page):
    return {p.id: p for p in page.papers}


@pytest.fixture
def feeds():
    with FakeFeeds() as server:
        yield server


def listing(url):
    return FeedListing(url, fetcher=HttpFetcher(connect_timeout=1.0, read_timeout=1.0))


# --- arXiv ----------------------------------------------------------------------

def test_arxiv_rss_listing_served_over_http(feeds):
    feeds.serve("/rss/cs.CL", fixture("arxiv-cs.CL.rss"))
    source = listing(feeds.url("/rss/cs.CL"))
    assert source.description == feeds.url("/rss/cs.CL")
    [page] = list(source.pages())
    assert (page.number, page.item_count, page.skipped) == (0, 6, 0)
    papers = by_id(page)
    assert list(papers) == ["2508.13435", "2508.13502", "2508.12877", "2402.05512", "2311.09981", "cs/0112017"]
    assert {p.announce_type for p in page.papers} == {"new", "cross", "replace", "replace-cross"}
    first = papers["2508.13435"]
    assert first.title == "Token-Level Uncertainty for Retrieval-Augmented Question Answering"
    assert first.link == first.url == "https://arxiv.org/abs/2508.13435"  # no version: stable
    assert first.is_arxiv and first.pdf_url == "https://arxiv.org/pdf/2508.13435"
    assert first.abstract.startswith("Retrieval-augmented generation (RAG) answers")
    assert first.abstract.endswith("($p < 0.01$). Code and data are released.")
    assert first.authors == ("Priya Raman", "Daniel Okafor", "Hannah Weiss")
    assert first.ai_keywords == ("cs.CL", "cs.AI", "cs.IR")
    assert first.published == ANNOUNCED and first.published.tzinfo == timezone.utc and not first.undated
    assert papers["2508.13502"].authors == ("Mei Tanaka",)
    assert papers["2508.12877"].authors == ("José Ñúñez-García", "Zoë Müller", "Łukasz Wróbel", "Ørjan Sæther", "李明")
    assert papers["2402.05512"].authors == ("Fernando Andrade", "Sandra Lindqvist")
    assert papers["2402.05512"].abstract.startswith("We track how") and "records & show" in papers["2402.05512"].abstract
    assert papers["2311.09981"].authors == ("Wei Zhang", "Ahmed Hassan", "Olga Petrova", "Kofi Mensah")
    assert papers["cs/0112017"].link == "https://arxiv.org/abs/cs/0112017"
    assert all(not p.abstract.startswith("arXiv:") and "Announce Type" not in p.abstract for p in page.papers)


def test_arxiv_atom_listing_served_over_http(feeds):
    feeds.serve("/atom/cs.LG", fixture("arxiv-cs.LG.atom"), content_type="application/atom+xml")
    [page] = list(listing(feeds.url("/atom/cs.LG")).pages())
    assert (page.item_count, page.skipped) == (6, 0)
    papers = by_id(page)
    assert [p.announce_type for p in page.papers] == ["new", "new", "cross", "replace", "replace-cross", "new"]
    moe = papers["2508.13601"]
    assert moe.title == "Sparse Mixture-of-Experts with $k<n$ Active Experts Scales Linearly"
    assert moe.abstract.startswith("We route each token to $k<n$ experts")  # Atom text is plain: "<" survives
    assert moe.link == "https://arxiv.org/abs/2508.13601" and moe.published == ANNOUNCED  # published, not updated
    assert papers["2508.13644"].authors == ("Rafael Oliveira",)
    assert papers["2508.12990"].authors == ("Amélie Lefèvre", "Søren Kjærgaard", "Çağrı Öztürk", "François Noël")
    assert "Île-de-France" in papers["2508.12990"].abstract
    assert papers["2406.01122"].authors == ("Grace Liu", "Samuel Adeyemi", "Marta Kowalska")
    assert papers["2312.04410"].ai_keywords == ("q-bio.BM", "cs.LG")


@pytest.mark.parametrize("value, expected", [
    ("oai:arXiv.org:2508.13435v1", "2508.13435"),
    ("oai:arxiv.org:2508.13435", "2508.13435"),
    ("oai:arXiv.org:hep-th/9901001v2", "hep-th/9901001"),
    ("https://arxiv.org/abs/2508.13435v12", "2508.13435"),
    ("http://arxiv.org/abs/1210.7708v1", "1210.7708"),  # the arXiv API's Atom ids
    ("https://export.arxiv.org/abs/cs/0112017", "cs/0112017"),
    ("https://arxiv.org/pdf/2508.13435v1", None),
    ("https://arxiv.org.evil.example/abs/2508.13435", None),
    ("https://arxiv.org/abs/2508.13435/../../etc", None),
    ("oai:arXiv.org:not-an-id", None),
    ("tag:blog.example,2025:1", None),
    ("", None),
])
def test_arxiv_ids_from_oai_ids_and_abs_links(value, expected):
    assert arxiv_id_from(value) == expected


@pytest.mark.parametrize("text, expected", [
    ("Mei Tanaka", ("Mei Tanaka",)),
    ("Antonin Monteil, Paul Pegon", ("Antonin Monteil", "Paul Pegon")),
    ("A. One, B. Two and C. Three", ("A. One", "B. Two", "C. Three")),
    ("A. One, B. Two, and C. Three", ("A. One", "B. Two", "C. Three")),
    ("Fernando Andrade and Sandra Lindqvist", ("Fernando Andrade", "Sandra Lindqvist")),
    ("Alexander Sand, Anand Rao", ("Alexander Sand", "Anand Rao")),  # "and" only as a word
    ("Robert Kim, Jr., Ana Costa", ("Robert Kim Jr.", "Ana Costa")),
    (" Ana  Costa ,, ", ("Ana Costa",)),
    ("", ()),
])
def test_split_authors(text, expected):
    assert split_authors(text) == expected


def test_announce_type_falls_back_to_the_description_and_ignores_unknown_values():
    body = b"""<?xml version="1.0"?><rss version="2.0" xmlns:arxiv="http://arxiv.org/schemas/atom"><channel><title>t</title>
      <item><title>A</title><link>https://arxiv.org/abs/2508.00001</link><guid isPermaLink="false">oai:arXiv.org:2508.00001v2</guid>
        <description>arXiv:2508.00001v2 Announce Type: replace-cross
Abstract: Text.</description></item>
      <item><title>B</title><link>https://arxiv.org/abs/2508.00002</link><guid isPermaLink="false">oai:arXiv.org:2508.00002v1</guid>
        <description>arXiv:2508.00002v1 Announce Type: new
Abstract: Text.</description><arxiv:announce_type>sideways</arxiv:announce_type></item>
    </channel></rss>"""
    a, b = parse_feed(body, "feed t").papers
    assert (a.announce_type, a.abstract) == ("replace-cross", "Text.")
    assert (b.announce_type, b.abstract) == ("", "Text.")


# --- other feeds ----------------------------------------------------------------

def test_blog_rss_with_html_descriptions(feeds):
    feeds.serve("/feed.xml", fixture("blog.rss"))
    [page] = list(listing(feeds.url("/feed.xml")).pages())
    # Skipped: the javascript: item (no id, no web link) and the members-only post (an id but
    # no public link: its entry would have nowhere to point).
    assert (page.item_count, page.skipped) == (7, 2)
    papers = by_id(page)
    probes = papers["https://blog.example/2025/08/probes"]
    assert probes.title == "Why our probes lie — and how to catch them"
    assert probes.abstract == (
        "Linear probes find what a model encodes — not whether it uses it. "
        "We compare probes & interventions on 3 tasks. Read… more"
    )
    assert probes.link == "https://blog.example/2025/08/probes" and probes.authors == ("Jane Doe",)
    assert probes.ai_keywords == ("Interpretability", "Machine Learning")
    assert not probes.is_arxiv and probes.announce_type == ""
    for paper in page.papers:
        text = paper.title + " " + paper.abstract
        assert "<" not in text and "&amp;" not in text and "&nbsp;" not in text
        assert "cookie" not in text and "color: red" not in text
    school = papers["https://blog.example/2025/08/summer-school"]
    assert school.title == "Café &amp; Code: notes from the summer school".replace("&amp;", "&")
    assert school.abstract == "Two weeks, 40 students & one broken espresso machine. Day 1: tokenizers Day 2: attention"
    assert school.authors == ("Alice Smith",)  # the e-mail address is dropped
    assert school.published == datetime(2025, 8, 18, 7, 0, tzinfo=timezone.utc)
    # A post linking to an arXiv paper keeps its own id: it is about the paper, not the paper.
    reading = papers["lab-notes-reading-group-2025-33"]
    assert reading.link == "https://arxiv.org/abs/2508.13435v2" and not reading.is_arxiv
    undated = papers["https://blog.example/notes/undated"]
    # Dated from the document (its lastBuildDate), never the clock: every instance dates it alike.
    assert undated.undated and undated.published == datetime(2025, 8, 19, 18, 30, tzinfo=timezone.utc)
    assert "lab-notes-members-0042" not in papers
    untitled = papers["https://blog.example/status/2025-08-14"]
    assert untitled.title == "A short status update without a title: the cluster is back online after the…"


def test_blog_atom_with_html_titles_xhtml_content_and_several_authors():
    adam, warmup = parse("blog.atom").papers
    assert adam.id == "tag:diary.example,2025:entry-17"
    assert adam.title == "Adam vs. SGD & friends"
    assert adam.abstract == "Adam converges faster; SGD generalises better. Or does it?"
    assert adam.link == "https://diary.example/2025/adam-vs-sgd"  # the alternate link, not the enclosure
    assert adam.authors == ("Sam Taylor", "Kim Lee")
    assert adam.ai_keywords == ("optimisation", "deep-learning")
    assert adam.published == datetime(2025, 8, 18, 8, 0, tzinfo=timezone.utc)  # from updated: no published
    assert warmup.published == datetime(2025, 8, 1, 8, 0, tzinfo=timezone.utc)  # published wins over updated
    assert warmup.abstract == "Why the first thousand steps matter, with a plot of loss < 1.0 only after warm-up."


@pytest.mark.parametrize("markup, text", [
    ("<p>one</p><p>two</p>", "one two"),
    ("im<b>port</b>ant", "important"),
    ("a<br>b<br/>c", "a b c"),
    ("Caf&eacute; &amp; &#8220;tea&#x201d;&nbsp;time", "Café & “tea” time"),
    ("<script>alert('<p>x</p>')</script>safe<style>b{}</style>", "safe"),
    ("before<script>never closed", "before"),
    ("<img src=x onerror=alert(1) alt='a cat'>", ""),
    ("<svg><text>drawn</text></svg>shown", "shown"),
    ("x &lt; y and y &gt; z", "x < y and y > z"),
    ("<ul>\n<li>a</li>\n<li>b</li></ul>", "a b"),
    ("plain text", "plain text"),
    ("broken <a href='x'>link", "broken link"),
    ("ctrl\x00chars\x1b", "ctrlchars"),
])
def test_html_to_text(markup, text):
    assert html_to_text(markup) == text


def test_long_abstracts_are_cut_at_a_word():
    words = " ".join(f"word{n}" for n in range(2000))
    body = (f'<rss version="2.0"><channel><title>t</title><item><title>Long</title>'
            f'<link>https://blog.example/long</link><description>{words}</description></item></channel></rss>').encode()
    [paper] = parse_feed(body, "feed t").papers
    assert len(paper.abstract) <= MAX_ABSTRACT_CHARS + 1 and paper.abstract.endswith("…")
    assert paper.abstract[:-1].split(" ")[-1].startswith("word")


def test_an_entry_listed_twice_is_kept_once():
    item = b"<item><title>Same</title><link>https://blog.example/same</link></item>"
    body = b'<rss version="2.0"><channel><title>t</title>' + item + item + b"</channel></rss>"
    page = parse_feed(body, "feed t")
    assert (len(page.papers), page.item_count, page.skipped) == (1, 2, 1)


def test_an_empty_feed_is_an_empty_page_not_an_error():
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>cs.LG updates on arXiv.org</title></channel></rss>'
    page = parse_feed(body, "feed t")  # arXiv's listings are empty at weekends
    assert (page.papers, page.item_count, page.skipped) == ((), 0, 0)


# --- malformed and hostile documents ------------------------------------------------

def test_a_malformed_feed_keeps_its_entries_and_logs_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="feedproxy.feeds"):
        page = parse("malformed.rss")
    assert [p.title for p in page.papers] == ["Tips & tricks for GPUs", "Second post"]
    assert page.papers[0].abstract == "Use mixed precision."
    [record] = caplog.records
    assert record.getMessage().startswith("feed malformed.rss: malformed feed, read 2 entries anyway (")
    assert "not well-formed" in record.getMessage()


@pytest.mark.parametrize("body, words", [
    (b"<!DOCTYPE html><html><head><title>Blog</title></head><body><p>Hello</body></html>", "not an RSS or Atom feed (<unknown>"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": []}', "not an RSS or Atom feed (<unknown>:2:0: not well-formed"),
    (b"", "not an RSS or Atom feed"),
    (b"Service Temporarily Unavailable", "not an RSS or Atom feed (<unknown>:2:0: syntax error)"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel><title>cut off', "malformed feed with no readable entries (<unknown>"),
    (b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>x</title><entry><title>a', "none of the 1 entries is usable"),
    (b'<rss version="2.0"><channel><title>t</title><item><title>x</title><link>javascript:1</link></item></channel></rss>',
     "none of the 1 entries is usable (entry has neither an id nor an http(s) link)"),
])
def test_documents_that_are_not_usable_feeds(body, words):
    with pytest.raises(UpstreamBadData) as err:
        parse_feed(body, "feed https://blog.example/feed")
    message = str(err.value)
    assert message.startswith("feed https://blog.example/feed: ") and words in message


def quadratic_blowup(n: int) -> bytes:
    """One entity of n characters referenced n times: n*n characters once expanded."""
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n <!ENTITY a "' + b"x" * n + b'">\n]>\n'
        b'<rss version="2.0"><channel><title>t</title><item><title>q</title><link>https://attacker.example/q</link>'
        b"<description>" + b"&a;" * n + b"</description></item></channel></rss>"
    )


ATTACKS = {
    "billion laughs": fixture("billion-laughs.xml"),
    "external entity (file:///etc/passwd)": fixture("xxe.xml"),
    "quadratic blowup (40 kB -> 100 MB)": quadratic_blowup(10_000),
    "quadratic blowup, declaration on one line": quadratic_blowup(10_000).replace(b"[\n <!ENTITY", b"[<!ENTITY"),
    "quadratic blowup in UTF-16": quadratic_blowup(10_000).replace(b'"1.0"?>', b'"1.0" encoding="utf-16"?>').decode().encode("utf-16"),
    # "+ADwAIQ-" is "<!" in UTF-7: the raw bytes never contain "<!ENTITY".
    "quadratic blowup in UTF-7": quadratic_blowup(10_000)
    .replace(b'"1.0"?>', b'"1.0" encoding="utf-7"?>').replace(b"<!ENTITY", b"+ADwAIQ-ENTITY"),
    # feedparser's regex finds declarations even inside a comment and re-declares them.
    "declaration hidden in a comment": quadratic_blowup(10_000).replace(b"<!DOCTYPE rss [", b"<!--").replace(b"]>", b"-->\n<!DOCTYPE rss>"),
    "external parameter entity": b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n <!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext;\n]>\n'
                                 b'<rss version="2.0"><channel><title>t</title></channel></rss>',
}


@pytest.mark.parametrize("body", ATTACKS.values(), ids=ATTACKS.keys())
def test_entity_attacks_are_refused_quickly_without_expanding(body, monkeypatch):
    """Refused before any XML parser sees the document, so no entity is ever expanded."""
    assert declares_entities(body)
    parsed = []
    monkeypatch.setattr(feedparser, "parse", lambda *args, **kwargs: parsed.append(args))
    with pytest.raises(UpstreamBadData, match="^feed https://attacker.example/feed: refused a document that declares XML entities") as err:
        parse_feed(body, "feed https://attacker.example/feed")
    assert parsed == []
    assert "root:" not in str(err.value) and "lollol" not in str(err.value)


def test_feedparser_alone_drops_nested_and_external_entities_but_expands_flat_ones():
    """What we verified about feedparser 6.0.x, and why parse_feed refuses entity declarations.

    feedparser strips DOCTYPE entity declarations, re-declaring only "safe" ones
    (a quoted value without "&"), and never fetches external entities. So billion
    laughs and XXE come to nothing on their own; but when expat stops at its
    amplification limit, the fallback parser expands the safe ones without limit.
    If this test starts failing after an upgrade, feedparser has changed how it
    handles entities: re-check before relaxing declares_entities.
    """
    laughs = feedparser.parse(fixture("billion-laughs.xml"))
    assert laughs.entries[0].title == "&lol9;"
    xxe = feedparser.parse(fixture("xxe.xml"))
    assert "root:" not in xxe.entries[0].title + xxe.entries[0].summary
    flat = feedparser.parse(quadratic_blowup(1000))  # 4 kB of document
    assert len(flat.entries[0].summary) == 1000 * 1000  # 1 MB of text


def test_documents_without_entity_declarations_are_not_refused():
    assert not declares_entities(fixture("arxiv-cs.CL.rss"))
    # A DOCTYPE alone (RSS 0.91) is fine, and so is the word in escaped text.
    body = (b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
            b'"http://my.netscape.com/publish/formats/rss-0.91.dtd">\n<rss version="0.91"><channel><title>t</title>'
            b"<item><title>On &lt;!ENTITY&gt; attacks</title><link>https://blog.example/xxe</link></item></channel></rss>")
    [paper] = parse_feed(body, "feed t").papers
    assert paper.title == "On <!ENTITY> attacks"


# --- FeedListing ------------------------------------------------------------------

def test_conditional_get_etag_then_304_means_no_page(feeds):
    route = feeds.serve("/atom/cs.LG", fixture("arxiv-cs.LG.atom"), etag=True)
    source = listing(feeds.url("/atom/cs.LG"))
    [first] = list(source.pages())
    assert "If-None-Match" not in feeds.requests[0]["headers"]
    assert first.validators.etag.startswith('"')  # the page carries its answer's validators
    assert list(source.pages(first.validators)) == []  # 304: nothing new
    assert feeds.requests[1]["headers"]["If-None-Match"] == first.validators.etag
    route.body = fixture("arxiv-cs.CL.rss")
    [page] = list(source.pages(first.validators))  # changed: 200 with the new body
    assert page.papers[0].id == "2508.13435" and page.validators != first.validators


def test_undated_entries_take_the_documents_date_not_the_clock():
    """Two instances reading the same document at different times must date its entries alike."""
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://b.example/</link>'
            b"<item><title>dated</title><link>https://b.example/1</link>"
            b"<pubDate>Mon, 18 Aug 2025 09:00:00 +0000</pubDate></item>"
            b"<item><title>undated</title><link>https://b.example/2</link></item></channel></rss>")
    papers = {p.title: p for p in parse_feed(body, "feed t").papers}
    assert papers["undated"].undated and papers["undated"].published == papers["dated"].published
    nothing_dated = body.replace(b"<pubDate>Mon, 18 Aug 2025 09:00:00 +0000</pubDate>", b"")
    assert {p.published for p in parse_feed(nothing_dated, "feed t").papers} == {UNDATED_FALLBACK}


def test_a_bad_body_is_never_revalidated(feeds):
    """Validators come only with data that parsed: a bad body's ETag is never sent back."""
    route = feeds.serve("/feed", fixture("blog.rss"), etag=True)
    clock = FakeClock(NOW)
    store = SnapshotStore(listing(feeds.url("/feed")), build_index=PaperIndex, background=False, clock=clock)
    good = store.current()
    route.body, route.content_type = b"<html>maintenance</html>", "text/html"
    clock.advance(901)
    assert store.current() is good  # the refresh failed: the last good papers are served
    assert "not an RSS or Atom feed" in store.last_error and store.peek().validators == good.validators
    route.body, route.content_type = fixture("blog.atom"), "application/atom+xml"
    clock.advance(10)
    assert store.current() is not good
    sent = [r["headers"].get("If-None-Match") for r in feeds.requests]
    assert sent[1] == sent[2] == good.validators.etag  # never the maintenance page's


def test_http_errors_come_through_as_upstream_errors(feeds):
    with pytest.raises(UpstreamHTTPError, match="HTTP 404"):
        list(listing(feeds.url("/missing")).pages())
