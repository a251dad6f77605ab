"""The HTTP layer: parameter validation and the /feed view, kept thin.

Views turn request parameters into a FeedRequest (or a 400 naming the bad
parameter), ask the store for the current snapshot (or answer 503 with
Retry-After), and hand the matching papers to the renderer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote_to_bytes, urlencode

from flask import Blueprint, Response, current_app, g, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.http import http_date

from .errors import NoData
from .query import Query, QueryError, parse_query
from .feedcache import FeedCache, RenderedFeed
from .render import FORMATS, FeedInfo
from .snapshot import SnapshotStore, window_start

log = logging.getLogger(__name__)

bp = Blueprint("feeds", __name__)

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
SORTS = ("date", "upvotes", "relevance")
MAX_QUERY_STRING_BYTES = 4096
MAX_PARAMETERS = 64
# Bounds of Cache-Control max-age: readers and proxies may keep a feed until the next refresh.
MIN_MAX_AGE, MAX_MAX_AGE = 30, 3600


class BadParameter(ValueError):
    """A request parameter is invalid; the message names it and says what is accepted."""


@dataclass(frozen=True)
class FeedRequest:
    """The validated parameters of one feed request."""

    query: Query
    limit: int = DEFAULT_LIMIT
    min_upvotes: int = 0
    days: int | None = None
    sort: str = "date"
    format: str = "atom"

    def canonical_params(self) -> list[tuple[str, str]]:
        """The parameters that decide which papers match, in a fixed order, defaults left out."""
        params = []
        if not self.query.is_empty:
            params.append(("q", self.query.normalised))
        if self.min_upvotes:
            params.append(("min_upvotes", str(self.min_upvotes)))
        if self.days is not None:
            params.append(("days", str(self.days)))
        return params

    def title(self) -> str:
        parts = [f"Daily Papers: {self.query.normalised}" if not self.query.is_empty else "Daily Papers"]
        if self.min_upvotes:
            parts.append(f"{self.min_upvotes}+ upvotes")
        if self.days is not None:
            parts.append(f"last {self.days} day{'s' if self.days != 1 else ''}")
        return " · ".join(parts)


def _single(args: MultiDict, name: str) -> str | None:
    values = args.getlist(name)
    if len(values) > 1:
        raise BadParameter(f"parameter {name!r} is given {len(values)} times; give it once")
    return values[0] if values else None


def _whole_number(args: MultiDict, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = _single(args, name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise BadParameter(f"parameter {name!r} must be a whole number from {low} to {high}, got {raw[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise BadParameter(f"parameter {name!r} must be from {low} to {high}, got {value}")
    return value


def parse_feed_request(args: MultiDict, window_days: int) -> FeedRequest:
    """Validate feed parameters; raise BadParameter with a message naming the first bad one."""
    raw_q = _single(args, "q")
    try:
        query = parse_query(raw_q)
    except QueryError as exc:
        raise BadParameter(f"parameter 'q' is not a valid query: {exc}") from None
    sort = _choice(args, "sort", SORTS)
    fmt = _choice(args, "format", tuple(FORMATS))
    return FeedRequest(
        query=query,
        limit=_whole_number(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        min_upvotes=_whole_number(args, "min_upvotes", 0, 0, 10**9 - 1),
        days=_whole_number(args, "days", None, 1, window_days),
        sort=sort,
        format=fmt,
    )


def _choice(args: MultiDict, name: str, choices: tuple[str, ...]) -> str:
    raw = _single(args, name)
    value = (raw or choices[0]).strip().lower()
    if value not in choices:
        raise BadParameter(f"parameter {name!r} must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value


def _store() -> SnapshotStore:
    return current_app.extensions["feedproxy.store"]


def plain(message: str, status: int, headers: dict | None = None) -> Response:
    """A one-line text/plain answer, for errors shown to people and feed readers alike."""
    return Response(message.rstrip("\n") + "\n", status=status, headers=headers, content_type="text/plain; charset=utf-8")


@bp.before_app_request
def refuse_hostile_query_strings() -> Response | None:
    """Refuse query strings no reader sends, before any parsing: too long, too many, not UTF-8."""
    raw = request.query_string
    if len(raw) > MAX_QUERY_STRING_BYTES:
        return plain(f"query string is {len(raw)} bytes long; at most {MAX_QUERY_STRING_BYTES} are accepted", 414)
    if raw.count(b"&") + 1 > MAX_PARAMETERS:
        return plain(f"too many parameters: at most {MAX_PARAMETERS} are accepted", 400)
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError as exc:
        return plain(f"query string is not valid UTF-8 (byte {exc.start} after decoding %-escapes)", 400)
    return None


def _feed_cache() -> FeedCache:
    return current_app.extensions["feedproxy.feed_cache"]


@bp.get("/feed")
def feed() -> Response:
    store = _store()
    try:
        params = parse_feed_request(request.args, store.window.days)
    except BadParameter as exc:
        return plain(str(exc), 400)
    try:
        snapshot = store.current()
    except NoData as exc:
        return plain(f"no papers yet: {exc.reason}", 503, {"Retry-After": str(exc.retry_after)})
    # rel=self must equal the requested URL, so the URL is part of the key.
    rendered, cached = _feed_cache().get_or_render(
        snapshot.version, (params, request.url), lambda: render_feed(params, snapshot, store)
    )
    g.feedproxy_cache = "hit" if cached else "miss"  # for the request log and metrics
    return feed_response(rendered, max_age=_max_age(store))


def render_feed(params: FeedRequest, snapshot, store: SnapshotStore) -> RenderedFeed:
    """Filter the snapshot and render the feed the parameters ask for."""
    since = None
    if params.days is not None and snapshot.newest is not None:
        since = window_start(snapshot.newest, store.clock(), timedelta(days=params.days))
    papers = snapshot.index.search(
        params.query, min_upvotes=params.min_upvotes, since=since, sort=params.sort, limit=params.limit
    )
    canonical = params.canonical_params()
    # The newest entry's time; for an empty result the window's newest, so it
    # still moves only when the data does.
    updated = max((p.published for p in papers), default=snapshot.newest or snapshot.fetched_at)
    info = FeedInfo(
        id=request.host_url + "feed" + ("?" + urlencode(canonical) if canonical else ""),
        title=params.title(),
        self_url=request.url,
        updated=updated,
    )
    fmt = FORMATS[params.format]
    return RenderedFeed(fmt.render(info, papers), fmt.media_type, updated)


def _max_age(store: SnapshotStore) -> int:
    """Seconds until the next refresh is due, bounded: how long a copy stays good."""
    return max(MIN_MAX_AGE, min(MAX_MAX_AGE, store.seconds_until_refresh()))


def _accepts_gzip() -> bool:
    return request.accept_encodings["gzip"] > 0


def _not_modified(feed: RenderedFeed) -> bool:
    # If-None-Match wins over If-Modified-Since when both are sent (RFC 9110, 13.2.2).
    if request.if_none_match:
        return request.if_none_match.contains_weak(feed.etag.strip('"')) or request.if_none_match.contains_weak(
            feed.gzip_etag.strip('"')
        )
    since = request.if_modified_since
    return since is not None and feed.last_modified.replace(microsecond=0) <= since


def feed_response(feed: RenderedFeed, max_age: int) -> Response:
    """Answer with the feed, gzipped when accepted, or 304 when the client's copy is current."""
    use_gzip = _accepts_gzip()
    headers = {
        "ETag": feed.gzip_etag if use_gzip else feed.etag,
        "Last-Modified": http_date(feed.last_modified),
        "Cache-Control": f"public, max-age={max_age}",
        "Vary": "Accept-Encoding",
    }
    if _not_modified(feed):
        return Response(status=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
        return Response(feed.gzipped(), headers=headers, content_type=feed.media_type)
    return Response(feed.body, headers=headers, content_type=feed.media_type)


@bp.get("/healthz")
def healthz() -> Response:
    """Report what is served and how fresh it is: 200 while serving, 503 while there is no data."""
    report = health_report(_store())
    return Response(
        json.dumps(report, indent=2) + "\n",
        status=200 if report["papers"] is not None else 503,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _iso(when) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


def health_report(store: SnapshotStore) -> dict:
    """The facts an operator or a monitor needs, as plain JSON values."""
    snapshot = store.peek()
    now = store.clock()
    age = int((now - store.last_success_at).total_seconds()) if store.last_success_at else None
    if snapshot is None:
        status = "no data"
    elif age is not None and age > 3 * store.refresh_seconds:
        status = "stale"  # still serving, but the upstream has failed for a while
    else:
        status = "ok"
    return {
        "status": status,
        "papers": len(snapshot.papers) if snapshot else None,
        "snapshot_version": snapshot.version if snapshot else None,
        "newest_paper": _iso(snapshot.newest) if snapshot else None,
        "last_success": _iso(store.last_success_at),
        "snapshot_age_seconds": age,
        "last_error": store.last_error,
        "last_error_at": _iso(store.last_error_at),
        "next_refresh_in_seconds": store.seconds_until_refresh(),
        "source": store.source.description,
        "storage_error": store.storage_error,
    }


def handle_http_error(exc: HTTPException) -> Response:
    """Answer Flask/werkzeug errors (404, 405, ...) as one plain line, never HTML or a traceback."""
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}  # keeps Allow on 405
    return plain(f"{exc.code} {exc.name}: {exc.description}", exc.code or 500, headers)


def handle_unexpected(exc: Exception) -> Response:
    """Last resort: log the traceback for the operator, show the user a short line."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return plain("internal error: the request could not be completed; it has been logged", 500)
