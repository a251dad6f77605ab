"""The hub's records in one SQLite file of the data folder: subscriptions, what was announced, an outbox.

Several gunicorn workers (and their threads) share the file, so the database is
the arbiter: every change is one short ``BEGIN IMMEDIATE`` transaction, and the
workers agree through it on

- ``subscriptions``: WebSub subscribers by (callback, topic), with their secret
  and lease; expired ones are ignored and pruned;
- ``announced``: per watched key (a WebSub topic, a notification) the entry ids
  already announced. ``announce`` compares the ids a worker sees now with them
  and, in the same transaction, records the new ones and queues what to send,
  so a change is queued once however many workers see it;
- ``outbox``: what is to be sent (a feed body to a callback, a notification),
  claimed by one worker at a time under a lease, retried with backoff, deleted
  once done. A restart loses nothing queued.

Times are seconds since the epoch, passed in by the caller (tests move them).
Without a data folder the database lives in memory, for tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from feedproxy.errors import StorageError

DB_NAME = "hub.sqlite3"
MAX_ANNOUNCED_IDS = 5000  # per key, of the ids no longer listed: a worker lagging behind never re-announces them

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    callback TEXT NOT NULL,
    topic TEXT NOT NULL,          -- the feed's canonical URL
    topic_given TEXT NOT NULL,    -- as the subscriber wrote it: sent back in verification and rel=self
    secret TEXT,                  -- NULL: deliveries are not signed
    lease_seconds INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (callback, topic)
);
CREATE TABLE IF NOT EXISTS announced (
    key TEXT PRIMARY KEY,         -- "websub <topic>" or "notify <name>"
    ids TEXT NOT NULL             -- JSON list of entry ids, oldest first
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,           -- websub or notify
    target TEXT NOT NULL,         -- the callback URL, or the notification's name
    topic TEXT NOT NULL,          -- the canonical topic, or the notification's name
    body BLOB NOT NULL,
    headers TEXT NOT NULL,        -- JSON object
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class Subscription:
    callback: str
    topic: str
    topic_given: str
    secret: str | None
    lease_seconds: int
    expires_at: float


@dataclass(frozen=True)
class Outgoing:
    """Something to send: a feed body to a callback, or a notification."""

    kind: str
    target: str
    topic: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Claimed(Outgoing):
    """An outbox row this worker holds under a lease; ``attempts`` counts this one."""

    id: int = 0
    attempts: int = 0


class HubDatabase:
    """The hub's SQLite file (``hub.sqlite3`` in ``folder``; in memory when ``folder`` is None)."""

    def __init__(self, folder: str | None):
        self.path = os.path.join(folder, DB_NAME) if folder else ":memory:"
        self._lock = threading.Lock()  # one connection per process, used by one thread at a time
        try:
            if folder:
                os.makedirs(folder, exist_ok=True)
                # Workers boot together. Switching a new file to WAL answers "database is locked" at
                # once, without waiting, when another process is half-way through the same: so one
                # process at a time sets the file up, under a lock beside it.
                with open(self.path + ".lock", "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    self._db = self._open()
            else:
                self._db = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"storage: cannot open the hub's database {self.path}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the one writer
        db.executescript(SCHEMA)
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so two processes never deadlock upgrading."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"storage: the hub's database {self.path}: {exc}") from None

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"storage: the hub's database {self.path}: {exc}") from None

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """Add a subscription, or renew one (new lease, secret and spelling of the topic)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO subscriptions VALUES (?, ?, ?, ?, ?, ?)",
                       (subscription.callback, subscription.topic, subscription.topic_given, subscription.secret,
                        subscription.lease_seconds, subscription.expires_at))

    def unsubscribe(self, callback: str, topic: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM subscriptions WHERE callback = ? AND topic = ?",
                              (callback, topic)).rowcount > 0

    def subscription(self, callback: str, topic: str, now: float) -> Subscription | None:
        rows = self._read("SELECT * FROM subscriptions WHERE callback = ? AND topic = ? AND expires_at > ?",
                          (callback, topic, now))
        return Subscription(*rows[0]) if rows else None

    def subscribers(self, topic: str, now: float) -> list[Subscription]:
        rows = self._read("SELECT * FROM subscriptions WHERE topic = ? AND expires_at > ? ORDER BY callback",
                          (topic, now))
        return [Subscription(*row) for row in rows]

    def topics(self, now: float) -> list[str]:
        """Every topic with a subscription in force."""
        return [row[0] for row in self._read(
            "SELECT DISTINCT topic FROM subscriptions WHERE expires_at > ? ORDER BY topic", (now,))]

    def count(self, now: float, topic: str | None = None) -> int:
        """Subscriptions in force, to one topic or in all."""
        if topic is None:
            return self._read("SELECT COUNT(*) FROM subscriptions WHERE expires_at > ?", (now,))[0][0]
        return self._read("SELECT COUNT(*) FROM subscriptions WHERE topic = ? AND expires_at > ?",
                          (topic, now))[0][0]

    def prune(self, now: float) -> int:
        """Remove the subscriptions whose lease has run out; return how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM subscriptions WHERE expires_at <= ?", (now,)).rowcount

    # -- what was announced ------------------------------------------------------------

    def baseline(self, key: str, ids: Sequence[str]) -> None:
        """Record ``ids`` as announced for ``key`` unless something is recorded already."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO announced VALUES (?, ?)", (key, json.dumps(list(ids))))

    def announce(self, key: str, ids: Sequence[str], outgoing: Callable[[list[str]], list[Outgoing]],
                 now: float) -> list[str]:
        """Record the ids of ``ids`` not announced before for ``key`` and queue ``outgoing(new ids)``; return them.

        A key seen for the first time only records its ids (a baseline: nothing is sent for what
        was there before anyone asked). All in one transaction: of several workers seeing the same
        change, the first queues it and the others find nothing new.
        """
        with self._transaction() as db:
            row = db.execute("SELECT ids FROM announced WHERE key = ?", (key,)).fetchone()
            if row is None:
                db.execute("INSERT INTO announced VALUES (?, ?)", (key, json.dumps(list(ids))))
                return []
            announced = json.loads(row[0])
            known = set(announced)
            new = [i for i in dict.fromkeys(ids) if i not in known]
            if not new:
                return []
            for item in outgoing(new):
                db.execute("INSERT INTO outbox (kind, target, topic, body, headers, next_try_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (item.kind, item.target, item.topic, item.body, json.dumps(item.headers), now))
            # Every id listed now is kept (so it is never announced again while listed), and the most
            # recent of those no longer listed, for a worker still holding older data.
            listed = list(dict.fromkeys(ids))
            listed_set = set(listed)
            gone = [i for i in announced if i not in listed_set]
            kept = gone[-MAX_ANNOUNCED_IDS:] + listed
            db.execute("UPDATE announced SET ids = ? WHERE key = ?", (json.dumps(kept), key))
            return new

    def announced(self, key: str) -> list[str] | None:
        rows = self._read("SELECT ids FROM announced WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    # -- the outbox --------------------------------------------------------------------

    def claim(self, now: float, lease_seconds: float) -> Claimed | None:
        """Take the next item that is due and not held by another worker, for ``lease_seconds``."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, kind, target, topic, body, headers, attempts FROM outbox "
                "WHERE next_try_at <= ? AND lease_until <= ? ORDER BY next_try_at, id LIMIT 1", (now, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE outbox SET attempts = attempts + 1, lease_until = ? WHERE id = ?",
                       (now + lease_seconds, row[0]))
        item_id, kind, target, topic, body, headers, attempts = row
        return Claimed(kind, target, topic, bytes(body), json.loads(headers), id=item_id, attempts=attempts + 1)

    def done(self, item_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))

    def retry_at(self, item_id: int, when: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE outbox SET next_try_at = ?, lease_until = 0 WHERE id = ?", (when, item_id))

    def pending(self) -> int:
        return self._read("SELECT COUNT(*) FROM outbox")[0][0]
