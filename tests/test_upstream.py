"""The upstream client against a loopback fake of the real API, and every failure it maps."""

import gzip
import json
import re
import socket

import httpx
import pytest

from feedproxy.errors import UpstreamBadData, UpstreamError, UpstreamHTTPError, UpstreamTimeout, UpstreamUnreachable
from feedproxy.upstream.http import USER_AGENT, parse_retry_after
from feedproxy.upstream.daily_papers import FileListing, HttpListing, parse_listing

from .fakeupstream import Fault, FakeUpstream


def listing(url, **kwargs):
    kwargs.setdefault("connect_timeout", 1.0)
    kwargs.setdefault("read_timeout", 1.0)
    return HttpListing(url, **kwargs)


def test_pages_newest_first_with_limit_100_and_a_user_agent(upstream, items):
    pages = list(listing(upstream.url).pages())
    assert [p.number for p in pages] == [0]  # 40 items: the first page is short, so the last
    assert [p.id for p in pages[0].papers] == [i["paper"]["id"] for i in items]
    request = upstream.requests[0]
    assert request["params"] == {"p": "0", "limit": "100"}
    assert request["headers"]["User-Agent"] == USER_AGENT and "feedproxy" in USER_AGENT


def test_pages_until_a_short_page():
    many = [{"paper": {"id": f"2401.{n:05d}", "title": f"Paper {n}"}, "publishedAt": "2024-01-01T00:00:00Z"}
            for n in range(250)]
    fake = FakeUpstream(many).start()
    try:
        pages = list(listing(fake.url).pages())
    finally:
        fake.stop()
    assert [len(p.papers) for p in pages] == [100, 100, 50]
    assert fake.page_requests() == [0, 1, 2]


def test_max_pages_bounds_the_requests():
    many = [{"paper": {"id": f"2401.{n:05d}", "title": "P"}, "publishedAt": "2024-01-01T00:00:00Z"} for n in range(300)]
    fake = FakeUpstream(many).start()
    try:
        assert len(list(listing(fake.url, max_pages=2).pages())) == 2
    finally:
        fake.stop()


def test_invalid_items_are_skipped_and_the_rest_kept(upstream, items):
    upstream.faults.append(Fault(body=json.dumps([{"bogus": 1}, items[0], "x"]).encode()))
    page = listing(upstream.url).fetch_page(0)
    assert [p.id for p in page.papers] == [items[0]["paper"]["id"]]
    assert page.skipped == 2


@pytest.mark.parametrize(
    "fault, error, words",
    [
        (Fault(status=500), UpstreamHTTPError, "HTTP 500"),
        (Fault(status=404), UpstreamHTTPError, "HTTP 404"),
        (Fault(body=b"<html>gateway</html>"), UpstreamBadData, "not valid JSON"),
        (Fault(body=b'{"error": "x"}'), UpstreamBadData, "expected a list"),
        (Fault(body=b'[{"wrong": "shape"}]'), UpstreamBadData, "schema may have changed"),
        (Fault(truncate=True), UpstreamBadData, "RemoteProtocolError"),
        (Fault(delay=1.6), UpstreamTimeout, "timed out"),
    ],
)
def test_faults_become_upstream_errors(upstream, fault, error, words):
    upstream.faults.append(fault)
    with pytest.raises(error, match=words):
        listing(upstream.url).fetch_page(0)


def test_429_carries_retry_after(upstream):
    upstream.faults.append(Fault(status=429, headers={"Retry-After": "120"}))
    with pytest.raises(UpstreamHTTPError) as err:
        listing(upstream.url).fetch_page(0)
    assert (err.value.status, err.value.retry_after) == (429, 120.0)


def test_size_cap(upstream):
    with pytest.raises(UpstreamBadData, match="byte cap"):
        listing(upstream.url, max_bytes=2048).fetch_page(0)


def test_refused_connection_is_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UpstreamUnreachable, match="unreachable"):
        listing(f"http://127.0.0.1:{port}/api/daily_papers").fetch_page(0)


# Every low-level httpx error must become an UpstreamError: none may escape as a 500.
HTTPX_ERRORS = [
    httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout,
    httpx.ReadError, httpx.WriteError, httpx.CloseError, httpx.RemoteProtocolError, httpx.LocalProtocolError,
    httpx.ProxyError, httpx.UnsupportedProtocol, httpx.DecodingError, httpx.TooManyRedirects,
]


def all_subclasses(cls):
    return {cls} | {s for c in cls.__subclasses__() for s in all_subclasses(c)}


def test_every_httpx_request_error_is_covered_by_this_table():
    concrete = {c for c in all_subclasses(httpx.RequestError) if c.__module__.startswith("httpx")}
    concrete -= {httpx.RequestError, httpx.TransportError, httpx.TimeoutException, httpx.NetworkError, httpx.ProtocolError}
    assert concrete <= set(HTTPX_ERRORS), concrete - set(HTTPX_ERRORS)


@pytest.mark.parametrize("exc_class", HTTPX_ERRORS)
def test_every_httpx_error_is_mapped(exc_class):
    def raise_it(request):
        raise exc_class("boom", request=request)

    client = listing("http://upstream.invalid/api/daily_papers", transport=httpx.MockTransport(raise_it))
    with pytest.raises(UpstreamError) as err:
        client.fetch_page(0)
    assert "upstream http://upstream.invalid/api/daily_papers" in str(err.value)


def test_file_listing_reads_json_gzip_and_file_urls(tmp_path, items):
    plain = tmp_path / "listing.json"
    plain.write_text(json.dumps(items))
    packed = tmp_path / "listing.json.gz"
    packed.write_bytes(gzip.compress(json.dumps(items).encode()))
    for location in (str(plain), plain.as_uri(), str(packed)):
        pages = list(FileListing(location).pages())
        assert len(pages) == 1 and len(pages[0].papers) == 40


def test_missing_file_is_unreachable(tmp_path):
    with pytest.raises(UpstreamUnreachable, match="cannot be read"):
        list(FileListing(str(tmp_path / "gone.json")).pages())


def test_parse_listing_and_retry_after():
    assert parse_listing(b"[]").papers == ()
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412460.0) == 20.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_first_page_is_fetched_conditionally_and_304_means_unchanged(upstream):
    upstream.etags = True
    source = listing(upstream.url)
    [first] = list(source.pages())
    assert "If-None-Match" not in upstream.requests[0]["headers"]
    assert first.validators.etag == upstream.requests_etag(0)  # the page carries its answer's validators
    assert list(source.pages(first.validators)) == []  # 304: nothing new to merge
    assert upstream.requests[1]["headers"]["If-None-Match"] == upstream.requests_etag(0)
    upstream.items = upstream.items[1:]
    assert len(list(source.pages(first.validators))[0].papers) == 39  # changed: 200 with the new body


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def test_a_gzip_answer_is_inflated(upstream):
    body = json.dumps(upstream.items[:3]).encode()
    upstream.faults.append(Fault(body=_gzip(body), headers={"Content-Encoding": "gzip"}))
    [page] = list(listing(upstream.url).pages())
    assert [p.id for p in page.papers] == [i["paper"]["id"] for i in upstream.items[:3]]
    assert upstream.requests[0]["headers"]["Accept-Encoding"] == "gzip"


@pytest.mark.parametrize("encoding, body, words", [
    # (issue 17) gzip twice: 6.8 kB that httpx would have inflated to gigabytes before counting
    ("gzip, gzip", _gzip(_gzip(b" " * 50_000_000)), "unsupported Content-Encoding 'gzip, gzip'"),
    ("br", b"\x0b\x02\x80[]\x03", "unsupported Content-Encoding 'br'"),
    ("gzip", _gzip(b"[" + b" " * 50_000_000 + b"]"), "response exceeds the 16777216-byte cap"),
    ("gzip", _gzip(b"[]" * 1000)[:-20], "the gzip response is cut short"),
])
def test_compressed_answers_are_counted_as_they_inflate(upstream, encoding, body, words):
    upstream.faults.append(Fault(body=body, headers={"Content-Encoding": encoding}))
    with pytest.raises(UpstreamBadData, match=re.escape(words)):
        list(listing(upstream.url).pages())
TOKEN = "hf_TestTokenNotARealOne123"


def test_a_token_is_sent_as_a_bearer_token_and_none_without_one(upstream):
    list(listing(upstream.url, token=TOKEN).pages())
    list(listing(upstream.url).pages())
    assert upstream.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in upstream.requests[1]["headers"]


def test_the_token_does_not_follow_a_redirect_to_another_origin(upstream, items):
    other = FakeUpstream(items).start()  # another port: another origin
    try:
        upstream.faults.append(Fault(status=302, body=b"", headers={"Location": other.url + "?p=0&limit=100"}))
        pages = list(listing(upstream.url, token=TOKEN).pages())
    finally:
        other.stop()
    assert len(pages[0].papers) == 40
    assert upstream.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in other.requests[0]["headers"]
