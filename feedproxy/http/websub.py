"""The WebSub hub at /websub (W3C WebSub Recommendation): subscriptions, intent verification, distribution.

Every feed names this hub (rel=hub) and itself (rel=self). A subscriber POSTs
``hub.mode`` (subscribe or unsubscribe), ``hub.topic`` (a /feed URL of this
server), ``hub.callback`` and optionally ``hub.lease_seconds`` and
``hub.secret``, form-encoded. A request the hub can check at once is refused
with a 4xx and a one-line reason; otherwise it is answered 202 and the intent is
verified in the background: a GET to the callback with ``hub.mode``,
``hub.topic``, ``hub.challenge`` (and ``hub.lease_seconds``), which must answer
2xx echoing the challenge. Only then is the subscription recorded (or removed).

The topic is validated as /feed validates its parameters and kept in its
canonical form, so every spelling of a feed is one topic. Distribution: the
hub's loop (``Hub.tick``, every few seconds in each worker) refreshes the sources
that subscribed feeds read when due and, when a feed's snapshots changed,
compares the feed's entry ids with those already announced. New entries queue
the whole new feed once per subscriber (the database decides, whichever worker
sees the change first), and ``Hub.deliver_due`` POSTs it with the feed's
Content-Type, ``Link: <hub>; rel="hub", <topic>; rel="self"`` and, with a
secret, ``X-Hub-Signature: sha256=<HMAC of the body>``; failures are retried
with exponential backoff, a bounded number of times.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from flask import Blueprint, Flask, Request, Response, current_app, request
from werkzeug.datastructures import MultiDict

from feedproxy.errors import BadParameter, CallbackFailed, FeedproxyError, NoData, SubscriptionRefused
from feedproxy.http.metrics import NOTIFICATIONS, WEBSUB_DELIVERIES, WEBSUB_SUBSCRIPTIONS, count
from feedproxy.http.params import FeedRequest
from feedproxy.http.views import feed_url, find_digests, find_papers, parse_request_args, plain, render_feed, sources_for
from feedproxy.numbers import parse_whole_number
from feedproxy.render.digest import digest_id
from feedproxy.store.sources import Source, current_snapshots
from feedproxy.store.snapshot import Snapshot
from feedproxy.store.subscriptions import Claimed, HubDatabase, Outgoing, Subscription
from feedproxy.upstream.callbacks import CallbackClient
from feedproxy.upstream.papers import Paper

log = logging.getLogger(__name__)

bp = Blueprint("websub", __name__)

DAY = 86400
DEFAULT_LEASE_SECONDS = 10 * DAY
MAX_LEASE_SECONDS = 30 * DAY
MIN_LEASE_SECONDS = 60
MAX_SECRET_BYTES = 199  # the Recommendation: "MUST be less than 200 bytes"
MAX_FORM_BYTES = 16 * 1024
MAX_PENDING_VERIFICATIONS = 64  # per worker; beyond, 503 with Retry-After
DELIVERY_ATTEMPTS = 6  # the first try and 5 retries: 30 s, 1, 2, 4 and 8 min later
BACKOFF_SECONDS = 30.0
CLAIM_SECONDS = 120.0  # how long a worker holds an item it is sending before another may take it
TICK_SECONDS = 5.0
STOP_WAIT_SECONDS = 20.0  # a stopping worker waits this long for its send in progress (graceful_timeout: 25)
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class HubRequest:
    """A valid subscribe or unsubscribe request, before its intent is verified."""

    mode: str
    callback: str
    topic: str  # the feed's canonical URL
    topic_given: str  # as the subscriber wrote it
    lease_seconds: int
    secret: str | None


def _one(form: MultiDict, name: str, required: bool = True) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise SubscriptionRefused(f"{name} is given {len(values)} times; give it once", name)
    value = values[0].strip() if values else ""
    if not value and required:
        raise SubscriptionRefused(f"{name} is missing", name)
    return value or None


def topic_params(topic: str, host_url: str) -> FeedRequest:
    """The feed a topic URL names, validated as /feed validates it; SubscriptionRefused unless it is one of ours.

    ``host_url`` is this server's address as the request reached it (``http://host/``).
    """
    parts, own = urlsplit(topic), urlsplit(host_url)
    if ((parts.scheme, parts.netloc.lower(), parts.path) != (own.scheme, own.netloc.lower(), own.path + "feed")
            or parts.fragment):
        raise SubscriptionRefused(f"hub.topic must be a feed of this server ({host_url}feed?...), got {topic[:200]!r}",
                                  "hub.topic")
    args = MultiDict(parse_qsl(parts.query, keep_blank_values=True))
    if "url" in args:
        raise SubscriptionRefused("hub.topic: feeds of url= cannot be subscribed to; subscribe to a source's feed "
                                  "(see /sources)", "hub.topic")
    try:
        params = parse_request_args(args)
        sources_for(params)
    except BadParameter as exc:
        raise SubscriptionRefused(f"hub.topic is not a valid feed: {exc}", "hub.topic", exc.status) from None
    return params


def parse_hub_request(req: Request, callbacks: CallbackClient) -> HubRequest:
    """Validate a POST to /websub; SubscriptionRefused names what is wrong and carries the status."""
    if (req.content_length or 0) > MAX_FORM_BYTES:
        raise SubscriptionRefused(f"the request body is over {MAX_FORM_BYTES} bytes", "hub.mode", 413)
    if req.mimetype != FORM_TYPE:
        raise SubscriptionRefused(f"send hub.* parameters as {FORM_TYPE}, not {req.mimetype or 'nothing'}",
                                  "hub.mode", 415)
    form = req.form
    mode = _one(form, "hub.mode")
    if mode not in ("subscribe", "unsubscribe"):
        raise SubscriptionRefused(f"hub.mode must be subscribe or unsubscribe, got {mode[:40]!r}", "hub.mode")
    topic_given = _one(form, "hub.topic")
    params = topic_params(topic_given, req.host_url)
    callback = _one(form, "hub.callback")
    lease_seconds = DEFAULT_LEASE_SECONDS
    raw_lease = _one(form, "hub.lease_seconds", required=False)
    if raw_lease is not None:
        try:
            lease_seconds = min(max(parse_whole_number(raw_lease, 0, 10**12), MIN_LEASE_SECONDS), MAX_LEASE_SECONDS)
        except ValueError as exc:
            raise SubscriptionRefused(f"hub.lease_seconds {exc}", "hub.lease_seconds") from None
    secret = _one(form, "hub.secret", required=False)
    if secret is not None and len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise SubscriptionRefused(f"hub.secret must be less than 200 bytes, got {len(secret.encode('utf-8'))}",
                                  "hub.secret")
    callbacks.check(callback)
    return HubRequest(mode, callback, feed_url(params), topic_given, lease_seconds, secret)


def topic_host(topic: str) -> str:
    """The host part of a canonical topic (``http://host/``), where its feed and the hub live."""
    return topic.partition("?")[0].removesuffix("feed")


def feed_entry_ids(params: FeedRequest, current: list[tuple[Source, Snapshot]], host_url: str) -> list[str]:
    """The ids of the entries a feed lists now, in its order: what tells whether it gained entries."""
    if params.digest:
        ids = feed_url(replace(params, format="atom"), host_url)
        return [digest_id(ids, digest.key) for digest in find_digests(params, current)]
    return [paper.url for paper in find_papers(params, current)]


def signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature of a delivery: ``sha256=`` and the hex HMAC-SHA256 of the body under the secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


Sender = Callable[[Claimed], str]
# Each kind of outbox item is counted in its own metric: WebSub deliveries, FEEDPROXY_NOTIFY messages.
DELIVERY_COUNTERS = {"websub": WEBSUB_DELIVERIES, "notify": NOTIFICATIONS}


class Hub:
    """The hub's work in one worker: verifying requests, watching feeds, sending what the outbox holds.

    ``watchers`` are called on every tick in the app context (``watch_papers`` adds them);
    ``senders`` send one outbox item of their kind and return its outcome: ``retry`` for a failure worth
    trying again, anything else (``delivered``, ``gone``...) ends the item.
    """

    def __init__(self, app: Flask, db: HubDatabase | None, callbacks: CallbackClient, *, enabled: bool = True,
                 max_subscriptions: int = 1000, max_per_topic: int = 100, now: Callable[[], float] = time.time,
                 backoff_seconds: float = BACKOFF_SECONDS, unavailable: str | None = None):
        self.app = app
        # None when the database could not be opened (``unavailable`` says why): then the hub refuses
        # requests with 503, feeds name no hub, and nothing is watched or sent; feeds are served all the same.
        self.db = db
        self.unavailable = unavailable if db is None else None
        self.callbacks = callbacks
        self.enabled = enabled
        self.max_subscriptions = max_subscriptions
        self.max_per_topic = max_per_topic
        self.now = now
        self.backoff_seconds = backoff_seconds
        self.watchers: list[Callable[[], None]] = []
        self.senders: dict[str, Sender] = {"websub": self._send_feed}
        self._checked: dict[str, str] = {}  # watched key -> the snapshot versions this worker last compared it at
        self._verifying: set[Future] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sending = threading.Lock()  # held from claiming an outbox item until its outcome is recorded
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="feedproxy-websub-verify")

    @property
    def advertised(self) -> bool:
        """Whether feeds name this hub: only one that takes subscriptions."""
        return self.enabled and self.db is not None

    def status(self) -> str:
        """For /healthz: ok, off (FEEDPROXY_WEBSUB_MAX_SUBSCRIPTIONS=0), or unavailable and why."""
        if self.db is None:
            return (f"unavailable: {self.unavailable}; no subscriptions are taken and no deliveries or notifications "
                    "are sent until a restart finds the data folder writable")
        return "ok" if self.enabled else "off"

    def active_subscriptions(self) -> int:
        return self.db.count(self.now()) if self.db is not None else 0

    # -- subscription requests ---------------------------------------------------------

    def accept(self, req: HubRequest) -> None:
        """Check the limits and queue the verification; SubscriptionRefused (403, 503) when it cannot be."""
        if req.mode == "subscribe" and self.db.subscription(req.callback, req.topic, self.now()) is None:
            self._check_limits(req.topic)
        with self._lock:
            if len(self._verifying) >= MAX_PENDING_VERIFICATIONS:
                raise SubscriptionRefused("the hub is verifying too many requests; try again in a minute",
                                          "hub.mode", 503)
            future = self._executor.submit(self._verify_and_count, req)
            self._verifying.add(future)
        future.add_done_callback(self._verified)

    def _verified(self, future: Future) -> None:
        with self._lock:
            self._verifying.discard(future)

    def wait_for_verifications(self, timeout: float = 10) -> None:
        """Wait until every verification queued so far has finished (tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._verifying)
            if not pending or time.monotonic() > deadline:
                return
            pending[0].exception(timeout=max(deadline - time.monotonic(), 0))

    def _check_limits(self, topic: str) -> None:
        now = self.now()
        if self.db.count(now) >= self.max_subscriptions:
            raise SubscriptionRefused(f"the hub holds its maximum of {self.max_subscriptions} subscriptions; "
                                      "ask the operator (FEEDPROXY_WEBSUB_MAX_SUBSCRIPTIONS)", "hub.topic", 403)
        if self.db.count(now, topic) >= self.max_per_topic:
            raise SubscriptionRefused(f"this feed has its maximum of {self.max_per_topic} subscriptions; ask the "
                                      "operator (FEEDPROXY_WEBSUB_MAX_PER_TOPIC)", "hub.topic", 403)

    def _verify_and_count(self, req: HubRequest) -> str:
        try:
            outcome = self.verify(req)
        except Exception:  # a background thread: log what nobody else would see
            log.exception("websub: verifying %s of %s failed", req.mode, req.callback)
            outcome = "error"
        count(WEBSUB_SUBSCRIPTIONS, outcome)
        log.info("websub %s outcome=%s callback=%s topic=%s lease=%d", req.mode, outcome, req.callback, req.topic,
                 req.lease_seconds)
        return outcome

    def verify(self, req: HubRequest) -> str:
        """Verify the intent at the callback, then record (or remove) the subscription; return the outcome."""
        challenge = secrets.token_urlsafe(24)
        query = {"hub.mode": req.mode, "hub.topic": req.topic_given, "hub.challenge": challenge}
        if req.mode == "subscribe":
            query["hub.lease_seconds"] = str(req.lease_seconds)
        try:
            answer = self.callbacks.get(req.callback, query)
        except CallbackFailed as exc:
            log.warning("websub: %s", exc)
            return exc.outcome
        if not answer.ok:
            return "not_confirmed"
        if answer.body.decode("utf-8", "replace").strip() != challenge:
            return "challenge_mismatch"
        if req.mode == "unsubscribe":
            self.db.unsubscribe(req.callback, req.topic)
            return "unsubscribed"
        if self.db.subscription(req.callback, req.topic, self.now()) is None:
            try:
                self._check_limits(req.topic)  # again: others may have subscribed since the request
            except SubscriptionRefused as exc:
                self._deny(req, str(exc))
                return "denied"
        self.db.subscribe(Subscription(req.callback, req.topic, req.topic_given, req.secret, req.lease_seconds,
                                       self.now() + req.lease_seconds))
        self._record_baseline(req.topic)
        return "verified"

    def _deny(self, req: HubRequest, reason: str) -> None:
        """Tell the subscriber its subscription was refused after all (hub.mode=denied), as the spec asks."""
        try:
            self.callbacks.get(req.callback, {"hub.mode": "denied", "hub.topic": req.topic_given, "hub.reason": reason})
        except CallbackFailed as exc:
            log.warning("websub: %s", exc)

    def _record_baseline(self, topic: str) -> None:
        """What the feed lists now is not news to a new subscriber: only entries added later are sent."""
        with self.app.app_context():
            try:
                params = topic_params(topic, topic_host(topic))
                current = current_snapshots(sources_for(params))
            except (BadParameter, NoData):
                return  # no papers yet: the first look at the feed records them
            self.db.baseline(f"websub {topic}", feed_entry_ids(params, current, topic_host(topic)))

    # -- distribution ------------------------------------------------------------------

    def run_forever(self, interval: float = TICK_SECONDS) -> None:
        """The hub's loop in a worker's background thread: look at the feeds, send what is due; until ``stop``."""
        while not self._stopping.is_set():
            try:
                self.tick()
                self.deliver_due()
            except Exception:  # never let the loop die: the next tick tries again
                log.exception("websub: the hub's loop failed; trying again in %g s", interval)
            self._stopping.wait(interval)

    def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """Send nothing more, and wait (at most ``timeout`` seconds) for the send in progress to end and its
        outcome to be recorded: a worker stopping mid-send (a restart) would leave the item claimed, and
        another worker would send it again once the claim ran out. Called when the worker exits (atexit)."""
        self._stopping.set()
        if self._sending.acquire(blocking=False):
            self._sending.release()
            return
        log.info("hub: stopping; waiting up to %g s for the send in progress to finish", timeout)
        if self._sending.acquire(timeout=timeout):
            self._sending.release()
        else:
            log.warning("hub: the send in progress did not finish within %g s; it will be tried again", timeout)

    def tick(self) -> None:
        """Prune expired subscriptions, queue the feeds that gained entries, let the watchers look."""
        if self.db is None:
            return
        expired = self.db.prune(self.now())
        if expired:
            count(WEBSUB_SUBSCRIPTIONS, "expired", amount=expired)
        with self.app.app_context():
            # With the hub turned off, subscriptions from before are kept but get nothing.
            for topic in self.db.topics(self.now()) if self.enabled else ():
                try:
                    self.check_topic(topic)
                except FeedproxyError as exc:
                    log.warning("websub: cannot check %s: %s", topic, exc)
            for watch in self.watchers:
                try:
                    watch()
                except FeedproxyError as exc:
                    log.warning("hub: cannot check a watched query: %s", exc)

    def when_changed(self, key: str, sources: list[Source],
                     compare: Callable[[list[tuple[Source, Snapshot]]], None]) -> None:
        """Refresh ``sources`` when due; call ``compare`` with their snapshots if this worker has not
        compared ``key`` at these versions yet (nothing while they hold no papers)."""
        for source in sources:
            source.store.refresh_if_due()
        try:
            current = current_snapshots(sources)
        except NoData:
            return
        version = "+".join(snapshot.version for _, snapshot in current)
        if self._checked.get(key) != version:
            compare(current)
            self._checked[key] = version

    def watch_papers(self, key: str, params: FeedRequest,
                     outgoing_for: Callable[[list[Paper]], list[Outgoing]]) -> None:
        """On every tick, queue ``outgoing_for(papers)`` for the papers of the window that newly match ``params``
        (all of them: ``limit`` does not apply), once, under ``key`` (FEEDPROXY_NOTIFY's watches)."""

        def compare(current: list[tuple[Source, Snapshot]]) -> None:
            everything = replace(params, limit=max(1, sum(len(snapshot.papers) for _, snapshot in current)))
            papers = find_papers(everything, current)

            def outgoing(new_ids: list[str]) -> list[Outgoing]:
                new = set(new_ids)
                return outgoing_for([paper for paper in papers if paper.url in new])

            new = self.db.announce(key, [paper.url for paper in papers], outgoing, self.now())
            if new:
                log.info("%s: %d new papers queued", key, len(new))

        self.watchers.append(lambda: self.when_changed(key, sources_for(params), compare))

    def check_topic(self, topic: str) -> None:
        """Queue the topic's new feed for every subscriber if it gained entries since it was last announced."""
        host_url = topic_host(topic)
        params = topic_params(topic, host_url)
        key = f"websub {topic}"

        def compare(current: list[tuple[Source, Snapshot]]) -> None:
            subscribers = self.db.subscribers(topic, self.now())

            def outgoing(new_ids: list[str]) -> list[Outgoing]:
                feed = render_feed(params, current, host_url)
                headers = {"Content-Type": feed.media_type, "Link": f'<{host_url}websub>; rel="hub"'}
                return [Outgoing("websub", s.callback, topic, feed.body, headers) for s in subscribers]

            new = self.db.announce(key, feed_entry_ids(params, current, host_url), outgoing, self.now())
            if new:
                log.info("websub: %s gained %d entries; queued for %d subscribers", topic, len(new), len(subscribers))

        self.when_changed(key, sources_for(params), compare)

    def deliver_due(self, most: int = 100) -> int:
        """Send up to ``most`` due outbox items, one at a time; return how many were tried."""
        tried = 0
        if self.db is None:
            return tried
        while tried < most and self._deliver_one():
            tried += 1
        return tried

    def _deliver_one(self) -> bool:
        """Claim, send and record one due item; False when none is due or the hub is stopping."""
        with self._sending:
            if self._stopping.is_set():
                return False
            item = self.db.claim(self.now(), CLAIM_SECONDS)
            if item is None:
                return False
            outcome = self.senders.get(item.kind, lambda item: "dropped")(item)
            if outcome == "retry" and item.attempts < DELIVERY_ATTEMPTS:
                self.db.retry_at(item.id, self.now() + self.backoff_seconds * 2 ** (item.attempts - 1))
            else:
                outcome = "failed" if outcome == "retry" else outcome
                self.db.done(item.id)
            count(DELIVERY_COUNTERS.get(item.kind, WEBSUB_DELIVERIES), outcome)
            log.info("%s delivery outcome=%s target=%s attempt=%d", item.kind, outcome, item.target, item.attempts)
            return True

    def _send_feed(self, item: Claimed) -> str:
        """POST a feed to a subscriber: delivered, retry, gone (410: unsubscribed) or dropped (no longer subscribed)."""
        sub = self.db.subscription(item.target, item.topic, self.now())
        if sub is None:
            return "dropped"
        headers = {**item.headers, "Link": item.headers["Link"] + f', <{sub.topic_given}>; rel="self"'}
        if sub.secret:
            headers["X-Hub-Signature"] = signature(sub.secret, item.body)
        try:
            answer = self.callbacks.post(sub.callback, item.body, headers)
        except CallbackFailed as exc:
            log.warning("websub: %s", exc)
            return "retry"
        if answer.ok:
            return "delivered"
        if answer.status == 410:
            self.db.unsubscribe(sub.callback, sub.topic)
            return "gone"
        return "retry"


@bp.post("/websub")
def websub() -> Response:
    """Subscribe or unsubscribe: 202 and a verification to follow, or the 4xx (503) that says why not."""
    hub: Hub = current_app.extensions["feedproxy.hub"]
    try:
        if not hub.enabled:
            raise SubscriptionRefused("this server runs no WebSub hub (FEEDPROXY_WEBSUB_MAX_SUBSCRIPTIONS=0)",
                                      "hub.mode", 404)
        if hub.db is None:
            raise SubscriptionRefused(f"the WebSub hub is unavailable: {hub.unavailable}", "hub.mode", 503)
        req = parse_hub_request(request, hub.callbacks)
        hub.accept(req)
    except BadParameter as exc:
        count(WEBSUB_SUBSCRIPTIONS, "rejected")
        return plain(str(exc), exc.status, {"Retry-After": "60"} if exc.status == 503 else None)
    return plain(f"accepted: the hub will verify this {req.mode} request at hub.callback", 202)
