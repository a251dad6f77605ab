"""The hub's SQLite records: what was announced (once per change, whoever looks), and the outbox's leases."""

import multiprocessing

from feedproxy.store.subscriptions import MAX_ANNOUNCED_IDS, HubDatabase, Outgoing


def queue(calls):
    def outgoing(new_ids):
        calls.append(new_ids)
        return [Outgoing("websub", "http://cb.example/", "topic", ",".join(new_ids).encode(), {"X": "1"})]

    return outgoing


def test_the_first_look_is_a_baseline_then_only_new_ids_are_queued_once(tmp_path):
    db, other_worker, calls = HubDatabase(str(tmp_path)), HubDatabase(str(tmp_path)), []
    assert db.announce("k", ["a", "b"], queue(calls), now=0) == [] and calls == []
    assert db.announce("k", ["c", "a", "b"], queue(calls), now=0) == ["c"]
    assert other_worker.announce("k", ["c", "a", "b"], queue(calls), now=0) == []  # already queued
    assert other_worker.announce("k", ["a", "b"], queue(calls), now=0) == []  # a worker behind: c is known
    assert calls == [["c"]] and db.pending() == 1


def test_ids_still_listed_are_never_forgotten_however_many(tmp_path):
    db, calls = HubDatabase(str(tmp_path)), []
    listed = [f"id{n}" for n in range(MAX_ANNOUNCED_IDS + 1000)]
    db.announce("k", listed, queue(calls), now=0)
    assert db.announce("k", ["new"] + listed, queue(calls), now=0) == ["new"]
    assert db.announce("k", ["new"] + listed, queue(calls), now=0) == []
    assert len(db.announced("k")) == len(listed) + 1


def test_an_item_is_held_by_one_worker_until_its_lease_ends(tmp_path):
    db, other_worker = HubDatabase(str(tmp_path)), HubDatabase(str(tmp_path))
    db.announce("k", [], queue([]), now=0)
    db.announce("k", ["a"], queue([]), now=10)
    item = db.claim(now=10, lease_seconds=120)
    assert (item.body, item.headers, item.attempts) == (b"a", {"X": "1"}, 1)
    assert other_worker.claim(now=129, lease_seconds=120) is None
    again = other_worker.claim(now=130, lease_seconds=120)  # the first worker stopped mid-send
    assert again.id == item.id and again.attempts == 2
    other_worker.retry_at(again.id, 500)
    assert db.claim(now=499, lease_seconds=120) is None and db.claim(now=500, lease_seconds=120).attempts == 3


def _open_after(barrier, folder, results):
    barrier.wait()
    try:
        HubDatabase(folder)
        results.put("opened")
    except Exception as exc:  # the assertion below shows it
        results.put(repr(exc))


def test_workers_booting_together_all_open_a_new_database(tmp_path):
    # gunicorn boots its workers at the same moment; SQLite answers "database is locked" at once,
    # without waiting, to a process switching a new file to WAL while another does the same
    # (CI saw a worker fail to boot that way). 8 processes x 40 new folders, released together.
    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_ in range(40):
        folder, barrier, results = str(tmp_path / str(round_)), context.Barrier(8), context.Queue()
        processes = [context.Process(target=_open_after, args=(barrier, folder, results)) for _ in range(8)]
        for process in processes:
            process.start()
        outcomes += [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join()
    assert [o for o in outcomes if o != "opened"] == []
