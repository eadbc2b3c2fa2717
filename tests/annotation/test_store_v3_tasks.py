"""Task files (import_tasks, import_gold), task sets, guidelines, what a rater sees, progress with skips and quotas."""

from __future__ import annotations

import uuid

import pytest

from alignment.errors import DataError


def sid() -> str:
    return str(uuid.uuid4())


ROWS = [
    {"prompt": "Name a colour.", "candidates": ["red", {"text": "blue", "policy": "sft", "sampling": {"t": 0.7}}, "green"]},
    {"prompt": "Name a fruit.", "completions": ["apple", "pear", "plum"], "ranks": [1, 2, 3],
     "instructions": "Prefer **common** fruit."},
]  # fmt: skip


def test_ranking_import_makes_one_task_per_row_and_a_second_import_adds_nothing(make_store):
    store = make_store()
    counts = store.import_tasks(ROWS, task_set="colours", instructions="Pick the *best*.", source="t.jsonl")
    assert counts == {"prompts": 2, "candidates": 6, "tasks": 2}
    assert store.import_tasks(ROWS, task_set="colours", source="t.jsonl") == {"prompts": 0, "candidates": 0, "tasks": 0}
    assert store.import_tasks(ROWS, task_set="other", source="t.jsonl")["tasks"] == 2  # another set is new work
    listed = store.tasks("colours")
    assert [(t["kind"], t["candidates"], t["judgements_needed"], t["is_gold"]) for t in listed] == [
        ("ranking", 3, 3, False), ("ranking", 3, 3, False)
    ]  # fmt: skip
    assert listed[0]["prompt"] == "Name a colour." and len(store.tasks()) == 4
    store.add_user("r1", "rater", "pw")
    view = store.next_task("r1")
    assert (view.task_set, view.instructions, view.rating_scale) == ("colours", "Pick the *best*.", None)
    store.submit("r1", view.task_id, sid(), skip=True)
    second = store.next_task("r1")
    assert second.instructions == "Prefer **common** fruit."  # a row's own instructions win


def test_k_samples_candidates_and_pairwise_rows_need_two_unless_k_pairs_are_asked_for(make_store):
    store = make_store()
    assert store.import_tasks(ROWS, task_set="k2", k=2, source="t")["tasks"] == 2
    assert all(t["candidates"] == 2 for t in store.tasks("k2"))
    assert store.import_tasks(ROWS, task_set="k2", k=2, source="t")["tasks"] == 0  # the same sample again
    with pytest.raises(DataError, match=r"^t row 1: a pairwise task needs exactly 2 candidates, got 3"):
        store.import_tasks(ROWS, task_set="pairs", kind="pairwise", source="t")
    assert store.import_tasks(ROWS, task_set="pairs", kind="pairwise", k=3, source="t")["tasks"] == 6
    two = [{"prompt": "Hi?", "candidates": ["hello", "hey"]}]
    assert store.import_tasks(two, task_set="pairs2", kind="pairwise", source="t")["tasks"] == 1


def test_a_bad_row_names_the_file_and_row_and_stores_nothing(make_store, db):
    store = make_store(max_text_chars=50)
    bad_rows = [
        ("not an object", r"expected an object with \"prompt\""),
        ({"prompt": "", "candidates": ["a", "b"]}, r"\"prompt\" must be a non-empty string"),
        ({"prompt": "p"}, r"expected a \"candidates\" \(or \"completions\"\) list"),
        ({"prompt": "p", "candidates": ["a", 3]}, r"candidate 2: expected a text string"),
        ({"prompt": "p", "candidates": ["a", "b", "a"]}, r"candidates 1 and 3 have the same text"),
        ({"prompt": "p", "candidates": ["a"]}, r"a ranking task needs at least 2 candidates, got 1"),
        ({"prompt": "p", "candidates": ["a", "x" * 51]}, r"candidate 2 is 51 characters long; the limit is 50"),
        ({"prompt": "p", "candidates": ["a", "b"], "instructions": 7}, r"the instructions: expected a string"),
    ]
    for row, message in bad_rows:
        with pytest.raises(DataError, match=rf"^tasks.jsonl row 3: {message}"):
            store.import_tasks([ROWS[0], {"prompt": "ok", "candidates": ["a", "b"]}, row], task_set="s",
                               source="tasks.jsonl")  # fmt: skip
    assert [db.scalar(f"select count(*) from {t}") for t in ("prompts", "candidates", "tasks")] == [0, 0, 0]
    for options, message in (
        ({"kind": "essay"}, "kind must be one of pairwise, ranking, rating"),
        ({"task_set": ""}, "the task set name must be 1..200 characters"),
        ({"judgements_per_task": 0}, "judgements_per_task must be a whole number >= 1"),
        ({"kind": "rating", "rating_scale": "stars"}, "rating_scale must be one of binary, likert5"),
        ({"k": 1}, r"k \(candidates per task, >= 2\) got 1"),
    ):
        with pytest.raises(DataError, match=f"^f.jsonl: {message}"):
            store.import_tasks([ROWS[0]], **({"task_set": "s"} | options), source="f.jsonl")


def test_gold_rows_make_gold_tasks_with_their_answers_and_the_sets_instructions(make_store, judge):
    store = make_store(gold_rate=1.0)
    store.import_tasks(ROWS[:1], task_set="colours", instructions="Pick the best.", source="t")
    gold = [{"prompt": "Name a colour.", "completions": ["green", "red"], "ranks": [2, 1]}]
    assert store.import_gold(gold, task_set="colours", kind="pairwise", source="g") == {
        "prompts": 0, "candidates": 0, "tasks": 1
    }  # fmt: skip
    assert store.import_gold(gold, task_set="colours", kind="pairwise", source="g")["tasks"] == 0
    store.add_user("r1", "rater", "pw")
    view = store.next_task("r1")
    assert view.kind == "pairwise" and view.instructions == "Pick the best."
    red = next(c.id for c in view.candidates if c.text == "red")
    store.submit("r1", view.task_id, sid(), choice=view.label_of(red), strength="clearly")
    assert store.agreement_report()["gold_accuracy"] == {"r1": {"items": 1, "accuracy": 1.0}}
    for row, message in (
        ({"prompt": "p", "completions": ["a", "b"]}, r"\"ranks\" must give each of the 2 candidates"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [1, 1]}, r"\"ranks\" are all equal"),
        ({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [1, 2, 3]}, "a pairwise task needs exactly 2 candidates, got 3$"),
    ):
        with pytest.raises(DataError, match=f"^g row 1: {message}"):
            store.import_gold([row], task_set="colours", kind="pairwise", source="g")
    with pytest.raises(DataError, match="gold tasks are 'pairwise' or 'ranking'"):
        store.import_gold(gold, task_set="colours", kind="rating", source="g")


def test_task_sets_count_tasks_judgements_gold_and_flags(make_store, judge):
    store = make_store()
    store.import_tasks(ROWS, task_set="a", judgements_per_task=1, source="t")
    store.import_tasks(ROWS[:1], task_set="b", kind="rating", judgements_per_task=2, source="t")
    store.import_gold([{"prompt": "Q", "completions": ["x", "y"], "ranks": [1, 2]}], task_set="a", source="g")
    store.add_user("r1", "rater", "pw")
    judge(store, "r1", ranks=[1, 2, 3], flags=["broken"])
    sets = {(s["task_set"], s["kind"]): s for s in store.task_sets()}
    assert sets["a", "ranking"] == {
        "task_set": "a", "kind": "ranking", "tasks": 2, "tasks_complete": 1, "judgements": 1,
        "judgements_needed": 2, "gold_tasks": 1, "flagged_tasks": 1,
    }  # fmt: skip
    assert sets["b", "rating"]["tasks"] == 3 and sets["b", "rating"]["judgements_needed"] == 6
    overall = store.progress()
    assert overall["tasks"] == 5 and overall["gold_tasks"] == 1 and overall["per_task_set"] == store.task_sets()
    assert [t["flagged"] for t in store.tasks("a")][:1] == [1]


def test_guidelines_are_stored_and_replaced(make_store):
    store = make_store()
    assert store.guidelines() == ""
    store.set_guidelines("# Rules\nBe fair.")
    store.set_guidelines("# Rules\nBe kind.")
    assert store.guidelines() == "# Rules\nBe kind."


def test_progress_counts_skips_and_stops_at_the_quota(make_store, judge):
    store = make_store()
    store.import_tasks([{"prompt": f"p{i}", "candidates": ["a", "b"]} for i in range(5)], task_set="s",
                       kind="pairwise", source="t")  # fmt: skip
    store.add_user("r1", "rater", "pw", quota=3)
    store.add_user("r2", "rater", "pw")
    assert store.progress("r1") == {"rater": "r1", "done": 0, "skipped": 0, "remaining": 3, "quota": 3, "total": 3}
    judge(store, "r1", skip=True)
    judge(store, "r1", choice="tie")
    assert store.progress("r1") == {"rater": "r1", "done": 1, "skipped": 1, "remaining": 1, "quota": 3, "total": 3}
    judge(store, "r1", choice="tie")
    assert store.next_task("r1") is None
    assert store.progress("r1")["remaining"] == 0
    store.undo_last("r1")  # the undone task is served again: the quota counts current judgements
    assert store.next_task("r1") is not None
    store.set_quota("r1", None)
    assert store.progress("r1")["total"] == 2 + store.progress("r1")["remaining"]
    assert store.progress("r2") == {"rater": "r2", "done": 0, "skipped": 0, "remaining": 5, "quota": None, "total": 5}
