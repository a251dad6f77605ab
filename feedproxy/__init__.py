"""feedproxy: per-query filtered feeds of Hugging Face Daily Papers.

``create_app`` is the application factory. Configuration comes from the
environment unless a Config is given; tests inject the listing source and the
clock so they need neither the network nor sleeping.
"""

from __future__ import annotations

__version__ = "0.1.0"

import logging
import sys
import threading

from flask import Flask
from werkzeug.exceptions import HTTPException


def create_app(config=None, *, source=None, clock=None) -> Flask:
    """Build the Flask app around one SnapshotStore."""
    from . import metrics
    from .config import Config
    from .feedcache import FeedCache
    from .snapshot import SnapshotStore, utcnow
    from .storage import SnapshotFile
    from .upstream import source_for
    from .web import bp, handle_http_error, handle_unexpected

    config = Config.from_env() if config is None else config
    app = Flask(__name__)
    app.config["FEEDPROXY"] = config
    if config.proxy_count:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind nginx, trust X-Forwarded-Proto/Host so rel=self and ids carry the public URL.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_count, x_proto=config.proxy_count,
                                x_host=config.proxy_count, x_port=config.proxy_count)
    store = SnapshotStore(
        source if source is not None else source_for(config),
        window_days=config.window_days,
        refresh_seconds=config.refresh_seconds,
        clock=clock or utcnow,
        background=config.background_refresh,
        storage=SnapshotFile(config.data_dir) if config.data_dir else None,
        on_upstream_request=metrics.record_upstream,
    )
    app.extensions["feedproxy.store"] = store
    app.extensions["feedproxy.feed_cache"] = FeedCache()
    app.register_blueprint(bp)
    metrics.install(app)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
    if config.background_refresh:
        # Fetch at start so the first reader does not wait; a failure is only logged.
        threading.Thread(target=store.refresh_if_due, name="feedproxy-first-refresh", daemon=True).start()
    _configure_logging()
    return app


def _configure_logging() -> None:
    """Send feedproxy's log lines to stderr (gunicorn shows them) unless logging is set up already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feedproxy").setLevel(logging.INFO)
    access = logging.getLogger("feedproxy.access")
    if not access.handlers:
        # The access log goes to stdout, as Procfile platforms and journald expect; the rest to stderr.
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
        access.propagate = False
