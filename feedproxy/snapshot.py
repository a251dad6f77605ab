"""The snapshot store: a rolling window of the listing, refreshed in the background.

A ``Snapshot`` is immutable: the papers of the window, newest first, their
search index and a content hash. The ``SnapshotStore`` swaps in a new one
after each refresh. Refreshes are single-flight (one at a time per process),
merge into what is held so a half-published upstream day never shrinks a
feed, and back off exponentially after failures so an outage is not hammered.
Readers always get the current snapshot at once while a refresh runs
(stale-while-revalidate); only a cold start waits, and only briefly.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import threading
from functools import cached_property
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from .errors import NoData, UpstreamError
from .index import PaperIndex
from .papers import Paper
from .storage import FailureState, SavedIndex, SavedSnapshot, SnapshotFile, StorageError
from .upstream import ListingSource

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

FIRST_RETRY_SECONDS = 5
COLD_START_WAIT_SECONDS = 10


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def newest_first(papers: Iterable[Paper]) -> list[Paper]:
    """Sort papers newest first by Daily Papers date, ties by id, deterministically."""
    return sorted(papers, key=lambda p: (p.published, p.id), reverse=True)


def window_start(newest: datetime, now: datetime, window: timedelta) -> datetime:
    """Return the oldest publication time the window keeps.

    The window is counted back from the newest paper (or from now, if the data
    claims a future date), so a listing that paused for a holiday, or an
    offline demo file, still fills the window instead of emptying the feed.
    """
    return min(newest, now) - window


def merge_window(held: Iterable[Paper], fetched: Iterable[Paper], window: timedelta, now: datetime) -> list[Paper]:
    """Merge fetched papers into held ones (fetched wins by id), keep the window, newest first."""
    by_id = {p.id: p for p in held}
    for paper in fetched:
        old = by_id.get(paper.id)
        if paper.undated and old is not None:
            # An undated entry keeps the date we first saw it, or readers would see it as new again.
            paper = replace(paper, published=old.published)
        by_id[paper.id] = paper
    if not by_id:
        return []
    start = window_start(max(p.published for p in by_id.values()), now, window)
    return newest_first(p for p in by_id.values() if p.published >= start)


def content_version(papers: Iterable[Paper]) -> str:
    """Hash the papers' content: equal data gives an equal version in every process."""
    digest = hashlib.sha256()
    for paper in papers:
        digest.update(repr(paper).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def release_memory() -> None:
    """Collect garbage and ask glibc to hand freed heap pages back to the system (a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class Snapshot:
    """The papers in the window at one moment, with their search index."""

    papers: tuple[Paper, ...]
    fetched_at: datetime
    version: str
    index: PaperIndex = field(repr=False, compare=False)
    # When this version of the content was first seen: feeds' Last-Modified. It moves whenever the
    # content (so any feed's bytes) changes, and is saved with the snapshot so workers and restarts agree.
    changed_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.changed_at is None:
            object.__setattr__(self, "changed_at", self.fetched_at)

    @classmethod
    def build(cls, papers: Iterable[Paper], fetched_at: datetime, changed_at: datetime | None = None) -> "Snapshot":
        ordered = tuple(newest_first(papers))
        return cls(ordered, fetched_at, content_version(ordered), PaperIndex(ordered), changed_at)

    def checked_again(self, fetched_at: datetime) -> "Snapshot":
        """The same content, confirmed at ``fetched_at``: it keeps its version, index and changed_at."""
        return replace(self, fetched_at=fetched_at)

    @property
    def newest(self) -> datetime | None:
        return self.papers[0].published if self.papers else None

    @cached_property
    def has_announce_types(self) -> bool:
        """Whether any paper carries an arXiv announce type (only arXiv listings give them)."""
        return any(p.announce_type for p in self.papers)


class SnapshotStore:
    """Holds the current Snapshot and refreshes it from a ListingSource when due.

    With a SnapshotFile, the snapshot survives restarts and is shared by the
    workers using the same folder: whoever takes the refresh lock fetches and
    saves; the others load the saved file instead of asking the upstream.
    """

    def __init__(
        self,
        source: ListingSource,
        *,
        window_days: int = 30,
        refresh_seconds: int = 900,
        clock: Clock = utcnow,
        background: bool = True,
        storage: SnapshotFile | None = None,
        on_upstream_request: Callable[[UpstreamError | None], None] | None = None,
        refresher: Callable[[float], None] | None = None,
    ):
        self.source = source
        self.window = timedelta(days=window_days)
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.background = background
        self.storage = storage
        # Told of every upstream page request: None for success, else the error (metrics).
        self.on_upstream_request = on_upstream_request or (lambda error: None)
        # With a data folder: runs a refresh in another process (feedproxy.refresher), which
        # leaves its result in the folder; this store then loads it.
        self.refresher = refresher if storage is not None else None
        self.fetch_failed = False  # the last fetch this process made failed
        self._snapshot: Snapshot | None = None
        self._refresh_lock = threading.Lock()  # one refresh at a time in this process
        self._fresh_until: datetime | None = None  # no refresh is due before this
        self._failures = 0
        self._next_attempt: datetime | None = None  # backoff after a failure
        self._loaded_mtime: float | None = None  # the saved file we last read or wrote
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.last_success_at: datetime | None = None
        self.storage_error: str | None = None
        # Why the saved snapshot in the folder was not used (it is from another upstream), until a save
        # replaces it: /healthz shows it, and so does the 503 answered while no papers are held.
        self.saved_snapshot_ignored: str | None = None
        self.fetch_count = 0  # pages this process requested from the source (tests check it)
        if storage is not None:
            self._load_saved()

    # -- reading -------------------------------------------------------------------

    def peek(self) -> Snapshot | None:
        """Return the current snapshot without triggering anything."""
        return self._snapshot

    def current(self) -> Snapshot:
        """Return the snapshot to serve now, starting a refresh when one is due.

        Raises NoData (with a reason and a Retry-After) while nothing was ever fetched.
        """
        snapshot = self._snapshot
        if snapshot is None:
            return self._wait_for_first()
        if self._due():
            if self.background:
                # Every request while a refresh runs finds it due; only one thread is started for it.
                if not self._refresh_lock.locked():
                    threading.Thread(target=self.refresh_if_due, name="feedproxy-refresh", daemon=True).start()
            else:
                self.refresh_if_due()
                return self._snapshot or snapshot
        return snapshot

    def _wait_for_first(self) -> Snapshot:
        # Every cold request queues on the same lock, so 50 of them cause one fetch.
        if self._refresh_lock.acquire(timeout=COLD_START_WAIT_SECONDS):
            try:
                # Only a backoff after a failure stops a cold worker from trying: not the
                # short pause set while another worker held the refresh lock.
                if self._snapshot is None and not self._backing_off():
                    self._refresh(wait=COLD_START_WAIT_SECONDS)
            finally:
                self._refresh_lock.release()
        if self._snapshot is not None:
            return self._snapshot
        reason = self.last_error or "the first fetch from the upstream is still running"
        if self.saved_snapshot_ignored:
            reason = f"{self.saved_snapshot_ignored}; {reason}"
        raise NoData(reason, self.retry_after())

    def retry_after(self) -> int:
        """Seconds until the next refresh attempt, for Retry-After headers (at least 1)."""
        if self._next_attempt is None:
            return FIRST_RETRY_SECONDS
        return max(1, int((self._next_attempt - self.clock()).total_seconds() + 0.999))

    def seconds_until_refresh(self) -> int:
        """Seconds until the next refresh is due (0 when due now)."""
        if self._next_attempt is not None:
            return self.retry_after()
        if self._fresh_until is None:
            return 0
        return max(0, int((self._fresh_until - self.clock()).total_seconds()))

    def _backing_off(self) -> bool:
        return self._next_attempt is not None and self.clock() < self._next_attempt

    def _due(self) -> bool:
        if self._backing_off():
            return False
        return self._fresh_until is None or self.clock() >= self._fresh_until

    # -- refreshing ----------------------------------------------------------------

    def refresh_if_due(self) -> bool:
        """Refresh unless one is running or the snapshot is fresh; return whether it ran."""
        if not self._refresh_lock.acquire(blocking=False):
            return False
        try:
            if not self._due():
                return False
            self._refresh()
            return True
        finally:
            self._refresh_lock.release()

    def refresh_now(self, wait: float = 0) -> bool:
        """Refresh in this process if one is due, waiting up to ``wait`` s for the folder's lock.

        What the refresher child runs. Returns False when the upstream failed.
        """
        self.fetch_failed = False
        with self._refresh_lock:
            self._refresh(wait=wait, in_process=True)
        return not self.fetch_failed

    def _refresh(self, wait: float = 0, in_process: bool = False) -> None:
        if self.storage is None:
            self._fetch()
            return
        if self.refresher is not None and not in_process:
            self._refresh_in_child(wait)
            return
        try:
            with self.storage.refresh_lock(wait=wait) as holding:
                if not holding:
                    # Another worker is fetching: look at its file again shortly.
                    self._fresh_until = self.clock() + timedelta(seconds=FIRST_RETRY_SECONDS)
                    return
                self._take_up_shared()
                if self._fetch_wanted():
                    self._fetch()
        except StorageError as exc:
            self._storage_failed(exc)
            self._fetch()  # serving fresh papers matters more than sharing them

    def _refresh_in_child(self, wait: float) -> None:
        """Let a child process refresh, then take up what it saved (or the failure it recorded)."""
        from .refresher import RefresherError, RefresherStopped

        # What the other workers know may already settle it: a saved snapshot that is fresh, or a backoff
        # in force. Then no child is started (each child costs a Python start and an index load).
        self._take_up_shared()
        if not self._fetch_wanted():
            return
        try:
            self.refresher(wait)
        except RefresherStopped as exc:
            # Pause without counting a failure: a stopping worker must not start child after child
            # while its request threads finish (each would run a whole refresh before the worker exits).
            self._next_attempt = self.clock() + timedelta(seconds=FIRST_RETRY_SECONDS)
            self.last_error, self.last_error_at = str(exc), self.clock()
            return
        except RefresherError as exc:
            self._record_failure(self.clock(), UpstreamError(str(exc)), 0)
            return
        self._take_up_shared()
        if self._due():
            # The child found the lock taken (another worker is refreshing): look again shortly.
            self._fresh_until = self.clock() + timedelta(seconds=FIRST_RETRY_SECONDS)

    def _fetch_wanted(self) -> bool:
        """Whether to ask the upstream now: nothing held and no backoff, or a refresh is due."""
        return (self._snapshot is None and not self._backing_off()) or self._due()

    def _take_up_shared(self) -> None:
        """Load what another worker saved since we last looked, and adopt the folder's shared state."""
        if self.storage.mtime() != self._loaded_mtime:
            self._load_saved()
        self._adopt_shared_state()

    def _adopt_shared_state(self) -> None:
        """Refresh with the other workers: their last success and their run of failures count here too."""
        checked = self.storage.load_checked()
        if checked is not None and self._snapshot is not None and (
                self.last_success_at is None or checked > self.last_success_at):
            # Another worker refreshed since; if nothing changed (304) it saved no new snapshot.
            self.last_success_at = checked
            self._fresh_until = checked + timedelta(seconds=self.refresh_seconds)
        state = self.storage.load_failure()
        if state is not None and state.failures >= self._failures:
            # The run of failures goes on until a success removes the file, even once its wait has
            # passed: so the next failure, in whichever process, waits twice as long (5 s, 10 s, 20 s...).
            self._failures = state.failures
            if self._next_attempt is None or state.next_attempt > self._next_attempt:
                self._next_attempt = state.next_attempt
            self.last_error, self.last_error_at = state.last_error, state.last_error_at

    def _fetch(self) -> None:
        held = self._snapshot.papers if self._snapshot else ()
        fetched: list[Paper] = []
        pages = skipped = 0
        error: UpstreamError | None = None
        now = self.clock()
        newest = self._snapshot.newest if self._snapshot else None
        try:
            for page in self.source.pages():
                pages += 1
                self.fetch_count += 1
                self.on_upstream_request(None)
                skipped += page.skipped
                fetched.extend(page.papers)
                if not page.papers:
                    break
                # Max, not the first: an RSS feed need not list newest first.
                newest = max([max(p.published for p in page.papers)] + ([newest] if newest else []))
                oldest = min(p.published for p in page.papers)
                if oldest < window_start(newest, now, self.window):
                    break  # this page reaches past the window: everything older is outside it
        except UpstreamError as exc:
            error = exc
            self.on_upstream_request(exc)

        if fetched:
            merged = merge_window(held, fetched, self.window, now)
            if self._snapshot is None or content_version(merged) != self._snapshot.version:
                self._snapshot = Snapshot.build(merged, now, self._next_change_time(now))
                del merged, held
                release_memory()
            else:
                self._snapshot = self._snapshot.checked_again(now)
            self._save()
        if error is None:
            self._record_success(now, pages, len(fetched), skipped)
        else:
            self._record_failure(now, error, pages)

    def _next_change_time(self, now: datetime) -> datetime:
        """The changed_at of new content: whole seconds (HTTP dates have no fractions), always later
        than the held snapshot's, so If-Modified-Since can tell two versions of one second apart."""
        moment = now.replace(microsecond=0)
        if self._snapshot is not None and moment <= self._snapshot.changed_at:
            moment = self._snapshot.changed_at.replace(microsecond=0) + timedelta(seconds=1)
        return moment

    # -- the saved file --------------------------------------------------------------

    def _save(self) -> None:
        if self.storage is None or self._snapshot is None:
            return
        try:
            snapshot = self._snapshot
            validators = self._fetcher_validators()
            self.storage.save(SavedSnapshot(self.source.description, snapshot.fetched_at, snapshot.papers, validators,
                                            snapshot.changed_at))
            self._loaded_mtime = self.storage.mtime()
            self.saved_snapshot_ignored = None  # the file is ours now
            self.storage.save_index(self._saved_index(validators))
            self.storage_error = None
        except StorageError as exc:
            self._storage_failed(exc)

    def _load_saved(self) -> None:
        """Adopt the saved snapshot if it is from our source; it is fresh until its refresh is due."""
        if self._load_saved_index():
            return
        try:
            mtime = self.storage.mtime()
            saved = self.storage.load()
        except StorageError as exc:
            self._storage_failed(exc)
            return
        self._loaded_mtime = mtime
        if saved is None:
            return
        if saved.source != self.source.description:
            log.warning("saved snapshot ignored: it is from %s, not %s", saved.source, self.source.description)
            self.saved_snapshot_ignored = (
                f"the saved snapshot in {self.storage.dir} is from {saved.source}, not {self.source.description}, "
                f"so it was not used; fetching from {self.source.description}")
            return
        self.saved_snapshot_ignored = None
        if self._snapshot is not None and saved.fetched_at <= self._snapshot.fetched_at:
            return
        papers = merge_window((), saved.papers, self.window, self.clock())
        # The window may have dropped papers since it was saved: that is new content, first seen now.
        changed_at = saved.changed_at if len(papers) == len(saved.papers) else self._next_change_time(self.clock())
        if self._snapshot is not None and content_version(papers) == self._snapshot.version:
            self._snapshot = replace(self._snapshot.checked_again(saved.fetched_at), changed_at=changed_at)
        else:
            self._snapshot = Snapshot.build(papers, saved.fetched_at, changed_at)
        self._restore_validators(saved.validators)
        self._adopted(saved.fetched_at, "snapshot")
        self._save_index_only()

    def _load_saved_index(self) -> bool:
        """Adopt the saved index cache (papers and index, no rebuild) when it matches; return whether it did.

        This is what makes a restart serve within a second: unpickling the index
        takes a fraction of the time that parsing the JSON and rebuilding takes.
        """
        mtime = self.storage.mtime()
        cached = self.storage.load_index()
        if (cached is None or cached.source != self.source.description or cached.window_days != self.window.days
                or (self._snapshot is not None and cached.fetched_at <= self._snapshot.fetched_at)):
            return False
        self._loaded_mtime = mtime
        self.saved_snapshot_ignored = None  # another process saved our own snapshot in its place
        self._snapshot = Snapshot(cached.index.papers, cached.fetched_at, cached.version, cached.index,
                                  cached.changed_at)
        self._restore_validators(cached.validators)
        self._adopted(cached.fetched_at, "index cache")
        return True

    def _saved_index(self, validators: dict) -> SavedIndex:
        snapshot = self._snapshot
        return SavedIndex(self.source.description, self.window.days, snapshot.fetched_at, snapshot.version,
                          snapshot.index, validators, changed_at=snapshot.changed_at)

    def _save_index_only(self) -> None:
        try:
            self.storage.save_index(self._saved_index(self._fetcher_validators()))
        except StorageError as exc:
            self._storage_failed(exc)

    def _fetcher_validators(self) -> dict:
        fetcher = getattr(self.source, "fetcher", None)
        return fetcher.export_validators() if fetcher is not None else {}

    def _restore_validators(self, validators: dict) -> None:
        fetcher = getattr(self.source, "fetcher", None)
        if fetcher is not None:
            fetcher.restore_validators(validators)

    def _adopted(self, fetched_at: datetime, what: str) -> None:
        self.last_success_at = fetched_at
        self._fresh_until = fetched_at + timedelta(seconds=self.refresh_seconds)
        log.info("loaded saved %s dir=%s papers=%d fetched_at=%s", what, self.storage.dir,
                 len(self._snapshot.papers), fetched_at.isoformat())

    def _storage_failed(self, exc: StorageError) -> None:
        self.storage_error = str(exc)
        log.warning("%s", exc)

    # -- outcomes --------------------------------------------------------------------

    def _share_failure(self, state: FailureState | None) -> None:
        if self.storage is not None:
            try:
                self.storage.save_failure(state)
            except StorageError as exc:
                self._storage_failed(exc)

    def _record_success(self, now: datetime, pages: int, fetched: int, skipped: int) -> None:
        if self._failures:
            self._share_failure(None)
        if self.storage is not None:
            try:
                self.storage.save_checked(now)
            except StorageError as exc:
                self._storage_failed(exc)
        self._failures = 0
        self._next_attempt = None
        self.last_success_at = now
        self._fresh_until = now + timedelta(seconds=self.refresh_seconds)
        held = len(self._snapshot.papers) if self._snapshot else 0
        log.info(
            "refresh ok source=%s pages=%d fetched=%d skipped=%d window_papers=%d version=%s",
            self.source.description, pages, fetched, skipped, held,
            self._snapshot.version if self._snapshot else "-",
        )

    def _record_failure(self, now: datetime, error: UpstreamError, pages: int) -> None:
        self.fetch_failed = True
        self._failures += 1
        delay = min(FIRST_RETRY_SECONDS * 2 ** (self._failures - 1), self.refresh_seconds)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, 6 * 3600))
        self._next_attempt = now + timedelta(seconds=delay)
        self.last_error = str(error)
        self.last_error_at = now
        self._share_failure(FailureState(self._failures, self._next_attempt, self.last_error, now))
        log.warning(
            "refresh failed source=%s pages_ok=%d failures=%d retry_in=%ds error=%s",
            self.source.description, pages, self._failures, delay, error,
        )
