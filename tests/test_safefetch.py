"""User-supplied URLs: the allow-list, the address checks, pinned connections, redirects and caps.

The tests stand a loopback FakeFeeds at public-looking addresses through a fake
resolver and a LoopbackNetwork, so the production checks run unchanged; a few
tests use the real resolver and network to show that loopback stays out of reach.
"""


import pytest

from feedproxy.errors import BadParameter, UpstreamBadData, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from feedproxy.upstream.feeds import FeedListing
from feedproxy.upstream.safe import (
    FetchRefused, HostRule, SafeFetcher, UrlNotAllowed, address_problem, check_url, parse_allowed_hosts, parse_host_rule,
)

from .fakefeeds import FakeFeeds, LoopbackNetwork, fixture

PUBLIC = "93.184.216.34"  # where feeds.example "is"
OTHER_PUBLIC = "198.51.100.7"  # documentation range: not public, so the fake resolver never hands it out
ALLOWED = parse_allowed_hosts("feeds.example, mirror.example, *.blogs.example, ports.example:8080")
RSS = fixture("arxiv-cs.CL.rss")


class FakeResolver:
    """Answer from a table and record every lookup."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table
        self.lookups: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        answer = self.table.get(host)
        if answer is None:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return answer() if callable(answer) else list(answer)


@pytest.fixture
def server():
    with FakeFeeds() as fake:
        fake.serve("/feed.xml", RSS)
        yield fake


def fetcher_for(server, table=None, allowed=ALLOWED, **options):
    """A SafeFetcher whose world is: feeds.example and mirror.example at PUBLIC, served by ``server``."""
    resolver = FakeResolver(table if table is not None else {"feeds.example": [PUBLIC], "mirror.example": [PUBLIC]})
    network = LoopbackNetwork({PUBLIC: server})
    options = {"connect_timeout": 1.0, "read_timeout": 1.0, **options}
    return SafeFetcher(allowed, resolver=resolver, network=network, **options), resolver, network


# --- check_url ------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://feeds.example/feed.xml",
    "http://feeds.example/feed.xml?cat=cs.LG#top",
    "https://FEEDS.Example/feed.xml",  # host names are case-insensitive
    "http://feeds.example:443/x",
    "https://a.blogs.example/rss",
    "https://deep.a.blogs.example/rss",  # wildcards match at any depth
    "http://ports.example:8080/rss",
])
def test_allowed_urls(url):
    check_url(url, ALLOWED)


@pytest.mark.parametrize("url, words", [
    ("file:///etc/passwd", "only http and https"),
    ("gopher://feeds.example:70/_GET", "only http and https"),
    ("ftp://feeds.example/feed.xml", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("/feed.xml", "only http and https"),
    ("feeds.example/feed.xml", "only http and https"),
    ("http://user:secret@feeds.example/feed.xml", "user name or password"),
    ("http://feeds.example@127.0.0.1/", "user name or password"),
    ("http://evil.example/feed.xml", "host evil.example is not on this server's list"),
    ("http://feeds.example.evil.example/", "is not on this server's list"),
    ("http://feeds.example./feed.xml", "host feeds.example. is not"),  # a trailing dot is another name
    ("http://blogs.example/rss", "host blogs.example is not"),  # a wildcard does not cover its apex
    ("http://127.0.0.1/", "host 127.0.0.1 is not"),
    ("http://2130706433/", "host 2130706433 is not"),  # 127.0.0.1 in decimal
    ("http://0x7f000001/", "is not on this server's list"),
    ("http://[::1]/", "host ::1 is not"),
    ("http://localhost/", "host localhost is not"),
    ("http://feeds.example:8080/", "port 8080 is not allowed"),
    ("http://feeds.example:22/", "port 22 is not allowed"),
    ("http://ports.example:8081/", "port 8081 is not allowed"),
    ("http://[::1/", "is not a valid URL"),
    ("https://feeds.example/" + "a" * 3000, "longer than 2048 characters"),
])
def test_refused_urls(url, words):
    with pytest.raises(UrlNotAllowed) as err:
        check_url(url, ALLOWED)
    assert words in str(err.value)
    assert isinstance(err.value, BadParameter) and not isinstance(err.value, UpstreamError)  # a user error
    assert err.value.status == 403 and err.value.parameter == "url"


def test_internationalised_host_names_match_in_either_form():
    allowed = parse_allowed_hosts("bücher.example")
    assert allowed == frozenset({"xn--bcher-kva.example"})
    check_url("https://bücher.example/feed", allowed)
    check_url("https://xn--bcher-kva.example/feed", allowed)


@pytest.mark.parametrize("text, expected", [
    ("feeds.example", {"feeds.example"}),
    (" Feeds.Example , *.Blogs.example  ports.example:8080 ", {"feeds.example", "*.blogs.example", "ports.example:8080"}),
    ("feeds.example:80", {"feeds.example"}),  # the default port adds nothing
    ("[2001:db8::1], 203.0.113.9:8443", {"[2001:db8::1]", "203.0.113.9:8443"}),
    ("", set()),
])
def test_parse_allowed_hosts(text, expected):
    assert parse_allowed_hosts(text) == frozenset(expected)


@pytest.mark.parametrize("entry", ["*", "*.", "feeds.*.example", "http://feeds.example", "feeds.example/path",
                                   "user@feeds.example", "*.127.0.0.1", "feeds.example:http", "[::1"])
def test_invalid_allow_list_entries(entry):
    with pytest.raises(ValueError):
        parse_host_rule(entry)


def test_host_rules():
    assert parse_host_rule("*.Example.ORG") == HostRule("example.org", None, True)
    assert parse_host_rule("feeds.example:8080") == HostRule("feeds.example", 8080, False)


# --- addresses --------------------------------------------------------------------

# Where Python's ipaddress tables differ between versions (which flag an address
# trips first), the table says only that some problem is found: ANY.
ANY = object()


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("100.64.0.1", ANY),  # carrier-grade NAT
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", ANY),
    ("255.255.255.255", ANY),
    ("198.51.100.7", ANY),  # documentation
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "private"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:93.184.216.34", "IPv4-mapped"),  # never a real IPv6 destination
    ("2002:7f00:1::", "6to4 loopback"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", "6to4 link-local"),  # 6to4 of 169.254.169.254
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo loopback"),  # client 127.0.0.1
    ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("::7f00:1", ANY),  # IPv4-compatible (deprecated) 127.0.0.1
    ("2001:db8::1", ANY),  # documentation
    ("example.org", "not an IP address"),
    ("", "not an IP address"),
])
def test_addresses_that_are_refused(address, problem):
    found = address_problem(address)
    assert found is not None and (problem is ANY or found == problem)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "2002:5db8:d822::1"])
def test_public_addresses(address):
    assert address_problem(address) is None


# --- SafeFetcher --------------------------------------------------------------------

def test_fetches_an_allowed_host_through_the_checked_address(server):
    fetcher, resolver, network = fetcher_for(server)
    fetched = fetcher.get("http://feeds.example/feed.xml")
    assert fetched.body == RSS
    assert resolver.lookups == [("feeds.example", 80)]
    [sent] = network.sent
    assert sent["url"] == f"http://{PUBLIC}/feed.xml"  # pinned to the address that was checked
    assert sent["host"] == "feeds.example"  # the server still sees the name
    assert server.requests[0]["headers"]["Host"] == "feeds.example"
    assert "feedproxy" in server.requests[0]["headers"]["User-Agent"]


def test_an_ipv6_address_is_pinned_too(server):
    network = LoopbackNetwork({"2606:4700::1111": server})
    fetcher = SafeFetcher(ALLOWED, resolver=lambda host, port: ["2606:4700::1111"], network=network)
    assert fetcher.get("http://feeds.example/feed.xml").body == RSS
    assert network.sent[0]["url"] == "http://[2606:4700::1111]/feed.xml" and network.sent[0]["host"] == "feeds.example"


def test_a_feed_listing_reads_a_user_supplied_url(server):
    fetcher, _, _ = fetcher_for(server)
    [page] = list(FeedListing("http://feeds.example/feed.xml", fetcher=fetcher).pages())
    assert len(page.papers) == 6


@pytest.mark.parametrize("url", ["http://evil.example/feed.xml", "file:///etc/passwd", "http://feeds.example/private"])
def test_a_refused_fetch_is_an_upstream_error_for_a_feed_listing(server, url):
    server.redirect("/private", "http://127.0.0.1/")
    fetcher, _, _ = fetcher_for(server)
    with pytest.raises(UpstreamError) as err:
        list(FeedListing(url, fetcher=fetcher).pages())
    assert isinstance(err.value, FetchRefused) and str(err.value).startswith(url)


@pytest.mark.parametrize("addresses, words", [
    (["127.0.0.1"], "resolves to 127.0.0.1 (loopback)"),
    (["10.0.0.5"], "(private)"),
    (["169.254.169.254"], "(link-local)"),
    (["::1"], "(loopback)"),
    (["::ffff:127.0.0.1"], "(IPv4-mapped loopback)"),
    ([PUBLIC, "127.0.0.1"], "resolves to 127.0.0.1"),  # any bad address refuses the host
    (["127.0.0.1", PUBLIC], "resolves to 127.0.0.1"),
])
def test_hosts_resolving_to_non_public_addresses_are_refused(server, addresses, words):
    fetcher, _, network = fetcher_for(server, {"feeds.example": addresses})
    with pytest.raises(FetchRefused, match="only public addresses can be fetched") as err:
        fetcher.get("http://feeds.example/feed.xml")
    assert words in str(err.value)
    # A user error and an upstream failure both: a snapshot refresh records it like any failed fetch.
    assert isinstance(err.value, UrlNotAllowed) and isinstance(err.value, UpstreamError)
    assert network.sent == [] and server.requests == []


@pytest.mark.parametrize("url, params", [("http://FEEDS.Example/feed.xml", None), ("http://feeds.example/feed.xml", {"q": "a b"})])
def test_a_refusal_of_the_first_request_is_not_called_a_redirect(server, url, params):
    fetcher, _, _ = fetcher_for(server, {"feeds.example": ["127.0.0.1"]})
    with pytest.raises(FetchRefused) as err:
        fetcher.get(url, params)
    assert "redirects" not in str(err.value) and "(loopback)" in str(err.value)


def test_the_connection_goes_to_the_checked_address_even_if_dns_changes(server):
    answers = iter([[PUBLIC], ["127.0.0.1"]])  # DNS rebinding: public for the check, loopback after
    fetcher, resolver, network = fetcher_for(server, {"feeds.example": lambda: next(answers)})
    assert fetcher.get("http://feeds.example/feed.xml").body == RSS
    assert len(resolver.lookups) == 1  # one lookup per request: the checked answer is the one used
    assert network.sent[0]["url"].startswith(f"http://{PUBLIC}/")
    with pytest.raises(FetchRefused, match="127.0.0.1"):  # the next request looks again, and refuses
        fetcher.get("http://feeds.example/feed.xml")


@pytest.mark.parametrize("target, error, words", [
    ("http://127.0.0.1:{port}/feed.xml", FetchRefused, "host 127.0.0.1 is not on this server's list"),
    ("http://evil.example/feed.xml", FetchRefused, "host evil.example is not on this server's list"),
    ("http://2130706433/feed.xml", FetchRefused, "host 2130706433 is not"),
    ("file:///etc/passwd", FetchRefused, "only http and https"),
    ("gopher://feeds.example/_x", FetchRefused, "only http and https"),
    ("http://feeds.example:8080/feed.xml", FetchRefused, "port 8080 is not allowed"),
    ("http://internal.blogs.example/feed.xml", FetchRefused, "resolves to 10.0.0.8 (private)"),
])
def test_redirects_are_checked_on_every_hop(server, target, error, words):
    server.redirect("/moved", target.format(port=server.port))
    table = {"feeds.example": [PUBLIC], "internal.blogs.example": ["10.0.0.8"]}
    fetcher, _, network = fetcher_for(server, table)
    with pytest.raises(error) as err:
        fetcher.get("http://feeds.example/moved")
    assert str(err.value).startswith("http://feeds.example/moved redirects to a URL that is not allowed: ")
    assert words in str(err.value)
    assert server.paths() == ["/moved"] and len(network.sent) == 1


def test_redirects_to_allowed_hosts_are_followed_and_resolved_again(server):
    server.redirect("/moved", "http://mirror.example/relative")
    server.redirect("/relative", "/feed.xml")
    fetcher, resolver, network = fetcher_for(server)
    assert fetcher.get("http://feeds.example/moved").body == RSS
    assert resolver.lookups == [("feeds.example", 80), ("mirror.example", 80), ("mirror.example", 80)]
    assert [s["host"] for s in network.sent] == ["feeds.example", "mirror.example", "mirror.example"]


def test_at_most_five_redirects(server):
    for n in range(6):
        server.redirect(f"/hop{n}", f"/hop{n + 1}")
    server.serve("/hop6", RSS)
    fetcher, _, _ = fetcher_for(server)
    with pytest.raises(UpstreamBadData, match="TooManyRedirects"):
        fetcher.get("http://feeds.example/hop0")
    assert len(server.requests) == 6
    assert fetcher.get("http://feeds.example/hop1").body == RSS  # five hops are fine


@pytest.mark.parametrize("send_length", [True, False])
def test_oversize_bodies_are_capped(server, send_length):
    server.serve("/big.xml", b"<rss>" + b"x" * 300_000, send_length=send_length)
    fetcher, _, _ = fetcher_for(server, max_bytes=100_000)
    with pytest.raises(UpstreamBadData, match="exceeds the 100000-byte cap"):
        fetcher.get("http://feeds.example/big.xml")


def test_slow_bodies_are_cut_at_the_deadline(server):
    server.serve("/slow.xml", RSS, drip=0.05)  # a byte every 50 ms: each read is quick, the whole is not
    fetcher, _, _ = fetcher_for(server, connect_timeout=0.2, read_timeout=0.4)
    with pytest.raises(UpstreamTimeout, match=r"took longer than 1 s"):
        fetcher.get("http://feeds.example/slow.xml")
    assert len(RSS) > 100  # at a byte every 50 ms, more than 5 s to send whole
    assert server.wait_for_bodies(1) == ["cut short"]  # the client left before the body was out


@pytest.mark.parametrize("table, words", [
    ({}, "cannot resolve feeds.example"),
    ({"feeds.example": []}, "feeds.example resolves to no address"),
])
def test_names_that_do_not_resolve_are_unreachable(server, table, words):
    fetcher, _, _ = fetcher_for(server, table)
    with pytest.raises(UpstreamUnreachable, match=words):
        fetcher.get("http://feeds.example/feed.xml")


def test_proxy_settings_from_the_environment_are_ignored(server, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    fetcher, _, network = fetcher_for(server)
    assert fetcher.get("http://feeds.example/feed.xml").body == RSS
    assert len(network.sent) == 1


# --- TLS: pinned to an address, verified for the name ---------------------------------

@pytest.fixture
def tls_server():
    with FakeFeeds(tls=True) as fake:
        fake.serve("/feed.xml", RSS)
        yield fake


def test_https_is_verified_for_the_host_name_not_the_address(tls_server):
    fetcher, _, network = fetcher_for(tls_server)
    assert fetcher.get("https://feeds.example/feed.xml").body == RSS
    assert network.sent[0] == {"url": f"https://{PUBLIC}/feed.xml", "host": "feeds.example", "sni": "feeds.example"}


def test_https_to_a_host_whose_certificate_does_not_match_fails(tls_server):
    fetcher, _, _ = fetcher_for(tls_server, {"mirror.example": [PUBLIC]})  # the server's certificate is for feeds.example
    with pytest.raises(UpstreamUnreachable, match="certificate verify failed"):
        fetcher.get("https://mirror.example/feed.xml")


# --- the production path: real resolver, real network -----------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "[::1]", "[::ffff:127.0.0.1]"])
def test_without_test_seams_loopback_is_out_of_reach_even_when_allowed(server, host):
    allowed = parse_allowed_hosts([f"{host}:{server.port}"])
    fetcher = SafeFetcher(allowed, connect_timeout=1.0, read_timeout=1.0)
    with pytest.raises(FetchRefused, match="only public addresses can be fetched"):
        fetcher.get(f"http://{host}:{server.port}/feed.xml")
    assert server.requests == []
