"""Every row format, normalised to each task's schema, and format detection."""

from __future__ import annotations

from math import comb

import pytest

from alignment.errors import DataError, RecipeError


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def rows_of(prepared, split: str = "train") -> list[dict]:
    return prepared.splits[split].to_list()


# --- classification ---------------------------------------------------------------------------------------------


def test_string_labels_become_sorted_class_ids(files, load):
    path = files.jsonl("d.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}, {"text": "c", "label": "mid"}])
    prepared = load("classification", dataset_path=path)
    assert prepared.label_names == ["mid", "neg", "pos"]
    assert prepared.splits["train"].features["label"].names == ["mid", "neg", "pos"]
    assert prepared.splits["train"]["label"] == [2, 1, 0]


def test_integer_labels_are_kept_as_ids(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "a", "label": 2}, {"text": "b", "label": 0}])
    prepared = load("classification", dataset_path=path)
    assert prepared.label_names == ["0", "1", "2"]
    assert prepared.splits["train"]["label"] == [2, 0]
    assert report_line(prepared, "labels:") == "labels: 3 classes from the data: 0, 1, 2"


def test_label_names_fix_the_order_and_accept_ids(files, load):
    path = files.csv("d.csv", [{"text": "a", "label": "pos"}, {"text": "b", "label": "0"}, {"text": "c", "label": "1"}])
    prepared = load("classification", dataset_path=path, label_names=["neg", "pos"])
    assert prepared.label_names == ["neg", "pos"]
    assert prepared.splits["train"]["label"] == [1, 0, 1]


def test_column_mapping_gives_normalised_names(files, load):
    path = files.jsonl("d.jsonl", [{"review": "great", "stars": "5", "id": 1}])
    prepared = load("classification", dataset_path=path, text_column="review", label_column="stars")
    assert rows_of(prepared) == [{"text": "great", "label": 5}]
    assert prepared.label_names == ["0", "1", "2", "3", "4", "5"]


# --- sft ----------------------------------------------------------------------------------------------------------


def test_text_rows(files, load):
    path = files.jsonl("d.jsonl", [{"text": "once upon a time", "label": 1}])
    assert rows_of(load("sft", dataset_path=path)) == [{"text": "once upon a time"}]


def test_prompt_completion_strings_and_conversations(files, load):
    plain = files.jsonl("p.jsonl", [{"prompt": "2+2=", "completion": "4"}])
    assert rows_of(load("sft", dataset_path=plain)) == [{"prompt": "2+2=", "completion": "4"}]
    mixed = files.jsonl("c.jsonl", [{"prompt": [user("hi")], "completion": "hello"}])
    assert rows_of(load("sft", dataset_path=mixed)) == [{"prompt": [user("hi")], "completion": [assistant("hello")]}]


def test_messages_and_sharegpt_conversations(files, load):
    chat = [{"role": "system", "content": "be brief"}, user("hi"), assistant("hello")]
    path = files.jsonl("m.jsonl", [{"messages": chat}])
    assert rows_of(load("sft", dataset_path=path)) == [{"messages": chat}]
    sharegpt = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    path = files.jsonl("s.jsonl", [{"conversations": sharegpt}])
    assert rows_of(load("sft", dataset_path=path)) == [{"messages": [user("hi"), assistant("hello")]}]


def test_messages_stored_as_json_text_in_csv(files, load):
    path = files.csv("m.csv", [{"messages": '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]'}])
    assert rows_of(load("sft", dataset_path=path)) == [{"messages": [user("hi"), assistant("yo")]}]


def test_text_that_only_looks_like_json_stays_text(files, load):
    path = files.jsonl("p.jsonl", [{"prompt": "[3, 1, 2]", "completion": "[1, 2, 3]"}])
    assert rows_of(load("sft", dataset_path=path)) == [{"prompt": "[3, 1, 2]", "completion": "[1, 2, 3]"}]


def test_ranking_lists_stored_as_json_text_in_csv(files, load):
    path = files.csv("r.csv", [{"prompt": "q", "completions": '["a", "b"]', "ranks": "[2, 1]"}])
    assert rows_of(load("preference", dataset_path=path)) == [{"prompt": "q", "chosen": "b", "rejected": "a", "margin": 1.0}]


def test_alpaca_rows_become_messages(files, load, report_line):
    path = files.jsonl("a.jsonl", [
        {"instruction": "Translate.", "input": "chat", "output": "cat"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
    ])
    prepared = load("sft", dataset_path=path)
    assert rows_of(prepared) == [
        {"messages": [user("Translate.\n\nchat"), assistant("cat")]},
        {"messages": [user("Say hi."), assistant("hi")]},
    ]
    assert report_line(prepared, "train:") == (
        f"train: 2 rows from 2 records of {path}, format alpaca (detected from columns instruction, output)"
    )


# --- preference ---------------------------------------------------------------------------------------------------


def test_preference_strings_with_margins(files, load, report_line):
    path = files.jsonl("p.jsonl", [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "margin": 2},
        {"prompt": "q2", "chosen": "fine", "rejected": "worse"},
    ])
    prepared = load("preference", dataset_path=path)
    assert rows_of(prepared) == [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "margin": 2.0},
        {"prompt": "q2", "chosen": "fine", "rejected": "worse", "margin": 0.0},
    ]
    assert report_line(prepared, "margin:") == f"margin: 0.0 (no margin) filled in for 1 rows of {path} without a margin"


def test_empty_margin_cells_in_csv_mean_no_margin(files, load):
    path = files.csv("p.csv", [{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "1.5"},
                               {"prompt": "q", "chosen": "c", "rejected": "d", "margin": ""}])
    assert load("preference", dataset_path=path).splits["train"]["margin"] == [1.5, 0.0]


def test_preference_without_margins_has_no_margin_column(files, load):
    path = files.jsonl("p.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    assert load("preference", dataset_path=path).splits["train"].column_names == ["prompt", "chosen", "rejected"]


def test_conversational_preference(files, load):
    path = files.jsonl("p.jsonl", [{"prompt": [user("q")], "chosen": [assistant("good")], "rejected": "bad"}])
    assert rows_of(load("preference", dataset_path=path)) == [
        {"prompt": [user("q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}
    ]


def test_llamafactory_sharegpt_preference(files, load, report_line):
    path = files.json("dpo.json", [{
        "conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "good"},
        "rejected": {"from": "gpt", "value": "bad"},
    }])
    prepared = load("preference", dataset_path=path)
    assert rows_of(prepared) == [{
        "prompt": [{"role": "system", "content": "sys"}, user("q")],
        "chosen": [assistant("good")],
        "rejected": [assistant("bad")],
    }]
    assert "format preference (detected from columns conversations, chosen, rejected)" in report_line(prepared, "train:")


def test_hh_transcripts_split_into_shared_prompt_and_replies(files, load, report_line):
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a colour."
    path = files.jsonl("hh.jsonl", [{
        "chosen": shared + "\n\nAssistant: Blue.",
        "rejected": shared + "\n\nAssistant: Bl... no idea.",
    }])
    prepared = load("preference", dataset_path=path)
    assert rows_of(prepared) == [{
        "prompt": [user("Hi there"), assistant("Hello! How can I help?"), user("Name a colour.")],
        "chosen": [assistant("Blue.")],
        "rejected": [assistant("Bl... no idea.")],
    }]
    assert "format hh" in report_line(prepared, "train:")


def test_full_conversations_without_prompt_share_their_leading_messages(files, load):
    path = files.jsonl("c.jsonl", [{
        "chosen": [user("q"), assistant("good")],
        "rejected": [user("q"), assistant("bad")],
    }])
    assert rows_of(load("preference", dataset_path=path)) == [
        {"prompt": [user("q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}
    ]


def test_ranking_expands_to_all_pairs_without_ties(files, load, report_line):
    path = files.jsonl("r.jsonl", [
        {"prompt": "q1", "completions": ["a", "b", "c", "d"], "ranks": [2, 1, 4, 3]},  # no ties: C(4,2) = 6 pairs
        {"prompt": "q2", "completions": ["a", "b", "c", "d"], "ranks": [1, 1, 3, 3]},  # 2 ties: 4 pairs
        {"prompt": "q3", "completions": ["a", "b", "c"], "ranks": [1, 1, 1]},  # all tied: no pair
    ])
    prepared = load("preference", dataset_path=path)
    pairs = rows_of(prepared)
    assert len(pairs) == comb(4, 2) + (comb(4, 2) - 2) + 0
    first = [pair for pair in pairs if pair["prompt"] == "q1"]
    assert {(pair["chosen"], pair["rejected"], pair["margin"]) for pair in first} == {
        ("b", "a", 1.0), ("a", "c", 2.0), ("a", "d", 1.0), ("b", "c", 3.0), ("b", "d", 2.0), ("d", "c", 1.0)
    }
    assert {(pair["chosen"], pair["rejected"]) for pair in pairs if pair["prompt"] == "q2"} == {
        ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")
    }
    assert report_line(prepared, "train:").endswith(
        "format ranking (detected from columns prompt, completions, ranks); 5 tied pairs dropped"
    )


# --- prompts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row, prompt", [
    ({"prompt": "Tell me a joke."}, "Tell me a joke."),
    ({"text": "Once upon a time"}, "Once upon a time"),
    ({"prompt": "q", "completion": "a"}, "q"),
    ({"prompt": "q", "chosen": "a", "rejected": "b"}, "q"),
    ({"prompt": "q", "completions": ["a", "b"], "ranks": [1, 1]}, "q"),
    ({"messages": [{"role": "system", "content": "s"}, user("q1"), assistant("a1"), user("q2"), assistant("a2")]},
     [{"role": "system", "content": "s"}, user("q1")]),
    ({"instruction": "Do it.", "input": "now", "output": "done"}, [user("Do it.\n\nnow")]),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}, [user("q")]),
], ids=["prompt", "text", "prompt_completion", "preference", "ranking", "messages", "alpaca", "hh"])
def test_prompts_from_every_format_that_has_one(files, load, row, prompt):
    path = files.jsonl("d.jsonl", [row])
    assert rows_of(load("prompts", dataset_path=path)) == [{"prompt": prompt}]


# --- detection and format choice ------------------------------------------------------------------------------------


def test_undetectable_format_lists_what_is_expected(files, load):
    path = files.jsonl("d.jsonl", [{"sentence": "a", "y": 1}])
    with pytest.raises(DataError, match=r"d\.jsonl: cannot tell the row format for task 'classification' from its "
                                        r"columns sentence, y\. Expected columns: text, label \(classification\)"):
        load("classification", dataset_path=path)


def test_explicit_format_must_suit_the_task(files, load):
    path = files.jsonl("d.jsonl", [{"text": "a"}])
    with pytest.raises(RecipeError, match="data_format: format 'text' cannot be used for task 'preference'"):
        load("preference", dataset_path=path, data_format="text")


def test_explicit_format_overrides_detection(files, load, report_line):
    path = files.jsonl("d.jsonl", [{"text": "a", "label": "x"}])
    prepared = load("sft", dataset_path=path, data_format="text")
    assert rows_of(prepared) == [{"text": "a"}]
    assert "format text (set by data_format)" in report_line(prepared, "train:")
