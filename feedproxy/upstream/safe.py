"""Fetching URLs that users supply (``/feed?url=...``) without letting them reach private networks.

Three layers, each checked again on every redirect hop (at most 5):

1. ``check_url``: http or https, no user name or password, a host on the
   operator's allow-list (``FEEDPROXY_ALLOW_URL_HOSTS``), port 80 or 443 unless
   the allow-list names another port for that host.
2. Addresses: the host is resolved here, and the request is refused if ANY
   address is not public unicast (loopback, private, link-local, multicast,
   reserved, unspecified, or an IPv6 form that embeds such an IPv4 address:
   6to4, Teredo, NAT64; IPv4-mapped addresses are refused whatever they embed).
3. Pinning: the connection goes to the address that was checked, not to a
   second lookup, so DNS rebinding between check and connect changes nothing.
   The Host header and TLS SNI/certificate verification still use the host name.

Allow-list entries are exact host names, compared case-insensitively after IDNA
encoding (``bücher.example`` and ``xn--bcher-kva.example`` are the same); a
trailing dot is part of the name, so ``feeds.example.`` does not match
``feeds.example``. ``*.example.org`` matches every subdomain at any depth, but
not ``example.org`` itself. ``feeds.example:8080`` also allows port 8080 on that
host. IP addresses may be listed (``[2001:db8::1]`` for IPv6); the address
check still applies to them.

``check_url`` raises ``UrlNotAllowed``; ``SafeFetcher`` raises ``FetchRefused``,
which is both a ``UrlNotAllowed`` and an ``UpstreamError``.

Proxy settings from the environment (HTTP_PROXY...) are ignored: a proxy would
connect wherever it likes, after our checks.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

import httpx

from feedproxy.errors import FetchRefused, InvalidValue, UrlNotAllowed
from feedproxy.upstream.deadline import with_deadline
from feedproxy.upstream.http import FEED_ACCEPT, NO_VALIDATORS, Fetched, HttpFetcher, Validators

Resolver = Callable[[str, int], list[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _shown(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "…"


# --- the allow-list ---------------------------------------------------------------

@dataclass(frozen=True)
class HostRule:
    """One allow-list entry: a host (or, with ``wildcard``, its subdomains) and an extra allowed port."""

    host: str  # ASCII (IDNA), lowercase; for a wildcard, the parent domain
    port: int | None = None
    wildcard: bool = False

    def matches(self, host: str) -> bool:
        return host.endswith("." + self.host) if self.wildcard else host == self.host


def parse_host_rule(entry: str) -> HostRule:
    """Read one allow-list entry ("feeds.example", "*.example.org", "feeds.example:8080"); InvalidValue if invalid."""
    text = entry.strip().lower()
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    if not name or any(c in name for c in "*/@?#\\") or any(c.isspace() for c in name):
        raise InvalidValue(f"{entry!r} is not a host name (use e.g. feeds.example, *.example.org or feeds.example:8080)")
    try:
        url = httpx.URL(f"http://{name}/")
    except httpx.InvalidURL as exc:
        raise InvalidValue(f"{entry!r} is not a host name: {exc}") from None
    host = url.raw_host.decode("ascii")
    if not host:
        raise InvalidValue(f"{entry!r} has no host name")
    if wildcard and _ip_literal(host) is not None:
        raise InvalidValue(f"{entry!r}: a wildcard needs a domain name, not an IP address")
    return HostRule(host, url.port, wildcard)


def parse_allowed_hosts(value: str | Iterable[str]) -> frozenset[str]:
    """Validate an allow-list (comma- or space-separated text, or entries) and return it normalised.

    Raises InvalidValue naming the first bad entry; the result is what ``check_url`` expects.
    """
    entries = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    normalised = set()
    for entry in entries:
        rule = parse_host_rule(entry)
        host = f"[{rule.host}]" if ":" in rule.host else rule.host
        normalised.add(("*." if rule.wildcard else "") + host + (f":{rule.port}" if rule.port else ""))
    return frozenset(normalised)


@lru_cache(maxsize=32)
def _rules(allowed_hosts: frozenset[str]) -> tuple[HostRule, ...]:
    rules = []
    for entry in allowed_hosts:
        try:
            rules.append(parse_host_rule(entry))
        except ValueError:
            continue  # an invalid entry matches nothing; parse_allowed_hosts reports it at startup
    return tuple(rules)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def url_target(url: httpx.URL, given: str = "") -> tuple[str, int]:
    """The (host, port) of an http(s) URL with a host and no user name or password; UrlNotAllowed otherwise."""
    shown = _shown(given or str(url))
    if url.scheme not in DEFAULT_PORTS:
        raise UrlNotAllowed(f"{shown}: only http and https URLs can be fetched", str(url))
    if url.userinfo:
        raise UrlNotAllowed(f"{shown}: URLs with a user name or password are not allowed", str(url))
    host = url.raw_host.decode("ascii")
    if not host:
        raise UrlNotAllowed(f"{shown}: the URL has no host", str(url))
    return host, url.port if url.port is not None else DEFAULT_PORTS[url.scheme]


def _checked_target(url: httpx.URL, allowed_hosts: frozenset[str], given: str = "") -> tuple[str, int]:
    """The (host, port) of an allowed URL; raise UrlNotAllowed (naming ``given``, the URL as written) otherwise."""
    host, port = url_target(url, given)
    shown = _shown(given or str(url))
    matching = [rule for rule in _rules(allowed_hosts) if rule.matches(host)]
    if not matching:
        raise UrlNotAllowed(f"{shown}: host {host} is not on this server's list of allowed hosts", str(url))
    if port not in (80, 443) and not any(rule.port == port for rule in matching):
        raise UrlNotAllowed(f"{shown}: port {port} is not allowed (only 80 and 443)", str(url))
    return host, port


def check_url(url: str, allowed_hosts: frozenset[str]) -> None:
    """Raise UrlNotAllowed unless ``url`` is http(s), without userinfo, on an allowed host and port.

    This does not resolve the host: ``SafeFetcher`` checks the addresses when it connects.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UrlNotAllowed(f"the URL is longer than {MAX_URL_LENGTH} characters", url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UrlNotAllowed(f"{_shown(url)} is not a valid URL ({exc})", url) from None
    _checked_target(parsed, allowed_hosts, url)


# --- addresses --------------------------------------------------------------------

def _plain_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for problem, flagged in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if flagged:
            return problem
    return None


def address_problem(address: str) -> str | None:
    """Why connecting to ``address`` is refused ("loopback", "IPv4-mapped private", ...), or None if public."""
    ip = _ip_literal(address)
    if ip is None:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address reach that address; judge it, not the wrapper.
        if ip.ipv4_mapped:
            # ::ffff:a.b.c.d is never a real IPv6 destination: a resolver that returns one is up to something.
            problem = _plain_problem(ip.ipv4_mapped)
            return f"IPv4-mapped {problem}" if problem else "IPv4-mapped"
        embedded = []
        if ip.sixtofour:
            embedded.append(("6to4", ip.sixtofour))
        if ip.teredo:
            embedded.extend(("Teredo", part) for part in ip.teredo)
        if ip in _NAT64:
            embedded.append(("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        for kind, inner in embedded:
            problem = _plain_problem(inner)
            if problem:
                return f"{kind} {problem}"
    return _plain_problem(ip)


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as the system resolver returns them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class PinnedTransport(httpx.BaseTransport):
    """Check every request (redirects included) and send it to the address that was checked.

    ``network`` makes the actual connections; it only ever receives requests whose
    URL host is an address that passed ``address_problem``.
    """

    def __init__(self, allowed_hosts: frozenset[str], resolver: Resolver, network: httpx.BaseTransport):
        self.allowed_hosts = allowed_hosts
        self.resolver = resolver
        self.network = network

    def target(self, url: httpx.URL) -> tuple[str, int]:
        """The (host, port) a request may go to; UrlNotAllowed when its URL is not allowed."""
        return _checked_target(url, self.allowed_hosts)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            host, port = self.target(request.url)
        except UrlNotAllowed as exc:
            raise FetchRefused(str(exc), exc.url) from None
        address = self._checked_address(request, host, port)
        extensions = dict(request.extensions)
        extensions.pop("sni_hostname", None)
        if _ip_literal(host) is None:
            extensions["sni_hostname"] = host  # TLS: SNI and certificate checks for the name, not the address
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # keeps Host: the name the user asked for
            stream=request.stream,
            extensions=extensions,
        )
        return self.network.handle_request(pinned)

    def _checked_address(self, request: httpx.Request, host: str, port: int) -> str:
        literal = _ip_literal(host)
        try:
            addresses = [str(literal)] if literal is not None else list(self.resolver(host, port))
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from None
        if not addresses:
            raise httpx.ConnectError(f"{host} resolves to no address", request=request)
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise FetchRefused(
                    f"{_shown(str(request.url))}: {host} resolves to {address} ({problem}); "
                    "only public addresses can be fetched",
                    str(request.url),
                )
        return addresses[0]

    def close(self) -> None:
        self.network.close()


def direct_network(verify: ssl.SSLContext | bool = True) -> httpx.BaseTransport:
    """The transport that connects to checked addresses, keeping the Deadline of the fetch under way.

    ``verify`` is for tests (a context trusting their own CA); production keeps the default.
    """
    # No keep-alive: a pooled connection is keyed by address, and reusing one made
    # with another host's SNI would skip that host's certificate check.
    return with_deadline(httpx.HTTPTransport(verify=verify, limits=httpx.Limits(max_keepalive_connections=0)))


class PublicTransport(PinnedTransport):
    """PinnedTransport for any host on any port: http(s), no user name or password, public addresses only."""

    def __init__(self, resolver: Resolver = resolve_host, network: httpx.BaseTransport | None = None):
        super().__init__(frozenset(), resolver, network or direct_network())

    def target(self, url: httpx.URL) -> tuple[str, int]:
        return url_target(url)


class OwnHostTransport(httpx.BaseTransport):
    """For a feed the operator configured: its own host and port as they are (they may be private on
    purpose), and any other a redirect leads to only at public addresses, as for url= feeds."""

    def __init__(self, url: str, network: httpx.BaseTransport | None = None,
                 elsewhere: httpx.BaseTransport | None = None):
        own = httpx.URL(url)
        self.own = (own.scheme, own.host.lower(), own.port)
        self.network = network or with_deadline(httpx.HTTPTransport())
        self.elsewhere = elsewhere or PublicTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme, url.host.lower(), url.port) == self.own:
            return self.network.handle_request(request)
        return self.elsewhere.handle_request(request)

    def close(self) -> None:
        self.network.close()
        self.elsewhere.close()


class SafeFetcher(HttpFetcher):
    """An HttpFetcher for user-supplied URLs: allow-list, public addresses only, pinned connections.

    ``resolver`` maps (host, port) to addresses; tests inject one. ``network`` is
    for tests only: the transport that connects to the already-checked address
    (tests route a public-looking address to a loopback server). Leave it None
    in production.
    """

    def __init__(
        self,
        allowed_hosts: frozenset[str],
        *,
        resolver: Resolver = resolve_host,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_bytes: int = 16 * 1024 * 1024,
        accept: str = FEED_ACCEPT,
        network: httpx.BaseTransport | None = None,
    ):
        self.allowed_hosts = frozenset(allowed_hosts)
        transport = PinnedTransport(self.allowed_hosts, resolver, network or direct_network())
        super().__init__(
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_bytes=max_bytes,
            accept=accept, transport=transport, follow_redirects=True,
        )

    def get(self, url: str, params: dict | None = None, *, validators: Validators = NO_VALIDATORS) -> Fetched:
        """GET a user-supplied URL; raise FetchRefused (a UrlNotAllowed) or another UpstreamError subclass."""
        try:
            check_url(url, self.allowed_hosts)
        except UrlNotAllowed as exc:
            raise FetchRefused(str(exc), url) from None
        requested = str(httpx.URL(url).copy_merge_params(params or {}))  # as httpx sends it
        try:
            return super().get(url, params, validators=validators)
        except FetchRefused as exc:
            if exc.url != requested:
                raise FetchRefused(f"{_shown(url)} redirects to a URL that is not allowed: {exc}", url) from None
            raise
