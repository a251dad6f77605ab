"""WebSub: every feed names the hub at /websub; the hub subscribes, verifies, distributes and counts."""

import time

import feedparser
import pytest
from lxml import etree
from prometheus_client import REGISTRY

from feedproxy.app import create_app
from feedproxy.http.websub import Hub

from .conftest import make_config
from .fakesubscriber import FakeSubscriber, callback_client

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


# --- the hub: subscription requests ------------------------------------------------------

CALLBACK = "http://subscriber.example/cb?user=7"
TOPIC = "http://localhost/feed?q=zeitgeist"


def count(metric: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(f"{metric}_total", {"outcome": outcome}) or 0.0


@pytest.fixture
def subscriber():
    with FakeSubscriber() as fake:
        yield fake


def hub_app(upstream, clock, subscriber, folder, **settings):
    config = make_config(upstream.url, data_dir=str(folder), **settings)
    return create_app(config, clock=clock, callback_client=callback_client(subscriber))


@pytest.fixture
def hub_client(upstream, clock, subscriber, tmp_path):
    return hub_app(upstream, clock, subscriber, tmp_path / "data").test_client()


def hub_of(client) -> Hub:
    return client.application.extensions["feedproxy.hub"]


def post(client, topic=TOPIC, callback=CALLBACK, mode="subscribe", **extra):
    form = {"hub.mode": mode, "hub.topic": topic, "hub.callback": callback}
    form.update({f"hub.{k}": v for k, v in extra.items()})
    return client.post("/websub", data={k: v for k, v in form.items() if v is not None})


def subscribe(client, subscriber, topic=TOPIC, callback=CALLBACK, **extra):
    """Subscribe and wait until the hub has verified the intent."""
    before = len(subscriber.verifications)
    response = post(client, topic, callback, **extra)
    assert response.status_code == 202, response.text
    hub_of(client).wait_for_verifications()
    assert len(subscriber.verifications) == before + 1
    return subscriber.verifications[-1]


def test_a_subscription_is_verified_at_the_callback_then_recorded(hub_client, subscriber):
    verified = count("feedproxy_websub_subscriptions", "verified")
    response = post(hub_client, "http://localhost/feed?limit=50&q=Zeitgeist", secret="s3cret")
    assert response.status_code == 202
    assert response.text == "accepted: the hub will verify this subscribe request at hub.callback\n"
    hub_of(hub_client).wait_for_verifications()
    [check] = subscriber.verifications
    assert check["path"] == "/cb" and check["user"] == "7"  # the callback's own query is kept
    assert check["hub.mode"] == "subscribe"
    assert check["hub.topic"] == "http://localhost/feed?limit=50&q=Zeitgeist"  # as the subscriber wrote it
    assert check["hub.lease_seconds"] == "864000"  # 10 days by default
    assert len(check["hub.challenge"]) >= 20
    [sub] = hub_of(hub_client).db.subscribers("http://localhost/feed?q=Zeitgeist", time.time())  # canonical
    assert (sub.callback, sub.secret, sub.lease_seconds) == (CALLBACK, "s3cret", 864000)
    assert count("feedproxy_websub_subscriptions", "verified") == verified + 1


@pytest.mark.parametrize("asked, granted", [("3600", "3600"), ("99999999", "2592000"), ("5", "60")])
def test_the_lease_asked_for_is_kept_within_a_minute_and_30_days(hub_client, subscriber, asked, granted):
    assert subscribe(hub_client, subscriber, lease_seconds=asked)["hub.lease_seconds"] == granted


@pytest.mark.parametrize("form, status, message", [
    ({"hub.mode": None}, 400, "hub.mode is missing"),
    ({"hub.mode": "publish"}, 400, "hub.mode must be subscribe or unsubscribe, got 'publish'"),
    ({"hub.topic": None}, 400, "hub.topic is missing"),
    ({"hub.topic": "http://elsewhere.example/feed?q=x"}, 400,
     "hub.topic must be a feed of this server (http://localhost/feed?...), got 'http://elsewhere.example/feed?q=x'"),
    ({"hub.topic": "http://localhost/sources"}, 400,
     "hub.topic must be a feed of this server (http://localhost/feed?...), got 'http://localhost/sources'"),
    ({"hub.topic": "http://localhost/feed?limit=0"}, 400,
     "hub.topic is not a valid feed: parameter 'limit' must be from 1 to 500, got 0"),
    ({"hub.topic": "http://localhost/feed?source=nope"}, 404,
     "hub.topic is not a valid feed: unknown source 'nope'; known sources: hf-daily"),
    ({"hub.topic": "http://localhost/feed?url=http://feeds.example/rss"}, 400,
     "hub.topic: feeds of url= cannot be subscribed to; subscribe to a source's feed (see /sources)"),
    ({"hub.callback": None}, 400, "hub.callback is missing"),
    ({"hub.callback": "ftp://subscriber.example/cb"}, 400,
     "hub.callback is not usable: ftp://subscriber.example/cb: only http and https URLs can be fetched"),
    ({"hub.callback": "http://nowhere.example/cb"}, 400, "hub.callback is not usable: cannot resolve nowhere.example: "
     "[Errno -2] Name or service not known: nowhere.example"),
    ({"hub.callback": "http://127.0.0.1:8000/cb"}, 403, "hub.callback is refused: http://127.0.0.1:8000/cb: "
     "127.0.0.1 resolves to 127.0.0.1 (loopback); only public addresses can be fetched"),
    ({"hub.callback": "http://intranet.example/cb"}, 403, "hub.callback is refused: http://intranet.example/cb: "
     "intranet.example resolves to 10.0.0.7 (private); only public addresses can be fetched"),
    ({"hub.lease_seconds": "a week"}, 400, "hub.lease_seconds must be a whole number from 0 to 1000000000000, "
     "got 'a week'"),
    ({"hub.secret": "x" * 200}, 400, "hub.secret must be less than 200 bytes, got 200"),
])
def test_a_bad_request_is_refused_at_once_with_the_reason(hub_client, subscriber, form, status, message):
    rejected = count("feedproxy_websub_subscriptions", "rejected")
    fields = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.callback": CALLBACK, **form}
    response = hub_client.post("/websub", data={k: v for k, v in fields.items() if v is not None})
    assert (response.status_code, response.text) == (status, message + "\n")
    assert subscriber.verifications == []
    assert count("feedproxy_websub_subscriptions", "rejected") == rejected + 1


def test_only_form_encoded_requests_are_read(hub_client):
    response = hub_client.post("/websub", json={"hub.mode": "subscribe"})
    assert response.status_code == 415
    assert response.text == "send hub.* parameters as application/x-www-form-urlencoded, not application/json\n"
    assert hub_client.get("/websub").status_code == 405


@pytest.mark.parametrize("verify_with, callback, outcome", [
    ("wrong", CALLBACK, "challenge_mismatch"),
    ("404", CALLBACK, "not_confirmed"),
    ("echo", "http://down.example/cb", "unreachable"),
])
def test_an_intent_not_verified_records_nothing(hub_client, subscriber, verify_with, callback, outcome):
    before = count("feedproxy_websub_subscriptions", outcome)
    subscriber.verify_with = verify_with
    assert post(hub_client, callback=callback).status_code == 202
    hub_of(hub_client).wait_for_verifications()
    assert hub_of(hub_client).db.count(time.time()) == 0
    assert count("feedproxy_websub_subscriptions", outcome) == before + 1


def test_unsubscribing_is_verified_too(hub_client, subscriber):
    subscribe(hub_client, subscriber)
    subscriber.verify_with = "404"  # the subscriber did not ask for this: nothing changes
    assert post(hub_client, mode="unsubscribe").status_code == 202
    hub_of(hub_client).wait_for_verifications()
    assert hub_of(hub_client).db.count(time.time()) == 1
    subscriber.verify_with = "echo"
    check = subscribe(hub_client, subscriber, mode="unsubscribe")
    assert check["hub.mode"] == "unsubscribe" and "hub.lease_seconds" not in check
    assert hub_of(hub_client).db.count(time.time()) == 0


def test_limits_per_feed_and_in_all_with_renewals_always_allowed(upstream, clock, subscriber, tmp_path):
    client = hub_app(upstream, clock, subscriber, tmp_path, websub_max_subscriptions=2,
                     websub_max_per_topic=1).test_client()
    subscribe(client, subscriber)
    refused = post(client, callback="http://subscriber.example/other")
    assert (refused.status_code, refused.text) == (403, "this feed has its maximum of 1 subscriptions; ask the "
                                                        "operator (FEEDPROXY_WEBSUB_MAX_PER_TOPIC)\n")
    subscribe(client, subscriber, lease_seconds="7200")  # a renewal
    subscribe(client, subscriber, topic="http://localhost/feed?q=video")
    refused = post(client, topic="http://localhost/feed?q=agents")
    assert (refused.status_code, refused.text) == (403, "the hub holds its maximum of 2 subscriptions; ask the "
                                                        "operator (FEEDPROXY_WEBSUB_MAX_SUBSCRIPTIONS)\n")
    assert len(subscriber.verifications) == 3


def test_without_a_hub_websub_is_404(upstream, clock, subscriber, tmp_path):
    client = hub_app(upstream, clock, subscriber, tmp_path, websub_max_subscriptions=0).test_client()
    response = post(client)
    assert (response.status_code, response.text) == (
        404, "this server runs no WebSub hub (FEEDPROXY_WEBSUB_MAX_SUBSCRIPTIONS=0)\n")


def test_subscriptions_outlive_a_restart(upstream, clock, subscriber, tmp_path):
    subscribe(hub_app(upstream, clock, subscriber, tmp_path).test_client(), subscriber, secret="kept")
    again = hub_app(upstream, clock, subscriber, tmp_path)
    [sub] = again.extensions["feedproxy.hub"].db.subscribers(TOPIC, time.time())
    assert (sub.callback, sub.secret) == (CALLBACK, "kept")
