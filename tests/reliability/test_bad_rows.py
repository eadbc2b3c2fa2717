"""Every class of malformed data row, loaded the way a stage loads it (recipe → parse_stage → load_data), stops with
a DataError naming the file and the line; the rm CLI reports it as one `error:` line before any model loads."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from alignment.data import load_data
from alignment.errors import DataError
from alignment.training import parse_stage
from reliability.support import error_lines, record, stage_classes

from helpers import run_stage

TASKS = {"sft": "sft", "rm": "preference", "dpo": "preference", "classify": "classification"}
CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
PAIR = {"prompt": "Hi", "chosen": "Hello! How can I help?", "rejected": "What."}
REVIEW = {"text": "Lovely film.", "label": "pos"}
RANKING = {"prompt": "Hi", "completions": ["Hello!", "Hey.", "What."], "ranks": [1, 2, 3]}


def lines(*rows: dict | str) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


# name: (stage, file content, recipe keys, bad line, what the message says)
BAD_ROWS = {
    "bad-json-line": ("sft", lines(CHAT, '{"messages": [{"role": "user",'), {}, 2, "invalid JSON"),
    "missing-column": ("rm", lines(PAIR, PAIR | {"prompt": "Hey"}, {"prompt": "Yo", "chosen": "Hi"}), {}, 3,
                       "column 'rejected' is missing"),
    "wrong-type": ("dpo", lines(PAIR, PAIR | {"chosen": 42}), {}, 2, "column 'chosen' must be a string or a list of messages, got int"),
    "empty-text": ("classify", lines(REVIEW, REVIEW | {"text": "  "}), {"drop_empty": False}, 2, "column 'text' is empty"),
    "unknown-label": ("classify", lines(REVIEW, REVIEW | {"label": "neutral"}), {"label_names": ["neg", "pos"]}, 2,
                      "unknown label 'neutral'"),
    "identical-pair": ("dpo", lines(PAIR, PAIR | {"rejected": PAIR["chosen"]}), {}, 2, "chosen and rejected are identical"),
    "bad-encoding": ("sft", lines(CHAT) + b'{"text": "caf\xe9"}\n', {}, 2, "not valid UTF-8 (byte 0xe9"),
    "ranking-wrong-length": ("rm", lines(RANKING, RANKING | {"ranks": [1, 2]}), {"data_format": "ranking"}, 2,
                             "column 'ranks' has 2 entries but column 'completions' has 3"),
}
named: set[str] = set()


@pytest.mark.parametrize("name", list(BAD_ROWS))
def test_bad_row_names_file_and_line(tmp_path, name):
    stage, content, keys, line, message = BAD_ROWS[name]
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"dataset_path": str(data), "validation_split": 0.0, **keys}))
    classes, defaults = stage_classes(stage)
    data_args = parse_stage([str(recipe)], stage, classes, defaults)[1]
    with pytest.raises(DataError, match="^" + re.escape(f"{data} line {line}: {message}")):
        load_data(data_args, TASKS[stage])
    named.add(name)
    record("bad_rows", classes=len(BAD_ROWS), named_with_file_and_line=len(named))


def test_rm_cli_names_the_bad_ranking_row(tmp_path):
    data = tmp_path / "rankings.jsonl"
    data.write_bytes(BAD_ROWS["ranking-wrong-length"][1])
    proc = run_stage("rm", "recipes/rm/demo.yaml", timeout=300, dataset_path=data, data_format="ranking",
                     output_dir=tmp_path / "run")
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and f"{data} line 2: column 'ranks' has 2 entries" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
