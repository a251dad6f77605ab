"""Several sources: configured RSS/Atom feeds, /sources, merging, announce types, url= rules."""


from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import feedparser
import pytest

from feedproxy.app import create_app

from .atomcheck import check_atom, entry_ids
from .conftest import make_config
from .fakefeeds import FakeFeeds, fixture
from .servers import wait_until
from .test_safefetch import fetcher_for

LG_IDS = ["2508.13601", "2508.13644", "2508.12990", "2406.01122", "2312.04410", "2508.13777"]


@pytest.fixture
def feeds():
    with FakeFeeds() as fake:
        fake.serve("/atom/cs.LG", fixture("arxiv-cs.LG.atom"), content_type="application/atom+xml", etag=True)
        fake.serve("/rss/cs.CL", fixture("arxiv-cs.CL.rss"))
        yield fake


@pytest.fixture
def client(upstream, clock, feeds, tmp_path):
    config = make_config(upstream.url, data_dir=str(tmp_path), feeds=(
        ("arxiv-cs-lg", feeds.url("/atom/cs.LG")), ("arxiv-cs-cl", feeds.url("/rss/cs.CL"))))
    return create_app(config, clock=clock).test_client()


def test_sources_are_listed(client, feeds):
    listing = client.get("/sources").get_json()["sources"]
    assert [s["name"] for s in listing] == ["hf-daily", "arxiv-cs-lg", "arxiv-cs-cl"]
    assert listing[0]["default"] and not listing[1]["default"]
    assert listing[1]["url"] == feeds.url("/atom/cs.LG")
    assert listing[1]["feed"] == "http://localhost/feed?source=arxiv-cs-lg"


def test_a_configured_arxiv_listing_is_filtered_like_daily_papers(client, tmp_path):
    response = client.get("/feed?source=arxiv-cs-lg&limit=500")
    root = check_atom(response.data)
    ids = entry_ids(root)
    assert sorted(ids) == sorted(f"https://arxiv.org/abs/{i}" for i in LG_IDS)
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo and parsed.feed.title.startswith("arxiv-cs-lg")
    assert (tmp_path / "arxiv-cs-lg" / "snapshot.json.gz").exists()  # persisted like Daily Papers
    everything = client.get("/feed?source=arxiv-cs-lg&limit=500&format=json").get_json()["items"]
    one = everything[0]
    assert "Announce Type" not in one["summary"] and "arXiv:" not in one["summary"][:10]
    assert 'href="https://arxiv.org/pdf/' in one["content_html"]


def test_more_like_this_searches_the_same_source(client):
    """An entry's "More like this" and the preview's link keep source=: the paper is in that source only."""
    feed = feedparser.parse(client.get("/feed?source=arxiv-cs-lg&limit=500").data)
    html = feed.entries[0].content[0].value
    paper = feed.entries[0].id.rsplit("/", 1)[1]
    link = f"http://localhost/feed?source=arxiv-cs-lg&amp;similar={paper}"
    assert f'<a href="{link}">More like this</a>' in html, html
    near = feedparser.parse(client.get(link.replace("&amp;", "&")).data)
    assert near.entries and paper not in {e.id.rsplit("/", 1)[1] for e in near.entries}
    row = client.get("/preview.json?source=arxiv-cs-lg").get_json()["papers"][0]
    assert row["similar_url"] == f"/?source=arxiv-cs-lg&similar={row['id']}"
    assert client.get(row["similar_url"]).status_code == 200


def test_announce_type_filter(client):
    items = client.get("/feed?source=arxiv-cs-lg&announce=new&format=json").get_json()["items"]
    assert len(items) == 3
    both = client.get("/feed?source=arxiv-cs-lg&announce=cross,replace-cross&format=json").get_json()["items"]
    assert len(both) == 2
    bad = client.get("/feed?source=arxiv-cs-lg&announce=old")
    assert bad.status_code == 400 and "'announce' must list new, cross, replace, replace-cross" in bad.text


def test_announce_on_sources_without_announce_types_is_400_naming_those_with_them(upstream, clock, feeds):
    feeds.serve("/blog.rss", fixture("blog.rss"))
    config = make_config(upstream.url, feeds=(("arxiv-cs-lg", feeds.url("/atom/cs.LG")), ("blog", feeds.url("/blog.rss"))))
    client = create_app(config, clock=clock).test_client()
    # The first request: Daily Papers is fetched only now, and no arXiv listing has been yet.
    cold = client.get("/feed?announce=new")
    assert cold.status_code == 400
    assert cold.text == ("parameter 'announce' filters by arXiv announce type, but hf-daily has no announce types "
                         "(only arXiv listings do); no source on this server has them now (arXiv listings are added "
                         "with FEEDPROXY_FEEDS)\n")
    assert client.get("/feed?source=arxiv-cs-lg").status_code == 200
    for query in ("announce=new", "source=blog&announce=new", "source=hf-daily,blog&announce=cross"):
        refused = client.get(f"/feed?{query}")
        assert refused.status_code == 400, query
        assert refused.text.startswith("parameter 'announce'") and refused.text.endswith("sources with them: arxiv-cs-lg\n")
    assert "hf-daily and blog have no announce types" in client.get("/feed?source=hf-daily,blog&announce=new").text
    # One merged source with announce types is enough.
    merged = client.get("/feed?source=hf-daily,arxiv-cs-lg&announce=new&format=json")
    assert merged.status_code == 200 and len(merged.get_json()["items"]) == 3
    # The page validates the same way and shows the message.
    preview = client.get("/preview.json?announce=new")
    assert preview.status_code == 400 and preview.get_json()["error"] == client.get("/feed?announce=new").text.rstrip()
    page = client.get("/?source=blog&announce=new")
    assert page.status_code == 400 and "only arXiv listings do); sources with them: arxiv-cs-lg" in page.text


def test_announce_is_not_refused_for_a_source_that_holds_no_papers_yet(upstream, clock, feeds):
    config = make_config(upstream.url, feeds=(("down", feeds.url("/nowhere")),))
    client = create_app(config, clock=clock).test_client()
    assert client.get("/feed?source=down&announce=new").status_code == 503


def test_unknown_source_is_404_naming_the_known_ones(client):
    response = client.get("/feed?source=arxiv-math")
    assert response.status_code == 404
    assert response.text == "unknown source 'arxiv-math'; known sources: hf-daily, arxiv-cs-lg, arxiv-cs-cl\n"


def test_merged_sources_list_a_paper_once_first_source_wins(upstream, clock, feeds, items, tmp_path):
    hf = next(i for i in items if i["paper"]["id"] == "2608.19880")
    rss = fixture("arxiv-cs.CL.rss").replace(b"2508.13435", b"2608.19880")
    feeds.serve("/rss/cs.CL", rss)
    config = make_config(upstream.url, feeds=(("arxiv-cs-cl", feeds.url("/rss/cs.CL")),))
    client = create_app(config, clock=clock).test_client()
    hf_first = entry_ids(check_atom(client.get("/feed?source=hf-daily,arxiv-cs-cl&limit=500").data))
    arxiv_first = entry_ids(check_atom(client.get("/feed?source=arxiv-cs-cl,hf-daily&limit=500").data))
    assert len(hf_first) == len(arxiv_first) == 40 + 6 - 1
    assert "https://huggingface.co/papers/2608.19880" in hf_first and "https://arxiv.org/abs/2608.19880" not in hf_first
    assert "https://arxiv.org/abs/2608.19880" in arxiv_first
    assert hf["paper"]["id"] == "2608.19880"
    # Newest first across sources: Daily Papers (2026) before the arXiv listing (2025).
    assert hf_first[0].startswith("https://huggingface.co/papers/")


def test_the_same_query_language_on_every_source(client):
    found = client.get('/feed?source=arxiv-cs-cl&q="language model"&format=json').get_json()["items"]
    assert found and all("language model" in (i["title"] + i.get("summary", "")).lower().replace("-", " ")
                         for i in found)


def test_a_source_that_is_down_leaves_the_others_serving(upstream, clock, feeds):
    config = make_config(upstream.url, feeds=(("down", feeds.url("/nowhere")),))
    client = create_app(config, clock=clock).test_client()
    assert client.get("/feed?source=down").status_code == 503
    merged = client.get("/feed?source=hf-daily,down&limit=500")
    assert merged.status_code == 200 and len(entry_ids(check_atom(merged.data))) == 40
    health = client.get("/healthz").get_json()
    assert health["sources"]["down"]["status"] == "no data" and "HTTP 404" in health["sources"]["down"]["last_error"]


def test_url_parameter_is_refused_while_disabled(client):
    response = client.get("/feed?url=https://rss.arxiv.org/atom/cs.LG")
    assert response.status_code == 403 and "FEEDPROXY_ALLOW_URL_HOSTS" in response.text


def test_url_parameter_only_for_allowed_hosts_and_public_addresses(upstream, clock):
    client = create_app(make_config(upstream.url, allow_url_hosts=frozenset({"localhost"})), clock=clock).test_client()
    other = client.get("/feed?url=https://rss.arxiv.org/atom/cs.LG")
    assert other.status_code == 403 and "not allowed" in other.text
    port = client.get(f"/feed?url=http://localhost:{upstream.url.split(':')[2].split('/')[0]}/feed")
    assert port.status_code == 403 and "port" in port.text
    loopback = client.get("/feed?url=http://localhost/feed")
    # The host is allowed; its address is checked when it is fetched, so the answer is the fetch's failure.
    assert loopback.status_code == 503 and "127.0.0.1" in loopback.text and "only public addresses can be fetched" in loopback.text


def test_url_and_source_together_are_refused(upstream, clock):
    client = create_app(make_config(upstream.url, allow_url_hosts=frozenset({"example.org"})), clock=clock).test_client()
    for source in ("hf-daily", "hf-daily,hf-daily", "HF-DAILY"):  # even the default, spelled out
        response = client.get(f"/feed?url=https://example.org/feed&source={source}")
        assert response.status_code == 400 and "give either 'url' or 'source', not both" in response.text
    unknown = client.get("/feed?url=https://example.org/feed&source=nope")
    assert unknown.status_code == 404 and "unknown source 'nope'" in unknown.text


@pytest.fixture
def feeds_example():
    """feeds.example, a public host in a loopback world (see test_safefetch), serving a blog feed."""
    with FakeFeeds() as server:
        server.serve("/feed.xml", fixture("blog.rss"))
        yield server


def url_client(upstream, clock, server):
    """An app that fetches url= feeds of feeds.example through SafeFetcher on the loopback network."""
    config = make_config(upstream.url, allow_url_hosts=frozenset({"feeds.example"}))
    return create_app(config, clock=clock, url_fetcher=lambda: fetcher_for(server)[0]).test_client()


def test_a_url_source_is_reused_between_requests(upstream, clock, feeds_example):
    client = url_client(upstream, clock, feeds_example)
    for q in ("", "school", "cluster", ""):
        response = client.get(f"/feed?url=http://feeds.example/feed.xml&q={q}")
        assert response.status_code == 200
    assert feeds_example.paths() == ["/feed.xml"]  # one fetch: the same store answered every request


def test_the_fast_path_does_not_remember_url_feeds(upstream, clock, feeds_example):
    """Evicted url= sources must not live on in the fast path, serving what they held."""
    client = url_client(upstream, clock, feeds_example)
    first = client.get("/feed?url=http://feeds.example/feed.xml")
    assert first.status_code == 200 and b"summer school" in first.data
    for n in range(40):  # more url= feeds than the registry keeps: the first one's source goes
        feeds_example.serve(f"/other-{n}.xml", fixture("blog.atom"))
        assert client.get(f"/feed?url=http://feeds.example/other-{n}.xml").status_code == 200
    feeds_example.serve("/feed.xml", fixture("arxiv-cs.CL.rss"))
    again = client.get("/feed?url=http://feeds.example/feed.xml")
    assert again.status_code == 200 and b"summer school" not in again.data  # fetched anew
    assert feeds_example.paths().count("/feed.xml") == 2


def test_url_feeds_keep_their_own_rendered_copies(upstream, clock, feeds_example, caplog):
    """Each url= feed is its own cache scope: asking for one must not drop another's rendered feed."""
    feeds_example.serve("/other.xml", fixture("blog.atom"))
    client = url_client(upstream, clock, feeds_example)
    with caplog.at_level("INFO", logger="feedproxy.access"):
        for path in ("/feed.xml", "/other.xml", "/feed.xml"):
            assert client.get(f"/feed?url=http://feeds.example{path}").status_code == 200
    results = [r.getMessage().split(" cache=")[1].split()[0] for r in caplog.records if r.name == "feedproxy.access"]
    assert results == ["miss", "miss", "hit"]


def test_the_hf_token_goes_to_daily_papers_only(upstream, clock, feeds, tmp_path):
    token = "hf_TestTokenNotARealOne123"
    config = make_config(upstream.url, data_dir=str(tmp_path), hf_token=token,
                         feeds=(("arxiv-cs-lg", feeds.url("/atom/cs.LG")),), allow_url_hosts=frozenset({"feeds.example"}))
    client = create_app(config, clock=clock, url_fetcher=lambda: fetcher_for(feeds)[0]).test_client()
    assert client.get("/feed?source=hf-daily,arxiv-cs-lg").status_code == 200
    assert client.get("/feed?url=http://feeds.example/rss/cs.CL").status_code == 200
    assert upstream.requests[0]["headers"]["Authorization"] == f"Bearer {token}"
    assert feeds.paths() == ["/atom/cs.LG", "/rss/cs.CL"]
    assert not any("Authorization" in r["headers"] for r in feeds.requests)


def test_a_configured_feed_may_be_private_but_its_redirects_elsewhere_must_be_public(upstream, clock):
    """(issue 17) The operator's own host is trusted as configured; a redirect to another host is
    checked like a url= fetch, so a feed cannot lead the service to a loopback or private address."""
    with FakeFeeds() as server:
        server.serve("/feed.xml", fixture("blog.rss"))
        server.redirect("/moved", "/feed.xml")  # same host and port: followed
        server.redirect("/away", f"http://localhost:{server.port}/feed.xml")  # another host: a loopback one
        feeds = (("same", server.url("/moved")), ("away", server.url("/away")))
        client = create_app(make_config(upstream.url, feeds=feeds), clock=clock).test_client()
        assert client.get("/feed?source=same").status_code == 200
        refused = client.get("/feed?source=away")
    assert refused.status_code == 503
    assert "localhost resolves to 127.0.0.1 (loopback); only public addresses can be fetched" in refused.text


def test_a_url_feed_holds_at_most_a_thousand_items(upstream, clock, feeds_example):
    items = "".join(f"<item><title>Post {n}</title><link>http://feeds.example/{n}</link><guid>post-{n}</guid>"
                    f"<pubDate>{format_datetime(datetime(2026, 8, 1, tzinfo=timezone.utc) - timedelta(minutes=n))}"
                    f"</pubDate></item>" for n in range(1200))
    feeds_example.serve("/big.xml", f'<?xml version="1.0"?><rss version="2.0"><channel><title>Big</title>'
                                    f'{items}</channel></rss>'.encode())
    client = url_client(upstream, clock, feeds_example)
    assert client.get("/feed?url=http://feeds.example/big.xml").status_code == 200
    held = client.application.extensions["feedproxy.sources"].for_url("http://feeds.example/big.xml")
    assert [p.title for p in held.store.current().papers][-1] == "Post 999"  # the newest thousand


def test_a_source_holds_at_most_max_papers(upstream, clock):
    client = create_app(make_config(upstream.url, window_days=1000, max_papers=7), clock=clock).test_client()
    assert len(feedparser.parse(client.get("/feed?limit=500").data).entries) == 7


def test_a_url_feed_that_drips_answers_503_at_once_and_its_fetch_ends_at_the_deadline(upstream, clock):
    """(issue 17) In service a cold url= feed is fetched in a background thread, never a request's:
    the request answers 503 with Retry-After at once, /healthz answers, and the fetch from a server
    dripping its headers ends at the deadline (connect + 2 x read timeout) and is reported."""
    with FakeFeeds() as server:
        server.serve("/feed.xml", fixture("blog.rss"), drip_headers=0.1)  # about 10 s of headers
        config = make_config(upstream.url, allow_url_hosts=frozenset({"feeds.example"}), background_refresh=True)

        def fetcher():
            return fetcher_for(server, connect_timeout=0.5, read_timeout=0.5)[0]

        client = create_app(config, clock=clock, url_fetcher=fetcher).test_client()
        assert wait_until(lambda: client.get("/healthz").status_code == 200)  # hf-daily's first fetch, in the background
        url = "/feed?url=http://feeds.example/feed.xml"
        first = client.get(url)
        assert first.status_code == 503 and int(first.headers["Retry-After"]) >= 1
        assert "the first fetch from the upstream is still running" in first.text
        assert client.get("/healthz").status_code == 200
        assert wait_until(lambda: "still running" not in client.get(url).text, timeout=20)
        later = client.get(url)
    assert later.status_code == 503 and "http://feeds.example/feed.xml: response took longer than 1.5 s" in later.text
    assert server.wait_for_heads(1) == ["cut short"]  # the fetch left before the headers were out
