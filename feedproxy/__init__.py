"""feedproxy: per-query filtered feeds of Hugging Face Daily Papers.

``create_app`` is the application factory. Configuration comes from the
environment unless a Config is given; tests inject the listing source and the
clock so they need neither the network nor sleeping.
"""

from __future__ import annotations

__version__ = "0.1.0"

import functools
import logging
import os
import sys
import threading

from flask import Flask
from werkzeug.exceptions import HTTPException


def create_app(config=None, *, source=None, clock=None) -> Flask:
    """Build the Flask app: the sources and their stores, the views, metrics and error handlers."""
    from . import metrics
    from .config import Config
    from .fastpath import FeedFastPath
    from .feedcache import FeedCache
    from .snapshot import utcnow
    from .page import bp as page_bp
    from .web import _ParsedRequests, bp, handle_http_error, handle_unexpected

    config = Config.from_env() if config is None else config
    app = Flask(__name__)
    app.config["FEEDPROXY"] = config
    # Repeated feed URLs are answered below Flask; ProxyFix, when used, wraps it so the URL is the public one.
    app.wsgi_app = app.extensions["feedproxy.fast_path"] = FeedFastPath(app.wsgi_app)
    if config.proxy_count:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind nginx, trust X-Forwarded-Proto/Host so rel=self and ids carry the public URL.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_count, x_proto=config.proxy_count,
                                x_host=config.proxy_count, x_port=config.proxy_count)
    registry = build_sources(config, source, clock or utcnow)
    app.extensions["feedproxy.sources"] = registry
    app.extensions["feedproxy.store"] = registry.default.store
    app.extensions["feedproxy.feed_cache"] = FeedCache()
    app.extensions["feedproxy.parsed_requests"] = _ParsedRequests()
    app.register_blueprint(bp)
    app.register_blueprint(page_bp)
    metrics.install(app)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
    if config.background_refresh:
        # Fetch at start so the first reader does not wait; a failure is only logged.
        for named in registry:
            threading.Thread(target=named.store.refresh_if_due, name=f"feedproxy-first-refresh-{named.name}",
                             daemon=True).start()
    _configure_logging()
    return app


def build_sources(config, default_listing=None, clock=None, only: str | None = None):
    """Build the source registry: Daily Papers first, then FEEDPROXY_FEEDS, then ad-hoc URLs if allowed.

    ``only`` builds just that source (the refresher child needs one).
    """
    from . import metrics
    from .config import DEFAULT_SOURCE
    from .fetch import HttpFetcher
    from .snapshot import SnapshotStore
    from .sources import Source, SourceRegistry
    from .storage import SnapshotFile
    from .refresher import run_in_child
    from .snapshot import utcnow
    from .upstream import source_for

    clock = clock or utcnow

    def store_for(listing, name: str | None) -> SnapshotStore:
        # Each configured source keeps its own file; ad-hoc URL sources live in memory only.
        folder = os.path.join(config.data_dir, name) if config.data_dir and name else None
        refresher = None
        if folder and config.refresh_in_subprocess:
            refresher = functools.partial(run_in_child, config, name)
        return SnapshotStore(
            listing,
            window_days=config.window_days,
            refresh_seconds=config.refresh_seconds,
            clock=clock,
            background=config.background_refresh,
            storage=SnapshotFile(folder) if folder else None,
            on_upstream_request=metrics.record_upstream,
            refresher=refresher,
        )

    def fetcher(safe: bool = False):
        settings = dict(connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
                        max_bytes=config.max_response_bytes)
        if safe:
            from .safefetch import SafeFetcher

            return SafeFetcher(allowed_hosts=config.allow_url_hosts, **settings)
        return HttpFetcher(accept="application/atom+xml, application/rss+xml, application/xml;q=0.9, */*;q=0.5",
                           **settings)

    def feed_source(name: str, url: str, safe: bool = False) -> Source:
        from .feeds import FeedListing

        listing = FeedListing(url, fetcher=fetcher(safe), clock=clock)
        return Source(name, url, name if not safe else url, store_for(listing, None if safe else name))

    sources = []
    if only in (None, DEFAULT_SOURCE):
        listing = default_listing if default_listing is not None else source_for(config)
        sources.append(Source(DEFAULT_SOURCE, config.upstream_url, "Daily Papers", store_for(listing, DEFAULT_SOURCE)))
    sources += [feed_source(name, url) for name, url in config.feeds if only in (None, name)]
    if not sources:
        raise ValueError(f"no source named {only!r}")
    url_factory = (lambda url: feed_source("url", url, safe=True)) if config.allow_url_hosts else None
    return SourceRegistry(sources, url_factory)


def _configure_logging() -> None:
    """Send feedproxy's log lines to stderr (gunicorn shows them) unless logging is set up already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feedproxy").setLevel(logging.INFO)
    access = logging.getLogger("feedproxy.access")
    if not access.handlers:
        from .metrics import BatchedLineHandler

        # The access log goes to stdout, as Procfile platforms and journald expect; the rest to stderr.
        handler = BatchedLineHandler(sys.stdout.fileno())
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
        access.propagate = False
