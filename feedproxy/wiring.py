"""Building the sources from the settings: one SnapshotStore per source, wired to its fetcher.

Used by the app (app.py) and by the refresher child (refresher.py), so it
imports neither Flask nor the metrics: whoever wants upstream requests counted
passes ``on_upstream_request``, told the outcome of each (errors.upstream_outcome),
those a refresher child makes included.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

from feedproxy.config import DEFAULT_SOURCE, Config
from feedproxy.errors import UnknownSource
from feedproxy.search.index import PaperIndex
from feedproxy.store.child import run_in_child
from feedproxy.store.files import SnapshotFile
from feedproxy.store.snapshot import Clock, SnapshotStore, utcnow
from feedproxy.store.sources import Source, SourceRegistry
from feedproxy.upstream.daily_papers import ListingSource, source_for
from feedproxy.upstream.feeds import FeedListing
from feedproxy.upstream.http import FEED_ACCEPT, HttpFetcher
from feedproxy.upstream.safe import OwnHostTransport, SafeFetcher

# Each url= feed a reader names is held in memory (up to 32 of them): a few hundred entries is what
# real feeds carry, so a thousand is plenty and bounds what strangers can make a worker hold.
URL_MAX_PAPERS = 1000


def build_sources(
    config: Config,
    default_listing: ListingSource | None = None,
    clock: Clock | None = None,
    only: str | None = None,
    *,
    on_upstream_request: Callable[[str], None] | None = None,
    load_saved: bool = True,
    url_fetcher: Callable[[], HttpFetcher] | None = None,
) -> SourceRegistry:
    """Build the source registry: Daily Papers first, then FEEDPROXY_FEEDS, then ad-hoc URLs if allowed.

    ``only`` builds just that source, and ``load_saved=False`` leaves its saved snapshot unread until a
    refresh needs it: what the refresher child wants (UnknownSource when there is no such source). ``url_fetcher`` makes the fetcher of each url=
    source (a SafeFetcher for the allowed hosts unless given; tests give one on a loopback network).
    """
    clock = clock or utcnow

    def store_for(listing: ListingSource, name: str | None, max_papers: int = config.max_papers) -> SnapshotStore:
        # Each configured source keeps its own file; ad-hoc URL sources live in memory only.
        folder = os.path.join(config.data_dir, name) if config.data_dir and name else None
        refresher = None
        if folder and config.refresh_in_subprocess:
            refresher = functools.partial(run_in_child, config, name, on_upstream_request=on_upstream_request)
        return SnapshotStore(
            listing,
            build_index=PaperIndex,
            index_outdated=PaperIndex.can_gain_concepts,
            window_days=config.window_days,
            max_papers=max_papers,
            refresh_seconds=config.refresh_seconds,
            clock=clock,
            background=config.background_refresh,
            storage=SnapshotFile(folder) if folder else None,
            on_upstream_request=on_upstream_request,
            refresher=refresher,
            load_saved=load_saved,
        )

    settings = dict(connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
                    max_bytes=config.max_response_bytes)

    def feed_source(name: str, url: str) -> Source:
        # Its own host as configured (it may be private on purpose); redirects elsewhere public only.
        listing = FeedListing(url, fetcher=HttpFetcher(accept=FEED_ACCEPT, transport=OwnHostTransport(url), **settings))
        return Source(name, url, name, store_for(listing, name))

    def url_source(url: str) -> Source:
        fetcher = url_fetcher() if url_fetcher else SafeFetcher(allowed_hosts=config.allow_url_hosts, **settings)
        listing = FeedListing(url, fetcher=fetcher)
        return Source("url", url, url, store_for(listing, None, min(URL_MAX_PAPERS, config.max_papers)), adhoc=True)

    sources = []
    if only in (None, DEFAULT_SOURCE):
        listing = default_listing if default_listing is not None else source_for(config)
        sources.append(Source(DEFAULT_SOURCE, config.upstream_url, "Daily Papers", store_for(listing, DEFAULT_SOURCE)))
    sources += [feed_source(name, url) for name, url in config.feeds if only in (None, name)]
    if not sources:
        known = ", ".join([DEFAULT_SOURCE, *(name for name, _ in config.feeds)])
        raise UnknownSource(f"unknown source {only!r}; known sources: {known}")
    return SourceRegistry(sources, url_source if config.allow_url_hosts else None)
