"""DataArguments follows the recipe rules: every field has a default and help, and maps onto the data layer."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from alignment.config import parse_recipe, to_dict
from alignment.data import DataArguments
from alignment.data.args import MixtureEntry, column_map
from alignment.errors import RecipeError


def test_every_field_has_a_default_and_help():
    for field in dataclasses.fields(DataArguments):
        assert field.default is not dataclasses.MISSING, field.name
        assert field.metadata.get("help", "").strip(), field.name


def test_column_map_covers_every_column_key():
    args = DataArguments(dataset_path="a.jsonl", text_column="sentence", ranks_column="order")
    mapping = column_map(args)
    assert mapping["text"] == "sentence" and mapping["ranks"] == "order" and mapping["label"] == "label"
    assert set(mapping) == {"text", "label", "prompt", "completion", "messages", "chosen", "rejected", "margin",
                            "completions", "ranks", "instruction", "input", "output"}


@pytest.mark.parametrize("keys, message", [
    ({"max_samples": 0}, "max_samples: must be positive"),
    ({"datasets": [{"path": "a.jsonl", "rows": 2, "weight": 0.5}]}, "datasets entry 1: give weight or rows, not both"),
    ({"datasets": [{"path": "a.jsonl", "text_colum": "x"}]}, "datasets entry 1: unknown key 'text_colum'. Did you mean 'text_column'"),
    ({"datasets": [{"path": "a.jsonl", "split": "test"}]}, "datasets: no entry feeds the train split"),
])
def test_bad_data_keys_stop_the_parse_naming_the_recipe(tmp_path, keys, message):
    """Checked where the keys are declared, when the recipe is read: before any model or data loads."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"dataset_path": "a.jsonl", **keys} if "datasets" not in keys else keys))
    with pytest.raises(RecipeError, match=rf"^{recipe}: invalid DataArguments: {message}"):
        parse_recipe([str(recipe)], (DataArguments,))


def test_mixture_entries_are_dataclasses_that_write_back_what_they_set(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    entries = [{"path": "a.jsonl", "weight": 0.25, "format": "text", "text_column": "content"},
               {"path": "b.jsonl"}, {"path": "dev.jsonl", "split": "validation"}]
    recipe.write_text(yaml.safe_dump({"datasets": entries}))
    (args,) = parse_recipe([str(recipe)], (DataArguments,))
    assert all(isinstance(e, MixtureEntry) for e in args.datasets)
    assert args.datasets[0].source_keys() == {"data_format": "text", "text_column": "content"}
    written = to_dict(args)["datasets"]
    assert written == [{"path": "a.jsonl", "weight": 0.25, "data_format": "text", "text_column": "content"},
                       {"path": "b.jsonl"}, {"path": "dev.jsonl", "split": "validation"}]
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(yaml.safe_dump(to_dict(args)))
    (again,) = parse_recipe([str(resolved)], (DataArguments,))
    assert again.datasets == args.datasets
