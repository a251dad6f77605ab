"""Feed request parameters: validation into an immutable FeedRequest, with messages that name the culprit.

Used by /feed and by the web page, so both accept and refuse exactly the same
things. Every refusal is a BadParameter whose ``status`` is the HTTP status to
answer with (400, or 404 for an unknown source) and whose text is shown as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable
from urllib.parse import quote, urlencode

from werkzeug.datastructures import MultiDict

from feedproxy.errors import BadParameter, QueryError, UnknownSource
from feedproxy.numbers import parse_whole_number
from feedproxy.search.index import SORTS
from feedproxy.search.query import MATCHES, Query, parse_query
from feedproxy.upstream.feeds import ANNOUNCE_TYPES
from feedproxy.render.digest import PERIODS
from feedproxy.render.formats import FORMATS

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_SOURCES = 10
MAX_TITLE_QUERY = 200  # characters of the query shown in a feed's title
MAX_SIMILAR_ID = 200
# top=week|month: the most upvoted papers of the last 7 or 30 days, counted back as days= is.
TOPS = {"week": 7, "month": 30}
TOP_SORT = "upvotes"  # the order of a top feed when sort is not given
SIMILAR_SORT = "relevance"  # the order of a similar= feed when sort is not given: nearest first
# Left as they are in feed URLs, for readability (source lists, url= values); every other character
# outside RFC 3986's unreserved set is percent-encoded, a space as %20.
URL_SAFE = ":/,"


def encode_params(pairs: Iterable[tuple[str, str]]) -> str:
    """Write a query string the one way feedproxy spells URLs: the feed's self link and id, the page, OPML."""
    return urlencode(list(pairs), quote_via=quote, safe=URL_SAFE)


@dataclass(frozen=True)
class FeedRequest:
    """The validated parameters of one feed request."""

    query: Query
    limit: int = DEFAULT_LIMIT
    min_upvotes: int = 0
    days: int | None = None
    sort: str = "date"
    format: str = "atom"
    sources: tuple[str, ...] = ()  # empty: the default source
    announce: tuple[str, ...] = ()  # arXiv announce types to keep; empty: all
    url: str | None = None  # a user-supplied feed URL (only when the operator allows it)
    query_text: str = ""  # what the user typed, whitespace folded (empty when the query is)
    match: str = MATCHES[0]  # keyword, concept or hybrid: how the words of q are matched
    similar: str | None = None  # a paper's id: the papers nearest to it in meaning
    top: str | None = None  # week or month: only the `limit` most upvoted papers of that many days

    @property
    def default_sort(self) -> str:
        """The sort when sort= is not given: nearest first for similar=, by upvotes for a top feed, else by date."""
        if self.similar:
            return SIMILAR_SORT
        return TOP_SORT if self.top else SORTS[0]

    @property
    def searched_days(self) -> int | None:
        """How many days back the search reaches: top's week or month, else days= (None: the whole window)."""
        return TOPS[self.top] if self.top else self.days
    digest: str | None = None  # daily or weekly: one entry per period instead of one per paper

    def url_params(self) -> list[tuple[str, str]]:
        """Every parameter that shapes the feed, in one fixed order, defaults left out, q as typed.

        The one spelling of a feed's URL: its rel=self and Atom id, the page's feed URL and OPML all
        use it, so a reader sees one URL for one feed whatever order the request gave.
        """
        params = [("q", self.query_text)] if self.query_text else []
        if self.match != MATCHES[0]:
            params.append(("match", self.match))
        if self.similar:
            params.append(("similar", self.similar))
        if self.min_upvotes:
            params.append(("min_upvotes", str(self.min_upvotes)))
        if self.days is not None:
            params.append(("days", str(self.days)))
        if self.sort != self.default_sort:
            params.append(("sort", self.sort))
        if self.top:
            params.append(("top", self.top))
        if self.format != "atom":
            params.append(("format", self.format))
        if self.limit != DEFAULT_LIMIT:
            params.append(("limit", str(self.limit)))
        if self.digest:
            params.append(("digest", self.digest))
        if self.sources:
            params.append(("source", ",".join(self.sources)))
        if self.announce:
            params.append(("announce", ",".join(self.announce)))
        if self.url:
            params.append(("url", self.url))
        return params

    def scope_params(self) -> list[tuple[str, str]]:
        """What is searched (``source=`` or ``url=``), as URL parameters: a link to the papers like one
        of this feed's keeps it, so it searches the same papers (empty for the default source)."""
        if self.sources:
            return [("source", ",".join(self.sources))]
        return [("url", self.url)] if self.url else []

    def query_string(self) -> str:
        """url_params(), percent-encoded: what follows /feed? in the feed's canonical URL."""
        return encode_params(self.url_params())

    def title(self, source_title: str = "Daily Papers") -> str:
        shown = self.query_text if len(self.query_text) <= MAX_TITLE_QUERY else self.query_text[:MAX_TITLE_QUERY] + "…"
        parts = [f"{source_title}: {shown}" if shown else source_title]
        if self.similar:
            parts.append(f"similar to {self.similar}")
        if self.match != MATCHES[0]:
            parts.append(f"{self.match} match")
        if self.min_upvotes:
            parts.append(f"{self.min_upvotes}+ upvotes")
        if self.days is not None:
            parts.append(f"last {self.days} day{'s' if self.days != 1 else ''}")
        if self.top:
            parts.append(f"top {self.limit} of the {self.top}")
        if self.announce:
            parts.append("/".join(self.announce))
        if self.digest:
            parts.append(f"{self.digest} digest")
        return " · ".join(parts)


def _single(args: MultiDict, name: str) -> str | None:
    values = args.getlist(name)
    if len(values) > 1:
        raise BadParameter(f"parameter {name!r} is given {len(values)} times; give it once", name)
    return values[0] if values else None


def _whole_number(args: MultiDict, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = _single(args, name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse_whole_number(raw, low, high)
    except ValueError as exc:
        raise BadParameter(f"parameter {name!r} {exc}", name) from None


def _choice(args: MultiDict, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
    raw = _single(args, name)
    value = (raw or default or choices[0]).strip().lower()
    if value not in choices:
        raise BadParameter(f"parameter {name!r} must be one of {', '.join(choices)}, got {value[:40]!r}", name)
    return value


def _optional_choice(args: MultiDict, name: str, choices: tuple[str, ...]) -> str | None:
    """One of ``choices``, or None when the parameter is missing or empty."""
    raw = (_single(args, name) or "").strip().lower()
    if raw and raw not in choices:
        raise BadParameter(f"parameter {name!r} must be one of {', '.join(choices)}, got {raw[:40]!r}", name)
    return raw or None


def _names(args: MultiDict, name: str) -> tuple[str, ...]:
    """A comma-separated list parameter, lower-cased, duplicates dropped, order kept."""
    raw = _single(args, name) or ""
    return tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))


def parse_feed_request(
    args: MultiDict, window_days: int, known_sources: Iterable[str] | None = None, default_source: str = ""
) -> FeedRequest:
    """Validate feed parameters; raise BadParameter with a message naming the first bad one."""
    raw_q = _single(args, "q")
    try:
        query = parse_query(raw_q)
    except QueryError as exc:
        raise BadParameter(f"parameter 'q' is not a valid query: {exc}", "q") from None
    sources = _names(args, "source")
    if len(sources) > MAX_SOURCES:
        raise BadParameter(f"parameter 'source' names {len(sources)} sources; at most {MAX_SOURCES} are merged", "source")
    if known_sources is not None:
        known = list(known_sources)
        unknown = [s for s in sources if s not in known]
        if unknown:
            raise UnknownSource(f"unknown source {unknown[0][:40]!r}; known sources: {', '.join(known)}")
    url = (_single(args, "url") or "").strip() or None
    if url is not None and sources:
        raise BadParameter("give either 'url' or 'source', not both", "url")
    if sources == (default_source,):
        sources = ()  # the default spelled out is the same feed
    announce = _names(args, "announce")
    bad = [a for a in announce if a not in ANNOUNCE_TYPES]
    if bad:
        raise BadParameter(f"parameter 'announce' must list {', '.join(ANNOUNCE_TYPES)}, got {bad[0][:40]!r}", "announce")
    similar = (_single(args, "similar") or "").strip() or None
    if similar is not None and (len(similar) > MAX_SIMILAR_ID or not similar.isprintable()):
        raise BadParameter(f"parameter 'similar' must be a paper id such as 2608.12345, got {similar[:40]!r}", "similar")
    top = _top(args, window_days)
    days = _whole_number(args, "days", None, 1, window_days)
    if top and days is not None:
        raise BadParameter(f"give either 'days' or 'top', not both: top={top} lists the last {TOPS[top]} days", "top")
    return FeedRequest(
        query=query,
        limit=_whole_number(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        min_upvotes=_whole_number(args, "min_upvotes", 0, 0, 10**9 - 1),
        days=days,
        # A feed of papers like one paper lists the nearest first, unless a sort is asked for.
        sort=_choice(args, "sort", SORTS, SIMILAR_SORT if similar else TOP_SORT if top else None),
        format=_choice(args, "format", tuple(FORMATS)),
        sources=sources,
        announce=tuple(a for a in ANNOUNCE_TYPES if a in announce),
        url=url,
        query_text=" ".join((raw_q or "").split()) if not query.is_empty else "",
        match=_choice(args, "match", MATCHES),
        similar=similar,
        top=top,
        digest=_optional_choice(args, "digest", PERIODS),
    )


def _top(args: MultiDict, window_days: int) -> str | None:
    """top=week or month (empty: none); refused when the window is shorter than the days it lists."""
    raw = (_single(args, "top") or "").strip().lower()
    if not raw:
        return None
    if raw not in TOPS:
        raise BadParameter(f"parameter 'top' must be one of {', '.join(TOPS)}, got {raw[:40]!r}", "top")
    if TOPS[raw] > window_days:
        raise BadParameter(f"parameter 'top' cannot be {raw}: this server keeps only the last {window_days} "
                           f"day{'s' if window_days != 1 else ''} of papers (FEEDPROXY_WINDOW_DAYS)", "top")
    return raw
