"""The rendered-feed cache: finished feeds (their gzip bytes) and validators, per request shape.

A repeated request does no filtering and no rendering: it is answered from
here. Entries belong to a scope (the sources a feed is made of) and carry the
scope's snapshot version, so a new snapshot drops that scope's feeds; the cache is bounded by bytes, not by count, so 100,000 distinct queries
cannot exhaust a worker's memory. cachetools caches are not thread-safe, so
every access holds the lock.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from datetime import datetime
from typing import Callable, Hashable

from cachetools import LRUCache
from isal import igzip
from werkzeug.http import http_date

# With EntryCache's 16 MB, what a worker's caches hold (issue 13's target: under 200 MB RSS after
# 20,000 new queries). A cached feed keeps only its gzip copy (about a fifth of the body), so 4 MB
# holds about 70 feeds of 50 entries: more than the 28 that 8 MB of bodies and gzip copies held.
# Measured before: 24 + 16 MB of caches left a worker at 220 MB after 6,000 new queries on 16
# connections, 12 + 8 MB at 190 MB; the entries save more time (3 ms a new query at 16 MB rather
# than 8) than a larger feed cache, which only repeated URLs use.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
GZIP_LEVEL = 2  # of ISA-L's 0-3; see RenderedFeed.gzipped


class RenderedFeed:
    """One rendered feed with what HTTP caching needs; the gzip copy is made once, on first need.

    Once cached (``compact``) it keeps only the gzip copy: feed readers nearly all accept gzip, and
    the rare one that does not gets the body decompressed (under a millisecond for 270 kB).
    """

    def __init__(self, body: bytes, media_type: str, last_modified: datetime):
        self._body: bytes | None = body
        self._gzipped: bytes | None = None
        self._lock = threading.Lock()
        self.length = len(body)
        self.media_type = media_type
        self.last_modified = last_modified
        # Strong validator from the bytes alone: equal in every worker and instance.
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self.last_modified_http = http_date(last_modified)

    @property
    def body(self) -> bytes:
        body = self._body
        return body if body is not None else gzip.decompress(self._gzipped)

    @property
    def gzip_etag(self) -> str:
        """The gzip representation's own strong validator (different bytes, different ETag)."""
        return self.etag[:-1] + '-gz"'

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            with self._lock:
                if self._gzipped is None:
                    # mtime=0: the same body always gives the same compressed bytes. ISA-L (isal), not
                    # zlib: a 194 kB feed in 0.41 ms and 40.4 kB at its level 2, where zlib's fastest
                    # level took 1.87 ms for 42.6 kB (and level 6 three times that): a fifth of what a new
                    # query cost was compressing its feed.
                    self._gzipped = igzip.compress(self._body, compresslevel=GZIP_LEVEL, mtime=0)
        return self._gzipped

    def compact(self) -> None:
        """Keep only the gzip copy (made now if need be): what the cache holds."""
        self.gzipped()
        self._body = None

    def size(self) -> int:
        """Bytes this feed holds: the gzip copy once compact, else the body and an allowance for its gzip copy."""
        if self._body is None:
            return len(self._gzipped) + 256
        return self.length + self.length // 4 + 256


class FeedCache:
    """A thread-safe LRU of RenderedFeed, bounded by bytes; a scope's entries go when its version changes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self._cache: LRUCache = LRUCache(maxsize=max_bytes, getsizeof=lambda feed: feed.size())
        self._lock = threading.Lock()
        self._versions: dict[str, str] = {}  # scope -> the snapshot version its entries were made from

    def get_or_render(
        self, scope: str, version: str, key: Hashable, render: Callable[[], RenderedFeed]
    ) -> tuple[RenderedFeed, bool]:
        """Return the feed for (scope, key) at ``version`` and whether it was cached.

        On a miss the feed is rendered outside the lock, so one slow render never
        holds up cache hits for other feeds.
        """
        key = (scope, key)
        with self._lock:
            if self._versions.get(scope) != version:
                # The scope's old feeds can never be served again: free them now.
                for old in [k for k in self._cache if k[0] == scope]:
                    del self._cache[old]
                self._versions[scope] = version
            feed = self._cache.get(key)
            if feed is not None:
                return feed, True
        feed = render()
        feed.compact()
        with self._lock:
            if self._versions.get(scope) == version and feed.size() <= self._cache.maxsize:
                self._cache[key] = feed
        return feed, False

    def clear(self) -> None:
        """Drop every rendered feed (as the byte bound does, one by one, under pressure)."""
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    @property
    def max_bytes(self) -> int:
        return self._cache.maxsize

    @property
    def current_bytes(self) -> int:
        with self._lock:
            return self._cache.currsize
