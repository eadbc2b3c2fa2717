"""Each kind of bad row stops loading with a message naming the file and line (or row); skip mode reports them."""

from __future__ import annotations

import re

import pytest

from alignment.data import read_rows
from alignment.errors import DataError

GOOD = '{"text": "fine", "label": "pos"}\n'


def raises_at(files, load, name: str, content: str | bytes, task: str, where: str, message: str, **keys):
    """Writes the file, loads it, and checks the DataError: '<path> <where>: <message>'."""
    path = files.raw(name, content) if isinstance(content, bytes) else files.text(name, content)
    with pytest.raises(DataError, match="^" + re.escape(f"{path} {where}: {message}")):
        load(task, dataset_path=path, **keys)


def test_bad_json_line(files, load):
    raises_at(files, load, "train.jsonl", GOOD + '{"text": "broken", "label": \n', "classification",
              "line 2", "invalid JSON: Expecting value (column 29)")


def test_json_line_that_is_not_an_object(files, load):
    raises_at(files, load, "train.jsonl", GOOD + '["text", "label"]\n', "classification",
              "line 2", "expected a JSON object, got list")


def test_missing_column(files, load):
    raises_at(files, load, "train.jsonl", GOOD * 6 + '{"text": "no label here"}\n', "classification",
              "line 7", "column 'label' is missing (expected: text, label)")


def test_missing_column_names_the_mapped_source_columns(files, load):
    raises_at(files, load, "train.jsonl", '{"review": "a", "stars": 1}\n{"review": "b"}\n', "classification",
              "line 2", "column 'stars' is missing (expected: review, stars)", text_column="review", label_column="stars")


def test_wrong_type(files, load):
    raises_at(files, load, "train.jsonl", GOOD + '{"text": 42, "label": "neg"}\n', "classification",
              "line 2", "column 'text' must be a string, got int")


def test_wrong_label_type(files, load):
    raises_at(files, load, "train.jsonl", GOOD + '{"text": "a", "label": [1]}\n', "classification",
              "line 2", "column 'label' must be a class name or an integer id, got list [1]")


def test_empty_text_when_drop_empty_is_off(files, load):
    raises_at(files, load, "train.jsonl", GOOD + '{"text": "  ", "label": "neg"}\n', "classification",
              "line 2", "column 'text' is empty", drop_empty=False)


def test_unknown_label(files, load):
    raises_at(files, load, "train.jsonl", GOOD + '{"text": "meh", "label": "neutral"}\n', "classification",
              "line 2", "unknown label 'neutral' (label names: neg, pos)", label_names=["neg", "pos"])


def test_identical_chosen_and_rejected(files, load):
    raises_at(files, load, "pairs.jsonl", '{"prompt": "q", "chosen": "same", "rejected": "same"}\n', "preference",
              "line 1", "chosen and rejected are identical")


def test_identical_hh_transcripts(files, load):
    transcript = "\\n\\nHuman: hi\\n\\nAssistant: hello"
    raises_at(files, load, "hh.jsonl", f'{{"chosen": "{transcript}", "rejected": "{transcript}"}}\n', "preference",
              "line 1", "chosen and rejected are identical")


def test_non_numeric_margin(files, load):
    raises_at(files, load, "pairs.jsonl", '{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}\n',
              "preference", "line 1", "column 'margin' must be a number, got 'big'")


def test_bad_utf8_in_jsonl(files, load):
    raises_at(files, load, "train.jsonl", GOOD.encode() + b'{"text": "caf\xe9", "label": "pos"}\n', "classification",
              "line 2", "not valid UTF-8 (byte 0xe9 at offset 13); save the file as UTF-8")


def test_bad_utf8_in_csv(files, load):
    raises_at(files, load, "train.csv", b"text,label\nok,pos\ncaf\xe9,neg\n", "classification",
              "line 3", "not valid UTF-8 (byte 0xe9 at offset 3); save the file as UTF-8")


def test_csv_row_with_wrong_field_count(files, load):
    raises_at(files, load, "train.tsv", "label\tsentence\n0\ta\tb\n", "classification",
              "line 2", "expected 2 fields (label, sentence), got 3", text_column="sentence")


def test_ranking_with_wrong_number_of_ranks(files, load):
    raises_at(files, load, "ranks.jsonl", '{"prompt": "q", "completions": ["a", "b", "c"], "ranks": [1, 2]}\n',
              "preference", "line 1", "column 'ranks' has 2 entries but column 'completions' has 3")


def test_ranking_with_identical_completions_ranked_differently(files, load):
    raises_at(files, load, "ranks.jsonl", '{"prompt": "q", "completions": ["a", "a"], "ranks": [1, 2]}\n',
              "preference", "line 1", "completions 0 and 1 are identical but ranked differently")


def test_json_array_item_is_identified_by_row_index(files, load):
    raises_at(files, load, "train.json", '[{"text": "a", "label": 1}, {"text": "b"}]', "classification",
              "row 1", "column 'label' is missing (expected: text, label)")


def test_rows_of_different_shapes_in_one_file(files, load):
    raises_at(files, load, "p.jsonl", '{"prompt": "q", "completion": "a"}\n{"prompt": [{"role": "user", "content": "q"}], '
              '"completion": "a"}\n', "sft", "line 2",
              "has prompt (messages), completion (messages) but earlier rows have prompt (string), completion (string)")


def test_error_message_suggests_skip_mode(files, load):
    path = files.text("train.jsonl", '{"text": 1, "label": 0}\n')
    with pytest.raises(DataError, match=r"\(set on_bad_rows: skip to leave such rows out\)$"):
        load("classification", dataset_path=path)


def test_read_rows_raises_at_the_first_bad_row(files):
    path = files.text("d.jsonl", '{"a": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"d\.jsonl line 2: invalid JSON"):
        read_rows(path)


def test_skip_mode_leaves_bad_rows_out_and_reports_them(files, load, report_line):
    lines = [GOOD] * 10
    lines[2] = '{"text": "broken\n'  # bad JSON, line 3
    lines[4] = '{"text": "only text"}\n'  # missing label, line 5
    lines[6] = '{"text": 7, "label": "neg"}\n'  # wrong type, line 7
    lines[8] = '{"text": "meh", "label": "other"}\n'  # unknown label, line 9
    path = files.text("train.jsonl", "".join(lines))
    prepared = load("classification", dataset_path=path, on_bad_rows="skip", label_names=["neg", "pos"])
    assert len(prepared.splits["train"]) == 6
    line = report_line(prepared, "on_bad_rows:")
    assert line.startswith(f"on_bad_rows: skipped 4 bad rows in {path}: line 3: invalid JSON")
    assert [int(number) for number in re.findall(r"line (\d+):", line)] == [3, 5, 7, 9]
    assert "line 5: column 'label' is missing" in line and "line 9: unknown label 'other'" in line


def test_skip_mode_report_shows_only_the_first_few(files, load, report_line):
    path = files.text("train.jsonl", GOOD + '{"text": 1, "label": "pos"}\n' * 8)
    line = report_line(load("classification", dataset_path=path, on_bad_rows="skip"), "on_bad_rows:")
    assert re.findall(r"line (\d+):", line) == ["2", "3", "4", "5", "6"]
    assert line.startswith("on_bad_rows: skipped 8 bad rows") and line.endswith("; and 3 more")
