"""The feedproxy query command, against a fixture file and against a saved snapshot."""

from feedproxy.cli import main
from feedproxy.papers import paper_from_item
from feedproxy.storage import SavedSnapshot, SnapshotFile

from .conftest import DAILY, all_items


def test_query_from_a_listing_file(capsys):
    assert main(["query", "EnvHarness", "--from", str(DAILY / "2026-08-21.json")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["2608.19880  2026-08-19   163  EnvHarness: Awakening Static Worlds for Agent Learning"]
    assert "1 of 17 papers match 'EnvHarness'" in err


def test_query_the_saved_snapshot_sorted_by_upvotes(tmp_path, capsys, clock):
    papers = tuple(paper_from_item(i) for i in all_items())
    SnapshotFile(tmp_path / "hf-daily").save(SavedSnapshot("x", clock(), papers))
    assert main(["query", "", "--data-dir", str(tmp_path), "--sort", "upvotes", "--limit", "3"]) == 0
    upvotes = [int(line.split()[2]) for line in capsys.readouterr().out.splitlines()]
    assert upvotes == sorted((p.upvotes for p in papers), reverse=True)[:3]


def test_errors_are_one_line_with_an_exit_status(tmp_path, capsys):
    assert main(["query", "(unclosed", "--from", str(DAILY / "2026-08-21.json")]) == 2
    assert "invalid query" in capsys.readouterr().err
    assert main(["query", "x", "--data-dir", str(tmp_path)]) == 1
    assert "no saved snapshot" in capsys.readouterr().err
    assert main(["query", "x", "--from", str(tmp_path / "missing.json")]) == 1
    assert "cannot be read" in capsys.readouterr().err
