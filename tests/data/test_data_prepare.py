"""Preparation steps and their report lines, splits, max_samples and mixtures."""

from __future__ import annotations

from collections import Counter

import pytest

from alignment.errors import DataError, RecipeError


def labelled(count: int, label: str, prefix: str = "") -> list[dict]:
    return [{"text": f"{prefix}{label} review number {index}", "label": label} for index in range(count)]


def test_strip_html(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "Great<br />film &amp; <b>cast</b>"}, {"text": "a < b > c"}])
    prepared = load("sft", dataset_path=path, strip_html=True)
    assert prepared.splits["train"]["text"] == ["Great\nfilm & cast", "a < b > c"]
    assert report_line(prepared, "strip_html:") == "strip_html: changed 1 of 2 rows"


def test_normalize_whitespace_keeps_indentation(files, load, report_line):
    path = files.jsonl("d.jsonl", [
        {"messages": [{"role": "user", "content": "  hi   there \r\n\n\n\nbye "},
                      {"role": "assistant", "content": "def f():\n    return  1"}]},
        {"messages": [{"role": "user", "content": "clean"}, {"role": "assistant", "content": "already"}]},
    ])
    prepared = load("sft", dataset_path=path, normalize_whitespace=True)
    assert [m["content"] for m in prepared.splits["train"][0]["messages"]] == ["hi there\n\nbye", "def f():\n    return 1"]
    assert report_line(prepared, "normalize_whitespace:") == "normalize_whitespace: changed 1 of 2 rows"


def test_lowercase_leaves_labels_alone(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "LOUD", "label": "Pos"}, {"text": "quiet", "label": "Neg"}])
    prepared = load("classification", dataset_path=path, lowercase=True)
    assert prepared.splits["train"]["text"] == ["loud", "quiet"]
    assert prepared.label_names == ["Neg", "Pos"]
    assert report_line(prepared, "lowercase:") == "lowercase: changed 1 of 2 rows"


def test_cleaning_then_drop_empty(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "<p></p>"}, {"text": "kept"}, {"text": "   "}])
    prepared = load("sft", dataset_path=path, strip_html=True)
    assert prepared.splits["train"]["text"] == ["kept"]
    assert report_line(prepared, "drop_empty:") == f"drop_empty: removed 2 of 3 rows (e.g. {path} line 1; {path} line 3)"


def test_empty_reply_is_an_empty_row(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"prompt": "q", "chosen": "a", "rejected": " "}, {"prompt": "q", "chosen": "a", "rejected": "b"}])
    prepared = load("preference", dataset_path=path)
    assert len(prepared.splits["train"]) == 1
    assert report_line(prepared, "drop_empty:").startswith("drop_empty: removed 1 of 2 rows")


def test_drop_duplicates(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "a", "label": 1}, {"text": "a", "label": 1}, {"text": "a", "label": 0}])
    prepared = load("classification", dataset_path=path, drop_duplicates=True)
    assert prepared.splits["train"].to_list() == [{"text": "a", "label": 1}, {"text": "a", "label": 0}]
    assert report_line(prepared, "drop_duplicates:") == f"drop_duplicates: removed 1 of 3 rows (e.g. {path} line 2)"


def test_duplicates_found_after_cleaning(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "Same"}, {"text": "same "}])
    prepared = load("sft", dataset_path=path, lowercase=True, normalize_whitespace=True, drop_duplicates=True)
    assert prepared.splits["train"]["text"] == ["same"]


def test_length_filter(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "x" * n} for n in (2, 5, 10, 20)])
    prepared = load("sft", dataset_path=path, min_chars=5, max_chars=10)
    assert [len(text) for text in prepared.splits["train"]["text"]] == [5, 10]
    assert report_line(prepared, "length filter").startswith("length filter (min_chars=5, max_chars=10): removed 2 of 4 rows")


def test_length_of_a_pair_is_prompt_plus_longer_reply(files, load):
    path = files.jsonl("d.jsonl", [{"prompt": "12345", "chosen": "123", "rejected": "1234567"}])
    assert len(load("preference", dataset_path=path, max_chars=12).splits["train"]) == 1
    with pytest.raises(DataError, match="no training rows left"):
        load("preference", dataset_path=path, max_chars=11)


def test_min_margin_keeps_only_clear_preferences(files, load, report_line):
    rows = [{"prompt": "p", "chosen": f"c{m}", "rejected": f"r{m}", "margin": m} for m in (1.0, 2.0, 3.0)]
    prepared = load("preference", dataset_path=files.jsonl("d.jsonl", rows), min_margin=2)
    assert prepared.splits["train"]["margin"] == [2.0, 3.0]
    assert report_line(prepared, "min_margin").startswith("min_margin=2: removed 1 of 3 rows")
    with pytest.raises(RecipeError, match="min_margin: only for preference data, not for task 'sft'"):
        load("sft", dataset_path=files.jsonl("t.jsonl", [{"text": "a"}]), min_margin=2)


def test_balance_down_and_up(files, load, report_line):
    path = files.jsonl("d.jsonl", labelled(6, "pos") + labelled(2, "neg"))
    down = load("classification", dataset_path=path, balance="down")
    assert Counter(down.splits["train"]["label"]) == {0: 2, 1: 2}
    assert report_line(down, "balance") == "balance (down): 8 -> 4 rows, 2 per label (before: neg 2, pos 6)"
    up = load("classification", dataset_path=path, balance="up")
    assert Counter(up.splits["train"]["label"]) == {0: 6, 1: 6}
    assert set(up.splits["train"]["text"]) == {row["text"] for row in labelled(6, "pos") + labelled(2, "neg")}


def test_balance_up_copies_stay_in_the_split_of_their_original(files, load):
    path = files.jsonl("d.jsonl", labelled(30, "pos") + labelled(6, "neg"))
    prepared = load("classification", dataset_path=path, balance="up", validation_split=0.25)
    train, validation = (set(prepared.splits[name]["text"]) for name in ("train", "validation"))
    assert not (train & validation)
    assert len(prepared.splits["train"]) + len(prepared.splits["validation"]) == 60


def test_balance_is_for_classification_only(files, load):
    path = files.jsonl("d.jsonl", [{"text": "a"}])
    with pytest.raises(RecipeError, match="balance: only for classification data, not for task 'sft'"):
        load("sft", dataset_path=path, balance="up")


def test_stratified_split_proportions(files, load, report_line):
    path = files.jsonl("d.jsonl", labelled(80, "pos") + labelled(20, "neg"))
    prepared = load("classification", dataset_path=path, validation_split=0.1, test_split=0.2)
    sizes = {name: len(split) for name, split in prepared.splits.items()}
    assert sizes == {"train": 70, "validation": 10, "test": 20}
    assert Counter(prepared.splits["validation"]["label"]) == {1: 8, 0: 2}
    assert Counter(prepared.splits["test"]["label"]) == {1: 16, 0: 4}
    assert Counter(prepared.splits["train"]["label"]) == {1: 56, 0: 14}
    texts = [set(split["text"]) for split in prepared.splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert report_line(prepared, "split") == "split (seed 42, stratified by label): train 70, validation 10, test 20"


def test_split_is_deterministic_for_a_seed(files, load):
    path = files.jsonl("d.jsonl", labelled(50, "pos") + labelled(50, "neg"))
    first = load("classification", dataset_path=path, validation_split=0.2)
    again = load("classification", dataset_path=path, validation_split=0.2)
    other = load("classification", dataset_path=path, validation_split=0.2, split_seed=7)
    assert first.splits["validation"]["text"] == again.splits["validation"]["text"]
    assert first.splits["validation"]["text"] != other.splits["validation"]["text"]


def test_split_falls_back_when_a_label_is_too_rare_to_stratify(files, load, report_line):
    path = files.jsonl("d.jsonl", labelled(9, "pos") + labelled(1, "neg"))
    prepared = load("classification", dataset_path=path, validation_split=0.2)
    assert len(prepared.splits["validation"]) == 2
    assert report_line(prepared, "split").startswith("split (seed 42, random, cannot stratify: ")


def test_pairs_of_one_ranking_stay_in_one_split(files, load):
    rows = [{"prompt": f"q{i}", "completions": ["a", "b", "c"], "ranks": [1, 2, 3]} for i in range(20)]
    prepared = load("preference", dataset_path=files.jsonl("r.jsonl", rows), validation_split=0.25)
    train, validation = (set(prepared.splits[name]["prompt"]) for name in ("train", "validation"))
    assert len(validation) == 5 and len(train) == 15 and not (train & validation)
    assert len(prepared.splits["validation"]) == 15


def test_explicit_validation_and_test_files_win_over_ratios(files, load, report_line):
    train = files.jsonl("train.jsonl", labelled(10, "pos") + labelled(10, "neg"))
    validation = files.csv("dev.csv", labelled(3, "neg", "dev "))
    test = files.jsonl("test.jsonl.gz", labelled(2, "pos", "test "))
    prepared = load("classification", dataset_path=train, validation_path=validation, test_path=test,
                    validation_split=0.5)
    assert {name: len(split) for name, split in prepared.splits.items()} == {"train": 20, "validation": 3, "test": 2}
    assert prepared.splits["validation"]["label"] == [0, 0, 0]
    assert report_line(prepared, "validation_split") == (
        "validation_split 0.5 ignored: the validation rows come from the data source or validation_path")


def test_steps_report_every_split(files, load, report_line):
    train = files.jsonl("train.jsonl", [{"text": "A"}, {"text": "b"}])
    validation = files.jsonl("dev.jsonl", [{"text": "C"}])
    prepared = load("sft", dataset_path=train, validation_path=validation, lowercase=True)
    assert prepared.splits["validation"]["text"] == ["c"]
    assert report_line(prepared, "lowercase:") == "lowercase: changed 1 of 2 rows in train, 1 of 1 rows in validation"


def test_max_samples(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": f"row {i}"} for i in range(50)])
    prepared = load("sft", dataset_path=path, max_samples=10)
    texts = prepared.splits["train"]["text"]
    assert len(texts) == 10 and texts != [f"row {i}" for i in range(10)]
    assert texts == load("sft", dataset_path=path, max_samples=10).splits["train"]["text"]
    assert report_line(prepared, "max_samples:") == "max_samples: kept 10 of 50 training rows"


def test_max_samples_applies_after_the_split(files, load):
    path = files.jsonl("d.jsonl", [{"text": f"row {i}"} for i in range(50)])
    prepared = load("sft", dataset_path=path, validation_split=0.2, max_samples=5)
    assert (len(prepared.splits["train"]), len(prepared.splits["validation"])) == (5, 10)


def test_mixture_by_weight(files, load, report_line):
    big = files.jsonl("big.jsonl", [{"text": f"big {i}"} for i in range(100)])
    small = files.jsonl("small.jsonl", [{"text": f"small {i}"} for i in range(30)])
    prepared = load("sft", datasets=[{"path": big, "weight": 0.8}, {"path": small, "weight": 0.2}])
    origins = Counter(text.split()[0] for text in prepared.splits["train"]["text"])
    assert origins == {"big": 100, "small": 25}
    line = report_line(prepared, "mixture:")
    assert line == f"mixture: 125 rows: 100 of 100 rows from {big} (weight 0.8); 25 of 30 rows from {small} (weight 0.2)"
    again = load("sft", datasets=[{"path": big, "weight": 0.8}, {"path": small, "weight": 0.2}])
    assert again.splits["train"]["text"] == prepared.splits["train"]["text"]


def test_mixture_by_rows_and_weight_of_the_total(files, load):
    first = files.jsonl("a.jsonl", [{"text": f"a {i}"} for i in range(40)])
    second = files.jsonl("b.jsonl", [{"text": f"b {i}"} for i in range(40)])
    third = files.jsonl("c.jsonl", [{"text": f"c {i}"} for i in range(5)])
    prepared = load("sft", datasets=[{"path": first, "rows": 30}, {"path": second, "weight": 0.25},
                                     {"path": third, "rows": 12}])
    origins = Counter(text.split()[0] for text in prepared.splits["train"]["text"])
    assert origins == {"a": 30, "b": 14, "c": 12}  # b: 0.25 of (30 + 12) / 0.75 = 56 rows; c repeats its 5 rows
    assert Counter(prepared.splits["train"]["text"])["c 0"] >= 2


def test_mixture_entries_have_their_own_format_and_columns(files, load):
    reviews = files.csv("reviews.csv", [{"review": "fine", "stars": "pos"}])
    texts = files.jsonl("texts.jsonl", [{"text": "bad", "label": "neg"}])
    prepared = load("classification", datasets=[{"path": reviews, "text_column": "review", "label_column": "stars"},
                                                {"path": texts, "format": "classification"}])
    assert prepared.splits["train"].to_list() == [{"text": "fine", "label": 1}, {"text": "bad", "label": 0}]


def test_held_out_entries_bring_their_own_columns(files, load, report_line):
    train = files.csv("train.tsv", [{"label": "0", "sentence": "dull"}, {"label": "1", "sentence": "fun"}] * 5,
                      delimiter="\t")
    dev = files.csv("dev.tsv", [{"label": "1", "content": "lovely"}], delimiter="\t")
    prepared = load("classification", csv_quoting=False, validation_split=0.5, datasets=[
        {"path": train, "text_column": "sentence"},
        {"path": dev, "text_column": "content", "split": "validation"},
    ])
    assert prepared.splits["validation"].to_list() == [{"text": "lovely", "label": 1}]
    assert len(prepared.splits["train"]) == 10
    assert report_line(prepared, "mixture:") == f"mixture: 10 rows: 10 of 10 rows from {train} (all rows)"


def test_mixture_of_different_schemas_is_an_error(files, load):
    chat = files.jsonl("chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}])
    plain = files.jsonl("plain.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError, match=f"the sources give rows of different schemas, which cannot be combined: "
                                        f"{chat} gives messages \\(messages\\); {plain} gives text \\(string\\)"):
        load("sft", datasets=[{"path": chat}, {"path": plain}])


@pytest.mark.parametrize("entry, message", [
    ({"path": "a.jsonl", "wieght": 1}, "datasets entry 1: unknown key 'wieght'. Did you mean 'weight'"),
    ({"path": "a.jsonl", "weight": True}, "datasets entry 1: key 'weight': expected float"),
    ({"path": "a.jsonl", "weight": 0.5, "rows": 3}, "datasets entry 1: give weight or rows, not both"),
    ({"path": "a.jsonl", "rows": 0}, "datasets entry 1: rows must be a positive integer, got 0"),
    ({"weight": 1}, "datasets entry 1: must be a mapping with a 'path'"),
    ({"path": "a.jsonl", "format": "hh"}, "datasets entry 1: format: format 'hh' cannot be used for task 'sft'"),
    ({"path": "a.jsonl", "split": "dev"}, "datasets entry 1: key 'split': expected one of 'train', 'validation', 'test'"),
    ({"path": "a.jsonl", "split": "test", "rows": 5}, "datasets entry 1: weight and rows sample training rows"),
])
def test_invalid_mixture_entries(load, entry, message):
    with pytest.raises(RecipeError, match=message):
        load("sft", datasets=[entry])


@pytest.mark.parametrize("keys, message", [
    ({}, "set either dataset_path"),
    ({"dataset_path": "a.jsonl", "validation_split": 1.0}, "validation_split: must be at least 0 and below 1"),
    ({"dataset_path": "a.jsonl", "validation_split": 0.5, "test_split": 0.5}, "validation_split \\+ test_split"),
    ({"dataset_path": "a.jsonl", "min_chars": 9, "max_chars": 3}, "min_chars \\(9\\) is above max_chars \\(3\\)"),
    ({"dataset_path": "a.jsonl", "max_samples": 0}, "max_samples: must be positive"),
])
def test_invalid_recipe_keys(load, keys, message):
    with pytest.raises(RecipeError, match=message):
        load("sft", **keys)


def test_nothing_left_is_an_error_with_the_report(files, load):
    path = files.jsonl("d.jsonl", [{"text": "short"}])
    with pytest.raises(DataError, match="(?s)no training rows left after preparation. Report:\n.*\nlength filter"):
        load("sft", dataset_path=path, min_chars=100)
