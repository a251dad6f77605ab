"""When to refresh: a pure decider over a source's refresh state, with no I/O and no clock.

The store tells it what happened (a success, a failure, a stop, the state
another worker left in the data folder), with the time it happened, and asks it
whether to fetch now and how long clients should wait. The same state and the
same events give the same answers, so every rule is tested without a network,
files or sleeping:

- a refresh is due ``refresh_seconds`` after the last success;
- each failure in a run doubles the wait (5 s, 10 s, 20 s ... up to the refresh
  interval), longer when the upstream asks with Retry-After (at most 6 hours);
  the run lasts until a success, whichever process made the failures;
- a stopped refresher child, or another worker holding the folder's lock,
  pauses refreshing for 5 s without counting a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

FIRST_RETRY_SECONDS = 5
MAX_RETRY_AFTER_SECONDS = 6 * 3600


@dataclass(frozen=True)
class FailureRun:
    """The upstream's current run of failures, as shared through the data folder."""

    failures: int
    next_attempt: datetime
    last_error: str
    last_error_at: datetime


@dataclass(frozen=True)
class RefreshState:
    """What one source's refresh knows: when it is next due, and its current run of failures."""

    refresh_seconds: int
    fresh_until: datetime | None = None  # no refresh is due before this
    failures: int = 0  # failures in the current run (0: the last attempt succeeded)
    next_attempt: datetime | None = None  # no attempt before this: a backoff or a pause
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    # -- questions ---------------------------------------------------------------------

    def backing_off(self, now: datetime) -> bool:
        return self.next_attempt is not None and now < self.next_attempt

    def due(self, now: datetime) -> bool:
        """Whether data that is held should be refreshed now."""
        return not self.backing_off(now) and (self.fresh_until is None or now >= self.fresh_until)

    def fetch_wanted(self, now: datetime, holding: bool) -> bool:
        """Whether to ask the upstream now: nothing held and no backoff, or a refresh is due."""
        return (not holding and not self.backing_off(now)) or self.due(now)

    def retry_after(self, now: datetime) -> int:
        """Seconds until the next attempt, for Retry-After headers (at least 1)."""
        if self.next_attempt is None:
            return FIRST_RETRY_SECONDS
        return max(1, int((self.next_attempt - now).total_seconds() + 0.999))

    def seconds_until_refresh(self, now: datetime) -> int:
        """Seconds until the next refresh is due (0 when due now)."""
        if self.next_attempt is not None:
            return self.retry_after(now)
        if self.fresh_until is None:
            return 0
        return max(0, int((self.fresh_until - now).total_seconds()))

    def failure_run(self) -> FailureRun | None:
        """The run of failures to share with other workers (None after a success)."""
        if not self.failures or self.next_attempt is None:
            return None
        return FailureRun(self.failures, self.next_attempt, self.last_error or "", self.last_error_at or self.next_attempt)

    # -- events ------------------------------------------------------------------------

    def succeeded(self, now: datetime) -> RefreshState:
        """The upstream answered (new data or 304): fresh for one interval, the run of failures over."""
        return replace(self, fresh_until=now + timedelta(seconds=self.refresh_seconds), failures=0,
                       next_attempt=None, last_success_at=now)

    def failed(self, now: datetime, error: str, retry_after: float | None = None) -> RefreshState:
        """One more failure in the run: wait twice as long as after the last one."""
        failures = self.failures + 1
        delay = min(FIRST_RETRY_SECONDS * 2 ** (failures - 1), self.refresh_seconds)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        return replace(self, failures=failures, next_attempt=now + timedelta(seconds=delay),
                       last_error=error, last_error_at=now)

    def paused(self, now: datetime, reason: str) -> RefreshState:
        """A refresh was stopped (the service is stopping): wait a little, counting no failure."""
        return replace(self, next_attempt=now + timedelta(seconds=FIRST_RETRY_SECONDS),
                       last_error=reason, last_error_at=now)

    def busy_elsewhere(self, now: datetime) -> RefreshState:
        """Another worker holds the folder's refresh lock: look at its result shortly."""
        return replace(self, fresh_until=now + timedelta(seconds=FIRST_RETRY_SECONDS))

    def loaded(self, fetched_at: datetime) -> RefreshState:
        """Data saved at ``fetched_at`` was taken up: it is fresh until its own refresh is due."""
        return replace(self, fresh_until=fetched_at + timedelta(seconds=self.refresh_seconds),
                       last_success_at=fetched_at)

    def shared(self, checked_at: datetime | None, run: FailureRun | None, holding: bool) -> RefreshState:
        """Adopt what the other workers recorded: a later success, and a longer run of failures.

        A success only counts while data is held (it was another worker's refresh of the same data).
        A run of failures counts even once its wait has passed, so the next failure, in whichever
        process, doubles the wait again.
        """
        state = self
        if checked_at is not None and holding and (state.last_success_at is None or checked_at > state.last_success_at):
            state = state.loaded(checked_at)
        if run is not None and run.failures >= state.failures:
            next_attempt = run.next_attempt if state.next_attempt is None else max(run.next_attempt, state.next_attempt)
            state = replace(state, failures=run.failures, next_attempt=next_attempt,
                            last_error=run.last_error, last_error_at=run.last_error_at)
        return state
