"""Answering repeated feed requests below Flask: the cache-hit path, at the WSGI level.

Feed readers poll the same URLs. Once /feed has answered a URL, the same raw
request (scheme, host, path, query string) is answered here while the
snapshots it was made from are current: the same bytes, headers and 304 rules
(http.conditional's ``feed_answer``, shared with the Flask view), counted and logged like any
request, but without Flask's request context, routing and hooks, which were
most of a cache hit's cost. Anything else, and any doubt, goes to Flask.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from cachetools import LRUCache

from feedproxy.errors import NoData
from feedproxy.http.accesslog import log_request
from feedproxy.http.conditional import feed_answer, max_age
from feedproxy.http.feedcache import RenderedFeed
from feedproxy.http.metrics import PENDING

def raw_key(environ: dict) -> tuple:
    """What decides a feed's bytes among the request's raw parts (request.url is made of these)."""
    return (environ.get("wsgi.url_scheme"), environ.get("HTTP_HOST") or environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"), environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO"),
            environ.get("QUERY_STRING", ""))


@dataclass(frozen=True)
class Known:
    """A feed /feed answered: its sources, the snapshot versions it was made from, the feed, its q.

    The feed is held weakly: the rendered-feed cache alone decides (by bytes) which feeds stay in
    memory. Holding them here too once let 4,096 URLs keep 1.4 GB of feeds alive per worker.
    """

    stores: tuple
    version: str
    feed: weakref.ref
    q: str


_STATUS = {200: "200 OK", 304: "304 Not Modified"}


class FeedFastPath:
    """WSGI middleware: answer a known feed URL from the rendered feed when its snapshots are current."""

    def __init__(self, app, size: int = 4096):
        self.app = app
        self._known: LRUCache = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def remember(self, environ: dict, stores: tuple, version: str, feed: RenderedFeed, q: str) -> None:
        """Called by the /feed view for each feed it answers."""
        with self._lock:
            self._known[raw_key(environ)] = Known(stores, version, weakref.ref(feed), q)

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/feed" or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        started = time.perf_counter()
        with self._lock:
            known = self._known.get(raw_key(environ))
        feed = known.feed() if known is not None else None
        if feed is None:  # never answered, or its feed has left the rendered-feed cache
            return self.app(environ, start_response)
        try:
            # current() also starts a refresh that has fallen due, as the Flask path does.
            version = "+".join(store.current().version for store in known.stores)
        except NoData:
            return self.app(environ, start_response)
        if version != known.version:
            return self.app(environ, start_response)
        status, headers, body = feed_answer(feed, max_age(known.stores), environ)
        start_response(_STATUS[status], headers)
        elapsed = time.perf_counter() - started
        PENDING.add("/feed", str(status), "hit", elapsed)
        log_request(environ["REQUEST_METHOD"], "/feed", status, len(body), elapsed, "hit",
                    any(k == "Content-Encoding" for k, _ in headers), known.q, environ.get("HTTP_USER_AGENT", ""))
        return [] if environ["REQUEST_METHOD"] == "HEAD" or status == 304 else [body]
