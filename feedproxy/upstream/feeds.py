"""RSS and Atom feeds as listing sources: parse a feed document into Papers, arXiv listings included.

``parse_feed`` turns the bytes of one RSS or Atom document into a ``Page``;
``FeedListing`` fetches one feed URL (conditionally) and yields that page. Entries
of arXiv's announcement feeds (rss.arxiv.org) become Papers keyed by their arXiv
id without version, like Daily Papers; other entries keep their own id and link.

feedparser reads an RSS ``<description>`` as HTML, so an arXiv abstract with
"$k<n$" loses the text between "<" and the next ">" in the RSS listing; the Atom
listing (rss.arxiv.org/atom/...) keeps it, as its summaries are plain text.

Safety: feedparser drops most entity declarations, but it expands "safe" ones
(``<!ENTITY a "xxxx...">``) in its fallback parser without any limit, so 40 kB
of entities and references grow into hundreds of megabytes. A document that
declares any entity is therefore refused before feedparser sees it.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from email.utils import parseaddr
from html.parser import HTMLParser
from dataclasses import replace
from typing import Iterator
from urllib.parse import urlsplit

import feedparser
from feedparser.encodings import convert_to_utf8

from feedproxy.errors import InvalidItem, UpstreamBadData
from feedproxy.upstream.http import NO_VALIDATORS, HttpFetcher, Validators
from feedproxy.upstream.papers import ARXIV_ABS_URL, Paper, clean_text, is_arxiv_id
from feedproxy.upstream.daily_papers import Page

log = logging.getLogger(__name__)

ANNOUNCE_TYPES = ("new", "cross", "replace", "replace-cross")  # arXiv's, in the order feeds list them
# The date of undated entries when the document itself carries no date at all: a fixed one, never
# the clock, so the same document gives the same feed in every instance (README: byte-identical).
UNDATED_FALLBACK = datetime(1970, 1, 1, tzinfo=timezone.utc)
ARXIV_HOSTS = frozenset({"arxiv.org", "www.arxiv.org", "export.arxiv.org"})
MAX_ABSTRACT_CHARS = 5000  # blog feeds carry whole articles; keep what a feed entry needs
TITLE_FROM_TEXT_CHARS = 80  # an entry without a title is named by the start of its text

_OAI_PREFIX = "oai:arxiv.org:"
_VERSION = re.compile(r"v\d+$")
_ANNOUNCE = re.compile(r"Announce Type:\s*(\S+)")
_ENTITY_DECLARATION = re.compile(rb"<!ENTITY", re.IGNORECASE)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_NAME_SUFFIXES = frozenset({"jr", "jr.", "sr", "sr.", "ii", "iii", "iv"})


# --- HTML to text ---------------------------------------------------------------

class _TextExtractor(HTMLParser):
    """Collect the text of an HTML fragment: entities decoded, scripts and styles dropped."""

    # Elements whose content is never text a reader should see.
    SKIPPED = frozenset({"script", "style", "template", "noscript", "iframe", "object", "svg", "head"})
    # Elements that separate words, so "<p>a</p><p>b</p>" reads "a b", not "ab".
    BREAKING = frozenset({
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
        "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "img", "li", "main",
        "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
    })

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag in self.BREAKING:
            self.parts.append(" ")

    def handle_startendtag(self, tag, attrs):
        if tag in self.BREAKING:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in self.SKIPPED:
            self.skipping = max(self.skipping - 1, 0)
        elif tag in self.BREAKING:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Return the visible text of an HTML fragment as one clean line."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    return clean_text("".join(extractor.parts))


def _detail_text(detail) -> str:
    """The text of a feedparser text construct, read as HTML only when it is HTML."""
    if not detail:
        return ""
    value = detail.get("value") or ""
    if detail.get("type") in _HTML_TYPES:
        return html_to_text(value)
    return clean_text(value)


# --- arXiv ----------------------------------------------------------------------

def arxiv_id_from(value: str) -> str | None:
    """The arXiv id without version in an OAI id or an arxiv.org/abs URL, else None.

    ``oai:arXiv.org:2508.13435v1`` and ``https://arxiv.org/abs/2508.13435v1``
    both give ``2508.13435``; old-style ids (``cs/0112017v2``) work too.
    """
    text = value.strip()
    if text.lower().startswith(_OAI_PREFIX):
        candidate = text[len(_OAI_PREFIX):]
    else:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or (parts.hostname or "") not in ARXIV_HOSTS:
            return None
        if not parts.path.startswith("/abs/"):
            return None
        candidate = parts.path[len("/abs/"):]
    candidate = _VERSION.sub("", candidate)
    return candidate if is_arxiv_id(candidate) else None


def split_authors(text: str) -> tuple[str, ...]:
    """Split an arXiv author list ("A, B, and C" or "A and B") into names.

    "and" separates names only as a whole word, so "Fernando Andrade" stays whole;
    a suffix such as "Jr." stays with the name before it.
    """
    names: list[str] = []
    for part in text.split(","):
        part = clean_text(part)
        if part.lower().startswith("and "):
            part = part[4:].strip()
        if not part:
            continue
        if part.lower() in _NAME_SUFFIXES and names:
            names[-1] = f"{names[-1]} {part}"
            continue
        names.extend(name.strip() for name in part.split(" and ") if name.strip())
    return tuple(names)


def _arxiv_abstract(text: str) -> str:
    """Drop the "arXiv:ID Announce Type: new Abstract:" preamble of an arXiv listing entry."""
    if text.startswith("arXiv:"):
        head, found, rest = text.partition("Abstract:")
        if found:
            return rest.strip()
    return text


# --- entries --------------------------------------------------------------------

def _web_url(value: object) -> str:
    """``value`` when it is an absolute http(s) URL, else ""."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if not text or any(c.isspace() for c in text):
        return ""
    parts = urlsplit(text)
    return text if parts.scheme in ("http", "https") and parts.netloc else ""


def _entry_link(entry) -> str:
    """The entry's alternate (web page) link, http(s) only."""
    for link in entry.get("links") or ():
        if link.get("rel", "alternate") == "alternate" and _web_url(link.get("href")):
            return _web_url(link.get("href"))
    return _web_url(entry.get("link"))


def _entry_date(entry) -> datetime | None:
    for key in ("published_parsed", "updated_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                return datetime(*parsed[:6], tzinfo=timezone.utc)
            except (TypeError, ValueError):
                continue
    return None


def _author_names(entry, atom: bool) -> list[str]:
    """The entry's author names; e-mail addresses are never kept."""
    raw = clean_text(entry.get("author"))
    if not atom and "@" in raw:
        # RSS <author> is "email (Name)"; feedparser's own split cuts long top-level
        # domains ("alice@blog.exam", "ple (Alice Smith"), so split it here.
        name, _ = parseaddr(raw)
        if not name or "@" in name:
            name = raw.split("(", 1)[0].strip()  # "Name (email)"
        return [name] if name and "@" not in name else []
    names = [clean_text(a.get("name")) for a in entry.get("authors") or () if isinstance(a, dict)]
    return [n for n in names if n] or ([raw] if raw else [])


def _unique(values) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(" ,;:.") + "…"


def paper_from_entry(entry, undated: datetime = UNDATED_FALLBACK, *, atom: bool = False) -> Paper:
    """Build a Paper from one feedparser entry, or raise InvalidItem saying why.

    ``undated`` is the date given to an entry that carries none (it is marked ``undated``).

    ``atom`` says the entry comes from an Atom feed, whose authors are structured;
    an RSS ``<author>`` is one "email (Name)" string.
    """
    entry_id = clean_text(entry.get("id"))
    link = _entry_link(entry)
    # An entry is an arXiv paper when its id says so; a link to arXiv counts only
    # when the entry has no id of its own (a blog post about a paper keeps its id).
    arxiv_id = arxiv_id_from(entry_id) or (arxiv_id_from(link) if entry_id in ("", link) else None)
    if arxiv_id:
        paper_id, link = arxiv_id, ARXIV_ABS_URL.format(id=arxiv_id)
    else:
        paper_id = entry_id or link
        if not link and entry_id.startswith(("https://", "http://")):
            link = entry_id  # an RSS guid that is a permalink
    if not paper_id:
        raise InvalidItem("entry has neither an id nor an http(s) link")
    if not link:
        # Our entry would have no page to link to (a link that 404s is worse than none).
        raise InvalidItem(f"entry {paper_id[:80]!r} has no http(s) link")

    summary = entry.get("summary_detail") or next(iter(entry.get("content") or ()), None)
    abstract = _detail_text(summary)
    announce_type = clean_text(entry.get("arxiv_announce_type")).lower()
    if arxiv_id:
        if not announce_type and abstract.startswith("arXiv:"):
            found = _ANNOUNCE.search(abstract.partition("Abstract:")[0])
            announce_type = found.group(1).lower() if found else ""
        abstract = _arxiv_abstract(abstract)
    if announce_type not in ANNOUNCE_TYPES:
        announce_type = ""

    title = _detail_text(entry.get("title_detail")) or clean_text(entry.get("title"))
    title = title or _shorten(abstract, TITLE_FROM_TEXT_CHARS)
    if not title:
        raise InvalidItem(f"entry {paper_id[:80]} has no title and no text")

    names = _author_names(entry, atom)
    # arXiv puts all authors in one dc:creator; elsewhere "Doe, Jane" may be one name.
    authors = _unique(n for name in names for n in (split_authors(name) if arxiv_id else (name,)))
    keywords = _unique(clean_text(t.get("term") or t.get("label")) for t in entry.get("tags") or ())

    published = _entry_date(entry)
    return Paper(
        id=paper_id,
        title=title,
        published=published or undated,
        abstract=_shorten(abstract, MAX_ABSTRACT_CHARS),
        authors=authors,
        ai_keywords=keywords,
        link=link,
        announce_type=announce_type,
        undated=published is None,
    )


# --- documents ------------------------------------------------------------------

def declares_entities(body: bytes) -> bool:
    """True when the document declares an XML entity anywhere (DOCTYPE internal subset or not).

    The check runs on the UTF-8 text feedparser itself would parse, so no
    encoding (UTF-16, UTF-7, EBCDIC) can hide a declaration from it. A literal
    ``<!ENTITY`` inside CDATA also counts: refusing such a rare feed is cheaper
    than parsing DTDs twice.
    """
    return _ENTITY_DECLARATION.search(convert_to_utf8({}, body, {})) is not None


def _complaint(parsed) -> str:
    exc = parsed.get("bozo_exception")
    if exc is None:
        return "unknown problem"
    return str(exc) or type(exc).__name__


def _document_date(parsed, entries) -> datetime:
    """The date the document gives itself, else its newest dated entry's, else UNDATED_FALLBACK.

    Undated entries take it: a date from the data, so every instance reading the same document
    dates them alike (a snapshot then keeps the date an entry was first seen with).
    """
    own = _entry_date(parsed.get("feed") or {})
    if own is not None:
        return own
    dated = [d for d in (_entry_date(e) for e in entries) if d is not None]
    return max(dated, default=UNDATED_FALLBACK)


def parse_feed(body: bytes, origin: str) -> Page:
    """Parse an RSS or Atom document into one Page; raise UpstreamBadData if it is not a usable feed.

    ``origin`` starts every message (e.g. "feed https://..."); entries without a date take the
    document's (``_document_date``) and are marked ``undated``.
    """
    if declares_entities(body):
        raise UpstreamBadData(f"{origin}: refused a document that declares XML entities (possible entity-expansion attack)")
    parsed = feedparser.parse(body, sanitize_html=True, resolve_relative_uris=False)
    entries = parsed.get("entries") or []
    # feedparser flags harmless oddities (an encoding override, an undeclared namespace) as bozo too.
    fatal = parsed.get("bozo") and not isinstance(parsed.get("bozo_exception"), feedparser.ThingsNobodyCaresAboutButMe)
    if not entries and not parsed.get("version"):
        detail = f" ({_complaint(parsed)})" if parsed.get("bozo") else ""
        raise UpstreamBadData(f"{origin}: not an RSS or Atom feed{detail}")
    if not entries and fatal:
        raise UpstreamBadData(f"{origin}: malformed feed with no readable entries ({_complaint(parsed)})")
    if fatal:
        log.warning("%s: malformed feed, read %d entries anyway (%s)", origin, len(entries), _complaint(parsed))

    atom = str(parsed.get("version", "")).startswith("atom")
    undated = _document_date(parsed, entries)
    papers: dict[str, Paper] = {}
    problems: list[str] = []
    for entry in entries:
        try:
            paper = paper_from_entry(entry, undated, atom=atom)
        except InvalidItem as exc:
            problems.append(str(exc))
            continue
        if paper.id in papers:
            problems.append(f"entry {paper.id[:80]} is listed twice")
            continue
        papers[paper.id] = paper
    if entries and not papers:
        raise UpstreamBadData(f"{origin}: none of the {len(entries)} entries is usable ({problems[0]})")
    if problems:
        log.warning("%s: skipped %d of %d entries, e.g. %s", origin, len(problems), len(entries), problems[0])
    return Page(number=0, papers=tuple(papers.values()), item_count=len(entries), skipped=len(problems))


class FeedListing:
    """One RSS or Atom feed as a listing source: a single page, fetched conditionally."""

    def __init__(self, url: str, *, fetcher: HttpFetcher):
        self.url = url
        self.description = url
        self.fetcher = fetcher

    def pages(self, validators: Validators = NO_VALIDATORS) -> Iterator[Page]:
        """Yield the feed as one Page; nothing at all when the server answers 304 Not Modified."""
        fetched = self.fetcher.get(self.url, validators=validators)
        if fetched.not_modified:
            return
        yield replace(parse_feed(fetched.body, f"feed {self.url}"), validators=fetched.validators)

    def close(self) -> None:
        """Nothing to release: the fetcher is shared and closed by whoever made it."""
