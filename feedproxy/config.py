"""Service settings: one validated value object built from the environment.

Every setting has a default that works out of the box; a bad value stops the
service at start with a ConfigError naming the variable, the value and the
accepted range, instead of failing later on the first request.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from feedproxy.errors import ConfigError
from feedproxy.numbers import parse_whole_number

DEFAULT_UPSTREAM_URL = "https://huggingface.co/api/daily_papers"
# gunicorn threads per worker when GUNICORN_THREADS is unset: 1 is the sync worker (gunicorn.conf.py says why).
DEFAULT_THREADS = 1


def default_data_dir() -> Path:
    """The per-user cache folder: $XDG_CACHE_HOME/feedproxy, else ~/.cache/feedproxy."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "feedproxy"


def _int_setting(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse_whole_number(raw, low, high)
    except ValueError as exc:
        raise ConfigError(f"{name} {exc}") from None


def _float_setting(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds from {low:g} to {high:g}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a number of seconds from {low:g} to {high:g}, got {value:g}")
    return value


def check_upstream_url(url: str) -> str:
    """Accept an http(s) URL, a file:// URL or a local path to a JSON listing."""
    url = url.strip()
    if not url:
        raise ConfigError("FEEDPROXY_UPSTREAM_URL is empty: unset it for the Hugging Face API, or give a URL or file path")
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigError(f"FEEDPROXY_UPSTREAM_URL has no host: {url!r}")
        return url
    if parts.scheme == "file" or parts.scheme == "" or len(parts.scheme) == 1:  # 1: a Windows drive letter
        path = Path(parts.path if parts.scheme == "file" else url)
        if not path.is_file():
            raise ConfigError(f"FEEDPROXY_UPSTREAM_URL names a file that does not exist: {str(path)!r}")
        return url
    raise ConfigError(f"FEEDPROXY_UPSTREAM_URL must be http(s)://, file:// or a path, got scheme {parts.scheme!r}")


# The environment variables read by Config.from_env, in README order. A typo
# such as FEEDPROXY_WINDOWDAYS stops start instead of being silently ignored.
SETTINGS = (
    "FEEDPROXY_UPSTREAM_URL",
    "FEEDPROXY_WINDOW_DAYS",
    "FEEDPROXY_REFRESH_SECONDS",
    "FEEDPROXY_CONNECT_TIMEOUT",
    "FEEDPROXY_TIMEOUT",
    "FEEDPROXY_MAX_RESPONSE_BYTES",
    "FEEDPROXY_MAX_PAGES",
    "FEEDPROXY_MAX_PAPERS",
    "FEEDPROXY_PROXY_COUNT",
    "FEEDPROXY_DATA_DIR",
    "FEEDPROXY_FEEDS",
    "FEEDPROXY_ALLOW_URL_HOSTS",
    "FEEDPROXY_HF_TOKEN",
    "FEEDPROXY_WEBSUB_MAX_SUBSCRIPTIONS",
    "FEEDPROXY_WEBSUB_MAX_PER_TOPIC",
    "FEEDPROXY_NOTIFY",
)

DEFAULT_SOURCE = "hf-daily"
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


def parse_feeds(raw: str) -> tuple[tuple[str, str], ...]:
    """Read FEEDPROXY_FEEDS: comma-separated name=url pairs, http(s) URLs, unique names."""
    feeds: list[tuple[str, str]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        name, url = name.strip().lower(), url.strip()
        if not sep or not name or not url:
            raise ConfigError(f"FEEDPROXY_FEEDS entry {part!r} is not name=url")
        if not _SOURCE_NAME.match(name):
            raise ConfigError(
                f"FEEDPROXY_FEEDS name {name!r} must be 1 to 40 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
            )
        if name == DEFAULT_SOURCE or name in dict(feeds):
            raise ConfigError(f"FEEDPROXY_FEEDS name {name!r} is used twice (or is the built-in {DEFAULT_SOURCE!r})")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"FEEDPROXY_FEEDS URL for {name!r} must be http:// or https:// with a host, got {url!r}")
        feeds.append((name, url))
    return tuple(feeds)


@dataclass(frozen=True)
class Notification:
    """One FEEDPROXY_NOTIFY entry: a name, the feed query string it watches, where to send new matches."""

    name: str
    query: str  # as in a feed URL after /feed?, e.g. q=agents&min_upvotes=10
    urls: tuple[str, ...]  # apprise URLs (mailto://, matrix://, slack://, discord://, tgram://, ntfy://...)


_APPRISE_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.IGNORECASE)


def parse_notify(raw: str) -> tuple[Notification, ...]:
    """Read FEEDPROXY_NOTIFY: ``name|query string|apprise URL [apprise URL...]`` entries, separated by ``;``
    or new lines. Only the shape is checked here; notify.check_notifications checks the queries and URLs."""
    notifications: list[Notification] = []
    for part in (p.strip() for p in re.split(r"[;\n]", raw)):
        if not part:
            continue
        fields = part.split("|")
        if len(fields) != 3:
            raise ConfigError(f"FEEDPROXY_NOTIFY entry {part.split('|')[0].strip()[:40]!r} is not "
                              "name|query string|apprise URL (percent-encode any | or ; in the query)")
        name, query, urls = fields[0].strip().lower(), fields[1].strip().lstrip("?"), tuple(fields[2].split())
        if not _SOURCE_NAME.match(name):
            raise ConfigError(f"FEEDPROXY_NOTIFY name {name[:40]!r} must be 1 to 40 of a-z, 0-9, '.', '_', '-', "
                              "starting with a letter or digit")
        if name in (n.name for n in notifications):
            raise ConfigError(f"FEEDPROXY_NOTIFY name {name!r} is used twice")
        if not urls or not all(_APPRISE_URL.match(url) for url in urls):
            raise ConfigError(f"FEEDPROXY_NOTIFY {name!r} needs one or more apprise URLs (scheme://...), "
                              "separated by spaces")
        notifications.append(Notification(name, query, urls))
    return tuple(notifications)


def parse_allowed_hosts(raw: str) -> frozenset[str]:
    """Read FEEDPROXY_ALLOW_URL_HOSTS: host names, ``*.example.org`` for subdomains, ``host:port`` for a port."""
    from feedproxy.upstream.safe import parse_allowed_hosts as parse

    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"FEEDPROXY_ALLOW_URL_HOSTS entry {exc}") from None


_TOKEN = re.compile(r"^[\x21-\x7e]{1,1000}$")  # printable ASCII, no whitespace
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def check_hf_token(token: str, upstream_url: str) -> str | None:
    """Accept a Hugging Face access token (empty: none); it goes only to the upstream, over https or loopback.

    Messages never repeat the token: they end up in logs and on the terminal.
    """
    if not token:
        return None
    if not _TOKEN.match(token):
        raise ConfigError("FEEDPROXY_HF_TOKEN must be one word of printable ASCII characters (no spaces or line "
                          "breaks, at most 1000), as Hugging Face access tokens are (hf_...)")
    parts = urlsplit(upstream_url)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ConfigError(f"FEEDPROXY_HF_TOKEN would be sent in the clear to {parts.hostname}: it is sent only over "
                          "https:// (or to a loopback address), so give FEEDPROXY_UPSTREAM_URL as https://")
    return token


def check_data_dir(path: str) -> str:
    """Create the data folder if needed; refuse one that cannot be created or written."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"FEEDPROXY_DATA_DIR {path!r} cannot be created: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"FEEDPROXY_DATA_DIR {path!r} is not writable by this user")
    return str(folder)


@dataclass(frozen=True)
class Config:
    """Validated settings; see the configuration table in README.md."""

    upstream_url: str = DEFAULT_UPSTREAM_URL
    window_days: int = 30
    refresh_seconds: int = 900
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_response_bytes: int = 16 * 1024 * 1024
    max_pages: int = 100
    max_papers: int = 20_000  # per source, held and fetched per refresh (url= feeds: URL_MAX_PAPERS at most)
    proxy_count: int = 0
    data_dir: str | None = None  # None: keep the snapshot in memory only (tests); from_env always sets it
    feeds: tuple[tuple[str, str], ...] = ()  # (name, url) of extra RSS/Atom sources
    allow_url_hosts: frozenset[str] = frozenset()  # empty: /feed?url= is disabled
    # Sent as a bearer token to FEEDPROXY_UPSTREAM_URL only (the API's rate limit is higher with one);
    # never in a repr, so never in a log line or a traceback's locals.
    hf_token: str | None = field(default=None, repr=False)
    websub_max_subscriptions: int = 1000  # WebSub subscriptions held at once; 0: no hub, feeds name none
    websub_max_per_topic: int = 100  # subscriptions to one feed URL
    notify: tuple[Notification, ...] = ()  # FEEDPROXY_NOTIFY: queries whose new matches are sent with apprise
    background_refresh: bool = True
    # Refresh in a child process (feedproxy.refresher) when there is a data folder; from_env
    # turns it on. Off by default so tests with an injected clock refresh in-process.
    refresh_in_subprocess: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.window_days <= 3650:
            raise ConfigError(f"window_days must be from 1 to 3650, got {self.window_days}")
        if self.refresh_seconds < 1:
            raise ConfigError(f"refresh_seconds must be positive, got {self.refresh_seconds}")
        if self.max_papers < 1:
            raise ConfigError(f"max_papers must be positive, got {self.max_papers}")
        if self.max_pages < 1:
            raise ConfigError(f"max_pages must be positive, got {self.max_pages}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        """Read FEEDPROXY_* variables, raising ConfigError on the first bad one."""
        env = os.environ if environ is None else environ
        unknown = sorted(k for k in env if k.startswith("FEEDPROXY_") and k not in SETTINGS)
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]}: known settings are {', '.join(SETTINGS)}")
        upstream_url = check_upstream_url(env.get("FEEDPROXY_UPSTREAM_URL") or DEFAULT_UPSTREAM_URL)
        return cls(
            upstream_url=upstream_url,
            window_days=_int_setting(env, "FEEDPROXY_WINDOW_DAYS", 30, 1, 3650),
            refresh_seconds=_int_setting(env, "FEEDPROXY_REFRESH_SECONDS", 900, 60, 86400),
            connect_timeout=_float_setting(env, "FEEDPROXY_CONNECT_TIMEOUT", 5.0, 0.1, 60),
            read_timeout=_float_setting(env, "FEEDPROXY_TIMEOUT", 20.0, 0.1, 300),
            max_response_bytes=_int_setting(env, "FEEDPROXY_MAX_RESPONSE_BYTES", 16 * 1024 * 1024, 1024, 1024**3),
            max_pages=_int_setting(env, "FEEDPROXY_MAX_PAGES", 100, 1, 1000),
            max_papers=_int_setting(env, "FEEDPROXY_MAX_PAPERS", 20_000, 100, 1_000_000),
            proxy_count=_int_setting(env, "FEEDPROXY_PROXY_COUNT", 0, 0, 5),
            data_dir=check_data_dir(env.get("FEEDPROXY_DATA_DIR") or str(default_data_dir())),
            feeds=parse_feeds(env.get("FEEDPROXY_FEEDS", "")),
            allow_url_hosts=parse_allowed_hosts(env.get("FEEDPROXY_ALLOW_URL_HOSTS", "")),
            hf_token=check_hf_token(env.get("FEEDPROXY_HF_TOKEN", ""), upstream_url),
            websub_max_subscriptions=_int_setting(env, "FEEDPROXY_WEBSUB_MAX_SUBSCRIPTIONS", 1000, 0, 100_000),
            websub_max_per_topic=_int_setting(env, "FEEDPROXY_WEBSUB_MAX_PER_TOPIC", 100, 1, 100_000),
            notify=parse_notify(env.get("FEEDPROXY_NOTIFY", "")),
            refresh_in_subprocess=True,
        )
