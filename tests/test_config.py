"""Recipe parsing: every bad recipe fails with one clear RecipeError before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from trl import SFTConfig

from alignment.config import coerce, parse_overrides, parse_recipe
from alignment.data import DataArguments
from alignment.errors import RecipeError
from alignment.models import ModelArguments
from alignment.training import parse_stage


@dataclass
class Small:
    rate: float = field(default=0.1)
    steps: int = field(default=3)
    name: str | None = None
    mode: Literal["a", "b"] = "a"
    tags: list[str] | None = None
    flag: bool = False


def write(tmp_path, text: str):
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return str(p)


def test_values_flags_and_precedence(tmp_path):
    recipe = write(tmp_path, "rate: 1e-4\nsteps: 7\ntags: [x, y]\n")  # PyYAML reads 1e-4 as a string
    (small,) = parse_recipe([recipe, "--steps", "9", "--flag"], (Small,), defaults={"mode": "b", "steps": 1})
    assert small.rate == pytest.approx(1e-4)
    assert small.steps == 9 and small.flag is True and small.mode == "b" and small.tags == ["x", "y"]


def test_unknown_key_names_file_key_and_closest(tmp_path):
    recipe = write(tmp_path, "rte: 0.1\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml: unknown key 'rte'\. Did you mean 'rate'\?"):
        parse_recipe([recipe], (Small,))


def test_wrong_type_names_key_and_expectation(tmp_path):
    recipe = write(tmp_path, "steps: many\n")
    with pytest.raises(RecipeError, match=r"key 'steps': expected an integer, got 'many'"):
        parse_recipe([recipe], (Small,))
    with pytest.raises(RecipeError, match=r"key 'mode': expected one of 'a', 'b', got 'c'"):
        parse_recipe([recipe, "--steps", "1", "--mode", "c"], (Small,))


def test_invalid_yaml_and_missing_recipe(tmp_path):
    recipe = write(tmp_path, "rate: [1, 2\nsteps: 3\n")
    with pytest.raises(RecipeError, match=r"recipe\.yaml line \d+, column \d+: invalid YAML"):
        parse_recipe([recipe], (Small,))
    with pytest.raises(RecipeError, match="Recipe file not found: .*nope.yaml"):
        parse_recipe([str(tmp_path / "nope.yaml")], (Small,))
    with pytest.raises(RecipeError, match="must be a mapping"):
        parse_recipe([write(tmp_path, "- a\n- b\n")], (Small,))


def test_missing_data_file_reported_by_path(tmp_path):
    recipe = write(tmp_path, f"dataset_path: {tmp_path}/missing/train.jsonl\n")
    with pytest.raises(RecipeError, match=r"key 'dataset_path': path does not exist: .*missing/train\.jsonl"):
        parse_stage([recipe], "sft", (ModelArguments, DataArguments, SFTConfig))


def test_stage_recipe_uses_trl_dataclasses(tmp_path):
    recipe = write(tmp_path, "learning_rate: 3e-4\nlora_r: 4\nmethod: qlora\nmax_length: 128\n")
    model_args, _, config = parse_stage([recipe, "--num_train_epochs", "2"], "sft", (ModelArguments, DataArguments, SFTConfig))
    assert isinstance(config, SFTConfig) and config.learning_rate == pytest.approx(3e-4) and config.num_train_epochs == 2
    assert model_args.load_in_4bit and model_args.use_peft and model_args.lora_r == 4
    assert config.output_dir.startswith("runs/sft-")


def test_label_names_are_class_names_not_the_trainers_label_keys(tmp_path):
    """transformers' TrainingArguments.label_names (input keys) must not take the data layer's class names."""
    recipe = write(tmp_path, "label_names: [negative, positive]\n")
    _, data_args, config = parse_stage([recipe], "sft", (ModelArguments, DataArguments, SFTConfig))
    assert data_args.label_names == ["negative", "positive"] and config.label_names is None


def test_invalid_combination_is_a_recipe_error(tmp_path):
    recipe = write(tmp_path, "method: full\nload_in_4bit: true\n")
    with pytest.raises(RecipeError, match="invalid ModelArguments: a 4-bit base cannot be fully fine-tuned"):
        parse_stage([recipe], "sft", (ModelArguments, DataArguments, SFTConfig))


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["--a", "1", "--b=true", "--c", "[1, 2]", "--d"]) == {"a": 1, "b": True, "c": [1, 2], "d": True}
    with pytest.raises(RecipeError, match="overrides are written --key value"):
        parse_overrides(["oops"])


def test_coerce_rejects_bool_for_int():
    with pytest.raises(TypeError):
        coerce(True, int)
    assert coerce("2.5", float | None) == 2.5


def test_sft_groups_batches_by_length_unless_the_recipe_says_otherwise(tmp_path):
    from alignment.sft import DEFAULTS

    recipe = write(tmp_path, "learning_rate: 1e-4\n")
    classes = (ModelArguments, DataArguments, SFTConfig)
    *_, config = parse_stage([recipe], "sft", classes, DEFAULTS)
    assert config.train_sampling_strategy == "group_by_length"
    *_, config = parse_stage([recipe, "--train_sampling_strategy", "random"], "sft", classes, DEFAULTS)
    assert config.train_sampling_strategy == "random"
    with pytest.raises(RecipeError, match="train_sampling_strategy"):
        parse_stage([recipe, "--train_sampling_strategy", "by_length"], "sft", classes, DEFAULTS)
