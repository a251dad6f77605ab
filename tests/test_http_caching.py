"""HTTP caching: ETag and Last-Modified, 304s, Cache-Control, gzip, HEAD, the rendered-feed cache."""

import gzip

import pytest

from feedproxy.feedcache import FeedCache, RenderedFeed
from feedproxy.snapshot import utcnow


def test_validators_and_cache_control(client):
    response = client.get("/feed?q=model")
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert response.headers["Last-Modified"].endswith(" GMT")
    assert response.headers["Cache-Control"] == "public, max-age=900"
    assert response.headers["Vary"] == "Accept-Encoding"


def test_if_none_match_gets_304_without_body(client):
    etag = client.get("/feed?q=model").headers["ETag"]
    response = client.get("/feed?q=model", headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.data == b""
    assert response.headers["ETag"] == etag and "Cache-Control" in response.headers
    assert client.get("/feed?q=model", headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get("/feed?q=model", headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304


def test_if_modified_since_gets_304(client):
    last_modified = client.get("/feed?q=model").headers["Last-Modified"]
    assert client.get("/feed?q=model", headers={"If-Modified-Since": last_modified}).status_code == 304
    older = "Mon, 01 Jan 2024 00:00:00 GMT"
    assert client.get("/feed?q=model", headers={"If-Modified-Since": older}).status_code == 200
    # If-None-Match wins: a stale ETag is answered in full even with a current date.
    both = {"If-Modified-Since": last_modified, "If-None-Match": '"stale"'}
    assert client.get("/feed?q=model", headers=both).status_code == 200


def test_gzip_when_accepted(client):
    plain = client.get("/feed?q=model")
    zipped = client.get("/feed?q=model", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data) == plain.data
    assert len(zipped.data) < len(plain.data) / 2
    assert zipped.headers["ETag"] != plain.headers["ETag"]  # a different representation
    again = client.get("/feed?q=model", headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]})
    assert again.status_code == 304
    refused = client.get("/feed?q=model", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers


@pytest.mark.parametrize("fmt, media", [("atom", "application/atom+xml; charset=utf-8"),
                                        ("rss", "application/rss+xml; charset=utf-8"),
                                        ("json", "application/feed+json")])
def test_head_answers_headers_alone(client, fmt, media):
    get = client.get(f"/feed?format={fmt}")
    head = client.head(f"/feed?format={fmt}")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Type"] == media
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.data))
    assert head.headers["ETag"] == get.headers["ETag"]


def test_repeated_request_does_no_filtering_or_rendering(app, client, monkeypatch):
    client.get("/feed?q=model")
    snapshot = app.extensions["feedproxy.store"].peek()
    calls = []
    monkeypatch.setattr(type(snapshot.index), "search", lambda *a, **k: calls.append(a) or [])
    first = client.get("/feed?q=model").data
    for _ in range(3):
        response = client.get("/feed?q=model")
        assert response.status_code == 200 and response.data == first
    assert calls == []
    client.get("/feed?q=other")
    assert len(calls) == 1


def test_new_snapshot_invalidates_rendered_feeds(app, client, upstream, clock):
    before = client.get("/feed?limit=500")
    upstream.items[0] = dict(upstream.items[0], paper=dict(upstream.items[0]["paper"], upvotes=99999))
    clock.advance(901)
    after = client.get("/feed?limit=500")  # this request refreshes (no background thread in tests)
    assert b"99999 upvotes" in after.data and b"99999 upvotes" not in before.data
    assert after.headers["ETag"] != before.headers["ETag"]


def test_cache_is_bounded_by_bytes():
    cache = FeedCache(max_bytes=100_000)
    now = utcnow()
    for n in range(1000):
        cache.get_or_render("hf-daily", "v1", n, lambda: RenderedFeed(b"x" * 5_000, "text/plain", now))
    assert cache.current_bytes <= 100_000 and 0 < len(cache) < 20
    cache.get_or_render("arxiv", "a1", "other", lambda: RenderedFeed(b"z", "text/plain", now))
    cache.get_or_render("hf-daily", "v2", "new", lambda: RenderedFeed(b"y", "text/plain", now))
    assert len(cache) == 2  # a new version drops its scope's feeds, not other scopes'
    assert cache.get_or_render("arxiv", "a1", "other", lambda: RenderedFeed(b"!", "text/plain", now))[1]


def test_the_fast_path_answers_exactly_as_the_flask_view(app, client):
    """The first request is answered by the view, repeats by the WSGI fast path: same everything."""
    for headers in ({}, {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "gzip;q=0, identity"}):
        first = client.get("/feed?q=model&format=rss", headers=headers)
        again = client.get("/feed?q=model&format=rss", headers=headers)
        assert again.data == first.data and again.status_code == first.status_code == 200
        assert sorted(again.headers.items()) == sorted(first.headers.items())
        etag = first.headers["ETag"]
        revalidated = client.get("/feed?q=model&format=rss", headers={**headers, "If-None-Match": etag})
        assert revalidated.status_code == 304 and revalidated.data == b"" and revalidated.headers["ETag"] == etag
        head = client.head("/feed?q=model&format=rss", headers=headers)
        assert head.data == b"" and head.headers["Content-Length"] == first.headers["Content-Length"]


def test_the_fast_path_steps_aside_when_the_snapshot_changes(app, client, upstream, clock):
    before = client.get("/feed?limit=500")
    assert client.get("/feed?limit=500").data == before.data  # fast path
    upstream.items = upstream.items[1:] + [dict(upstream.items[0], paper=dict(upstream.items[0]["paper"], upvotes=4242))]
    clock.advance(901)
    client.get("/feed?q=x")  # a request that refreshes (no background thread in tests)
    after = client.get("/feed?limit=500")
    assert b"4242 upvotes" in after.data and after.headers["ETag"] != before.headers["ETag"]


def test_the_fast_path_keeps_no_feed_alive_that_the_feed_cache_let_go(app, client):
    import gc

    cache = app.extensions["feedproxy.feed_cache"]
    cache._cache.clear()  # as when the byte bound evicts every feed
    client.get("/feed?q=model")
    with cache._lock:
        cache._cache.clear()
    gc.collect()
    fast_path = app.extensions["feedproxy.fast_path"]
    assert all(known.feed() is None for known in fast_path._known.values())
    assert client.get("/feed?q=model").status_code == 200  # answered again by the view
