"""The feedproxy query command, against a fixture file and against a saved snapshot."""

import json
import re

from feedproxy.cli import main
from feedproxy.upstream.papers import paper_from_item
from feedproxy.store.files import SavedSnapshot, SnapshotFile

from .conftest import DAILY, all_items, load_items


def test_query_from_a_listing_file(capsys):
    assert main(["query", "EnvHarness", "--from", str(DAILY / "2026-08-21.json")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["2608.19880  2026-08-19   163  EnvHarness: Awakening Static Worlds for Agent Learning"]
    assert "1 of 17 papers match 'EnvHarness'" in err


def test_the_summary_counts_every_match_not_only_those_shown(capsys):
    # Counted from the fixture's own text: "benchmark" or "benchmarks" as a word, in any searched field.
    word = re.compile(r"\bbenchmarks?\b", re.IGNORECASE)
    items = load_items("2026-08-21")
    matching = sum(1 for i in items if word.search(json.dumps([
        i["paper"]["title"], i["paper"]["summary"], i["paper"].get("ai_keywords"), [a["name"] for a in i["paper"]["authors"]]])))
    assert matching > 2
    assert main(["query", "benchmark", "--from", str(DAILY / "2026-08-21.json"), "--limit", "2"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert f"{matching} of 17 papers match 'benchmark'; showing the newest 2 (--limit)" in err


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


def test_every_sort_can_be_asked_for_with_a_limit(capsys):
    # The summary names the order of each sort: every one must have a name (trending once had none).
    for sort, shown in (("date", "newest"), ("upvotes", "most upvoted"), ("relevance", "most relevant"),
                        ("trending", "most trending")):
        assert main(["query", "has:code", "--from", str(DAILY / "2026-08-21.json"), "--sort", sort, "--limit", "2"]) == 0
        assert f"12 of 17 papers match 'has:code'; showing the {shown} 2 (--limit)" in capsys.readouterr().err
