"""Rounds of the pipeline (fast, no model): recipe checks, the plan, each round's wiring and prompt slice, and a round's
selection on a real SQLite store (budget, seeded, kept on resume, never re-asking a judged set)."""

from __future__ import annotations

import pytest
import yaml

from alignment.annotations.store import AnnotationStore
from alignment.errors import RecipeError
from alignment.pipeline import PipelineSpec, load_pipeline, plan, round_prompt_slices, select_round, wiring

from helpers import ROOT, read_jsonl, write_jsonl

LOOP = [{"name": n} for n in ("sft", "candidates", "annotate", "rm", "ppo", "evaluate")]


def recipe(tmp_path, stages=LOOP, **keys) -> str:
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "stages": stages, **keys}))
    return str(path)


@pytest.mark.parametrize("keys, message", [
    ({"rounds": 2}, "rounds > 1 needs round_prompts"),
    ({"rounds": 0}, "rounds must be >= 1"),
    ({"round_budget": 0}, "round_budget must be >= 1"),
    ({"selection": "uncertainty"}, "chooses within a round_budget"),
    ({"selection": "entropy", "round_budget": 2}, "key 'selection': expected one of"),
    ({"ensemble_members": 1}, "ensemble_members must be >= 2"),
])
def test_round_keys_are_checked_before_anything_runs(tmp_path, keys, message):
    with pytest.raises(RecipeError, match=message):
        load_pipeline(recipe(tmp_path, **keys))


def test_rounds_need_candidates_annotate_and_for_active_selection_an_rm(tmp_path):
    with pytest.raises(RecipeError, match="need a candidates and an annotate stage"):
        load_pipeline(recipe(tmp_path, [{"name": "sft"}, {"name": "ppo"}], rounds=2, round_prompts=4))
    no_rm = [s for s in LOOP if s["name"] != "rm"]
    with pytest.raises(RecipeError, match="add an rm stage"):
        load_pipeline(recipe(tmp_path, no_rm, round_budget=2, selection="disagreement"))


def test_the_plan_runs_sft_once_and_every_later_stage_once_per_round(tmp_path):
    spec, stages = load_pipeline(recipe(tmp_path, rounds=2, round_prompts=4))
    assert [s.key for s in plan(spec, stages)] == ["sft"] + [f"round-{r}/{n}" for r in (1, 2) for n in
                                                            ("candidates", "annotate", "rm", "ppo", "evaluate")]
    one, stages = load_pipeline(recipe(tmp_path))
    assert [s.key for s in plan(one, stages)] == [s["name"] for s in LOOP]  # one round: the layout of old


def test_round_two_samples_from_and_optimises_the_policy_of_round_one(tmp_path):
    spec, stages = load_pipeline(recipe(tmp_path, rounds=3, round_prompts=4, round_budget=2, selection="uncertainty"))
    root, present = tmp_path / "out", {s.name for s in stages}
    by = {s.name: s for s in stages}
    candidates = wiring(by["candidates"], root, present, spec, None, 2)
    assert candidates["policies"] == [str(root / "round-1" / "ppo")] and candidates["db"] == str(root / "annotations.db")
    assert candidates["dataset_path"] == str(root / "round-2" / "prompts.jsonl") and candidates["max_samples"] is None
    assert candidates["tasks_per_prompt"] == 0 and candidates["candidates_out"] == str(root / "round-2" / "candidates.jsonl")
    assert wiring(by["candidates"], root, present, spec, None, 1)["policies"] == [str(root / "sft")]
    ppo = wiring(by["ppo"], root, present, spec, None, 2)
    assert ppo["model_name_or_path"] == str(root / "round-1" / "ppo") and ppo["reward_model"] == str(root / "round-2" / "rm")
    assert wiring(by["rm"], root, present, spec, None, 2)["dataset_path"] == str(root / "round-2" / "preferences.jsonl")
    evaluate = wiring(by["evaluate"], root, present, spec, None, 3)
    assert evaluate["policies"] == [str(root / "sft"), str(root / "round-3" / "ppo")]


def test_each_round_gets_its_own_prompts_and_too_few_prompts_is_a_recipe_error(tmp_path):
    stages = [{"name": "candidates", "recipe": str(ROOT / "recipes/annotation/candidates.yaml"),
               "overrides": {"dataset_path": str(ROOT / "data/prompts/movie_reviews.jsonl"), "max_samples": 5}},
              {"name": "annotate"}]
    spec, parsed = load_pipeline(recipe(tmp_path, stages, rounds=3, round_prompts=40))
    slices = round_prompt_slices(parsed[0], spec)
    assert [len(s) for s in slices] == [40, 40, 40] and not set(slices[0]) & set(slices[1])  # max_samples is per round
    spec, parsed = load_pipeline(recipe(tmp_path, stages, rounds=4, round_prompts=40))
    with pytest.raises(RecipeError, match=r"needs 160 prompts, but the candidates stage's data .* has 120"):
        round_prompt_slices(parsed[0], spec)


def round_store(tmp_path, prompts: int = 5):
    """A store holding round 1's sampled candidates (as the candidates stage leaves them: no tasks) and their file."""
    (tmp_path / "out" / "round-1").mkdir(parents=True)
    store = AnnotationStore(str(tmp_path / "out" / "annotations.db"))
    rows = [{"prompt": f"p{n}", "candidates": [{"text": f"p{n}-{c}", "policy": "sft"} for c in "abc"]} for n in range(prompts)]
    for row in rows:
        store.add_candidates(store.add_prompt(row["prompt"]), row["candidates"])
    sampled = write_jsonl(tmp_path / "out" / "round-1" / "candidates.jsonl", rows)
    store.add_user("r", "rater", "pw")
    return store, {"task_kind": "pairwise", "judgements_per_task": 1, "candidates_out": str(sampled)}


def test_a_round_queues_its_budget_once_and_never_asks_a_judged_set_again(tmp_path):
    spec = PipelineSpec(output_dir=str(tmp_path / "out"), rounds=2, round_prompts=5, round_budget=3)
    store, candidates = round_store(tmp_path)
    assert select_round(store, 1, tmp_path / "out", spec, candidates) == 3
    queued = [(t["task_set"], t["prompt"]) for t in store.tasks()]
    assert len(queued) == 3 and {s for s, _ in queued} == {"round-1"} and len({p for _, p in queued}) == 3
    # a resumed round keeps what it chose
    assert select_round(store, 1, tmp_path / "out", spec, candidates) == 3 and len(store.tasks()) == 3
    # the same seed chooses the same tasks in a fresh store
    other = tmp_path / "again"
    again, _ = round_store(other)
    select_round(again, 1, other / "out", PipelineSpec(output_dir=str(other / "out"), rounds=2, round_prompts=5, round_budget=3), candidates)
    assert sorted(t["prompt"] for t in again.tasks()) == sorted(p for _, p in queued)
    # a judged candidate set is not offered again, in any later round: 5 prompts x 3 pairs, 3 asked in round 1
    asked = []

    def judge_all() -> None:
        while (view := store.next_task("r")) is not None:
            store.submit("r", view.task_id, f"s{view.task_id}", choice="A", strength="clearly")
            asked.append((view.prompt, frozenset(c.text for c in view.candidates)))

    judge_all()
    counts = []
    for number in (2, 3, 4, 5):
        (tmp_path / "out" / f"round-{number}").mkdir()
        sampled = write_jsonl(tmp_path / "out" / f"round-{number}" / "candidates.jsonl", read_jsonl(candidates["candidates_out"]))
        counts.append(select_round(store, number, tmp_path / "out", PipelineSpec(output_dir=str(tmp_path / "out"), rounds=5,
                                   round_prompts=5, round_budget=100), {**candidates, "candidates_out": str(sampled)}))
        judge_all()
    assert counts == [5, 5, 2, 0] and len(asked) == len(set(asked)) == 15
