"""Named sources of papers, each with its own snapshot store.

``hf-daily`` (the Daily Papers listing) is always there; the operator adds RSS
or Atom feeds with FEEDPROXY_FEEDS, and users may name feeds by url= where the
operator allows it. Searching several sources at once is search.merged's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from cachetools import LRUCache

from feedproxy.errors import NoData
from feedproxy.store.snapshot import Snapshot, SnapshotStore


@dataclass(frozen=True)
class Source:
    """One place papers come from."""

    name: str
    url: str
    title: str
    store: SnapshotStore
    adhoc: bool = False  # a url= feed a user named, not one the operator configured

    @property
    def key(self) -> str:
        """What tells this source's data apart in caches: its name, or its URL for url= feeds (all "url")."""
        return f"url {self.url}" if self.adhoc else self.name

    def carries_announce_types(self) -> bool | None:
        """Whether this source's papers carry arXiv announce types; None while it holds none to tell by.

        Read off the papers held, not the URL: arXiv's announcement listings give a type per entry
        (feeds.py reads it), so a mirror of one counts; Daily Papers and other feeds never do.
        """
        snapshot = self.store.peek()
        return snapshot.has_announce_types if snapshot is not None and snapshot.papers else None


class SourceRegistry:
    """The configured sources by name, the default first, plus a bounded set of ad-hoc URL sources."""

    def __init__(self, sources: Sequence[Source], url_source_factory: Callable[[str], Source] | None = None):
        self._sources = {s.name: s for s in sources}
        self.default = sources[0]
        self._url_factory = url_source_factory
        self._by_url: LRUCache = LRUCache(maxsize=32)  # each holds a store: keep them few
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    def __iter__(self):
        return iter(self._sources.values())

    def get(self, names: Sequence[str]) -> list[Source]:
        """The named sources (already validated), or the default one for an empty list."""
        return [self._sources[n] for n in names] if names else [self.default]

    @property
    def allows_urls(self) -> bool:
        return self._url_factory is not None

    def for_url(self, url: str) -> Source:
        """The ad-hoc source for a user-supplied URL (the caller has checked it is allowed)."""
        with self._lock:
            source = self._by_url.get(url)
            if source is None:
                source = self._url_factory(url)
                self._by_url[url] = source
            return source


def current_snapshots(sources: Iterable[Source]) -> list[tuple[Source, Snapshot]]:
    """The current snapshot of each source that has one; NoData only when none has.

    A merged feed is served from the sources that have data rather than refused
    because one of them is still starting or down.
    """
    found, first_error = [], None
    for source in sources:
        try:
            found.append((source, source.store.current()))
        except NoData as exc:
            first_error = first_error or NoData(f"{source.name}: {exc.reason}", exc.retry_after)
    if not found:
        raise first_error
    return found
