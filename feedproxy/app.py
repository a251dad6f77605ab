"""The application factory: the sources and their stores, the views, caches, metrics and error handlers.

Configuration comes from the environment unless a Config is given; tests inject
the listing source and the clock so they need neither the network nor sleeping.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Callable

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from feedproxy import notify
from feedproxy.config import Config
from feedproxy.errors import StorageError
from feedproxy.http import metrics
from feedproxy.http.accesslog import configure_access_log
from feedproxy.http.fastpath import FeedFastPath
from feedproxy.http.feedcache import FeedCache
from feedproxy.http.page import bp as page_bp
from feedproxy.http.views import ParsedRequests, bp, handle_http_error, handle_unexpected
from feedproxy.http.websub import TICK_SECONDS, Hub
from feedproxy.http.websub import bp as websub_bp
from feedproxy.logs import configure_logging
from feedproxy.render.formats import EntryCache
from feedproxy.store.snapshot import Clock, utcnow
from feedproxy.store.subscriptions import HubDatabase
from feedproxy.upstream.callbacks import CallbackClient
from feedproxy.upstream.daily_papers import ListingSource
from feedproxy.upstream.http import HttpFetcher
from feedproxy.wiring import build_sources

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, *, source: ListingSource | None = None, clock: Clock | None = None,
               url_fetcher: Callable[[], HttpFetcher] | None = None,
               callback_client: CallbackClient | None = None) -> Flask:
    """Build the Flask app: the sources and their stores, the views, the WebSub hub, metrics and error handlers.

    ``source``, ``clock``, ``url_fetcher`` and ``callback_client`` replace the Daily Papers listing, the
    clock, the fetcher of url= feeds and the client of WebSub callbacks (tests: a fake upstream, a clock
    moved by hand, a loopback network).
    """
    config = Config.from_env() if config is None else config
    app = Flask("feedproxy")
    app.config["FEEDPROXY"] = config
    # Repeated feed URLs are answered below Flask; ProxyFix, when used, wraps it so the URL is the public one.
    app.wsgi_app = app.extensions["feedproxy.fast_path"] = FeedFastPath(app.wsgi_app)
    if config.proxy_count:
        # Behind nginx, trust X-Forwarded-Proto/Host so rel=self and ids carry the public URL. Not
        # X-Forwarded-Port: X-Forwarded-Host carries the port, and a proxy that passes a client's
        # X-Forwarded-Port on would let one request poison the links of a cached feed.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_count, x_proto=config.proxy_count,
                                x_host=config.proxy_count, x_port=0)
    registry = build_sources(config, source, clock or utcnow, on_upstream_request=metrics.record_upstream,
                             url_fetcher=url_fetcher)
    app.extensions["feedproxy.sources"] = registry
    app.extensions["feedproxy.store"] = registry.default.store
    app.extensions["feedproxy.feed_cache"] = FeedCache()
    app.extensions["feedproxy.entry_cache"] = EntryCache()
    app.extensions["feedproxy.parsed_requests"] = ParsedRequests()
    app.register_blueprint(bp)
    app.register_blueprint(page_bp)
    app.register_blueprint(websub_bp)
    try:
        hub_db, hub_unavailable = HubDatabase(config.data_dir), None
    except StorageError as exc:
        # A data folder that cannot be written must not stop the workers booting: feeds need no hub.
        log.warning("%s: the WebSub hub is unavailable; feeds are served without it", exc)
        hub_db, hub_unavailable = None, str(exc)
    hub = app.extensions["feedproxy.hub"] = Hub(
        app, hub_db,
        callback_client or CallbackClient(connect_timeout=config.connect_timeout, read_timeout=config.read_timeout),
        enabled=config.websub_max_subscriptions > 0, max_subscriptions=config.websub_max_subscriptions,
        max_per_topic=config.websub_max_per_topic, unavailable=hub_unavailable)
    notify.install(hub, config)
    metrics.install(app)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
    if config.background_refresh:
        # Fetch at start so the first reader does not wait; a failure is only logged.
        for named in registry:
            threading.Thread(target=named.store.refresh_if_due, name=f"feedproxy-first-refresh-{named.name}",
                             daemon=True).start()
        # The hub's loop looks at subscribed feeds at least twice per refresh interval.
        threading.Thread(target=hub.run_forever, args=(min(TICK_SECONDS, config.refresh_seconds / 2),),
                         name="feedproxy-hub", daemon=True).start()
        # A worker that stops (a restart) finishes and records the send in progress first, so no
        # subscriber or notification gets it twice. atexit runs while daemon threads still run.
        atexit.register(hub.stop)
    configure_logging()
    configure_access_log()
    return app
