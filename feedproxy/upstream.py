"""Fetching the Daily Papers listing: HTTP paging with timeouts and a size cap, or a local file.

A source yields the listing one page at a time, newest first, as ``Page``
objects of validated Papers; it knows nothing of windows or snapshots, so the
caller decides when it has read far enough.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import unquote, urlsplit

import httpx

from . import __version__
from .errors import (
    UpstreamBadData,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from .papers import InvalidItem, Paper, paper_from_item

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # the API's maximum
USER_AGENT = f"feedproxy/{__version__} (self-hosted Daily Papers feed filter)"


@dataclass(frozen=True)
class Page:
    """One page of the listing: the papers that validated and how many items did not."""

    number: int
    papers: tuple[Paper, ...]
    item_count: int
    skipped: int

    @property
    def is_last(self) -> bool:
        """True when the upstream has nothing after this page."""
        return self.item_count < PAGE_SIZE


class ListingSource(Protocol):
    """Anything that yields the listing newest first, page by page."""

    description: str

    def pages(self) -> Iterator[Page]: ...


def parse_listing(body: bytes, page_number: int = 0, origin: str = "upstream") -> Page:
    """Decode a JSON listing into a Page, skipping items that fail validation."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UpstreamBadData(f"{origin}: page {page_number} is not valid JSON ({exc})") from None
    if not isinstance(items, list):
        raise UpstreamBadData(f"{origin}: page {page_number} is a JSON {type(items).__name__}, expected a list of papers")
    papers = []
    for item in items:
        try:
            papers.append(paper_from_item(item))
        except InvalidItem as exc:
            log.warning("%s: skipped an item on page %d: %s", origin, page_number, exc)
    if items and not papers:
        raise UpstreamBadData(
            f"{origin}: none of the {len(items)} items on page {page_number} has the expected shape "
            "(the API schema may have changed)"
        )
    return Page(number=page_number, papers=tuple(papers), item_count=len(items), skipped=len(items) - len(papers))


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


class HttpListing:
    """The Daily Papers JSON API, paged newest first with ``p`` and ``limit``."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_bytes: int = 16 * 1024 * 1024,
        max_pages: int = 100,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = url
        self.description = url
        self.max_bytes = max_bytes
        self.max_pages = max_pages
        # The whole page must arrive within this, so a server dripping one byte
        # per read timeout cannot hold a refresh forever.
        self.deadline = connect_timeout + 2 * read_timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=True,
            max_redirects=5,
            transport=transport,
        )

    def pages(self) -> Iterator[Page]:
        for number in range(self.max_pages):
            page = self.fetch_page(number)
            yield page
            if page.is_last:
                return

    def fetch_page(self, number: int) -> Page:
        """GET one page and return it parsed, or raise an UpstreamError subclass."""
        body = self._get({"p": number, "limit": PAGE_SIZE})
        return parse_listing(body, number, origin=f"upstream {self.url}")

    def _get(self, params: dict) -> bytes:
        origin = f"upstream {self.url}"
        started = time.monotonic()
        try:
            with self._client.stream("GET", self.url, params=params) as response:
                if response.status_code != 200:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise UpstreamHTTPError(
                        f"{origin} answered HTTP {response.status_code}", response.status_code, retry_after
                    )
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
                return b"".join(chunks)
        except UpstreamError:
            raise
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"{origin} timed out ({type(exc).__name__})") from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise UpstreamUnreachable(f"{origin} is unreachable: {exc}") from None
        except (httpx.HTTPError, httpx.StreamError) as exc:
            # Broken connections, bad encodings, too many redirects, protocol errors.
            raise UpstreamBadData(f"{origin}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._client.close()


class FileListing:
    """A listing saved as a JSON file (optionally gzipped): the offline demo and tests."""

    def __init__(self, location: str):
        parts = urlsplit(location)
        self.path = Path(unquote(parts.path)) if parts.scheme == "file" else Path(location)
        self.description = str(self.path)

    def pages(self) -> Iterator[Page]:
        origin = f"file {self.path}"
        try:
            raw = self.path.read_bytes()
            body = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        except (OSError, EOFError) as exc:
            raise UpstreamUnreachable(f"{origin} cannot be read: {exc}") from None
        yield parse_listing(body, 0, origin=origin)

    def close(self) -> None:
        pass


def source_for(config) -> ListingSource:
    """Return the listing source named by the configuration's upstream URL."""
    if urlsplit(config.upstream_url).scheme in ("http", "https"):
        return HttpListing(
            config.upstream_url,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_bytes=config.max_response_bytes,
            max_pages=config.max_pages,
        )
    return FileListing(config.upstream_url)
