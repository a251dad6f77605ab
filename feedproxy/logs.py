"""Where feedproxy's log lines go: stderr, one line each, unless logging is set up already."""

from __future__ import annotations

import logging


def configure_logging() -> None:
    """Send feedproxy's log lines to stderr (gunicorn shows them) unless logging is set up already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feedproxy").setLevel(logging.INFO)
