"""Rating tasks and the feedback export, rater stats, flagged judgements, notes and flags in exports, agreement CI."""

from __future__ import annotations

import uuid

import pytest

from alignment.annotations.agreement import pairwise_agreement_ci
from alignment.errors import DataError


def sid() -> str:
    return str(uuid.uuid4())


def rate_all(store, rater, rating, **kwargs) -> None:
    while (view := store.next_task(rater)) is not None:
        store.submit(rater, view.task_id, sid(), rating=rating(view.candidates[0].text), **kwargs)


def test_rating_tasks_take_a_rating_on_their_scale_and_export_as_feedback(make_store):
    store = make_store()
    store.import_tasks([{"prompt": "Say hi.", "candidates": ["hi", "go away", "hello there"]}], task_set="likert",
                       kind="rating", judgements_per_task=1, source="t")  # fmt: skip
    store.import_tasks([{"prompt": "Thanks?", "candidates": ["you're welcome", "no"]}], task_set="thumbs",
                       kind="rating", rating_scale="binary", judgements_per_task=1, source="t")  # fmt: skip
    store.add_user("r1", "rater", "pw")
    view = store.next_task("r1")
    assert view.kind == "rating" and view.rating_scale == "likert5" and len(view.candidates) == 1
    for bad in (None, 0, 6, 2.0, True):
        with pytest.raises(DataError, match=r"^Choose a rating from 1 \(worst\) to 5 \(best\)\.$"):
            store.submit("r1", view.task_id, sid(), rating=bad)
    likert = {"hi": 4, "go away": 1, "hello there": 3}
    binary = {"you're welcome": 1, "no": 0}
    while (view := store.next_task("r1")) is not None:
        text = view.candidates[0].text
        if view.rating_scale == "binary":
            with pytest.raises(DataError, match=r"^Choose thumbs up or thumbs down\.$"):
                store.submit("r1", view.task_id, sid(), rating=5)
        store.submit("r1", view.task_id, sid(), rating=likert.get(text, binary.get(text)))
    assert store.judgements("r1")[0]["rating"] in (0, 1)
    rows = sorted(store.export_feedback(), key=lambda r: r["completion"])
    assert rows == [  # likert 3 is neutral: no row
        {"prompt": "Say hi.", "completion": "go away", "label": False, "rating": 1, "rater": "r1"},
        {"prompt": "Say hi.", "completion": "hi", "label": True, "rating": 4, "rater": "r1"},
        {"prompt": "Thanks?", "completion": "no", "label": False, "rating": 0, "rater": "r1"},
        {"prompt": "Thanks?", "completion": "you're welcome", "label": True, "rating": 1, "rater": "r1"},
    ]
    assert store.export_preferences() == [] and store.export_rankings() == []  # ratings give no pairs


def test_a_flagged_task_is_left_out_of_every_export_unless_asked_for(prompt_with, judge):
    store, ids = prompt_with(3, raters=("r1", "r2"))
    store.create_tasks("ranking", k=3, judgements_per_task=2)
    judge(store, "r1", rank_of={ids[0]: 1, ids[1]: 2, ids[2]: 3}, rationale="0 is clearest")
    judge(store, "r2", rank_of={ids[0]: 1, ids[1]: 3, ids[2]: 2}, flags=["off-topic"])
    assert store.export_preferences() == [] and store.export_rankings() == []
    assert store.export_preferences("per-rater") == [] and store.export_rankings("majority") == []
    majority = store.export_preferences(include_flagged=True)
    assert {(r["chosen"], r["rejected"]): (r["rationales"], r["flags"]) for r in majority} == {
        ("answer 0", "answer 1"): (["0 is clearest"], ["off_topic"]),
        ("answer 0", "answer 2"): (["0 is clearest"], ["off_topic"]),
    }  # answers 1 and 2: an even split, no row
    per_rater = store.export_rankings("per-rater", include_flagged=True)
    assert [(r["rater"], r["rationale"], r["flags"]) for r in per_rater] == [
        ("r1", "0 is clearest", []), ("r2", "", ["off_topic"])
    ]  # fmt: skip
    consensus = store.export_rankings("majority", include_flagged=True)
    assert consensus[0]["rationales"] == ["0 is clearest"] and consensus[0]["flags"] == ["off_topic"]


def test_a_flag_on_a_skip_also_keeps_the_task_out(make_store):
    store = make_store()
    store.import_tasks([{"prompt": "p", "candidates": ["a", "b"]}], task_set="s", kind="rating",
                       judgements_per_task=2, source="t")  # fmt: skip
    for name in ("r1", "r2"):
        store.add_user(name, "rater", "pw")
    rate_all(store, "r1", lambda text: 5)
    view = store.next_task("r2")
    store.submit("r2", view.task_id, sid(), skip=True, flags=["broken"])
    assert len(store.export_feedback()) == 1  # the other task
    assert len(store.export_feedback(include_flagged=True)) == 2


def test_flagged_lists_current_flagged_judgements(prompt_with, judge, clock):
    store, _ = prompt_with(2, raters=("r1", "r2"))
    store.create_tasks("pairwise", judgements_per_task=2)
    judge(store, "r1", choice="tie", flags=["harmful", "broken"], rationale="insults the user")
    clock.advance(1)
    judge(store, "r2", choice="tie")
    (row,) = store.flagged()
    assert row | {"judgement_id": 0, "task_id": 0, "updated_at": ""} == {
        "judgement_id": 0, "task_id": 0, "task_set": "default", "rater": "r1", "flags": ["harmful", "broken"],
        "rationale": "insults the user", "prompt": "Which answer is best?", "updated_at": "",
    }  # fmt: skip
    store.undo_last("r2")
    store.undo_last("r1")
    assert store.flagged() == []  # withdrawn judgements are not current


def test_rater_stats(prompt_with, judge, clock):
    store, ids = prompt_with(3, raters=("r1", "r2", "idle"), gold_rate=1.0)
    store.create_tasks("pairwise", judgements_per_task=2, tasks_per_prompt=3)
    store.create_tasks("pairwise", tasks_per_prompt=0, gold=[[ids[0], ids[1]]])
    judge(store, "r1", winner=ids[0], seconds=10)  # the gold task, right
    clock.advance(2 * 3600)
    judge(store, "r1", choice="tie", seconds=20, flags=["broken"])
    judge(store, "r1", skip=True, seconds=99)
    judge(store, "r2", winner=ids[1], seconds=4)  # the gold task, wrong
    stats = {row["rater"]: row for row in store.rater_stats()}
    assert stats["r1"] == {
        "rater": "r1", "done": 2, "skipped": 1, "median_seconds": 15.0, "judgements_last_hour": 1,
        "gold_items": 1, "gold_accuracy": 1.0, "flags": 1,
    }  # fmt: skip
    assert stats["r2"]["gold_accuracy"] == 0.0 and stats["r2"]["judgements_last_hour"] == 1
    assert stats["idle"] == {
        "rater": "idle", "done": 0, "skipped": 0, "median_seconds": None, "judgements_last_hour": 0,
        "gold_items": 0, "gold_accuracy": None, "flags": 0,
    }  # fmt: skip


def test_agreement_ci_brackets_the_rate_and_is_reproducible(prompt_with, judge):
    assert pairwise_agreement_ci([]) is None and pairwise_agreement_ci([[1]]) is None
    assert pairwise_agreement_ci([[1, 1]] * 5) == [1.0, 1.0]
    units = [[1, 1]] * 30 + [[1, -1]] * 10
    lo, hi = pairwise_agreement_ci(units)
    assert lo < 0.75 < hi and 0.55 < lo and hi < 0.9
    assert pairwise_agreement_ci(units) == [lo, hi] and pairwise_agreement_ci(units, seed=1) != [lo, hi]
    store, ids = prompt_with(3, raters=("r1", "r2"))
    store.create_tasks("ranking", k=3, judgements_per_task=2)
    for name in ("r1", "r2"):
        judge(store, name, rank_of={ids[0]: 1, ids[1]: 2, ids[2]: 3})
    report = store.agreement_report()
    assert report["pairwise_agreement"] == 1.0 and report["pairwise_agreement_ci"] == [1.0, 1.0]
