"""One deadline over a whole exchange: a server dripping its headers holds no fetch the project makes.

Each read from the dripping server comes well within the read timeout; only the
deadline over the exchange (connect + 2 x read timeout = 1.5 s here) ends it,
and the server sees the client leave before its headers are out. (Without it a
fetch waited the 10 s for the headers, and a callback succeeded.)
"""

import re

import pytest

from feedproxy.errors import CallbackFailed, UpstreamTimeout
from feedproxy.upstream.http import HttpFetcher
from feedproxy.upstream.safe import OwnHostTransport

from .fakefeeds import FakeFeeds, fixture
from .fakesubscriber import callback_client
from .test_safefetch import fetcher_for

RSS = fixture("arxiv-cs.CL.rss")
TIMEOUTS = {"connect_timeout": 0.5, "read_timeout": 0.5}


@pytest.fixture
def dripping():
    """A server that sends its status line at once, then a byte of its headers every 0.1 s (about 10 s)."""
    with FakeFeeds() as server:
        server.serve("/feed.xml", RSS, drip_headers=0.1)
        yield server


def too_long(url: str) -> str:
    return re.escape(f"upstream {url}: response took longer than 1.5 s")




def test_the_default_transport_ends_a_fetch_at_the_deadline(dripping):
    url = dripping.url("/feed.xml")
    with pytest.raises(UpstreamTimeout, match=too_long(url)):
        HttpFetcher(**TIMEOUTS).get(url)
    assert dripping.wait_for_heads(1) == ["cut short"]  # the client left before the headers were out


def test_a_configured_feeds_transport_ends_a_fetch_at_the_deadline(dripping):
    url = dripping.url("/feed.xml")
    with pytest.raises(UpstreamTimeout, match=too_long(url)):
        HttpFetcher(transport=OwnHostTransport(url), **TIMEOUTS).get(url)
    assert dripping.wait_for_heads(1) == ["cut short"]  # the client left before the headers were out


def test_a_url_fetch_ends_at_the_deadline(dripping):
    fetcher, _, _ = fetcher_for(dripping, **TIMEOUTS)
    with pytest.raises(UpstreamTimeout, match=too_long("http://feeds.example/feed.xml")):
        fetcher.get("http://feeds.example/feed.xml")
    assert dripping.wait_for_heads(1) == ["cut short"]  # the client left before the headers were out


def test_a_proxy_from_the_environment_is_used_and_ends_at_the_deadline(dripping, monkeypatch):
    """The default transport still honours HTTP_PROXY (the Daily Papers API may be behind one)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dripping.port}")
    dripping.serve("/quick.xml", RSS)
    fetcher = HttpFetcher(**TIMEOUTS)
    assert fetcher.get("http://feeds.example/quick.xml").body == RSS
    assert dripping.paths() == ["http://feeds.example/quick.xml"]  # the proxy got it, as proxies do
    with pytest.raises(UpstreamTimeout, match=too_long("http://feeds.example/feed.xml")):
        fetcher.get("http://feeds.example/feed.xml")
    assert dripping.wait_for_heads(1) == ["cut short"]  # the client left before the headers were out


def test_a_websub_callback_ends_at_the_deadline(dripping):
    client = callback_client(dripping, **TIMEOUTS)
    with pytest.raises(CallbackFailed, match="the answer took longer than 1.5 s") as err:
        client.get("http://subscriber.example/feed.xml", {"hub.mode": "subscribe"})
    assert err.value.outcome == "timeout"
    assert dripping.wait_for_heads(1) == ["cut short"]  # the client left before the headers were out
