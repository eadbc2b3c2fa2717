"""DataArguments follows the recipe rules: every field has a default and help, and maps onto the data layer."""

from __future__ import annotations

import dataclasses

from alignment.data import DataArguments
from alignment.data.args import column_map


def test_every_field_has_a_default_and_help():
    for field in dataclasses.fields(DataArguments):
        assert field.default is not dataclasses.MISSING, field.name
        assert field.metadata.get("help", "").strip(), field.name


def test_column_map_covers_every_column_key():
    args = DataArguments(text_column="sentence", ranks_column="order")
    mapping = column_map(args)
    assert mapping["text"] == "sentence" and mapping["ranks"] == "order" and mapping["label"] == "label"
    assert set(mapping) == {"text", "label", "prompt", "completion", "messages", "chosen", "rejected", "margin",
                            "completions", "ranks", "instruction", "input", "output"}
