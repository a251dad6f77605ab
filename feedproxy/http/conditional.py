"""Answering a rendered feed over HTTP: validators, 304s, gzip and how long a copy stays good.

Shared by the Flask view and the WSGI fast path, so both answer a feed request
with the same status, headers and body.
"""

from __future__ import annotations

from werkzeug.http import parse_accept_header, parse_date, parse_etags

from feedproxy.http.feedcache import RenderedFeed

MIN_MAX_AGE, MAX_MAX_AGE = 30, 3600


def _accepts_gzip(raw: str) -> bool:
    if "gzip" not in raw and "*" not in raw:
        return False
    if ";" not in raw:
        return True  # the common "gzip, deflate, br": no qualities to weigh
    return parse_accept_header(raw)["gzip"] > 0


def _not_modified(feed: RenderedFeed, environ: dict) -> bool:
    # If-None-Match wins over If-Modified-Since when both are sent (RFC 9110, 13.2.2).
    if "HTTP_IF_NONE_MATCH" in environ:
        tags = parse_etags(environ["HTTP_IF_NONE_MATCH"])
        return tags.contains_weak(feed.etag.strip('"')) or tags.contains_weak(feed.gzip_etag.strip('"'))
    since = parse_date(environ["HTTP_IF_MODIFIED_SINCE"]) if "HTTP_IF_MODIFIED_SINCE" in environ else None
    return since is not None and feed.last_modified.replace(microsecond=0) <= since


def feed_answer(feed: RenderedFeed, max_age: int, environ: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for a rendered feed: gzipped when accepted, 304 when the copy is current."""
    use_gzip = _accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", ""))
    headers = [
        ("ETag", feed.gzip_etag if use_gzip else feed.etag),
        ("Last-Modified", feed.last_modified_http),
        ("Cache-Control", f"public, max-age={max_age}"),
        ("Vary", "Accept-Encoding"),
    ]
    if _not_modified(feed, environ):
        return 304, headers, b""
    body = feed.gzipped() if use_gzip else feed.body
    if use_gzip:
        headers.append(("Content-Encoding", "gzip"))
    headers += [("Content-Type", feed.media_type), ("Content-Length", str(len(body)))]
    return 200, headers, body


def max_age(stores) -> int:
    """Seconds until the first of these stores' next refresh, bounded: how long a copy stays good."""
    return max(MIN_MAX_AGE, min(MAX_MAX_AGE, min(store.seconds_until_refresh() for store in stores)))
