"""Rendering a list of papers as a feed document: Atom 1.0, RSS 2.0 (feedgen) or JSON Feed 1.1.

feedgen writes each feed's head; each paper's entry is written directly, as the same bytes feedgen
and lxml would write (tests compare them), because building feedgen's entry objects was most of a
new query's time.

Pure functions: the same FeedInfo and papers give the same bytes, in every
process and at any time, because every date comes from the data and nothing
reads the clock or keeps state; an EntryCache the caller passes only saves
rendering an entry twice (the bytes are the same with it or without). Upstream text is always escaped, never injected as markup,
and stripped of characters XML 1.0 forbids once more here, so no Paper built
by hand can break a feed either.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from html import escape
from typing import Callable, Iterable, Mapping, Sequence
from urllib.parse import quote

from cachetools import LRUCache
from feedgen.feed import FeedGenerator

from feedproxy import __version__
from feedproxy.errors import InvalidValue
from feedproxy.upstream.papers import Paper, iso_z, strip_xml_forbidden

HF_PAPERS_PAGE = "https://huggingface.co/papers"
# Rendered entries a worker keeps (an Atom entry is about 5 kB; recent papers are in most feeds). Measured
# in process, 300 new 3-word queries after 300 others: 11.2 ms a query with 16 MB, 14.0 ms with 8 MB.
DEFAULT_ENTRY_CACHE_BYTES = 16 * 1024 * 1024
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
# The namespaces of an RSS document, with the prefixes feedgen declares on <rss> and readers look for:
# rss-parser and others match the literal "content:encoded" and "dc:creator", not the namespace.
RSS_NAMESPACES = {
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
    "dc": "http://purl.org/dc/elements/1.1/",
}


# Where the per-feed parts of an entry go in its cached rendering: why the paper is in this feed, and
# a link to papers like it on this server. Each entry is rendered once per paper; a feed fills these in.
WHY_SLOT = "{{feedproxy:why}}"
MORE_SLOT = "{{feedproxy:more}}"


@dataclass(frozen=True)
class FeedInfo:
    """What a feed says about itself, independent of the format."""

    id: str
    title: str
    self_url: str
    updated: datetime
    subtitle: str = "Hugging Face Daily Papers, filtered by feedproxy"
    alternate_url: str = HF_PAPERS_PAGE
    # Why each paper matched, by paper id (the query terms found, or the concept it is near).
    why: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Where each entry's "More like this" points, the entry's id to be appended: this server's
    # /feed of the same source or url= ("https://host/feed?source=arxiv-cs-lg&similar="); "": no link.
    similar_url: str = ""
    hub_url: str | None = None  # the WebSub hub announcing this feed's changes (rel=hub), if any


def _text(value: str) -> str:
    # Upstream text never carries a slot marker: only the entry's own slots are filled. Nearly every
    # name, keyword and title is printable and has no "{{": one check each instead of three scans
    # (an entry calls this about 20 times).
    if value.isprintable() and "{{" not in value:
        return value
    return strip_xml_forbidden(value).replace(WHY_SLOT, "").replace(MORE_SLOT, "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def entry_html(paper: Paper) -> str:
    """The rich body of an entry, as escaped HTML: enough to decide whether to read the paper.

    feedgen 1.0.0 drops rel/type of extra entry links (its issue #135), so the
    entry keeps one alternate link and every other link lives here.
    """
    e = lambda s: escape(_text(s), quote=True)  # noqa: E731
    parts = [WHY_SLOT]
    if paper.thumbnail:
        parts.append(f'<p><img src="{e(paper.thumbnail)}" alt="" loading="lazy"></p>')
    if paper.ai_summary:
        parts.append(f"<p><strong>TL;DR:</strong> {e(paper.ai_summary)}</p>")
    if paper.abstract:
        parts.append(f"<p>{e(paper.abstract)}</p>")
    if paper.authors:
        parts.append(f"<p><strong>Authors:</strong> {e(', '.join(paper.authors))}</p>")
    stats = [_plural(paper.upvotes, "upvote"), _plural(paper.comments, "comment")]
    if paper.organization:
        stats.append(e(paper.organization))
    parts.append(f"<p>{' · '.join(stats)}</p>")
    # (href, label, what follows the link)
    links = [(paper.url, "Source" if paper.link else "Hugging Face", "")]
    if paper.is_arxiv:
        links += [(paper.arxiv_url, "arXiv", ""), (paper.pdf_url, "PDF", "")]
    if paper.github_repo:
        stars = f" ({_plural(paper.github_stars, 'star')})" if paper.github_stars is not None else ""
        links.append((paper.github_repo, "GitHub", stars))
    if paper.project_page:
        links.append((paper.project_page, "Project page", ""))
    parts.append("<p>" + " · ".join(f'<a href="{e(href)}">{label}</a>{after}' for href, label, after in links)
                 + "</p>")
    if paper.ai_keywords:
        parts.append(f"<p><strong>Keywords:</strong> {e(', '.join(paper.ai_keywords))}</p>")
    parts.append(MORE_SLOT)
    return "\n".join(parts)


def fill_slots(html: str, paper: Paper, info: FeedInfo) -> str:
    """entry_html's slots filled for one feed (the web page's preview uses the same words)."""
    return html.replace(WHY_SLOT, _why_html(paper, info), 1).replace(MORE_SLOT, _more_html(paper, info), 1)


def _why_html(paper: Paper, info: FeedInfo) -> str:
    why = info.why.get(paper.id)
    return f"<p><strong>Why it is here:</strong> {escape(_text(why), quote=False)}</p>" if why else ""


def _more_html(paper: Paper, info: FeedInfo) -> str:
    if not info.similar_url:
        return ""
    href = info.similar_url + quote(paper.id, safe="")  # what urlencode writes, without its cost
    return f'<p><a href="{escape(href, quote=True)}">More like this</a></p>'


_SLOTS = (WHY_SLOT.encode(), MORE_SLOT.encode())


def _cut_at_slots(entry: bytes) -> tuple[bytes, ...]:
    """A rendered entry as (before, between, after) its two slots, so a feed fills them with a join
    instead of two scans of the entry; (entry,) when it has no slots."""
    before, why, rest = entry.partition(_SLOTS[0])
    between, more, after = rest.partition(_SLOTS[1])
    return (before, between, after) if why and more else (entry,)


def _filled(fmt: str, parts: tuple[bytes, ...], paper: Paper, info: FeedInfo) -> bytes:
    """A cached entry's slots filled for this feed, escaped as the format escapes the content."""
    if len(parts) == 1:
        return parts[0]
    why, more = _why_html(paper, info), _more_html(paper, info)
    if fmt == "json":
        encode = lambda html: json.dumps(html, ensure_ascii=False)[1:-1]  # noqa: E731
    else:
        encode = lambda html: escape(html, quote=False)  # noqa: E731 - as lxml escapes element text
    before, between, after = parts
    return b"".join((before, encode(why).encode(), between, encode(more).encode(), after))


def _feed_generator(info: FeedInfo) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(_text(info.id))
    fg.title(_text(info.title))
    fg.subtitle(_text(info.subtitle))  # also the RSS description
    fg.link(href=info.alternate_url, rel="alternate", type="text/html")
    fg.updated(info.updated)  # also RSS lastBuildDate, which feedgen would otherwise set to now
    fg.language("en")
    # RFC 4287 wants an author on the feed unless every entry has one; papers can have none.
    fg.author({"name": "Hugging Face Daily Papers", "uri": HF_PAPERS_PAGE})
    fg.generator("feedproxy", version=__version__)
    return fg


class EntryCache:
    """Rendered entries by format and paper, bounded by bytes; the app keeps one for all its feeds.

    An entry depends only on its paper, so a paper in many feeds (every recent
    paper is) is rendered once; a feed is its head plus cached entries. Looked up
    by the paper's id and kept with the Paper it was made from: the same object
    (or an equal one, after a refresh) is a hit, a paper whose data changed is
    rendered anew. Hashing a Paper (all its fields) for every entry of every
    feed cost more than the lookup itself.
    """

    def __init__(self, max_bytes: int = DEFAULT_ENTRY_CACHE_BYTES):
        self._cache: LRUCache = LRUCache(maxsize=max_bytes, getsizeof=lambda held: held[2])
        self._lock = threading.Lock()

    @property
    def max_bytes(self) -> int:
        return self._cache.maxsize

    def get_parts(self, fmt: str, papers: Sequence[Paper],
                  render: Callable[[Paper], tuple[bytes, ...]]) -> list[tuple[bytes, ...]]:
        """Each paper's entry as ``render`` cuts it, from the cache or rendered (outside the lock) and kept."""
        found: list[tuple[bytes, ...] | None] = []
        with self._lock:
            for paper in papers:
                held = self._cache.get((fmt, paper.id))
                if held is not None and held[0] is not paper:
                    if held[0] == paper:  # the same data in a new object (a new snapshot): keep the new one
                        held = self._cache[(fmt, paper.id)] = (paper, held[1], held[2])
                    else:
                        held = None
                found.append(None if held is None else held[1])
        missing = [n for n, parts in enumerate(found) if parts is None]
        if missing:
            made = {n: render(papers[n]) for n in missing}
            with self._lock:
                for n, parts in made.items():
                    found[n] = parts
                    size = sum(map(len, parts)) + 64
                    if size <= self._cache.maxsize:
                        self._cache[(fmt, papers[n].id)] = (papers[n], parts, size)
        return found


def _entries(fmt: str, papers: Sequence[Paper], render: Callable[[Paper], bytes], cache: EntryCache | None,
             info: FeedInfo) -> list[bytes]:
    """Each paper's rendered entry, its slots filled: from the cache when one is given (the same bytes either way)."""
    cut = lambda paper: _cut_at_slots(render(paper))  # noqa: E731
    rendered = [cut(p) for p in papers] if cache is None else cache.get_parts(fmt, papers, cut)
    return [_filled(fmt, parts, paper, info) for parts, paper in zip(rendered, papers)]


def _escape_text(text: str) -> str:
    """Element text escaped as lxml (libxml2) writes it in UTF-8: &, <, > and carriage returns."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attribute(value: str) -> str:
    """An attribute value escaped as lxml (libxml2) writes it: also quotes, newlines and tabs."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def _atom_entry(paper: Paper) -> bytes:
    """One paper as an Atom <entry>: the bytes feedgen's FeedEntry.atom_entry serialised by lxml gives.

    Written directly, because feedgen's entry objects cost about 1.3 ms a paper and lxml's elements
    about 0.5 ms; tests compare the bytes with feedgen's for every paper of a real sample and odd shapes.
    The feed's head is still feedgen's.
    """
    published = paper.published.isoformat()
    url = _escape_text(paper.url)
    parts = [f"<entry><id>{url}</id><title>{_escape_text(_text(paper.title))}</title><updated>{published}</updated>"]
    for name in paper.authors:
        if name := _text(name):  # feedgen skips an author without a name
            parts.append(f"<author><name>{_escape_text(name)}</name></author>")
    # The link's href alone, as feedgen 1.0.0 writes it (its issue #135): a link without rel is the alternate one.
    parts.append(f'<content type="html">{_escape_text(entry_html(paper))}</content>'
                 f'<link href="{_escape_attribute(paper.url)}"/>')
    if paper.abstract:
        parts.append(f'<summary type="text">{_escape_text(_text(paper.abstract))}</summary>')
    for keyword in paper.ai_keywords:
        parts.append(f'<category term="{_escape_attribute(_text(keyword))}"/>')
    parts.append(f"<published>{published}</published></entry>")
    return "".join(parts).encode("utf-8")


def _rss_item(paper: Paper) -> bytes:
    """One RSS <item>, in the prefixes of RSS_NAMESPACES, declaring none of them (<rss> does).

    The bytes feedgen's FeedEntry.rss_entry gives (with dc:creator), serialised by lxml inside an
    element declaring RSS_NAMESPACES: prefix-matching parsers (rss-parser) read content:encoded and
    dc:creator only under those prefixes.
    """
    url = _escape_text(paper.url)
    content = _escape_text(entry_html(paper))
    parts = [f"<item><title>{_escape_text(_text(paper.title))}</title><link>{url}</link>"]
    # RSS readers take <description> as HTML: escape the text as HTML too (Atom says type="text"), or
    # an abstract writing "<swi>" (15 corpus papers do) loses it, and "<script>" in a hostile one
    # would be markup. Without an abstract, the description is the entry's HTML, as feedgen does.
    if paper.abstract:
        parts.append(f"<description>{_escape_text(escape(_text(paper.abstract), quote=False))}</description>"
                     f"<content:encoded>{content}</content:encoded>")
    else:
        parts.append(f"<description>{content}</description>")
    parts.append(f'<guid isPermaLink="true">{url}</guid>')  # the paper's page is a real permalink
    for keyword in paper.ai_keywords:
        parts.append(f"<category>{_escape_text(_text(keyword))}</category>")
    parts.append(f"<pubDate>{format_datetime(paper.published)}</pubDate>")
    if paper.authors:
        # RSS has no author element without an email address, so dc:creator carries the names: one
        # element with all of them, as arXiv's RSS does, because readers such as newsboat keep only
        # the last of several dc:creator.
        parts.append(f"<dc:creator>{_escape_text(', '.join(_text(name) for name in paper.authors))}</dc:creator>")
    parts.append("</item>")
    return "".join(parts).encode("utf-8")


def _splice(document: bytes, end_tag: bytes, entries: Iterable[bytes]) -> bytes:
    """Put rendered entries before the document's closing tags (feedgen renders the head, entry-less)."""
    if not document.endswith(end_tag):
        raise InvalidValue(f"feedgen output does not end with {end_tag!r}")
    return document[: -len(end_tag)] + b"".join(entries) + end_tag


def render_atom(info: FeedInfo, papers: Sequence[Paper], entries: EntryCache | None = None) -> bytes:
    """Return an Atom 1.0 document listing ``papers`` in the order given."""
    fg = _feed_generator(info)
    fg.link(href=info.self_url, rel="self", type="application/atom+xml")
    if info.hub_url:
        fg.link(href=info.hub_url, rel="hub")
    return _splice(fg.atom_str(pretty=False), b"</feed>", _entries("atom", papers, _atom_entry, entries, info))


def _with_rss_hub(head: bytes, hub_url: str | None) -> bytes:
    """Add <atom:link rel="hub"> first in the channel: feedgen writes only the rel=self atom:link in RSS."""
    if not hub_url:
        return head
    link = f'<atom:link href="{escape(_text(hub_url), quote=True)}" rel="hub"/>'.encode()
    return head.replace(b"<channel>", b"<channel>" + link, 1)


def render_rss(info: FeedInfo, papers: Sequence[Paper], entries: EntryCache | None = None) -> bytes:
    """Return an RSS 2.0 document listing ``papers`` in the order given."""
    fg = _feed_generator(info)
    fg.load_extension("dc", atom=False, rss=True)  # declares xmlns:dc on <rss>, for the items' dc:creator
    fg.link(href=info.self_url, rel="self", type="application/rss+xml")  # atom:link, as validators ask
    head = _with_rss_hub(fg.rss_str(pretty=False), info.hub_url)
    root = head[: head.index(b"<channel>")]
    for prefix, uri in RSS_NAMESPACES.items():
        if f'xmlns:{prefix}="{uri}"'.encode() not in root:  # the items use the prefix undeclared
            raise InvalidValue(f"feedgen's <rss> does not declare xmlns:{prefix}={uri!r}")
    return _splice(head, b"</channel></rss>", _entries("rss", papers, _rss_item, entries, info))


def _json_item(paper: Paper) -> bytes:
    item = {
        "id": paper.url,
        "url": paper.url,
        "title": _text(paper.title),
        "content_html": entry_html(paper),
        "date_published": iso_z(paper.published),
        "date_modified": iso_z(paper.published),
    }
    if paper.is_arxiv and paper.arxiv_url != paper.url:
        item["external_url"] = paper.arxiv_url
    if paper.abstract:
        item["summary"] = _text(paper.abstract)
    if paper.thumbnail:
        item["image"] = paper.thumbnail
    if paper.authors:
        item["authors"] = [{"name": _text(name)} for name in paper.authors]
    if paper.ai_keywords:
        item["tags"] = [_text(k) for k in paper.ai_keywords]
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_json(info: FeedInfo, papers: Sequence[Paper], entries: EntryCache | None = None) -> bytes:
    """Return a JSON Feed 1.1 document listing ``papers`` in the order given."""
    document = {
        "version": JSON_FEED_VERSION,
        "title": _text(info.title),
        "home_page_url": info.alternate_url,
        "feed_url": info.self_url,
        "description": _text(info.subtitle),
        "language": "en",
        "authors": [{"name": "Hugging Face Daily Papers", "url": HF_PAPERS_PAGE}],
        "items": [],
    }
    if info.hub_url:
        del document["items"]  # and put back after "hubs": the entries are spliced into the last key
        document.update(hubs=[{"type": "WebSub", "url": info.hub_url}], items=[])
    head = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    # "items" is the last key: open its list again and fill it with the cached items.
    return _splice(head, b"]}", [b",".join(_entries("json", papers, _json_item, entries, info))])


@dataclass(frozen=True)
class Format:
    """One output format: its name in ?format=, its media type, its renderer."""

    name: str
    media_type: str
    render: Callable[[FeedInfo, Sequence[Paper], EntryCache | None], bytes]


FORMATS = {
    f.name: f
    for f in (
        Format("atom", "application/atom+xml; charset=utf-8", render_atom),
        Format("rss", "application/rss+xml; charset=utf-8", render_rss),
        Format("json", "application/feed+json", render_json),
    )
}
