"""Shared fixtures: real Daily Papers items, a loopback fake upstream, a fake clock, the app."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from feedproxy.app import create_app
from feedproxy.config import Config

from .fakeupstream import FakeUpstream

FIXTURES = Path(__file__).parent / "fixtures"
DAILY = FIXTURES / "daily_papers"


def load_items(name: str) -> list[dict]:
    """One real API response, e.g. load_items('2026-08-21')."""
    return json.loads((DAILY / f"{name}.json").read_text(encoding="utf-8"))


def all_items() -> list[dict]:
    """Every real item of the three days we ship, newest first, as the API lists them without date=."""
    items = [i for f in sorted(DAILY.glob("*.json")) for i in json.loads(f.read_text(encoding="utf-8"))]
    return sorted(items, key=lambda i: i["publishedAt"], reverse=True)


MONTH = DAILY / "month" / "2026-07-20_2026-08-18.json"


def month_items() -> list[dict]:
    """The most upvoted real item of each day from 2026-07-20 to 2026-08-18, newest first (30 items)."""
    return json.loads(MONTH.read_text(encoding="utf-8"))


def month_and_all_items() -> list[dict]:
    """all_items() and month_items() as one listing, newest first: 70 items over five weeks and more."""
    return sorted(all_items() + month_items(), key=lambda i: i["publishedAt"], reverse=True)


class FakeClock:
    """A clock tests move by hand: store.clock() returns .now."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# The app's access lines go to pytest's log capture, not straight to the terminal: with a handler
# already present, create_app does not add its batched stdout writer (tested on its own).
logging.getLogger("feedproxy.access").addHandler(logging.NullHandler())


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path, monkeypatch):
    """Keep the default data folder (~/.cache/feedproxy) of every test inside its own tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))


@pytest.fixture
def items() -> list[dict]:
    return all_items()


@pytest.fixture
def upstream(items):
    fake = FakeUpstream(items).start()
    yield fake
    fake.stop()


@pytest.fixture
def month_upstream():
    """The fake upstream serving month_and_all_items(): five weeks with organisations, stars and submitters."""
    fake = FakeUpstream(month_and_all_items()).start()
    yield fake
    fake.stop()


@pytest.fixture
def month_client(month_upstream, clock):
    return create_app(make_config(month_upstream.url), clock=clock).test_client()


@pytest.fixture
def clock() -> FakeClock:
    # Just after the newest real sample (2026-08-21).
    return FakeClock(datetime(2026, 8, 21, 12, 0, tzinfo=timezone.utc))


def make_config(upstream_url: str, **overrides) -> Config:
    """A test Config: the whole 27-month sample range in the window, no background threads."""
    settings = dict(upstream_url=upstream_url, window_days=1000, background_refresh=False,
                    connect_timeout=1.0, read_timeout=2.0)
    settings.update(overrides)
    return Config(**settings)


@pytest.fixture
def app(upstream, clock):
    return create_app(make_config(upstream.url), clock=clock)


@pytest.fixture
def client(app):
    return app.test_client()
