"""gunicorn settings, read from the environment (PORT, WEB_CONCURRENCY, FEEDPROXY_*).

Settings are validated here, in the master, so a bad value stops start with one
clear line instead of every worker failing to boot with a traceback.
"""

import os
import sys

from feedproxy.config import Config
from feedproxy.errors import ConfigError


def _whole(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or not low <= int(raw) <= high:
        sys.exit(f"feedproxy: configuration error: {name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


try:
    Config.from_env()
except ConfigError as exc:
    sys.exit(f"feedproxy: configuration error: {exc}")

bind = f"0.0.0.0:{_whole('PORT', 8000, 1, 65535)}"
workers = _whole("WEB_CONCURRENCY", 2, 1, 64)
threads = _whole("GUNICORN_THREADS", 4, 1, 64)
# Above the upstream's connect + read timeouts, so a slow refresh is never killed mid-way.
timeout = 120
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
