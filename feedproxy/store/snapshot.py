"""The snapshot store: a rolling window of one source's listing, refreshed in the background.

A ``Snapshot`` is immutable: the papers of the window, newest first, their
search index, a content hash and the upstream validators. The ``SnapshotStore``
swaps in a new one after each refresh. Refreshes are single-flight (one at a
time per process), merge into what is held (store.window) and follow the pure
refresh policy (store.policy: when due, backoff, pauses). Readers always get
the current snapshot at once while a refresh runs (stale-while-revalidate);
only a cold start waits, and only briefly.

A store refreshes in one of three ways, chosen by what it is given:

- no data folder: it fetches in this process and keeps the snapshot in memory;
- a data folder: whoever takes the folder's refresh lock fetches and saves, the
  other workers (and restarts) load the saved file;
- a data folder and a ``refresher``: a child process does the folder's refresh
  (store.child) and this process loads its result.

A folder that cannot be written shares nothing: then the store fetches in this
process (not in a child, whose result would never arrive), serves what it
fetched and tries to save again on every refresh; ``cannot_save`` says so until
a save succeeds.

The search index is built by the ``build_index`` function the store is given
(search.index.PaperIndex in the service): the store keeps it, saves it and
loads it, without knowing what it is.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Callable, Iterable, Sequence

from feedproxy.errors import (NoData, RefresherCannotSave, RefresherError, RefresherStopped, StorageError,
                              UpstreamBadData, UpstreamError, upstream_outcome)
from feedproxy.heap import release_free_memory
from feedproxy.store.files import SavedIndex, SavedSnapshot, SnapshotFile, served_change_time
from feedproxy.store.policy import RefreshState
from feedproxy.store.window import content_version, dated_in_future, merge_window, window_start
from feedproxy.upstream.daily_papers import ListingSource
from feedproxy.upstream.http import NO_VALIDATORS, Validators
from feedproxy.upstream.papers import Paper, newest_first

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
IndexBuilder = Callable[[Sequence[Paper]], object]

COLD_START_WAIT_SECONDS = 10


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (after a build in this process)."""
    gc.collect()
    release_free_memory()


@dataclass(frozen=True)
class Snapshot:
    """The papers in the window at one moment, with their search index."""

    papers: tuple[Paper, ...]
    fetched_at: datetime
    version: str
    index: object = field(repr=False, compare=False)
    # When this version of the content was first seen: feeds' Last-Modified. It moves whenever the
    # content (so any feed's bytes) changes, and is saved with the snapshot so workers and restarts agree.
    changed_at: datetime | None = None
    # The upstream's ETag/Last-Modified for this data: the next refresh asks conditionally with them.
    validators: Validators = NO_VALIDATORS

    def __post_init__(self) -> None:
        if self.changed_at is None:
            object.__setattr__(self, "changed_at", self.fetched_at)

    @classmethod
    def build(cls, papers: Iterable[Paper], fetched_at: datetime, changed_at: datetime | None = None, *,
              build_index: IndexBuilder, validators: Validators = NO_VALIDATORS) -> "Snapshot":
        ordered = tuple(newest_first(papers))
        return cls(ordered, fetched_at, content_version(ordered), build_index(ordered), changed_at, validators)

    def checked_again(self, fetched_at: datetime, validators: Validators) -> "Snapshot":
        """The same content, confirmed at ``fetched_at``: it keeps its version, index and changed_at."""
        return replace(self, fetched_at=fetched_at, validators=validators)

    @property
    def newest(self) -> datetime | None:
        return self.papers[0].published if self.papers else None

    @cached_property
    def has_announce_types(self) -> bool:
        """Whether any paper carries an arXiv announce type (only arXiv listings give them)."""
        return any(p.announce_type for p in self.papers)


class SnapshotStore:
    """Holds one source's current Snapshot and refreshes it when due."""

    def __init__(
        self,
        source: ListingSource,
        *,
        build_index: IndexBuilder,
        window_days: int = 30,
        max_papers: int = 20_000,
        refresh_seconds: int = 900,
        clock: Clock = utcnow,
        background: bool = True,
        storage: SnapshotFile | None = None,
        on_upstream_request: Callable[[str], None] | None = None,
        refresher: Callable[[float], None] | None = None,
        load_saved: bool = True,
        index_outdated: Callable[[object], bool] = lambda index: False,
    ):
        self.source = source
        self.build_index = build_index
        # Whether an index must be built again though its papers are unchanged (search.index: built
        # without concept vectors while the model would not load, and it loads now).
        self.index_outdated = index_outdated
        self.window = timedelta(days=window_days)
        self.max_papers = max_papers  # held at most, the newest, and fetched at most per refresh
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.background = background
        self.storage = storage
        # Told of every upstream page request, by its outcome (errors.upstream_outcome: ok, timeout, ...).
        self.on_upstream_request = on_upstream_request or (lambda outcome: None)
        # With a data folder: runs a refresh in another process (store.child), which leaves its result
        # in the folder; this store then loads it.
        self.refresher = refresher if storage is not None else None
        self.state = RefreshState(refresh_seconds)
        self.storage_error: str | None = None
        # True while the data folder cannot be written: this process then fetches and serves its own data
        # (storage_error says why), and saves again on every refresh until a save succeeds.
        self.cannot_save = False
        # Why the saved snapshot in the folder was not used (it is from another upstream), until a save
        # replaces it: /healthz shows it, and so does the 503 answered while no papers are held.
        self.saved_snapshot_ignored: str | None = None
        self._snapshot: Snapshot | None = None
        self._refresh_lock = threading.Lock()  # one refresh at a time in this process
        # One thread at a time takes up an index cache another process saved (re-entrant: the refresh
        # path holds it while it calls _load_saved_index).
        self._take_up_lock = threading.RLock()
        self._looked_at_mtime: float | None = None  # the saved file a cold request last tried to take up
        self._loaded_mtime: float | None = None  # the saved file we last read or wrote
        # When this code began serving from the folder, before it records any change time of its own.
        self._first_served = self._record_first_served() if storage is not None else None
        if storage is not None and load_saved:
            self._load_saved()

    # -- reading -------------------------------------------------------------------

    @property
    def last_success_at(self) -> datetime | None:
        return self.state.last_success_at

    @property
    def last_error(self) -> str | None:
        return self.state.last_error

    @property
    def last_error_at(self) -> datetime | None:
        return self.state.last_error_at

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
        if self.state.due(self.clock()):
            if self.background:
                # Every request while a refresh runs finds it due; only one thread is started for it.
                if not self._refresh_lock.locked():
                    threading.Thread(target=self.refresh_if_due, name="feedproxy-refresh", daemon=True).start()
            else:
                self.refresh_if_due()
                return self._snapshot or snapshot
        return snapshot

    def _wait_for_first(self) -> Snapshot:
        if self.background:
            # Another worker's refresh child may have saved data since this worker booted: take it up
            # now, rather than answer 503 until this worker's own child has looked at the folder.
            taken_up = self._take_up_saved_index()
            if taken_up is not None:
                return taken_up
            # In service: never hold a request thread while nothing is held. The first fetch runs in
            # one background thread; every request meanwhile gets NoData (503, Retry-After) at once.
            if not self.state.backing_off(self.clock()) and not self._refresh_lock.locked():
                threading.Thread(target=self._refresh_cold, name="feedproxy-first-fetch", daemon=True).start()
            raise self._no_data()
        # Without background refreshes (tests, the CLI): every cold request queues on the same lock,
        # so 50 of them cause one fetch.
        if self._refresh_lock.acquire(timeout=COLD_START_WAIT_SECONDS):
            try:
                # Only a backoff after a failure stops a cold worker from trying: not the
                # short pause set while another worker held the refresh lock.
                if self._snapshot is None and not self.state.backing_off(self.clock()):
                    self._refresh(wait=COLD_START_WAIT_SECONDS)
            finally:
                self._refresh_lock.release()
        if self._snapshot is not None:
            return self._snapshot
        raise self._no_data()

    def _take_up_saved_index(self) -> Snapshot | None:
        """In a worker holding nothing, the index cache saved since it last looked, if any (a fraction of a second).

        Only a worker with refresher children (whose indexes are built by them) and only when the
        folder's snapshot changed; a thread already taking it up makes this one answer 503 at once.
        """
        if self.refresher is None:
            return None
        mtime = self.storage.mtime()
        if mtime in (None, self._loaded_mtime, self._looked_at_mtime):
            return None  # nothing new: unpickling an index cache again for every request would cost seconds
        if not self._take_up_lock.acquire(blocking=False):
            return None
        try:
            self._looked_at_mtime = mtime
            if self._snapshot is None:
                self._load_saved_index()
        finally:
            self._take_up_lock.release()
        return self._snapshot

    def _no_data(self) -> NoData:
        reason = self.state.last_error or "the first fetch from the upstream is still running"
        if self.saved_snapshot_ignored:
            reason = f"{self.saved_snapshot_ignored}; {reason}"
        return NoData(reason, self.retry_after())

    def _refresh_cold(self) -> None:
        """The first fetch, in its own thread: a backoff stops it, not the pause after a busy lock."""
        if not self._refresh_lock.acquire(blocking=False):
            return
        try:
            if self._snapshot is None and not self.state.backing_off(self.clock()):
                self._refresh(wait=COLD_START_WAIT_SECONDS)
        finally:
            self._refresh_lock.release()

    def retry_after(self) -> int:
        """Seconds until the next refresh attempt, for Retry-After headers (at least 1)."""
        return self.state.retry_after(self.clock())

    def seconds_until_refresh(self) -> int:
        """Seconds until the next refresh is due (0 when due now)."""
        return self.state.seconds_until_refresh(self.clock())

    # -- refreshing ----------------------------------------------------------------

    def refresh_if_due(self) -> bool:
        """Refresh unless one is running or the snapshot is fresh; return whether it ran."""
        if not self._refresh_lock.acquire(blocking=False):
            return False
        try:
            if not self.state.due(self.clock()):
                return False
            self._refresh()
            return True
        finally:
            self._refresh_lock.release()

    def refresh_now(self, wait: float = 0) -> bool:
        """Refresh in this process: through the data folder when due (waiting up to ``wait`` s for its
        lock), or at once without one.

        What the refresher child runs. It reads the folder's shared state first and loads the saved
        snapshot only when it will fetch. Returns False when the upstream failed.
        """
        with self._refresh_lock:
            if self.storage is None:
                return self._fetch()
            return self._refresh_in_folder(wait, load_lazily=True, fetch_unsaved=False)

    def _refresh(self, wait: float = 0) -> None:
        if self.storage is None:
            self._fetch()
        elif self.refresher is not None and not self.cannot_save:
            self._refresh_in_child(wait)
        else:
            self._refresh_in_folder(wait)

    def _refresh_in_folder(self, wait: float, load_lazily: bool = False, fetch_unsaved: bool = True) -> bool:
        """Refresh through the data folder: under its lock, take up what others saved, fetch if still due.

        When the folder cannot be written, fetch all the same (unless not ``fetch_unsaved``: the refresher
        child, whose worker then fetches itself). Returns False when a fetch failed.
        """
        try:
            with self.storage.refresh_lock(wait=wait) as holding:
                if not holding:
                    # Another worker is fetching: look at its file again shortly.
                    self.state = self.state.busy_elsewhere(self.clock())
                    return True
                if load_lazily and self._snapshot is None and self.storage.mtime() is not None:
                    # Decide on the folder's small state files first: loading the index costs time and
                    # memory. Without a current index cache (new code, or none yet) this process must
                    # load the snapshot all the same, to build and save it for the workers.
                    if self.storage.has_current_index():
                        self._adopt_shared_state(holding=True)
                        if not self.state.fetch_wanted(self.clock(), holding=True):
                            return True
                self._take_up_shared()
                if self.state.fetch_wanted(self.clock(), holding=self._snapshot is not None):
                    return self._fetch()
                return True
        except StorageError as exc:
            self._cannot_save(exc)
            # Serving fresh papers matters more than sharing them.
            return self._fetch() if fetch_unsaved else True

    def _refresh_in_child(self, wait: float) -> None:
        """Let a child process refresh, then take up what it saved (or the failure it recorded)."""
        # What the other workers know may already settle it: a saved snapshot that is fresh, or a backoff
        # in force. Then no child is started (each child costs a Python start and an index load).
        self._take_up_shared()
        if not self.state.fetch_wanted(self.clock(), holding=self._snapshot is not None):
            return
        try:
            self.refresher(wait)
        except RefresherCannotSave as exc:
            # Whatever the child fetches never reaches this worker: fetch here, and save from here
            # on every refresh until a save succeeds (then the children take over again).
            self._cannot_save(StorageError(str(exc)))
            self._refresh_in_folder(wait)
            return
        except RefresherStopped as exc:
            # Pause without counting a failure: a stopping worker must not start child after child
            # while its request threads finish (each would run a whole refresh before the worker exits).
            self.state = self.state.paused(self.clock(), str(exc))
            return
        except RefresherError as exc:
            self._record_failure(self.clock(), UpstreamError(str(exc)), 0)
            return
        self._take_up_shared()
        if self.state.due(self.clock()):
            # The child found the lock taken (another worker is refreshing): look again shortly.
            self.state = self.state.busy_elsewhere(self.clock())

    def _take_up_shared(self) -> None:
        """Load what another process saved since we last looked, and adopt the folder's shared state."""
        if self.storage.mtime() != self._loaded_mtime:
            self._load_saved()
        self._adopt_shared_state(holding=self._snapshot is not None)

    def _adopt_shared_state(self, holding: bool) -> None:
        """Refresh with the other workers: their last success and their run of failures count here too."""
        self.state = self.state.shared(self.storage.load_checked(self.source.description),
                                       self.storage.load_failure(), holding)

    def _fetch(self) -> bool:
        """Ask the source, merge what it gives into the window, save; return whether it answered."""
        held = self._snapshot
        fetched: list[Paper] = []
        pages = skipped = 0
        error: UpstreamError | None = None
        validators = NO_VALIDATORS
        now = self.clock()
        newest = held.newest if held else None
        try:
            for page in self.source.pages(held.validators if held else NO_VALIDATORS):
                if pages == 0:
                    validators = page.validators
                pages += 1
                self.on_upstream_request(upstream_outcome(None))
                if not page.papers:
                    skipped += page.skipped
                    break
                papers = [p for p in page.papers if not dated_in_future(p, now)]
                skipped += page.skipped + len(page.papers) - len(papers)  # the future-dated are refused
                fetched.extend(papers)
                if len(fetched) >= self.max_papers:
                    break  # as many as the window may hold: a source cannot make one refresh grow without end
                if not papers:
                    continue
                # Max, not the first: an RSS feed need not list newest first.
                newest = max([max(p.published for p in papers)] + ([newest] if newest else []))
                oldest = min(p.published for p in papers)
                if oldest < window_start(newest, now, self.window):
                    break  # this page reaches past the window: everything older is outside it
        except UpstreamError as exc:
            error = exc
            self.on_upstream_request(upstream_outcome(exc))
            # A fetch cut short must not be answered 304 next time: the pages after the first may differ.
            validators = NO_VALIDATORS
        except Exception as exc:  # noqa: BLE001 - any other failure is recorded and backed off like one
            log.exception("refresh of %s failed unexpectedly", self.source.description)
            error = UpstreamBadData(f"{self.source.description}: the refresh failed: {type(exc).__name__}: "
                                    f"{str(exc)[:200]}")
            self.on_upstream_request(upstream_outcome(error))
            validators = NO_VALIDATORS

        if fetched:
            merged = merge_window(held.papers if held else (), fetched, self.window, now, self.max_papers)
            if held is None or content_version(merged) != held.version or self.index_outdated(held.index):
                self._snapshot = Snapshot.build(merged, now, self._next_change_time(now),
                                                build_index=self.build_index, validators=validators)
                del merged, held
                release_memory()
            else:
                self._snapshot = held.checked_again(now, validators)
        # What a folder that could not be written lacks is saved again, even when nothing changed.
        saved = self._save() if fetched or self.cannot_save else True
        if error is None:
            self._record_success(now, pages, len(fetched), skipped, shared=saved)
        else:
            self._record_failure(now, error, pages)
        return error is None

    def _next_change_time(self, now: datetime) -> datetime:
        """The changed_at of new content: whole seconds (HTTP dates have no fractions), always later
        than the held snapshot's, so If-Modified-Since can tell two versions of one second apart."""
        moment = now.replace(microsecond=0)
        if self._snapshot is not None and moment <= self._snapshot.changed_at:
            moment = self._snapshot.changed_at.replace(microsecond=0) + timedelta(seconds=1)
        return moment

    # -- the saved file --------------------------------------------------------------

    def _save(self) -> bool:
        """Save the snapshot and its index for the other workers; return whether they are saved (or nothing to)."""
        if self.storage is None or self._snapshot is None:
            return True
        try:
            snapshot = self._snapshot
            self.storage.save(SavedSnapshot(self.source.description, snapshot.fetched_at, snapshot.papers,
                                            snapshot.validators, snapshot.changed_at))
            self._loaded_mtime = self.storage.mtime()
            self.saved_snapshot_ignored = None  # the file is ours now
            self.storage.save_index(self._saved_index())
            self.storage_error = None
            self.cannot_save = False
            return True
        except StorageError as exc:
            self._cannot_save(exc)
            return False

    def _load_saved(self) -> None:
        """Adopt the saved snapshot if it is from our source; it is fresh until its refresh is due.

        A worker with a refresher child takes up only the index cache: building an index from the JSON
        is the child's work (a worker doing it holds its GIL for seconds and keeps the heap it leaves,
        and it happens in the moment between the child saving the snapshot and saving its index).
        """
        if self._load_saved_index():
            return
        if self.refresher is not None:
            # The child loads the JSON; this worker only reads whose it is, so /healthz and the 503 can say.
            self._note_saved_source(self.storage.saved_source())
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
        self._note_saved_source(saved.source)
        if self.saved_snapshot_ignored:
            return
        if self._snapshot is not None and saved.fetched_at <= self._snapshot.fetched_at:
            return
        papers = merge_window((), saved.papers, self.window, self.clock(), self.max_papers)
        # The window may have dropped papers since it was saved: that is new content, first seen now.
        if len(papers) == len(saved.papers):
            changed_at = self._served_change_time(saved.changed_at, saved.code)
        else:
            changed_at = self._next_change_time(self.clock())
        if self._snapshot is not None and content_version(papers) == self._snapshot.version:
            self._snapshot = replace(self._snapshot.checked_again(saved.fetched_at, saved.validators),
                                     changed_at=changed_at)
        else:
            self._snapshot = Snapshot.build(papers, saved.fetched_at, changed_at, build_index=self.build_index,
                                            validators=saved.validators)
        self._adopted(saved.fetched_at, "snapshot")
        try:
            self.storage.save_index(self._saved_index())
        except StorageError as exc:
            self._storage_failed(exc)

    def _note_saved_source(self, saved_source: str | None) -> None:
        """Say whether the saved snapshot is from another upstream (FEEDPROXY_UPSTREAM_URL changed)."""
        if saved_source is None or saved_source == self.source.description:
            self.saved_snapshot_ignored = None
            return
        if self.saved_snapshot_ignored is None:
            log.warning("saved snapshot ignored: it is from %s, not %s", saved_source, self.source.description)
        self.saved_snapshot_ignored = (
            f"the saved snapshot in {self.storage.dir} is from {saved_source}, not {self.source.description}, "
            f"so it was not used; fetching from {self.source.description}")

    def _load_saved_index(self) -> bool:
        """Adopt the saved index cache (papers and index, no rebuild) when it matches; return whether it did.

        This is what makes a restart serve within a second: unpickling the index
        takes a fraction of the time that parsing the JSON and rebuilding takes.
        """
        with self._take_up_lock:
            return self._load_saved_index_unlocked()

    def _load_saved_index_unlocked(self) -> bool:
        mtime = self.storage.mtime()
        cached = self.storage.load_index()
        if (cached is None or cached.source != self.source.description or cached.window_days != self.window.days
                or (self._snapshot is not None and cached.fetched_at <= self._snapshot.fetched_at)):
            return False
        self._loaded_mtime = mtime
        self.saved_snapshot_ignored = None  # another process saved our own snapshot in its place
        self._snapshot = Snapshot(cached.index.papers, cached.fetched_at, cached.version, cached.index,
                                  self._served_change_time(cached.changed_at, cached.output_code), cached.validators)
        self._adopted(cached.fetched_at, "index cache")
        del cached
        release_free_memory()  # unpickling, and the index this one replaces, leave freed heap behind
        return True

    def _record_first_served(self) -> datetime:
        try:
            return self.storage.first_served(self.clock())
        except StorageError as exc:
            self._storage_failed(exc)
            return self.clock().replace(microsecond=0)  # this process's own, then

    def _served_change_time(self, changed_at: datetime, code: str | None) -> datetime:
        """The Last-Modified of saved data here: later than recorded when other code recorded it (files)."""
        return served_change_time(changed_at, code, self._first_served)

    def _saved_index(self) -> SavedIndex:
        snapshot = self._snapshot
        return SavedIndex(self.source.description, self.window.days, snapshot.fetched_at, snapshot.version,
                          snapshot.index, snapshot.validators, changed_at=snapshot.changed_at)

    def _adopted(self, fetched_at: datetime, what: str) -> None:
        self.state = self.state.loaded(fetched_at)
        log.info("loaded saved %s dir=%s papers=%d fetched_at=%s", what, self.storage.dir,
                 len(self._snapshot.papers), fetched_at.isoformat())

    def _storage_failed(self, exc: StorageError) -> None:
        self.storage_error = str(exc)
        log.warning("%s", exc)

    def _cannot_save(self, exc: StorageError) -> None:
        """The folder cannot be written: from now on serve what this process fetches, until a save succeeds."""
        if not self.cannot_save:
            log.warning("%s: serving the data this process fetches until a save succeeds", exc)
        self.cannot_save = True
        self.storage_error = str(exc)

    # -- outcomes --------------------------------------------------------------------

    def _record_success(self, now: datetime, pages: int, fetched: int, skipped: int, shared: bool = True) -> None:
        had_failures = self.state.failures
        self.state = self.state.succeeded(now)
        if self.storage is not None:
            try:
                if had_failures:
                    self.storage.save_failure(None)
                if shared:
                    # Only beside a saved snapshot: "fresh" with no saved data would stop the others fetching.
                    self.storage.save_checked(now, self.source.description)
            except StorageError as exc:
                self._storage_failed(exc)
        held = len(self._snapshot.papers) if self._snapshot else 0
        log.info(
            "refresh ok source=%s pages=%d fetched=%d skipped=%d window_papers=%d version=%s",
            self.source.description, pages, fetched, skipped, held,
            self._snapshot.version if self._snapshot else "-",
        )

    def _record_failure(self, now: datetime, error: UpstreamError, pages: int) -> None:
        self.state = self.state.failed(now, str(error), error.retry_after)
        if self.storage is not None:
            try:
                self.storage.save_failure(self.state.failure_run())
            except StorageError as exc:
                self._storage_failed(exc)
        log.warning(
            "refresh failed source=%s pages_ok=%d failures=%d retry_in=%ds error=%s",
            self.source.description, pages, self.state.failures, self.state.retry_after(now), error,
        )
