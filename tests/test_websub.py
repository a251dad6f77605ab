"""WebSub: every feed names the hub at /websub; the hub subscribes, verifies, distributes and counts."""

import feedparser
import pytest
from lxml import etree

from feedproxy.app import create_app

from .conftest import make_config

ATOM_NS = "{http://www.w3.org/2005/Atom}"


@pytest.mark.parametrize("query, rss_query", [
    ("q=video", "q=video&format=rss"),
    ("q=video&digest=weekly", "q=video&format=rss&digest=weekly"),
])
def test_every_format_names_the_hub_and_itself(client, query, rss_query):
    atom = etree.fromstring(client.get(f"/feed?{query}").data)
    links = {link.get("rel"): link.get("href") for link in atom.findall(f"{ATOM_NS}link")}
    assert links["hub"] == "http://localhost/websub"
    assert links["self"] == f"http://localhost/feed?{query}"
    rss = client.get(f"/feed?{query}&format=rss").data
    channel = etree.fromstring(rss).find("channel")
    rss_links = {link.get("rel"): link.get("href") for link in channel.findall(f"{ATOM_NS}link")}
    assert rss_links == {"hub": "http://localhost/websub", "self": f"http://localhost/feed?{rss_query}"}
    assert rss.count(b'xmlns:atom="') == 1  # declared once, on <rss>
    parsed = feedparser.parse(rss)
    assert not parsed.bozo and {link.rel for link in parsed.feed.links} >= {"hub", "self"}
    document = client.get(f"/feed?{query}&format=json").get_json()
    assert document["hubs"] == [{"type": "WebSub", "url": "http://localhost/websub"}]
    assert list(document)[-1] == "items" and document["items"]


def test_the_hub_is_named_at_the_public_host_behind_a_proxy(upstream, clock):
    client = create_app(make_config(upstream.url, proxy_count=1), clock=clock).test_client()
    response = client.get("/feed?q=video", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "papers.example"})
    links = {link.get("rel"): link.get("href") for link in etree.fromstring(response.data).findall(f"{ATOM_NS}link")}
    assert links["hub"] == "https://papers.example/websub"
    assert links["self"] == "https://papers.example/feed?q=video"


def test_without_a_hub_feeds_name_none(upstream, clock):
    client = create_app(make_config(upstream.url, websub_max_subscriptions=0), clock=clock).test_client()
    assert b'rel="hub"' not in client.get("/feed?q=video").data
    assert b'rel="hub"' not in client.get("/feed?q=video&format=rss").data
    assert "hubs" not in client.get("/feed?q=video&format=json").get_json()
