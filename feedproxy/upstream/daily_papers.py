"""Fetching the Daily Papers listing: HTTP paging with timeouts and a size cap, or a local file.

A source yields the listing one page at a time, newest first, as ``Page``
objects of validated Papers; it knows nothing of windows or snapshots, so the
caller decides when it has read far enough.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import unquote, urlsplit

import httpx

from feedproxy.errors import InvalidItem, UpstreamBadData, UpstreamUnreachable
from feedproxy.upstream.http import NO_VALIDATORS, HttpFetcher, Validators
from feedproxy.upstream.papers import Paper, paper_from_item

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # the API's maximum


@dataclass(frozen=True)
class Page:
    """One page of the listing: the papers that validated and how many items did not."""

    number: int
    papers: tuple[Paper, ...]
    item_count: int
    skipped: int
    validators: Validators = NO_VALIDATORS  # of the answer this page came in (the first page's matter)

    @property
    def is_last(self) -> bool:
        """True when the upstream has nothing after this page."""
        return self.item_count < PAGE_SIZE


class ListingSource(Protocol):
    """Anything that yields the listing newest first, page by page.

    ``validators`` are those of the first page of the data the caller holds: a source that can ask
    conditionally yields nothing at all when the upstream says it has not changed.
    """

    description: str

    def pages(self, validators: Validators = NO_VALIDATORS) -> Iterator[Page]: ...


def parse_listing(body: bytes, page_number: int = 0, origin: str = "upstream") -> Page:
    """Decode a JSON listing into a Page, skipping items that fail validation."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise UpstreamBadData(f"{origin}: page {page_number} is not valid JSON ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    if not isinstance(items, list):
        raise UpstreamBadData(f"{origin}: page {page_number} is a JSON {type(items).__name__}, expected a list of papers")
    papers = []
    for item in items:
        try:
            papers.append(paper_from_item(item))
        except InvalidItem as exc:
            log.warning("%s: skipped an item on page %d: %s", origin, page_number, exc)
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
            # Shapes no check foresaw (upvotes 1e400, a year-1 date with an offset): the item, not the page.
            log.warning("%s: skipped an item on page %d: %s: %s", origin, page_number, type(exc).__name__,
                        str(exc)[:200])
    if items and not papers:
        raise UpstreamBadData(
            f"{origin}: none of the {len(items)} items on page {page_number} has the expected shape "
            "(the API schema may have changed)"
        )
    return Page(number=page_number, papers=tuple(papers), item_count=len(items), skipped=len(items) - len(papers))


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
        token: str | None = None,
    ):
        """``token``: a Hugging Face access token, sent as ``Authorization: Bearer`` with every page."""
        self.url = url
        self.description = url
        self.max_pages = max_pages
        self.fetcher = HttpFetcher(
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_bytes=max_bytes,
            accept="application/json", transport=transport,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )

    def pages(self, validators: Validators = NO_VALIDATORS) -> Iterator[Page]:
        """Yield pages newest first; nothing at all when the first page is unchanged (304)."""
        for number in range(self.max_pages):
            page = self.fetch_page(number, validators if number == 0 else NO_VALIDATORS)
            if page is None:
                return
            yield page
            if page.is_last:
                return

    def fetch_page(self, number: int, validators: Validators = NO_VALIDATORS) -> Page | None:
        """GET one page and return it parsed (None for 304), or raise an UpstreamError subclass."""
        fetched = self.fetcher.get(self.url, {"p": number, "limit": PAGE_SIZE}, validators=validators)
        if fetched.not_modified:
            return None
        page = parse_listing(fetched.body, number, origin=f"upstream {self.url}")
        return replace(page, validators=fetched.validators)

    def close(self) -> None:
        self.fetcher.close()


class FileListing:
    """A listing saved as a JSON file (optionally gzipped): the offline demo and tests."""

    def __init__(self, location: str):
        parts = urlsplit(location)
        self.path = Path(unquote(parts.path)) if parts.scheme == "file" else Path(location)
        self.description = str(self.path)

    def pages(self, validators: Validators = NO_VALIDATORS) -> Iterator[Page]:
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
            token=config.hf_token,
        )
    return FileListing(config.upstream_url)
