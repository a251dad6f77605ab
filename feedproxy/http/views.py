"""The HTTP layer: the /feed, /sources and /healthz views and their errors, kept thin.

Views turn request parameters into a FeedRequest (or a 4xx naming the bad
parameter), ask the sources for their current snapshots (or answer 503 with
Retry-After), and hand the matching papers to the renderer, through the
rendered-feed cache.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from dataclasses import replace
from urllib.parse import unquote_to_bytes

from cachetools import LRUCache
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from feedproxy.errors import BadParameter, ConceptsUnavailable, NoData, UrlNotAllowed
from feedproxy.http.conditional import feed_answer, max_age
from feedproxy.http.feedcache import FeedCache, RenderedFeed
from feedproxy.http.metrics import metrics_health
from feedproxy.http.params import FeedRequest, encode_params, parse_feed_request
from feedproxy.render.digest import Digest, group_digests, render_digests
from feedproxy.render.formats import FORMATS, FeedInfo
from feedproxy.search.merged import explain_matches, prepared, search_snapshots
from feedproxy.store.snapshot import Snapshot, SnapshotStore
from feedproxy.store.sources import Source, SourceRegistry, current_snapshots
from feedproxy.upstream.papers import Paper, iso_z
from feedproxy.upstream.safe import check_url

log = logging.getLogger(__name__)

bp = Blueprint("feeds", __name__)

MAX_QUERY_STRING_BYTES = 4096
MAX_PARAMETERS = 64


def _store() -> SnapshotStore:
    """The default source's store (Daily Papers)."""
    return current_app.extensions["feedproxy.store"]


def _registry() -> SourceRegistry:
    return current_app.extensions["feedproxy.sources"]


def parse_request_args(args) -> FeedRequest:
    """Validate feed parameters against this app's window and sources (shared with the web page)."""
    registry = _registry()
    return parse_feed_request(args, _store().window.days, registry.names, registry.default.name)


class ParsedRequests:
    """Validated FeedRequests (or their BadParameter) by query string: feed readers repeat the same few URLs.

    Validation is pure given the query string and the app's settings, and it is
    the largest cost of a cache hit after the framework's own, so repeats skip it.
    1,024 by default: a parsed request holds its query's tree (about 1 kB), and 4,096 of them
    were 4-5 MB of a worker after 20,000 distinct queries, where the rendered-feed cache (the
    requests that repeat) holds a few dozen feeds.
    """

    def __init__(self, size: int = 1024):
        self._cache: LRUCache = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def get(self, query_string: bytes, args) -> FeedRequest:
        with self._lock:
            found = self._cache.get(query_string)
        if found is None:
            try:
                found = parse_request_args(args)
            except BadParameter as exc:
                found = exc
            with self._lock:
                self._cache[query_string] = found
        if isinstance(found, BadParameter):
            raise copy.copy(found)  # a copy: re-raising one object would grow its traceback each time
        return found


def plain(message: str, status: int, headers: dict | None = None) -> Response:
    """A one-line text/plain answer, for errors shown to people and feed readers alike.

    ``nosniff``: messages quote what the user sent, so no browser may take one for HTML.
    """
    response = Response(message.rstrip("\n") + "\n", status=status, headers=headers,
                        content_type="text/plain; charset=utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.before_app_request
def refuse_bad_hosts() -> Response | None:
    """Refuse a Host header that is not a host name: feed ids and links are built from it.

    Werkzeug gives an empty host for one it cannot trust (spaces, a bad port, '@', several hosts),
    which would make every id of the feed `http:///feed...`, the same for any such request.
    """
    if not request.host:
        return plain(f"the Host header {request.headers.get('Host', '')[:100]!r} is not a valid host name (and port)",
                     400)
    return None


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
    try:
        params = current_app.extensions["feedproxy.parsed_requests"].get(request.query_string, request.args)
        sources = sources_for(params)
    except BadParameter as exc:
        return plain(str(exc), exc.status)
    try:
        current = current_snapshots(sources)
        _check_announce(params, sources)  # again: a cold start has only now got the papers to tell by
    except NoData as exc:
        return plain(f"no papers yet: {exc.reason}", 503, {"Retry-After": str(exc.retry_after)})
    except BadParameter as exc:
        return plain(str(exc), exc.status)
    scope = ",".join(source.key for source, _ in current)
    version = "+".join(snapshot.version for _, snapshot in current)
    # The feed's own URL (rel=self, id) is made of the parameters and the host it was asked at.
    try:
        rendered, cached = _feed_cache().get_or_render(
            scope, version, (params, request.host_url), lambda: render_feed(params, current)
        )
    except BadParameter as exc:  # similar= names a paper none of the sources holds
        return plain(str(exc), exc.status)
    except ConceptsUnavailable as exc:
        return concepts_unavailable(exc, current, params)
    g.feedproxy_cache = "hit" if cached else "miss"  # for the request log and metrics
    stores = tuple(source.store for source, _ in current)
    if params.url is None:
        # The next time this exact URL is asked, the WSGI fast path answers it while these snapshots
        # last. Not for url= feeds: their stores come and go (a bounded set), and it would keep them.
        current_app.extensions["feedproxy.fast_path"].remember(
            request.environ, stores, version, rendered, request.args.get("q", ""))
    status, headers, body = feed_answer(rendered, max_age(stores), request.environ)
    return Response(body, status=status, headers=headers)


def concepts_unavailable(exc: ConceptsUnavailable, current: list[tuple[Source, Snapshot]],
                         params: FeedRequest) -> Response:
    """503 for a concept query when the model could not load: keyword feeds keep working meanwhile."""
    retry = max(60, min(source.store.seconds_until_refresh() for source, _ in current))
    return plain(concepts_unavailable_text(exc, params), 503, {"Retry-After": str(retry)})


def concepts_unavailable_text(exc: ConceptsUnavailable, params: FeedRequest) -> str:
    """Why a concept query cannot be answered, and what still can be (shared with the web page)."""
    drop = "similar=" if params.similar is not None else "the ~ and match="
    return f"{exc}; keyword queries still work (drop {drop})"


def sources_for(params: FeedRequest) -> list[Source]:
    """The sources a request names; BadParameter: 403 for a url= this server does not allow,
    400 for announce= on sources without announce types."""
    sources = _named_sources(params)
    _check_announce(params, sources)
    return sources


def _named_sources(params: FeedRequest) -> list[Source]:
    registry = _registry()
    if params.url is None:
        return registry.get(params.sources)
    if not registry.allows_urls:
        raise UrlNotAllowed("fetching feeds by 'url' is disabled on this server; ask its operator to set "
                            "FEEDPROXY_ALLOW_URL_HOSTS, or use one of the sources at /sources", params.url)
    try:
        check_url(params.url, current_app.config["FEEDPROXY"].allow_url_hosts)
    except UrlNotAllowed as exc:
        raise UrlNotAllowed(f"parameter 'url' is not allowed: {exc}", params.url) from None
    return [registry.for_url(params.url)]


def _check_announce(params: FeedRequest, sources: list[Source]) -> None:
    """Refuse announce= (400) when none of the sources carries announce types, naming those that do.

    A source holding no papers yet cannot tell, so it never causes a refusal; of several sources
    merged, one with announce types is enough.
    """
    if not params.announce or any(source.carries_announce_types() is not False for source in sources):
        return
    named = " and ".join(source.name for source in sources) if params.url is None else params.url
    with_types = [source.name for source in _registry() if source.carries_announce_types()]
    raise BadParameter(
        f"parameter 'announce' filters by arXiv announce type, but {named} "
        f"{'has' if len(sources) == 1 else 'have'} no announce types (only arXiv listings do); "
        + (f"sources with them: {', '.join(with_types)}" if with_types else
           "no source on this server has them now (arXiv listings are added with FEEDPROXY_FEEDS)"),
        "announce",
    )


def find_papers(params: FeedRequest, current: list[tuple[Source, Snapshot]]) -> list[Paper]:
    """The papers a feed lists for ``params``, in its order (shared with the web page's preview)."""
    return search_snapshots(
        [snapshot for _, snapshot in current], params.query, now=current[0][0].store.clock(),
        min_upvotes=params.min_upvotes, days=params.searched_days, sort=params.sort, limit=params.limit,
        announce=params.announce, match=params.match, similar=params.similar, top=params.top is not None,
    )


def feed_url(params: FeedRequest, host_url: str | None = None) -> str:
    """The feed's canonical URL at the host it is asked at (the public one behind a proxy), or at ``host_url``."""
    query_string = params.query_string()
    return (host_url or request.host_url) + "feed" + ("?" + query_string if query_string else "")


def why_matched(params: FeedRequest, snapshots: list[Snapshot], papers: list[Paper]) -> dict[str, str]:
    """Why each paper is in the feed, by id (shared with the web page's preview)."""
    searched = prepared(snapshots, params.query, params.match, params.similar)
    return explain_matches(snapshots, searched, papers, params.similar)


def hub_url(host_url: str | None = None) -> str | None:
    """This server's WebSub hub (/websub) at the host asked (or ``host_url``); None when the operator turned it off
    or it is unavailable (a feed must not name a hub that refuses subscriptions)."""
    hub = current_app.extensions.get("feedproxy.hub")  # the http.websub.Hub, a later module
    if hub is None or not hub.advertised:
        return None
    return (host_url or request.host_url) + "websub"


def find_digests(params: FeedRequest, current: list[tuple[Source, Snapshot]]) -> list[Digest]:
    """A digest feed's entries: every matching paper grouped by period, the newest ``limit`` periods."""
    everything = replace(params, limit=max(1, sum(len(snapshot.papers) for _, snapshot in current)))
    newest = max((s.newest for _, s in current if s.newest is not None), default=None)
    return group_digests(find_papers(everything, current), params.digest, newest)[: params.limit]


def render_feed(params: FeedRequest, current: list[tuple[Source, Snapshot]],
                host_url: str | None = None) -> RenderedFeed:
    """Filter the snapshots and render the feed the parameters ask for (at ``host_url``: outside a request)."""
    snapshots = [snapshot for _, snapshot in current]
    if params.digest:
        digests = find_digests(params, current)
        dates = [d.updated for d in digests]
    else:
        papers = find_papers(params, current)
        dates = [p.published for p in papers]
    newest = max((s.newest for s in snapshots if s.newest is not None), default=None)
    # The newest entry's time; for an empty result the window's newest, so it
    # still moves only when the data does.
    updated = max(dates, default=newest or snapshots[0].fetched_at)
    url = feed_url(params, host_url)
    info = FeedInfo(
        id=url,
        title=params.title(" + ".join(source.title for source, _ in current)),
        self_url=url,
        updated=updated,
        subtitle=f"{', '.join(source.title for source, _ in current)}, filtered by feedproxy",
        alternate_url=current[0][0].url if len(current) == 1 and current[0][0].name != "hf-daily"
        else "https://huggingface.co/papers",
        why={} if params.digest else why_matched(params, snapshots, papers),
        similar_url=(host_url or request.host_url) + "feed?" + encode_params([*params.scope_params(), ("similar", "")]),
        hub_url=hub_url(host_url),
    )
    fmt = FORMATS[params.format]
    # Last-Modified is when the data was last seen to change, not the newest entry's date: a paper
    # added with an older date, or new upvotes, change the bytes and must move it too.
    changed = max(snapshot.changed_at for snapshot in snapshots)
    if params.digest:
        # Ids from the URL without format=: a digest has the same id in every format, as a paper has.
        body = render_digests(params.format, info, digests, feed_url(replace(params, format="atom"), host_url))
    else:
        body = fmt.render(info, papers, current_app.extensions["feedproxy.entry_cache"])
    return RenderedFeed(body, fmt.media_type, changed)


@bp.get("/sources")
def sources() -> Response:
    """List the sources this server filters, as JSON."""
    listing = []
    for source in _registry():
        snapshot = source.store.peek()
        listing.append({
            "name": source.name,
            "title": source.title,
            "url": source.url,
            "default": source is _registry().default,
            "papers": len(snapshot.papers) if snapshot else None,
            "last_success": iso_z(source.store.last_success_at),
            "feed": request.host_url + "feed" + ("" if source is _registry().default else "?source=" + source.name),
        })
    return Response(json.dumps({"sources": listing}, indent=2) + "\n", content_type="application/json")


@bp.get("/healthz")
def healthz() -> Response:
    """Report what is served and how fresh it is: 200 while serving, 503 while there is no data."""
    report = health_report(_store())
    report.update(metrics_health())  # of the worker answering
    hub = current_app.extensions.get("feedproxy.hub")
    if hub is not None:
        report["websub_hub"] = hub.status()
    others = [source for source in _registry() if source is not _registry().default]
    if others:
        report["sources"] = {source.name: health_report(source.store) for source in others}
    return Response(
        json.dumps(report, indent=2) + "\n",
        status=200 if report["papers"] is not None else 503,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


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
        "newest_paper": iso_z(snapshot.newest) if snapshot else None,
        "last_success": iso_z(store.last_success_at),
        "snapshot_age_seconds": age,
        "last_error": store.last_error,
        "last_error_at": iso_z(store.last_error_at),
        "next_refresh_in_seconds": store.seconds_until_refresh(),
        "source": store.source.description,
        "storage_error": store.storage_error,
        # True while the data folder cannot be written: this worker serves what it fetched itself.
        "in_process_fallback": store.cannot_save,
        "saved_snapshot_ignored": store.saved_snapshot_ignored,
        # "ok", or why concept queries (~word, match=, similar=) answer 503; null while there is no data.
        "concept_search": None if snapshot is None else _concept_search_health(snapshot.index.concepts_problem()),
    }


def _concept_search_health(problem: str | None) -> str:
    return "ok" if problem is None else f"unavailable: {problem}"


def handle_http_error(exc: HTTPException) -> Response:
    """Answer Flask/werkzeug errors (404, 405, ...) as one plain line, never HTML or a traceback."""
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}  # keeps Allow on 405
    return plain(f"{exc.code} {exc.name}: {exc.description}", exc.code or 500, headers)


def handle_unexpected(exc: Exception) -> Response:
    """Last resort: log the traceback for the operator, show the user a short line."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return plain("internal error: the request could not be completed; it has been logged", 500)
