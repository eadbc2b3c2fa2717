"""Weighted reward lists, the verifiable reward functions and the data columns they read: each term is scored and
logged on its own; a bad entry, a missing column or an unknown function stops the recipe before any model loads."""

from __future__ import annotations

import json
import re

import pytest

from alignment.data import DataArguments, load_data
from alignment.errors import DataError, RecipeError
from alignment.ppo.__main__ import main
from alignment.reward_functions import exact_match, final_answer, format_match
from alignment.rewards import RewardSource, RewardTerm, WeightedReward, function_reward, parse_reward_terms

from helpers import ROOT


def test_final_answer_extraction():
    assert final_answer("7 + 5 = 12.") == "12"
    assert final_answer("It is 1,250 in all") == "1250"
    assert final_answer("no digits here") is None
    assert final_answer(r"so \boxed{42} it is", "boxed") == "42"
    assert final_answer("  Paris \n", "full") == "Paris"


def test_exact_match_checks_the_last_number_against_the_answer_column():
    responses = ["7 + 5 = 12", "The answer is 12.0", "12, no wait, 13", "twelve", "-3"]
    assert exact_match([], responses, answer=["12", "12", "12", "12", "-3"]) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert exact_match([], ["Paris."], answer=["paris."], extract="full") == [1.0]
    with pytest.raises(ValueError, match="extract must be"):
        exact_match([], ["1"], answer=["1"], extract="first")
    with pytest.raises(ValueError):  # one answer per response
        exact_match([], ["1", "2"], answer=["1"])


def test_format_match_wants_the_whole_answer_to_match():
    assert format_match([], [" 12 ", "12 apples", "-4"]) == [1.0, 0.0, 1.0]
    assert format_match([], ["yes", "no!"], pattern="yes|no") == [1.0, 0.0]


def test_function_reward_hands_over_only_the_columns_it_names():
    source = function_reward("exact_match", {})
    assert source.columns == ("answer",)
    assert source.score(["q1", "q2"], ["it is 3", "4"], answer=["3", "5"], unrelated=["x", "y"]) == [1.0, 0.0]
    with pytest.raises(RecipeError, match="needs the data column\\(s\\) \\['answer'\\]: name them in extra_columns"):
        source.score(["q"], ["3"])


def test_weighted_reward_sums_terms_and_keeps_each_component():
    terms = parse_reward_terms([{"spec": "exact_match"}, {"spec": "format_match", "weight": 0.5, "name": "fmt"}])
    reward = WeightedReward([(t, function_reward(t.spec, t.kwargs)) for t in terms])
    components = reward.components(["q", "q"], ["12", "it is 12"], answer=["12", "12"])
    assert components == {"exact_match": [1.0, 1.0], "fmt": [1.0, 0.0]}
    assert reward.total(components).tolist() == [1.5, 1.0]
    assert reward.columns == ("answer",)
    assert reward.description == "1 x function exact_match + 0.5 x function format_match"


def test_standardising_uses_each_reward_models_own_statistics():
    rm = RewardSource(lambda p, r, **_: [3.0, 1.0], "rm", mean=1.0, std=2.0)
    fn = RewardSource(lambda p, r, **_: [1.0, 0.0], "fn")
    reward = WeightedReward([(RewardTerm("a", 2.0), rm), (RewardTerm("b", 1.0), fn)])
    components = reward.components([], [])
    assert reward.total(components).tolist() == [7.0, 2.0]  # raw: 2 * 3 + 1, 2 * 1 + 0
    assert reward.total(components, standardize=True).tolist() == [3.0, 0.0]  # 2 * (3 - 1) / 2 + 1, 2 * 0 + 0
    assert reward.has_statistics


@pytest.mark.parametrize(
    "entries,message",
    [
        (["exact_match"], "rewards\\[0\\]: expected a mapping"),
        ([{"weight": 1}], "rewards\\[0\\]: expected keys spec \\(required\\)"),
        ([{"spec": "length", "wieght": 1}], "rewards\\[0\\]: expected keys spec"),
        ([{"spec": "length"}, {"spec": "length", "weight": "x"}], "rewards\\[1\\]: weight must be a finite number"),
        ([{"spec": "length"}, {"spec": "length"}], "two entries share a name"),
    ],
)
def test_bad_reward_entries_name_the_entry(entries, message):
    with pytest.raises(ValueError, match=message):
        parse_reward_terms(entries)


def test_extra_columns_are_kept_beside_the_prompt(tmp_path):
    data = load_data(DataArguments(dataset_path=str(ROOT / "data" / "arithmetic" / "train.jsonl"), extra_columns=["answer"]), "prompts")
    rows = data.splits["train"].to_list()
    assert len(rows) == 130 and set(rows[0]) == {"prompt", "answer"}
    assert all(r["prompt"].endswith("Answer with the number only.") and r["answer"].lstrip("-").isdigit() for r in rows)
    missing = tmp_path / "p.jsonl"
    missing.write_text(json.dumps({"prompt": "What is 1 + 1?"}) + "\n")
    with pytest.raises(DataError, match="column 'answer' \\(extra_columns\\) is missing"):
        load_data(DataArguments(dataset_path=str(missing), extra_columns=["answer"]), "prompts")
    with pytest.raises(RecipeError, match="extra_columns: only for prompt data"):
        load_data(DataArguments(dataset_path=str(missing), extra_columns=["answer"]), "sft")


def test_arithmetic_splits_share_no_problem():
    seen = {}
    for split in ("train", "validation", "test"):
        for line in (ROOT / "data" / "arithmetic" / f"{split}.jsonl").read_text().splitlines():
            numbers = tuple(re.findall(r"\d+", json.loads(line)["prompt"])) + ("-" if "away" in line or " - " in line else "+",)
            assert seen.setdefault(numbers, split) == split, (numbers, split)


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "rewards\\[0\\]: 'exact_match' reads the data column\\(s\\) \\['answer'\\]: add them to extra_columns"),
        (["--rewards", "[{spec: no_such_module_q:f}]", "--extra_columns", "[answer]"], "rewards\\[0\\]: .*cannot be imported"),
        (["--rewards", "[{spec: keyword, kwargs: {typo: 1}}]"], "rewards\\[0\\]: .*cannot take"),
        (["--rewards", "[{spec: exact_match}]", "--reward_function", "length"], "set exactly one of reward_model"),
    ],
)
def test_reward_list_recipe_errors_stop_before_any_model_loads(tmp_path, capsys, extra, message):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 1 + 1?", "answer": "2"}) + "\n")
    flags = extra if extra and extra[0] == "--rewards" else ["--rewards", "[{spec: exact_match}]", *extra]
    assert main(["--dataset_path", str(prompts), "--output_dir", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()
