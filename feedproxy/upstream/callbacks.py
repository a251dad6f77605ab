"""Requests to WebSub subscribers' callback URLs: any public host, with upstream.safe's address guard.

A callback URL comes from whoever subscribes, so it gets the same protection as
``url=`` (every address the host resolves to must be public, and the connection
is pinned to the address checked) but not the operator's allow-list: a
subscriber may be on any public host and port. Redirects are not followed (a
3xx is an answer like any other), and only the first bytes of an answer are
read: the hub needs its status, and for a verification the echoed challenge.
Each request ends within connect + 2 x read timeout, however slowly the
subscriber answers (upstream.deadline).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from feedproxy.errors import CallbackFailed, FetchRefused, SubscriptionRefused, UrlNotAllowed
from feedproxy.upstream.deadline import Deadline, exchange_seconds
from feedproxy.upstream.http import USER_AGENT
from feedproxy.upstream.safe import MAX_URL_LENGTH, PublicTransport, Resolver, direct_network, resolve_host

MAX_ANSWER_BYTES = 64 * 1024


CallbackTransport = PublicTransport  # any public host and port, pinned to the address checked


@dataclass(frozen=True)
class Answer:
    """A callback's answer: its status and the first MAX_ANSWER_BYTES of its body."""

    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class CallbackClient:
    """GET (intent verification) and POST (content distribution) to callback URLs, checked and pinned.

    ``resolver`` and ``network`` are for tests, as in SafeFetcher: a fake resolver and a loopback
    network standing a subscriber at a public-looking address.
    """

    def __init__(self, *, resolver: Resolver = resolve_host, network: httpx.BaseTransport | None = None,
                 connect_timeout: float = 5.0, read_timeout: float = 10.0):
        self.deadline = exchange_seconds(connect_timeout, read_timeout)
        self.transport = CallbackTransport(resolver, network or direct_network())
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            transport=self.transport,
        )

    def check(self, url: str) -> None:
        """Refuse a callback before a subscription is accepted: 400 for a URL that is not one, 403 for a
        host that resolves to an address that is not public (a private network, loopback...)."""
        if len(url) > MAX_URL_LENGTH:
            raise SubscriptionRefused(f"hub.callback is longer than {MAX_URL_LENGTH} characters", "hub.callback")
        try:
            parsed = httpx.URL(url)
            host, port = self.transport.target(parsed)
        except (httpx.InvalidURL, UrlNotAllowed) as exc:
            raise SubscriptionRefused(f"hub.callback is not usable: {exc}", "hub.callback") from None
        request = httpx.Request("GET", parsed)
        try:
            self.transport._checked_address(request, host, port)
        except FetchRefused as exc:
            raise SubscriptionRefused(f"hub.callback is refused: {exc}", "hub.callback", 403) from None
        except httpx.ConnectError as exc:
            raise SubscriptionRefused(f"hub.callback is not usable: {exc}", "hub.callback") from None

    def get(self, url: str, params: dict[str, str]) -> Answer:
        """GET ``url`` with ``params`` added to the query it has (the callback's own parameters are kept)."""
        return self._send("GET", str(httpx.URL(url).copy_merge_params(params)))

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        return self._send("POST", url, content=body, headers=headers)

    def _send(self, method: str, url: str, **options) -> Answer:
        deadline = Deadline(self.deadline)
        try:
            with deadline, self._client.stream(method, url, **options) as response:
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= MAX_ANSWER_BYTES:
                        break
                return Answer(response.status_code, body[:MAX_ANSWER_BYTES])
        except FetchRefused as exc:
            raise CallbackFailed(f"callback {url}: {exc}", "private_address") from None
        except httpx.TimeoutException as exc:
            if deadline.passed:
                raise CallbackFailed(f"callback {url}: the answer took longer than {self.deadline:g} s", "timeout") from None
            raise CallbackFailed(f"callback {url} timed out ({type(exc).__name__})", "timeout") from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CallbackFailed(f"callback {url} is unreachable: {exc}", "unreachable") from None
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise CallbackFailed(f"callback {url}: {type(exc).__name__}: {exc}", "bad_response") from None

    def close(self) -> None:
        self._client.close()
