"""The HTTP client every upstream fetch goes through: timeouts, a size cap, conditional GET.

httpx gives connect and read timeouts; on top of them a whole-response
deadline (so a server dripping a byte per read timeout cannot hold a refresh),
a byte cap, and ETag/Last-Modified validators remembered per URL so an
unchanged upstream answers 304 with no body. Every low-level failure becomes
one UpstreamError subclass whose message starts with the URL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

import httpx

from . import __version__
from .errors import UpstreamBadData, UpstreamError, UpstreamHTTPError, UpstreamTimeout, UpstreamUnreachable

USER_AGENT = f"feedproxy/{__version__} (self-hosted Daily Papers feed filter)"


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
    ):
        self.max_bytes = max_bytes
        self.deadline = connect_timeout + 2 * read_timeout
        self._validators: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers={"User-Agent": USER_AGENT, "Accept": accept},
            follow_redirects=follow_redirects,
            max_redirects=5,
            transport=transport,
        )

    def get(self, url: str, params: dict | None = None, *, conditional: bool = True) -> Fetched:
        """GET ``url``; with ``conditional``, send the validators of the last 200 for the same URL."""
        full = url + ("?" + urlencode(params) if params else "")
        headers = {}
        if conditional:
            with self._lock:
                headers = dict(self._validators.get(full, {}))
        try:
            return self._get(url, params, full, headers, conditional)
        except UpstreamError:
            raise
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {url} timed out ({type(exc).__name__})") from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise UpstreamUnreachable(f"upstream {url} is unreachable: {exc}") from None
        except (httpx.HTTPError, httpx.StreamError) as exc:
            # Broken connections, bad encodings, too many redirects, protocol errors.
            raise UpstreamBadData(f"upstream {url}: {type(exc).__name__}: {exc}") from None

    def _get(self, url: str, params: dict | None, full: str, headers: dict, conditional: bool) -> Fetched:
        origin = f"upstream {url}"
        started = time.monotonic()
        with self._client.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code == 304 and headers:
                return Fetched(full, None, response.headers)
            if response.status_code != 200:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise UpstreamHTTPError(f"{origin} answered HTTP {response.status_code}", response.status_code, retry_after)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise UpstreamBadData(f"{origin}: response of {declared} bytes exceeds the {self.max_bytes}-byte cap")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise UpstreamBadData(f"{origin}: response exceeds the {self.max_bytes}-byte cap")
                if time.monotonic() - started > self.deadline:
                    raise UpstreamTimeout(f"{origin}: response took longer than {self.deadline:g} s")
                chunks.append(chunk)
            body = b"".join(chunks)
        if conditional:
            self._remember(full, response.headers)
        return Fetched(full, body, response.headers)

    def _remember(self, full: str, headers: httpx.Headers) -> None:
        validators = {}
        if headers.get("ETag"):
            validators["If-None-Match"] = headers["ETag"]
        if headers.get("Last-Modified"):
            validators["If-Modified-Since"] = headers["Last-Modified"]
        with self._lock:
            if validators:
                self._validators[full] = validators
            else:
                self._validators.pop(full, None)

    def export_validators(self) -> dict[str, dict[str, str]]:
        """The remembered validators, to save beside the data they describe."""
        with self._lock:
            return {url: dict(v) for url, v in self._validators.items()}

    def restore_validators(self, saved: object) -> None:
        """Adopt validators saved by another process for the same data (junk is ignored)."""
        if not isinstance(saved, dict):
            return
        allowed = {"If-None-Match", "If-Modified-Since"}
        with self._lock:
            for url, validators in saved.items():
                if isinstance(url, str) and isinstance(validators, dict):
                    clean = {k: v for k, v in validators.items() if k in allowed and isinstance(v, str)}
                    if clean:
                        self._validators[url] = clean

    def forget(self, url: str, params: dict | None = None) -> None:
        """Drop the validators of one URL, so its next GET is unconditional."""
        with self._lock:
            self._validators.pop(url + ("?" + urlencode(params) if params else ""), None)

    def close(self) -> None:
        self._client.close()
