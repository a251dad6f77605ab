"""The HTTP client every upstream fetch goes through: timeouts, a size cap, conditional GET.

httpx gives connect and read timeouts; on top of them one wall-clock deadline
over the whole exchange (upstream.deadline: connect, TLS, headers, body and
redirects, so a server dripping a byte per read timeout cannot hold a refresh),
a byte cap, and conditional requests: the caller passes the Validators
(ETag, Last-Modified) of the data it holds, and an unchanged upstream answers
304 with no body. The fetcher remembers nothing: validators travel with the
data (Page, Snapshot, the saved file). Every low-level failure becomes one
UpstreamError subclass whose message starts with the URL.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Mapping
from urllib.parse import urlencode

import httpx

from feedproxy import __version__
from feedproxy.errors import UpstreamBadData, UpstreamError, UpstreamHTTPError, UpstreamTimeout, UpstreamUnreachable
from feedproxy.upstream.deadline import Deadline, DeadlineClient, exchange_seconds

USER_AGENT = f"feedproxy/{__version__} (self-hosted Daily Papers feed filter)"
# What RSS/Atom fetches accept (configured feeds and url= feeds alike).
FEED_ACCEPT = "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"


@dataclass(frozen=True)
class Validators:
    """An answer's ETag and Last-Modified, sent back as If-None-Match and If-Modified-Since."""

    etag: str | None = None
    last_modified: str | None = None

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def request_headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> "Validators":
        return cls(headers.get("ETag") or None, headers.get("Last-Modified") or None)

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("etag", self.etag), ("last_modified", self.last_modified)) if v}

    @classmethod
    def from_json(cls, data: object) -> "Validators":
        """Read what to_json wrote; anything else (an older file's shape, junk) gives none."""
        if not isinstance(data, dict):
            return cls()
        etag, last_modified = data.get("etag"), data.get("last_modified")
        return cls(etag if isinstance(etag, str) else None, last_modified if isinstance(last_modified, str) else None)


NO_VALIDATORS = Validators()


def _inflater(content_encoding: str, origin: str):
    """A gzip decompressor for ``Content-Encoding: gzip``, None for identity; anything else is refused.

    We ask for gzip alone, so gzip applied twice (``gzip, gzip``: kilobytes that inflate to
    gigabytes) or another coding is an answer we cannot trust.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if codings in (["gzip"], ["x-gzip"]):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    raise UpstreamBadData(f"{origin}: unsupported Content-Encoding {content_encoding[:80]!r} (only one gzip is accepted)")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Read a Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


@dataclass(frozen=True)
class Fetched:
    """One answer: the body, or None when the upstream said 304 Not Modified."""

    url: str
    body: bytes | None
    headers: httpx.Headers

    @property
    def not_modified(self) -> bool:
        return self.body is None

    @property
    def validators(self) -> Validators:
        return Validators.from_headers(self.headers)


class HttpFetcher:
    """GET URLs with timeouts, a size cap and conditional requests; raise UpstreamError on failure."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_bytes: int = 16 * 1024 * 1024,
        accept: str = "*/*",
        transport: httpx.BaseTransport | None = None,
        follow_redirects: bool = True,
        headers: Mapping[str, str] | None = None,
    ):
        """``headers`` go with every request (Authorization: httpx drops it on a redirect to another origin).

        ``transport`` should keep the Deadline (see upstream.deadline); without one, the client's own does.
        """
        self.max_bytes = max_bytes
        self.deadline = exchange_seconds(connect_timeout, read_timeout)
        self._client = DeadlineClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers={"User-Agent": USER_AGENT, "Accept": accept, "Accept-Encoding": "gzip", **(headers or {})},
            follow_redirects=follow_redirects,
            max_redirects=5,
            transport=transport,
        )

    def get(self, url: str, params: dict | None = None, *, validators: Validators = NO_VALIDATORS) -> Fetched:
        """GET ``url``, conditionally when ``validators`` are given (then a 304 gives a Fetched without body)."""
        deadline = Deadline(self.deadline)
        try:
            with deadline:
                return self._get(url, params, validators.request_headers(), deadline)
        except UpstreamError:
            raise
        except httpx.TimeoutException as exc:
            if deadline.passed:
                raise self._too_long(url) from None
            raise UpstreamTimeout(f"upstream {url} timed out ({type(exc).__name__})") from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise UpstreamUnreachable(f"upstream {url} is unreachable: {exc}") from None
        except (httpx.HTTPError, httpx.StreamError) as exc:
            # Broken connections, bad encodings, too many redirects, protocol errors.
            raise UpstreamBadData(f"upstream {url}: {type(exc).__name__}: {exc}") from None

    def _too_long(self, url: str) -> UpstreamTimeout:
        return UpstreamTimeout(f"upstream {url}: response took longer than {self.deadline:g} s")

    def _get(self, url: str, params: dict | None, headers: dict, deadline: Deadline) -> Fetched:
        origin = f"upstream {url}"
        full = url + ("?" + urlencode(params) if params else "")
        with self._client.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code == 304 and headers:
                return Fetched(full, None, response.headers)
            if response.status_code != 200:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise UpstreamHTTPError(f"{origin} answered HTTP {response.status_code}", response.status_code, retry_after)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise UpstreamBadData(f"{origin}: response of {declared} bytes exceeds the {self.max_bytes}-byte cap")
            inflater = _inflater(response.headers.get("Content-Encoding", ""), origin)
            chunks, size = [], 0
            for raw in response.iter_raw():
                if deadline.passed:  # the transport's reads end by it; a test's fake transport may not
                    raise self._too_long(url)
                # Inflated a bounded piece at a time: a few kB of gzip can stand for gigabytes.
                pending = raw
                while pending:
                    if inflater is None:
                        piece, pending = pending, b""
                    else:
                        piece = inflater.decompress(pending, self.max_bytes - size + 1)
                        pending = inflater.unconsumed_tail
                    size += len(piece)
                    if size > self.max_bytes:
                        raise UpstreamBadData(f"{origin}: response exceeds the {self.max_bytes}-byte cap")
                    chunks.append(piece)
            if inflater is not None and not inflater.eof:
                raise UpstreamBadData(f"{origin}: the gzip response is cut short")
            body = b"".join(chunks)
        return Fetched(full, body, response.headers)

    def close(self) -> None:
        self._client.close()
