"""FEEDPROXY_NOTIFY: saved queries whose new matches are sent once with apprise, never again after a restart."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from feedproxy.app import create_app
from feedproxy.config import Config, Notification
from feedproxy.errors import ConfigError

from .conftest import make_config
from .fakesubscriber import FakeSubscriber
from .servers import start_gunicorn
from .test_digest import new_item


def sent(outcome: str = "sent") -> float:
    return REGISTRY.get_sample_value("feedproxy_notifications_total", {"outcome": outcome}) or 0.0


def test_the_setting_is_read_as_name_query_and_apprise_urls():
    raw = "rl|q=reinforcement%20learning&min_upvotes=10|mailto://me:pw@mail.example; Agents|?q=agents|ntfy://a json://h/\n"
    assert Config.from_env({"FEEDPROXY_NOTIFY": raw}).notify == (
        Notification("rl", "q=reinforcement%20learning&min_upvotes=10", ("mailto://me:pw@mail.example",)),
        Notification("agents", "q=agents", ("ntfy://a", "json://h/")),
    )
    assert Config.from_env({}).notify == ()


@pytest.mark.parametrize("raw, message", [
    ("rl|q=a", "FEEDPROXY_NOTIFY entry 'rl' is not name|query string|apprise URL (percent-encode any | or ; in "
               "the query)"),
    ("rl|q=a|b|ntfy://x", "FEEDPROXY_NOTIFY entry 'rl' is not name|query string|apprise URL (percent-encode any | "
                          "or ; in the query)"),
    ("-rl|q=a|ntfy://x", "FEEDPROXY_NOTIFY name '-rl' must be 1 to 40 of a-z, 0-9, '.', '_', '-', starting with a "
                         "letter or digit"),
    ("rl|q=a|ntfy://x;rl|q=b|ntfy://y", "FEEDPROXY_NOTIFY name 'rl' is used twice"),
    ("rl|q=a|", "FEEDPROXY_NOTIFY 'rl' needs one or more apprise URLs (scheme://...), separated by spaces"),
    ("rl|q=a|me@mail.example", "FEEDPROXY_NOTIFY 'rl' needs one or more apprise URLs (scheme://...), separated by "
                               "spaces"),
])
def test_a_malformed_setting_stops_the_service(raw, message):
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"FEEDPROXY_NOTIFY": raw})
    assert str(caught.value) == message


@pytest.mark.parametrize("query, url, message", [
    ("q=agents&format=rss", "ntfy://x",
     "FEEDPROXY_NOTIFY 'rl': parameter 'format' does not apply to notifications (they take q, min_upvotes, days, "
     "source, announce)"),
    ("q=(agents", "ntfy://x",
     "FEEDPROXY_NOTIFY 'rl': parameter 'q' is not a valid query: this parenthesis is never closed at column 1; "
     "close it with \")\" (near `(agents`)"),
    ("q=agents&source=nope", "ntfy://x",
     "FEEDPROXY_NOTIFY 'rl': unknown source 'nope'; known sources: hf-daily"),
    ("q=agents", "nosuchservice://token:secret@host/",
     "FEEDPROXY_NOTIFY 'rl': apprise does not accept the nosuchservice:// URL given (see "
     "https://github.com/caronc/apprise/wiki for the URL of each service)"),
])
def test_a_bad_query_or_apprise_url_stops_the_app_without_showing_secrets(upstream, clock, query, url, message):
    config = make_config(upstream.url, notify=(Notification("rl", query, (url,)),))
    with pytest.raises(ConfigError) as caught:
        create_app(config, clock=clock)
    assert str(caught.value) == message
    assert "secret" not in str(caught.value)


@pytest.fixture
def target():
    """A loopback HTTP endpoint for apprise's json:// service: every notification arrives as a POST."""
    with FakeSubscriber() as fake:
        yield fake


def notifying_app(upstream, clock, target, folder, query="q=zeitgeist"):
    url = f"json://127.0.0.1:{target.port}/hook"
    return create_app(make_config(upstream.url, data_dir=str(folder), notify=(Notification("zg", query, (url,)),)),
                      clock=clock)


def run_hub(app) -> None:
    hub = app.extensions["feedproxy.hub"]
    hub.tick()
    hub.deliver_due()


def messages(target) -> list[dict]:
    return [json.loads(push["body"]) for push in target.pushes]


def test_new_matches_are_sent_once_and_never_again_after_a_restart(upstream, clock, items, target, tmp_path):
    before = sent()
    app = notifying_app(upstream, clock, target, tmp_path)
    run_hub(app)
    assert target.pushes == []  # what matched before the first look is not news
    upstream.items.insert(0, new_item(items, "2608.99001", "Zeitgeist: pretraining at scale", "2026-08-21T15:00:00.000Z"))
    upstream.items.insert(0, new_item(items, "2608.99002", "Unrelated proteins", "2026-08-21T16:00:00.000Z"))
    clock.advance(901)
    run_hub(app)
    run_hub(app)
    [message] = messages(target)
    assert target.pushes[0]["path"] == "/hook"
    assert message["title"] == "feedproxy zg: 1 new paper"
    assert message["message"].startswith(
        "**[Zeitgeist: pretraining at scale](https://huggingface.co/papers/2608.99001)** · ")
    assert sent() == before + 1
    restarted = notifying_app(upstream, clock, target, tmp_path)
    clock.advance(901)
    run_hub(restarted)
    assert len(target.pushes) == 1


def test_a_message_queued_before_a_restart_is_sent_by_the_next_start(upstream, clock, items, target, tmp_path):
    app = notifying_app(upstream, clock, target, tmp_path)
    run_hub(app)
    upstream.items.insert(0, new_item(items, "2608.99001", "Zeitgeist", "2026-08-21T15:00:00.000Z"))
    clock.advance(901)
    app.extensions["feedproxy.hub"].tick()  # queued; the service stops before sending
    run_hub(notifying_app(upstream, clock, target, tmp_path))
    assert [m["title"] for m in messages(target)] == ["feedproxy zg: 1 new paper"]


def test_a_failed_send_is_retried(upstream, clock, items, target, tmp_path):
    retries = sent("retry")
    app = notifying_app(upstream, clock, target, tmp_path)
    hub = app.extensions["feedproxy.hub"]
    hub.backoff_seconds = 0
    run_hub(app)
    target.push_statuses = [500]
    upstream.items.insert(0, new_item(items, "2608.99001", "Zeitgeist", "2026-08-21T15:00:00.000Z"))
    clock.advance(901)
    run_hub(app)  # fails, due again at once
    hub.deliver_due()
    assert len(target.pushes) == 2 and target.pushes[0]["body"] == target.pushes[1]["body"]
    assert sent("retry") == retries + 1 and hub.db.pending() == 0


def test_a_paper_that_comes_to_match_later_is_sent_then(upstream, clock, items, target, tmp_path):
    item = new_item(items, "2608.99001", "Zeitgeist", "2026-08-21T15:00:00.000Z")
    item["paper"]["upvotes"] = 3
    upstream.items.insert(0, item)
    app = notifying_app(upstream, clock, target, tmp_path, query="q=zeitgeist&min_upvotes=10")
    run_hub(app)
    upstream.items[0] = dict(item, paper={**item["paper"], "upvotes": 12})
    clock.advance(901)
    run_hub(app)
    [message] = messages(target)
    assert "12 upvotes" in message["message"]


def test_many_new_matches_make_one_message_listing_twenty(upstream, clock, items, target, tmp_path):
    app = notifying_app(upstream, clock, target, tmp_path)
    run_hub(app)
    for n in range(25):
        upstream.items.insert(0, new_item(items, f"2608.990{n:02d}", f"Zeitgeist {n}", "2026-08-21T15:00:00.000Z"))
    clock.advance(901)
    run_hub(app)
    [message] = messages(target)
    assert message["title"] == "feedproxy zg: 25 new papers"
    assert message["message"].count("**[") == 20 and message["message"].endswith("… and 5 more.")


def test_gunicorn_stops_before_any_worker_with_one_line_on_a_bad_query(upstream):
    proc, _ = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": upstream.url, "FEEDPROXY_NOTIFY": "rl|q=(x|ntfy://topic"})
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode != 0
    assert ("feedproxy: configuration error: FEEDPROXY_NOTIFY 'rl': parameter 'q' is not a valid query: this "
            "parenthesis is never closed at column 1") in out, out
    assert "Traceback" not in out and "Booting worker" not in out, out


def test_checking_the_setting_imports_neither_flask_nor_the_metrics():
    """gunicorn.conf.py checks FEEDPROXY_NOTIFY in the master, before PROMETHEUS_MULTIPROC_DIR reaches the
    workers: prometheus_client imported there would keep every worker's metrics out of /metrics."""
    code = ("import sys, feedproxy.notify; "
            "print(sorted(m for m in ('flask', 'prometheus_client') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_a_worker_without_notifications_never_imports_apprise():
    """apprise adds about 4 MB to each worker's RSS beyond what it shares with the rest (issue 13, memory)."""
    code = ("import sys; from feedproxy.app import create_app; from feedproxy.config import Config; "
            "create_app(Config(background_refresh=False)); print('apprise' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr
