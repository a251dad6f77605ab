"""Notifications (FEEDPROXY_NOTIFY): new matches of saved queries sent once with apprise.

Each notification names a feed query (``q=agents&min_upvotes=10``) and one or
more apprise URLs (email, Matrix, Slack, Discord, Telegram, ntfy...). On every
tick of the hub's loop, after its sources refresh, the papers matching the query
in the whole window are compared with those already notified, in the hub's
SQLite file (store.subscriptions): new ones are queued as one message, once, and
sent by the hub's outbox with its retries. The first look only records what
matches already, so a new notification, a restart or a second worker never
sends what was there before. A paper counts once it matches: one crossing
``min_upvotes`` later is sent then.

The queries are checked at start (check_notifications), by the app and by
gunicorn.conf.py, so a bad one stops the service with one line; this module
imports neither Flask nor prometheus_client, so gunicorn's master can check
before its workers set up the metrics. Messages are stored without the apprise
URLs: those may hold passwords and stay in the environment.
"""

from __future__ import annotations

import functools
import json
from types import ModuleType
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict

from feedproxy.config import DEFAULT_SOURCE, Config, Notification
from feedproxy.errors import BadParameter, ConfigError
from feedproxy.http.params import FeedRequest, parse_feed_request
from feedproxy.render.digest import one_line_tldr
from feedproxy.store.subscriptions import Claimed, Outgoing
from feedproxy.upstream.papers import Paper


def _apprise() -> ModuleType:
    """apprise, imported when a notification is configured: it adds about 4 MB to every worker that imports it."""
    import apprise  # here, not at the top: most services configure no notification

    return apprise


# What selects papers; the others (format, sort, limit, digest) shape a feed, and url= feeds are not watched.
QUERY_PARAMETERS = ("q", "min_upvotes", "days", "source", "announce")
MAX_PAPERS_LISTED = 20  # in one message; the rest are counted


def check_notifications(config: Config) -> dict[str, FeedRequest]:
    """Each notification's query as a FeedRequest; ConfigError naming the first bad query or apprise URL."""
    known = [DEFAULT_SOURCE] + [name for name, _ in config.feeds]
    checked = {}
    for notification in config.notify:
        where = f"FEEDPROXY_NOTIFY {notification.name!r}"
        args = MultiDict(parse_qsl(notification.query, keep_blank_values=True))
        other = [key for key in args if key not in QUERY_PARAMETERS]
        if other:
            raise ConfigError(f"{where}: parameter {other[0][:40]!r} does not apply to notifications "
                              f"(they take {', '.join(QUERY_PARAMETERS)})")
        try:
            checked[notification.name] = parse_feed_request(args, config.window_days, known, DEFAULT_SOURCE)
        except BadParameter as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for url in notification.urls:
            if not _apprise().Apprise().add(url):
                # Only the scheme is shown: the rest of an apprise URL often holds a password or token.
                raise ConfigError(f"{where}: apprise does not accept the {url.split('://')[0]}:// URL given "
                                  "(see https://github.com/caronc/apprise/wiki for the URL of each service)")
    return checked


def message(notification: Notification, papers: list[Paper]) -> dict[str, str]:
    """The title and Markdown body announcing ``papers`` (newest first), at most MAX_PAPERS_LISTED listed."""
    n = len(papers)
    title = f"feedproxy {notification.name}: {n} new paper{'' if n == 1 else 's'}"
    lines = []
    for paper in papers[:MAX_PAPERS_LISTED]:
        upvotes = f"{paper.upvotes} upvote{'' if paper.upvotes == 1 else 's'}"
        lines.append(f"**[{paper.title}]({paper.url})** · {upvotes}\n{one_line_tldr(paper)}".rstrip())
    if n > MAX_PAPERS_LISTED:
        lines.append(f"… and {n - MAX_PAPERS_LISTED} more.")
    return {"title": title, "body": "\n\n".join(lines)}


class Notifier:
    """Composes the notifications' messages and sends them; the hub's loop watches their queries."""

    def __init__(self, notifications: tuple[Notification, ...]):
        self.notifications = {n.name: n for n in notifications}

    def outgoing(self, name: str, papers: list[Paper]) -> list[Outgoing]:
        """The one message announcing ``papers``, for the hub's outbox (without the apprise URLs)."""
        body = message(self.notifications[name], papers)
        return [Outgoing("notify", name, name, json.dumps(body).encode("utf-8"), {})]

    def send(self, item: Claimed) -> str:
        """Send one queued message to every URL of its notification: sent, retry, or dropped (no longer configured)."""
        notification = self.notifications.get(item.target)
        if notification is None:
            return "dropped"
        apprise = _apprise()
        destinations = apprise.Apprise()
        for url in notification.urls:
            destinations.add(url)
        body = json.loads(item.body)
        sent = destinations.notify(title=body["title"], body=body["body"], body_format=apprise.NotifyFormat.MARKDOWN)
        return "sent" if sent else "retry"


def install(hub, config: Config) -> None:
    """Check FEEDPROXY_NOTIFY (ConfigError) and have ``hub`` (the app's http.websub.Hub) watch each query
    and send its messages."""
    queries = check_notifications(config)
    notifier = Notifier(config.notify)
    for notification in config.notify:
        hub.watch_papers(f"notify {notification.name}", queries[notification.name],
                         functools.partial(notifier.outgoing, notification.name))
    hub.senders["notify"] = notifier.send
