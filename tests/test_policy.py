"""The refresh policy: pure transitions, checked without a network, files or sleeping."""

from datetime import datetime, timedelta, timezone

from feedproxy.store.policy import FIRST_RETRY_SECONDS, FailureRun, RefreshState

T0 = datetime(2026, 8, 21, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_refresh_is_due_one_interval_after_a_success():
    state = RefreshState(900).succeeded(T0)
    assert not state.due(at(899)) and state.due(at(900))
    assert state.seconds_until_refresh(at(100)) == 800
    assert RefreshState(900).due(T0)  # never refreshed: due at once


def test_each_failure_in_a_run_doubles_the_wait_up_to_the_interval():
    state, waits = RefreshState(60), []
    for n in range(6):
        state = state.failed(at(n * 100), "HTTP 503")
        waits.append(state.retry_after(at(n * 100)))
    assert waits == [5, 10, 20, 40, 60, 60]
    assert state.failures == 6 and state.last_error == "HTTP 503"
    assert state.backing_off(at(530)) and not state.backing_off(at(560))
    assert state.succeeded(at(600)).failures == 0 and state.succeeded(at(600)).next_attempt is None


def test_the_upstreams_retry_after_is_honoured_up_to_six_hours():
    assert RefreshState(900).failed(T0, "429", retry_after=120).retry_after(T0) == 120
    assert RefreshState(900).failed(T0, "429", retry_after=10**9).retry_after(T0) == 6 * 3600
    assert RefreshState(900).failed(T0, "429", retry_after=1).retry_after(T0) == FIRST_RETRY_SECONDS


def test_nothing_held_and_no_backoff_means_fetch_even_when_not_due():
    state = RefreshState(900).busy_elsewhere(T0)
    assert not state.due(at(1)) and state.fetch_wanted(at(1), holding=False)
    assert not state.fetch_wanted(at(1), holding=True)
    backing_off = RefreshState(900).failed(T0, "down")
    assert not backing_off.fetch_wanted(at(1), holding=False)


def test_a_run_recorded_by_another_process_goes_on_even_once_its_wait_has_passed():
    """A refresher child is a new process: it must continue the run, not start again at one failure."""
    run = FailureRun(3, at(20), "HTTP 503", at(0))
    state = RefreshState(900).shared(None, run, holding=True)
    assert state.failures == 3 and state.backing_off(at(10))
    assert state.failed(at(30), "HTTP 503").retry_after(at(30)) == 40  # the fourth failure


def test_a_shorter_run_does_not_replace_a_longer_one():
    state = RefreshState(900).failed(T0, "a").failed(at(10), "b").failed(at(30), "c")
    assert state.shared(None, FailureRun(1, at(5), "old", T0), holding=True) == state


def test_another_workers_success_counts_only_while_data_is_held():
    state = RefreshState(900).failed(T0, "down")
    assert state.shared(at(50), None, holding=False).last_success_at is None
    adopted = RefreshState(900).shared(at(50), None, holding=True)
    assert adopted.last_success_at == at(50) and not adopted.due(at(900)) and adopted.due(at(950))


def test_a_pause_waits_a_little_and_counts_no_failure():
    state = RefreshState(900).paused(T0, "refresher: stopped")
    assert state.failures == 0 and state.failure_run() is None
    assert state.backing_off(at(4)) and not state.backing_off(at(5))
    assert state.last_error == "refresher: stopped"


def test_the_run_to_share_is_the_run_held():
    state = RefreshState(900).failed(T0, "down")
    assert state.failure_run() == FailureRun(1, at(5), "down", T0)
    assert RefreshState(900).succeeded(T0).failure_run() is None
