"""Export rules (pairs, margins, ties, majority vs per-rater, rankings, notes and flags) and the CLI, on real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignment.annotations.cli import main

REPO = Path(__file__).resolve().parents[2]


def rows_by_pair(rows):
    return {(r["chosen"], r["rejected"]): r["margin"] for r in rows}


def without_notes(rows, notes=("rater", "rationale", "flags", "rationales")):
    return [{k: v for k, v in row.items() if k not in notes} for row in rows]


def test_a_ranking_of_k_expands_to_all_c_k_2_pairs_with_rank_difference_margins(prompt_with, judge):
    store, ids = prompt_with(4, raters=("r1",))
    store.create_tasks("ranking", k=4, judgements_per_task=1)
    judge(store, "r1", rank_of={ids[0]: 2, ids[1]: 1, ids[2]: 4, ids[3]: 3})
    pairs = rows_by_pair(store.export_preferences("per-rater"))
    assert pairs == {
        ("answer 1", "answer 0"): 1.0,
        ("answer 0", "answer 2"): 2.0,
        ("answer 0", "answer 3"): 1.0,
        ("answer 1", "answer 2"): 3.0,
        ("answer 1", "answer 3"): 2.0,
        ("answer 3", "answer 2"): 1.0,
    }
    assert without_notes(store.export_preferences("majority")) == without_notes(store.export_preferences("per-rater"))


def test_tied_ranks_drop_their_pair(prompt_with, judge):
    store, ids = prompt_with(4, raters=("r1",))
    store.create_tasks("ranking", k=4, judgements_per_task=1)
    judge(store, "r1", rank_of={ids[0]: 1, ids[1]: 1, ids[2]: 3, ids[3]: 4})
    pairs = rows_by_pair(store.export_preferences("per-rater"))
    assert len(pairs) == 5 and ("answer 0", "answer 1") not in pairs and ("answer 1", "answer 0") not in pairs
    assert pairs[("answer 0", "answer 3")] == 3.0


def test_pairwise_strength_gives_the_margin_and_ties_both_bad_skips_give_nothing(prompt_with, judge):
    raters = ("slight", "clear", "much", "tie", "bad", "skip")
    store, ids = prompt_with(2, raters=raters)
    store.create_tasks("pairwise", judgements_per_task=len(raters))
    for name, strength in zip(raters[:3], ("slightly", "clearly", "much")):
        judge(store, name, winner=ids[1], strength=strength)
    judge(store, "tie", choice="tie")
    judge(store, "bad", choice="both_bad")
    judge(store, "skip", skip=True)
    per_rater = store.export_preferences("per-rater")
    assert sorted(r["margin"] for r in per_rater) == [1.0, 2.0, 3.0]
    assert all(list(r) == ["prompt", "chosen", "rejected", "margin", "rater", "rationale", "flags"] for r in per_rater)
    assert sorted(r["rater"] for r in per_rater) == ["clear", "much", "slight"]
    assert store.export_preferences("majority") == [
        {"prompt": "Which answer is best?", "chosen": "answer 1", "rejected": "answer 0", "margin": 2.0,
         "rationales": [], "flags": []}
    ]  # fmt: skip


def test_majority_takes_the_side_with_more_votes_and_drops_even_splits(prompt_with, judge):
    store, ids = prompt_with(3, raters=("r1", "r2", "r3"))
    store.create_tasks("pairwise", judgements_per_task=3, tasks_per_prompt=2)  # two of the three pairs
    pairs = {}
    for name, winners in (("r1", "high"), ("r2", "high"), ("r3", "low")):
        for _ in range(2):
            view = store.next_task(name)
            a, b = sorted(c.id for c in view.candidates)
            pairs[view.task_id] = (a, b)
            winner = b if winners == "high" else a
            strength = {"r1": "slightly", "r2": "much", "r3": "much"}[name]
            store.submit(name, view.task_id, f"{name}-{view.task_id}", choice=view.label_of(winner), strength=strength)
    majority = store.export_preferences("majority")
    assert len(majority) == 2
    for row in majority:  # 2 votes for the higher id against 1: the winners' mean margin (1 + 3) / 2, not 7 / 3
        assert row["margin"] == 2.0 and row["chosen"] > row["rejected"]
    assert len(store.export_preferences("per-rater")) == 6
    store.undo_last("r1")
    store.undo_last("r1")  # now r2 against r3 on both pairs: an even split
    assert store.export_preferences("majority") == []
    assert len(store.export_preferences("per-rater")) == 4


def test_rankings_export_per_rater_and_consensus(prompt_with, judge):
    store, ids = prompt_with(3, raters=("r1", "r2", "r3"))
    store.create_tasks("ranking", k=3, judgements_per_task=3)
    judge(store, "r1", rank_of={ids[0]: 1, ids[1]: 2, ids[2]: 3})
    judge(store, "r2", rank_of={ids[0]: 2, ids[1]: 1, ids[2]: 3})
    judge(store, "r3", rank_of={ids[0]: 1, ids[1]: 1, ids[2]: 1})  # all tied: no information
    per_rater = store.export_rankings("per-rater")
    assert without_notes(per_rater) == [
        {"prompt": "Which answer is best?", "completions": ["answer 0", "answer 1", "answer 2"], "ranks": [1, 2, 3]},
        {"prompt": "Which answer is best?", "completions": ["answer 0", "answer 1", "answer 2"], "ranks": [2, 1, 3]},
    ]
    assert [r["rater"] for r in per_rater] == ["r1", "r2"]
    # consensus over all three: mean ranks 4/3, 4/3, 7/3 -> 1, 1, 3
    assert store.export_rankings("majority")[0]["ranks"] == [1, 1, 3]


def test_gold_tasks_are_left_out_unless_asked_for(prompt_with, judge):
    store, ids = prompt_with(2, raters=("r1",), gold_rate=1.0)
    store.create_tasks("pairwise", judgements_per_task=1, tasks_per_prompt=0, gold=[[ids[0], ids[1]]])
    judge(store, "r1", winner=ids[0])
    assert store.export_preferences() == []
    assert len(store.export_preferences(include_gold=True)) == 1


def test_unknown_mode_is_a_data_error(prompt_with):
    store, _ = prompt_with(2)
    with pytest.raises(Exception, match="export mode must be one of"):
        store.export_preferences("average")


@pytest.fixture
def judged_db(prompt_with, judge, store_url) -> str:
    """The store's file path or URL (what --db takes) after two raters ranked one task alike."""
    store, ids = prompt_with(3, raters=("r1", "r2"))
    store.create_tasks("ranking", k=3, judgements_per_task=2)
    for name in ("r1", "r2"):
        judge(store, name, rank_of={ids[0]: 3, ids[1]: 1, ids[2]: 2})
    store.close()
    return store_url


def test_cli_export_writes_preference_and_ranking_jsonl(judged_db, tmp_path, capsys):
    prefs, ranks = tmp_path / "prefs.jsonl", tmp_path / "rankings.jsonl"
    args = ["export", "--db", str(judged_db), "--out", str(prefs), "--mode", "per-rater", "--rankings", str(ranks)]
    assert main(args) == 0
    rows = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert len(rows) == 6 and all(list(r)[:4] == ["prompt", "chosen", "rejected", "margin"] for r in rows)
    rankings = [json.loads(line) for line in ranks.read_text().splitlines()]
    assert rankings[0]["completions"] == ["answer 0", "answer 1", "answer 2"] and rankings[0]["ranks"] == [3, 1, 2]
    assert list(rankings[0]) == ["prompt", "completions", "ranks", "rater", "rationale", "flags"]
    assert "wrote 6 preference rows" in capsys.readouterr().out


def test_cli_stats_agreement_and_users(judged_db, tmp_path, capsys, monkeypatch):
    assert main(["stats", "--db", str(judged_db)]) == 0
    assert json.loads(capsys.readouterr().out)["tasks_complete"] == 1
    report_path = tmp_path / "report.json"
    assert main(["agreement", "--db", str(judged_db), "--out", str(report_path)]) == 0
    assert json.loads(report_path.read_text())["pairwise_agreement"] == 1.0
    capsys.readouterr()
    assert main(["users", "add", "boss", "--role", "admin", "--password", "s3cret", "--db", str(judged_db)]) == 0
    monkeypatch.setenv("ANNOTATION_PASSWORD", "from-env")
    assert main(["users", "add", "eve", "--db", str(judged_db)]) == 0
    assert main(["users", "add", "eve", "--db", str(judged_db)]) == 2
    assert "already exists" in capsys.readouterr().err
    from alignment.annotations import AnnotationStore

    store = AnnotationStore(judged_db)
    assert store.authenticate("boss", "s3cret") and store.role("boss") == "admin"
    assert store.authenticate("eve", "from-env") and store.role("eve") == "rater"


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ANNOTATION_PASSWORD"}
    result = subprocess.run(
        [sys.executable, "-m", "alignment.annotations", "users", "add", "x", "--db", str(tmp_path / "a.db")],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "give --password or set $ANNOTATION_PASSWORD" in result.stderr and "Traceback" not in result.stderr
