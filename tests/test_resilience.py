"""What readers get when the upstream fails, and when the request itself is hostile."""

import json
import logging
import threading
from urllib.parse import quote, urlencode

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedproxy.app import create_app

from .atomcheck import check_atom
from .conftest import make_config
from .fakeupstream import Fault

FAULTS = {
    "500": Fault(status=500),
    "429 with Retry-After": Fault(status=429, headers={"Retry-After": "120"}),
    "stall": Fault(delay=2.5),
    "not JSON": Fault(body=b"<!doctype html><title>Bad gateway</title>"),
    "truncated JSON": Fault(truncate=True),
    "schema drift": Fault(body=json.dumps([{"paperz": {"id": "2608.1"}}] * 3).encode()),
    "oversized": Fault(body=b"[" + b" " * 3_000_000 + b"]"),
}


@pytest.mark.parametrize("name", FAULTS)
def test_a_failing_refresh_keeps_serving_the_last_good_feed(upstream, clock, name):
    app = create_app(make_config(upstream.url, max_response_bytes=2_000_000), clock=clock)
    client = app.test_client()
    good = client.get("/feed?q=model")
    upstream.always = FAULTS[name]
    clock.advance(901)
    during = client.get("/feed?q=model")  # this request runs the failing refresh (no background thread)
    assert during.status_code == 200 and during.data == good.data
    health = client.get("/healthz")
    assert health.status_code == 200
    report = health.get_json()
    assert report["papers"] == 40 and report["last_error"] and report["status"] == "ok"
    if name == "429 with Retry-After":
        assert report["next_refresh_in_seconds"] == 120


@pytest.mark.parametrize("name", FAULTS)
def test_cold_start_with_a_failing_upstream_is_503_with_retry_after(upstream, clock, name):
    upstream.always = FAULTS[name]
    client = create_app(make_config(upstream.url, max_response_bytes=2_000_000), clock=clock).test_client()
    response = client.get("/feed")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.get_data(as_text=True).startswith("no papers yet: ")
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["status"] == "no data"


def test_an_empty_listing_never_empties_the_feed(upstream, clock):
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    good = client.get("/feed")
    upstream.items = []
    clock.advance(901)
    assert client.get("/feed").data == good.data


def test_items_failing_validation_are_skipped_and_the_rest_served(upstream, clock, items):
    upstream.items = [{"paper": {"title": "no id"}}, items[0], {"paper": {"id": "2608.99999"}}, items[1]]
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    parsed = feedparser.parse(client.get("/feed").data)
    assert [e.id.rsplit("/", 1)[1] for e in parsed.entries] == [items[0]["paper"]["id"], items[1]["paper"]["id"]]


@pytest.mark.parametrize("odd", [
    {"upvotes": 1e19},  # larger than any 64-bit integer
    {"upvotes": 10**400},  # JSON allows it (1e400 in the body)
    {"publishedAt": "0001-01-01T00:00:00+14:00"},  # before year 1 once in UTC
])
def test_items_no_check_foresaw_are_skipped_not_fatal(upstream, clock, items, odd):
    """(issue 17) An item of a shape no validation foresaw costs that item, never the refresh."""
    strange = dict(items[2], paper=dict(items[2]["paper"], id="2608.98765"))
    for key, value in odd.items():
        if key in strange["paper"] or key == "upvotes":
            strange["paper"][key] = value
        else:
            strange[key] = value
    body = json.dumps([items[0], strange, items[1]]).replace("1e+400", "1e400")
    upstream.faults.append(Fault(body=body.encode()))
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    response = client.get("/feed")
    assert response.status_code == 200
    found = [e.id.rsplit("/", 1)[1] for e in feedparser.parse(response.data).entries]
    assert items[0]["paper"]["id"] in found and items[1]["paper"]["id"] in found
    # A count past any real one is kept as the largest the service counts; other oddities cost the item.
    assert ("2608.98765" in found) == ("upvotes" in odd)


@pytest.mark.parametrize("fault", [
    Fault(body=b"[" * 100_000 + b"]" * 100_000),  # JSON nested 100,000 deep
])
def test_a_page_no_parser_can_read_is_a_recorded_failure_with_backoff(upstream, clock, fault):
    upstream.faults.append(fault)
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    response = client.get("/feed")
    assert response.status_code == 503 and "not valid JSON (RecursionError" in response.text
    assert int(response.headers["Retry-After"]) == 5
    health = json.loads(client.get("/healthz").data)
    assert "RecursionError" in health["last_error"]


def test_any_failure_inside_a_refresh_is_recorded_and_backed_off(upstream, clock, monkeypatch):
    from feedproxy.upstream.daily_papers import HttpListing

    def exhausted(self, validators=None):
        raise MemoryError("cannot allocate")
        yield  # a generator, like the real one

    monkeypatch.setattr(HttpListing, "pages", exhausted)
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    first = client.get("/feed")
    assert first.status_code == 503 and "the refresh failed: MemoryError: cannot allocate" in first.text
    clock.advance(6)
    assert "failures=2" not in first.text
    second = client.get("/feed")
    assert second.status_code == 503 and int(second.headers["Retry-After"]) == 10  # the wait doubles


def test_fifty_simultaneous_cold_requests_make_one_upstream_fetch(upstream, clock):
    upstream.faults.append(Fault(delay=0.3))
    app = create_app(make_config(upstream.url), clock=clock)
    statuses, barrier = [], threading.Barrier(50)

    def read():
        barrier.wait()
        statuses.append(app.test_client().get("/feed?q=model").status_code)

    threads = [threading.Thread(target=read) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 50
    assert upstream.page_requests() == [0]


@pytest.mark.parametrize(
    "query_string, status, words",
    [
        ("q=" + "a" * 10_000, 414, "at most 4096"),
        ("q=%FF%FE", 400, "not valid UTF-8"),
        ("&".join(["q=a"] * 1000), 400, "too many parameters"),
        ("limit=1&" * 30 + "x=1", 400, "'limit' is given 30 times"),
        ("q=%00%01%02", 400, "parameter 'q'"),
        ("q=" + quote("\u202e\u0000evil"), 200, ""),
    ],
)
def test_hostile_query_strings_get_a_clear_4xx(client, query_string, status, words):
    response = client.get("/feed?" + query_string)
    assert response.status_code == status, response.data[:200]
    if status != 200:
        assert words in response.get_data(as_text=True)
        assert response.content_type == "text/plain; charset=utf-8"
    else:
        check_atom(response.data)


PARAM_NAMES = st.sampled_from(["q", "limit", "min_upvotes", "days", "sort", "format", "x", "Q", "limit[]", "top"])
PARAM_VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["0", "1", "50", "500", "501", "-1", "1e3", "date", "upvotes", "relevance", "rss", "json",
                     '"a', "(a", "a OR", "-a", "title:", "author:x", "x" * 600, "NOT a", "trending", "week", "month",
                     "has:code", "stars>=5", "org:google -comments<1", "has:x"]),
    st.integers(-10**12, 10**12).map(str),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.lists(st.tuples(PARAM_NAMES, PARAM_VALUES), max_size=6))
def test_no_parameters_produce_a_server_error(client, params):
    response = client.get("/feed?" + urlencode(params))
    assert response.status_code in (200, 400, 414), response.data[:300]
    if response.status_code == 200:
        assert not feedparser.parse(response.data).bozo or response.content_type == "application/feed+json"
    else:
        text = response.get_data(as_text=True)
        assert text.endswith("\n") and "Traceback" not in text and len(text) < 2000


TOKEN = "hf_TestTokenNotARealOne123"


def test_the_token_reaches_the_upstream_and_nothing_a_person_or_a_log_sees(upstream, clock, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    upstream.always = Fault(status=401, body=b'{"error":"Invalid credentials in Authorization header"}')
    app = create_app(make_config(upstream.url, hf_token=TOKEN), clock=clock)
    client = app.test_client()
    answers = [client.get(path) for path in ("/feed?q=x", "/?q=x", "/preview.json?q=x", "/healthz", "/sources")]
    assert [a.status_code for a in answers] == [503, 200, 503, 503, 200]
    assert "HTTP 401" in answers[0].text
    upstream.always = None
    clock.advance(3600)
    answers += [client.get(path) for path in ("/feed?q=x", "/healthz", "/metrics", "/feed?q=title:")]
    assert [a.status_code for a in answers[5:]] == [200, 200, 200, 400]
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in upstream.requests)
    for answer in answers:
        assert TOKEN not in answer.text and TOKEN not in str(answer.headers)
    assert TOKEN not in caplog.text
    assert TOKEN not in "".join(capsys.readouterr())
    assert TOKEN not in repr(app.config)


@pytest.mark.parametrize(("stars", "huge"), [
    ("NaN", False),  # Python's json reads NaN and Infinity, which the API never sends but a proxy might
    ("Infinity", True),
    ("1e400", True),  # a float past any double: infinity
    (str(10**400), True),  # an integer past 64 bits, and past any float
])
def test_an_odd_star_count_costs_the_count_never_the_paper(upstream, clock, items, stars, huge):
    """(issue 15) githubStars past any real count is kept as the largest the service counts, as upvotes are;
    one that is no number is unknown. Either way the paper and its repository stay."""
    odd = dict(items[1], paper=dict(items[1]["paper"], githubStars=0.5))
    body = json.dumps([items[0], odd, items[2]]).replace('"githubStars": 0.5', f'"githubStars": {stars}')
    upstream.faults.append(Fault(body=body.encode()))
    client = create_app(make_config(upstream.url), clock=clock).test_client()
    odd_url = "https://huggingface.co/papers/" + odd["paper"]["id"]
    assert odd_url in [e.id for e in feedparser.parse(client.get("/feed?q=has:code").data).entries]
    most = [e.id for e in feedparser.parse(client.get("/feed?q=stars%3E%3D999999999").data).entries]
    assert most == ([odd_url] if huge else [])
    unknown = [e.id for e in feedparser.parse(client.get("/feed?q=has:code%20-stars%3E%3D0").data).entries]
    assert unknown == ([] if huge else [odd_url])
