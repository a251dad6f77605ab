"""WebSub: every feed names the hub at /websub; the hub subscribes, verifies, distributes and counts."""

import hashlib
import hmac
import time
from datetime import datetime

import feedparser
import pytest
from lxml import etree
from prometheus_client import REGISTRY

from feedproxy.app import create_app
from feedproxy.http.websub import Hub, HubRequest
from feedproxy.upstream.callbacks import CallbackClient

from .conftest import make_config
from .fakefeeds import LoopbackNetwork
from .fakesubscriber import PUBLIC, FakeSubscriber, callback_client
from .test_digest import new_item

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


def test_a_hub_whose_database_cannot_be_opened_is_unavailable_and_feeds_are_served(upstream, clock, tmp_path):
    # (issue 17) A data folder that cannot be written used to stop every worker booting.
    blocker = tmp_path / "file"
    blocker.write_text("the data folder's parent is a file: nothing can be created in it, as root too")
    client = create_app(make_config(upstream.url, data_dir=str(blocker / "data")), clock=clock).test_client()
    feed = client.get("/feed?q=video")
    assert feed.status_code == 200 and b"<entry>" in feed.data
    assert b'rel="hub"' not in feed.data  # no feed names a hub that refuses subscriptions
    assert "hubs" not in client.get("/feed?q=video&format=json").get_json()
    refused = post(client)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "60"
    assert refused.mimetype == "text/plain"
    assert refused.text.startswith("the WebSub hub is unavailable: storage: cannot open the hub's database")
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["websub_hub"].startswith("unavailable: storage: cannot open the hub's database")
    assert client.get("/metrics").status_code == 200


def test_healthz_says_whether_the_hub_runs(upstream, clock, tmp_path):
    assert create_app(make_config(upstream.url), clock=clock).test_client().get("/healthz").get_json()[
        "websub_hub"] == "ok"
    off = create_app(make_config(upstream.url, websub_max_subscriptions=0), clock=clock).test_client()
    assert off.get("/healthz").get_json()["websub_hub"] == "off"


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


# --- the hub: distribution -----------------------------------------------------------------

def gain_paper(upstream, clock, items, paper_id="2608.99001", title="Zeitgeist: pretraining on the spirit of the age",
               published="2026-08-21T15:00:00.000Z"):
    """The upstream lists one more paper, and the next refresh is due (by the paper's time at the latest)."""
    upstream.items.insert(0, new_item(items, paper_id, title, published))
    clock.advance(901)
    listed = datetime.fromisoformat(published.replace("Z", "+00:00"))
    clock.now = max(clock.now, listed)  # papers dated ahead of the clock are refused


def run_hub(client) -> None:
    hub = hub_of(client)
    hub.tick()
    hub.deliver_due()


def test_a_feed_that_gains_a_paper_is_pushed_once_signed(upstream, clock, items, subscriber, tmp_path):
    worker = hub_app(upstream, clock, subscriber, tmp_path).test_client()
    other_worker = hub_app(upstream, clock, subscriber, tmp_path).test_client()  # shares the data folder
    delivered = count("feedproxy_websub_deliveries", "delivered")
    subscribe(worker, subscriber, secret="s3cret")
    run_hub(worker)
    assert subscriber.pushes == []  # nothing new since the subscription
    gain_paper(upstream, clock, items)
    run_hub(worker)
    run_hub(other_worker)  # sees the same change: already queued, not again
    run_hub(worker)
    [push] = subscriber.pushes
    assert push["path"] == "/cb?user=7"
    headers = {k.lower(): v for k, v in push["headers"].items()}
    assert headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert headers["link"] == '<http://localhost/websub>; rel="hub", <http://localhost/feed?q=zeitgeist>; rel="self"'
    expected = "sha256=" + hmac.new(b"s3cret", push["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-hub-signature"], expected)
    parsed = feedparser.parse(push["body"])
    assert [e.id for e in parsed.entries] == ["https://huggingface.co/papers/2608.99001"]
    assert push["body"] == worker.get("/feed?q=zeitgeist").data  # the feed readers get
    assert count("feedproxy_websub_deliveries", "delivered") == delivered + 1
    assert hub_of(worker).db.pending() == 0


def test_only_new_entries_count_and_each_subscriber_gets_its_own_push(upstream, clock, items, subscriber,
                                                                       hub_client):
    subscribe(hub_client, subscriber, topic="http://localhost/feed?q=video&format=json")
    subscribe(hub_client, subscriber, topic="http://localhost/feed?q=video&format=json",
              callback="http://subscriber.example/second")
    run_hub(hub_client)
    gain_paper(upstream, clock, items, title="An unrelated paper about proteins")
    run_hub(hub_client)
    assert subscriber.pushes == []  # the feed's entries did not change
    gain_paper(upstream, clock, items, paper_id="2608.99002", title="Video generation at last")
    run_hub(hub_client)
    assert sorted(p["path"] for p in subscriber.pushes) == ["/cb?user=7", "/second"]
    assert all("x-hub-signature" not in {k.lower() for k in p["headers"]} for p in subscriber.pushes)  # no secret
    assert all(p["headers"]["Content-Type"] == "application/feed+json" for p in subscriber.pushes)


def test_a_digest_feed_is_pushed_when_a_period_is_over(upstream, clock, items, subscriber, hub_client):
    subscribe(hub_client, subscriber, topic="http://localhost/feed?digest=weekly")
    run_hub(hub_client)
    gain_paper(upstream, clock, items)  # in the current week: no new entry yet
    run_hub(hub_client)
    assert subscriber.pushes == []
    gain_paper(upstream, clock, items, paper_id="2608.99002", published="2026-08-24T08:00:00.000Z")
    run_hub(hub_client)
    [push] = subscriber.pushes
    assert feedparser.parse(push["body"]).entries[0].id == "http://localhost/feed?digest=weekly#digest-2026-W34"


@pytest.fixture
def moment(hub_client):
    """The hub's clock, moved by hand: [seconds since the epoch]."""
    now = [time.time()]
    hub_of(hub_client).now = lambda: now[0]
    return now


def test_failed_deliveries_are_retried_with_exponential_backoff(upstream, clock, items, subscriber, hub_client,
                                                                 moment):
    retries = count("feedproxy_websub_deliveries", "retry")
    hub = hub_of(hub_client)
    subscribe(hub_client, subscriber)
    run_hub(hub_client)
    subscriber.push_statuses = [500, 503]
    gain_paper(upstream, clock, items)
    run_hub(hub_client)  # attempt 1: 500, again in 30 s
    assert len(subscriber.pushes) == 1
    moment[0] += 29.9
    hub.deliver_due()
    assert len(subscriber.pushes) == 1
    moment[0] += 0.1
    hub.deliver_due()  # attempt 2: 503, again in 60 s
    moment[0] += 59.9
    hub.deliver_due()
    assert len(subscriber.pushes) == 2
    moment[0] += 0.1
    hub.deliver_due()  # attempt 3: delivered
    assert len(subscriber.pushes) == 3 and len({p["body"] for p in subscriber.pushes}) == 1
    assert count("feedproxy_websub_deliveries", "retry") == retries + 2
    assert hub.db.pending() == 0


def test_a_delivery_is_given_up_after_six_attempts(upstream, clock, items, subscriber, hub_client, moment):
    failed = count("feedproxy_websub_deliveries", "failed")
    subscribe(hub_client, subscriber)
    run_hub(hub_client)
    subscriber.push_statuses = [500] * 10
    gain_paper(upstream, clock, items)
    for _ in range(10):
        run_hub(hub_client)
        moment[0] += 3600
    assert len(subscriber.pushes) == 6
    assert count("feedproxy_websub_deliveries", "failed") == failed + 1
    assert hub_of(hub_client).db.pending() == 0
    assert hub_of(hub_client).db.count(moment[0]) == 1  # still subscribed: the next change is tried again


def test_a_callback_answering_410_is_unsubscribed(upstream, clock, items, subscriber, hub_client):
    subscribe(hub_client, subscriber)
    run_hub(hub_client)
    subscriber.push_statuses = [410]
    gain_paper(upstream, clock, items)
    run_hub(hub_client)
    assert len(subscriber.pushes) == 1 and hub_of(hub_client).db.count(time.time()) == 0


def test_queued_deliveries_survive_a_restart_and_go_only_to_subscribers(upstream, clock, items, subscriber,
                                                                       tmp_path):
    folder = tmp_path / "data"
    client = hub_app(upstream, clock, subscriber, folder).test_client()
    subscribe(client, subscriber)
    subscribe(client, subscriber, callback="http://subscriber.example/leaving")
    run_hub(client)
    gain_paper(upstream, clock, items)
    hub_of(client).tick()  # queued; the worker stops before sending
    assert hub_of(client).db.pending() == 2
    dropped = count("feedproxy_websub_deliveries", "dropped")
    hub_of(client).db.unsubscribe("http://subscriber.example/leaving", TOPIC)
    restarted = hub_app(upstream, clock, subscriber, folder).test_client()
    hub_of(restarted).deliver_due()
    assert [p["path"] for p in subscriber.pushes] == ["/cb?user=7"]
    assert count("feedproxy_websub_deliveries", "dropped") == dropped + 1


def test_expired_subscriptions_are_pruned_and_get_nothing(upstream, clock, items, subscriber, hub_client, moment):
    expired = count("feedproxy_websub_subscriptions", "expired")
    subscribe(hub_client, subscriber, lease_seconds="3600")
    run_hub(hub_client)
    moment[0] += 3601
    gain_paper(upstream, clock, items)
    run_hub(hub_client)
    assert subscriber.pushes == [] and hub_of(hub_client).db.count(moment[0]) == 0
    assert count("feedproxy_websub_subscriptions", "expired") == expired + 1


def test_metrics_count_subscriptions_and_deliveries(upstream, clock, items, subscriber, hub_client):
    subscribe(hub_client, subscriber)
    run_hub(hub_client)
    gain_paper(upstream, clock, items)
    run_hub(hub_client)
    text = hub_client.get("/metrics").text
    assert "feedproxy_websub_active_subscriptions 1.0" in text
    assert 'feedproxy_websub_subscriptions_total{outcome="verified"}' in text
    assert 'feedproxy_websub_deliveries_total{outcome="delivered"}' in text


def test_a_callback_that_turns_private_after_the_check_is_not_contacted(upstream, clock, subscriber, tmp_path):
    answers = iter([[PUBLIC], ["10.0.0.7"]])  # DNS rebinding: public when checked, private when verified
    client = create_app(make_config(upstream.url, data_dir=str(tmp_path)), clock=clock, callback_client=CallbackClient(
        resolver=lambda host, port: next(answers), network=LoopbackNetwork({PUBLIC: subscriber}))).test_client()
    before = count("feedproxy_websub_subscriptions", "private_address")
    assert post(client).status_code == 202
    hub_of(client).wait_for_verifications()
    assert subscriber.verifications == [] and hub_of(client).db.count(time.time()) == 0
    assert count("feedproxy_websub_subscriptions", "private_address") == before + 1


def test_a_subscription_over_the_limit_at_verification_is_denied_at_the_callback(upstream, clock, subscriber,
                                                                                 tmp_path):
    client = hub_app(upstream, clock, subscriber, tmp_path, websub_max_per_topic=1).test_client()
    subscribe(client, subscriber)
    late = HubRequest("subscribe", "http://subscriber.example/late", TOPIC, TOPIC, 3600, None)
    assert hub_of(client).verify(late) == "denied"
    assert subscriber.verifications[-1] == {
        "path": "/late", "hub.mode": "denied", "hub.topic": TOPIC,
        "hub.reason": "this feed has its maximum of 1 subscriptions; ask the operator (FEEDPROXY_WEBSUB_MAX_PER_TOPIC)"}
    assert hub_of(client).db.count(time.time()) == 1


def test_a_hub_turned_off_sends_nothing_to_its_old_subscribers(upstream, clock, items, subscriber, tmp_path):
    subscribe(hub_app(upstream, clock, subscriber, tmp_path).test_client(), subscriber)
    off = hub_app(upstream, clock, subscriber, tmp_path, websub_max_subscriptions=0).test_client()
    run_hub(off)
    gain_paper(upstream, clock, items)
    run_hub(off)
    assert subscriber.pushes == [] and hub_of(off).db.pending() == 0
