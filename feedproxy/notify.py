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
gunicorn.conf.py, so a bad one stops the service with one line. Messages are
stored without the apprise URLs: those may hold passwords and stay in the
environment.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from urllib.parse import parse_qsl

import apprise
from flask import Flask
from werkzeug.datastructures import MultiDict

from feedproxy.config import DEFAULT_SOURCE, Config, Notification
from feedproxy.errors import BadParameter, ConfigError, FeedproxyError
from feedproxy.http.metrics import NOTIFICATIONS
from feedproxy.http.params import FeedRequest, parse_feed_request
from feedproxy.http.views import find_papers, sources_for
from feedproxy.http.websub import Hub
from feedproxy.render.digest import one_line_tldr
from feedproxy.store.snapshot import Snapshot
from feedproxy.store.sources import Source
from feedproxy.store.subscriptions import Claimed, Outgoing
from feedproxy.upstream.papers import Paper

log = logging.getLogger(__name__)

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
            if not apprise.Apprise().add(url):
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
    """Watches the notifications' queries on the hub's ticks and sends their messages from its outbox."""

    def __init__(self, hub: Hub, notifications: tuple[Notification, ...], queries: dict[str, FeedRequest]):
        self.hub = hub
        self.notifications = {n.name: n for n in notifications}
        self.queries = queries

    def watch(self) -> None:
        """Queue each notification's new matches (called in the app context by Hub.tick)."""
        for name in self.notifications:
            try:
                self._watch(name)
            except FeedproxyError as exc:
                log.warning("notify %s: cannot check its query: %s", name, exc)

    def _watch(self, name: str) -> None:
        params = self.queries[name]
        key = f"notify {name}"

        def compare(current: list[tuple[Source, Snapshot]]) -> None:
            everything = replace(params, limit=max(1, sum(len(snapshot.papers) for _, snapshot in current)))
            papers = find_papers(everything, current)

            def outgoing(new_ids: list[str]) -> list[Outgoing]:
                new = set(new_ids)
                body = message(self.notifications[name], [p for p in papers if p.url in new])
                return [Outgoing("notify", name, name, json.dumps(body).encode("utf-8"), {})]

            new = self.hub.db.announce(key, [p.url for p in papers], outgoing, self.hub.now())
            if new:
                log.info("notify %s: %d new papers queued", name, len(new))

        self.hub.when_changed(key, sources_for(params), compare)

    def send(self, item: Claimed) -> str:
        """Send one queued message to every URL of its notification: sent, retry, or dropped (no longer configured)."""
        notification = self.notifications.get(item.target)
        if notification is None:
            return "dropped"
        destinations = apprise.Apprise()
        for url in notification.urls:
            destinations.add(url)
        body = json.loads(item.body)
        sent = destinations.notify(title=body["title"], body=body["body"], body_format=apprise.NotifyFormat.MARKDOWN)
        return "sent" if sent else "retry"


def install(app: Flask, hub: Hub, config: Config) -> None:
    """Check FEEDPROXY_NOTIFY (ConfigError) and let the hub's loop watch and send the notifications."""
    queries = check_notifications(config)
    if not config.notify:
        return
    notifier = app.extensions["feedproxy.notifier"] = Notifier(hub, config.notify, queries)
    hub.watchers.append(notifier.watch)
    hub.senders["notify"] = (notifier.send, NOTIFICATIONS)
