"""The shipped PPO recipes parse with the stage's own classes and defaults; the contract of
tests/reliability/test_recipe_fuzz.py holds for the PPO stage too (parse_stage returns the dataclasses or raises one
RecipeError naming the file), fuzzed from the demo recipe since a PPO recipe must name a reward to parse at all; a
misspelt key gets the closest-key hint."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.data import DataArguments
from alignment.errors import RecipeError
from alignment.models import ModelArguments
from alignment.monitor import MonitorArguments
from alignment.ppo.args import PPOConfig
from alignment.ppo.trainer import STAGE_DEFAULTS
from alignment.training import ResumeArguments, parse_stage

from helpers import ROOT

CLASSES = (ModelArguments, DataArguments, ResumeArguments, MonitorArguments, PPOConfig)
RECIPES = sorted((ROOT / "recipes" / "ppo").glob("*.yaml")) + sorted((ROOT / "recipes" / "grpo").glob("*.yaml"))
DEFAULTS = STAGE_DEFAULTS["ppo"]


def test_there_are_ppo_and_grpo_recipes():
    assert {"ppo/demo.yaml", "ppo/keyword.yaml", "grpo/arithmetic.yaml", "grpo/sentiment.yaml"} <= {
        f"{p.parent.name}/{p.name}" for p in RECIPES
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_parses_into_the_stage_classes(recipe):
    stage = recipe.parent.name
    model, data, resume, _, config = parse_stage([str(recipe)], stage, CLASSES, STAGE_DEFAULTS[stage])
    assert model.method == "qlora" and model.load_in_4bit
    assert Path(ROOT / data.dataset_path).is_file()
    assert sum((config.reward_model is not None, config.reward_function is not None, bool(config.rewards))) == 1
    assert config.batch_size % (config.num_mini_batches * config.gradient_accumulation_steps) == 0
    assert config.batch_size % config.num_generations == 0
    assert config.output_dir.startswith(f"runs/{stage}-")
    assert (config.advantage_estimator == "gae") == (stage == "ppo") == config.critic


def test_demo_recipe_rewards_the_classify_demo_positive_label():
    *_, config = parse_stage([str(ROOT / "recipes" / "ppo" / "demo.yaml")], "ppo", CLASSES, DEFAULTS)
    classify = yaml.safe_load((ROOT / "recipes" / "classify" / "demo.yaml").read_text())
    assert config.reward_model == classify["output_dir"] and config.reward_label == "positive"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_misspelt_key_in_a_ppo_recipe_names_the_closest_key(recipe, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("kl_coef:", "kl_cof:"))
    with pytest.raises(RecipeError, match=rf"{bad}: unknown key 'kl_cof'\. Did you mean 'kl_coef'\?"):
        parse_stage([str(bad)], "ppo", CLASSES, DEFAULTS)


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 100), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(-1, 3), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(["1e-4", "nan", "k3", "k9", "head", "adapter", "lora", "full", "keyword", "subtract", "[", "~"]),
)


def test_demo_recipe_with_random_changes_parses_or_raises_recipe_error(tmp_path):
    demo = yaml.safe_load((ROOT / "recipes" / "ppo" / "demo.yaml").read_text())
    keys = sorted({f.name for cls in CLASSES for f in dataclasses.fields(cls) if f.init})
    path, outcomes = tmp_path / "recipe.yaml", Counter()

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(changes=st.dictionaries(st.sampled_from(keys) | st.text(min_size=1, max_size=10), VALUES, max_size=4))
    def fuzz(changes):
        path.write_text(yaml.safe_dump({**demo, **changes}, allow_unicode=True))
        try:
            parsed = parse_stage([str(path)], "ppo", CLASSES, DEFAULTS)
        except RecipeError as exc:
            outcomes["recipe_errors"] += 1
            assert str(path) in str(exc), exc
            return
        outcomes["parsed"] += 1
        assert [type(p) for p in parsed] == list(CLASSES)

    fuzz()
    assert outcomes["parsed"] > 0 and outcomes["recipe_errors"] > 0, outcomes


@pytest.mark.parametrize("key, value, message", [
    ("per_device_train_batch_size", 8, "use batch_size"),
    ("warmup_ratio", 0.1, "use warmup_steps"),
    ("logging_steps", 3, "every PPO step is logged"),
    ("push_to_hub", True, "a Trainer key the PPO loop does not read"),
])
def test_a_trainer_key_ppo_does_not_read_is_refused_by_name(key, value, message):
    with pytest.raises(RecipeError, match=rf"recipes/ppo/demo.yaml: key '{key}' is not used here: {message}"):
        parse_stage(["recipes/ppo/demo.yaml", f"--{key}", str(value)], "ppo", CLASSES, DEFAULTS)


def test_ppo_reads_its_run_and_optimiser_keys_as_training_arguments(tmp_path):
    """One spelling per idea: warm-up is warmup_steps (a count, or a fraction below 1) as in every stage, and the
    resolved recipe.yaml holds only the keys PPO reads, so it parses again as it is."""
    *_, config = parse_stage(["recipes/ppo/demo.yaml", "--warmup_steps", "0.25", "--adam_beta2", "0.95"], "ppo",
                             CLASSES, DEFAULTS)
    assert config.get_warmup_steps(40) == 10 and config.adam_beta2 == 0.95
    assert config.adam_epsilon == 1e-5  # PPO's default over the Trainer's (1e-8)
    resolved = tmp_path / "recipe.yaml"
    resolved.write_text(yaml.safe_dump(config.to_dict()))
    assert "per_device_train_batch_size" not in config.to_dict()
    *_, again = parse_stage([str(resolved)], "ppo", CLASSES, DEFAULTS)
    assert again.to_dict() == config.to_dict()
