"""Fast units: simulated raters on a real SQLite store, pipeline recipe validation, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from alignment.annotations.store import AnnotationStore
from alignment.errors import RecipeError
from alignment.stats import bootstrap_ci
from alignment.pipeline import load_pipeline, select_stages
from alignment.simulate import SimulationArguments, judge, ranks_from_scores, simulate


def longer_is_better(prompts, responses):
    return [float(len(r)) for r in responses]


def test_ranks_with_ties_are_competition_ranks():
    assert ranks_from_scores(np.array([0.1, 0.9, 0.5]), tie=0.0) == [3, 1, 2]
    assert ranks_from_scores(np.array([0.5, 0.9, 0.51]), tie=0.05) == [2, 1, 2]


def test_pairwise_judgement_strength_and_tie():
    from alignment.annotations.store import CandidateView, TaskView

    view = TaskView(1, "pairwise", "p", [CandidateView(1, "A", "x"), CandidateView(2, "B", "y")])
    assert judge(view, np.array([2.0, 0.5]), 0.02) == {"choice": "A", "strength": "much"}
    assert judge(view, np.array([0.0, 0.3]), 0.02) == {"choice": "B", "strength": "slightly"}
    assert judge(view, np.array([0.3, 0.31]), 0.02) == {"choice": "tie"}


def test_simulated_raters_fill_the_queue_through_the_store(tmp_path):
    store = AnnotationStore(str(tmp_path / "a.db"))
    for i in range(5):
        pid = store.add_prompt(f"prompt {i}")
        store.add_candidates(pid, [{"text": "x" * n, "policy": "p"} for n in (3, 10, 30, 60)])
    store.create_tasks("ranking", k=4, judgements_per_task=2)
    made = simulate(store, longer_is_better, SimulationArguments(raters=3, noise=0.0, disagreement=0.0, tie_threshold=0.0))
    assert made == 10
    progress = store.progress()
    assert progress["tasks_complete"] == progress["tasks"] == 5
    prefs = store.export_preferences(mode="per-rater")
    assert len(prefs) == 10 * 6  # C(4,2) untied pairs per judgement
    assert all(len(p["chosen"]) > len(p["rejected"]) for p in prefs)
    assert simulate(store, longer_is_better, SimulationArguments(raters=3)) == 0  # nothing left to do


def _write(tmp_path, stages):
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "stages": stages}))
    return str(path)


def test_pipeline_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match=r"stages\[0\]: unknown key 'recipie'\. Did you mean 'recipe'\?"):
        load_pipeline(_write(tmp_path, [{"name": "sft", "recipie": "x.yaml"}]))
    with pytest.raises(RecipeError, match=r"stages\[0\] \(sft\): recipe not found: nope\.yaml"):
        load_pipeline(_write(tmp_path, [{"name": "sft", "recipe": "nope.yaml"}]))
    with pytest.raises(RecipeError, match="stages must run in the order"):
        load_pipeline(_write(tmp_path, [{"name": "rm"}, {"name": "sft"}]))
    with pytest.raises(RecipeError, match=r"key 'name': expected one of"):
        load_pipeline(_write(tmp_path, [{"name": "train"}]))
    with pytest.raises(RecipeError, match="--from dpo: not a stage"):
        select_stages(["sft", "rm"], "dpo", None)
    assert select_stages(["sft", "rm", "dpo"], "rm", None) == {"rm", "dpo"}
    assert select_stages(["sft", "rm", "dpo"], None, "sft") == {"sft"}


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(0).normal(1.0, 1.0, 400)
    lo, hi = bootstrap_ci(values, 500)
    assert lo < values.mean() < hi and hi - lo < 0.4


def test_pipeline_wires_ppo_to_the_learnt_reward_model(tmp_path):
    """Whatever reward the PPO recipe names (here a classifier label), the pipeline's PPO optimises its own RM."""
    from alignment.data import DataArguments
    from alignment.models import ModelArguments
    from alignment.pipeline import PipelineSpec, StageSpec, as_flags, wiring
    from alignment.ppo.args import PPOConfig
    from alignment.training import ResumeArguments, parse_stage

    root = tmp_path / "pipe"
    (root / "rm").mkdir(parents=True)
    (root / "sft").mkdir()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The plot"}\n')
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": "x", "dataset_path": str(prompts), "reward_model": "clf",
                                      "reward_label": "positive"}))
    keys = wiring(StageSpec(name="ppo"), root, {"sft", "rm", "ppo"}, PipelineSpec())
    classes = (ModelArguments, DataArguments, ResumeArguments, PPOConfig)
    _, _, _, config = parse_stage([str(recipe), *as_flags(keys)], "ppo", classes)
    assert config.reward_model == str(root / "rm") and config.reward_label is None and config.reward_function is None
    assert keys["model_name_or_path"] == str(root / "sft") and config.output_dir == str(root / "ppo")
