"""PPO reward sources and recipe checks that need no model: built-in and imported reward functions, clear errors for
bad reward keys, batch shapes and methods."""

from __future__ import annotations

import json
import re
import sys

import pytest

from alignment.errors import RecipeError
from alignment.ppo.__main__ import main
from alignment.ppo.args import PPOConfig
from alignment.ppo.rewards import load_reward
from alignment.reward_functions import keyword, length
from alignment.rewards import function_reward


def test_builtin_length_and_keyword_rewards():
    assert length([], ["one two three", "", "a b"]) == [-3.0, 0.0, -2.0]
    assert length([], ["one two three", "a"], target_words=2) == [-1.0, -1.0]
    assert keyword([], ["The film, the FILM!", "filmmaker", "no"], ["film"]) == [2.0, 0.0, 0.0]
    assert keyword([], ["Great, really great"], "great", case_sensitive=True) == [1.0]
    source = function_reward("keyword", {"keywords": ["movie", "film"]})
    assert source.score(["p", "q"], ["a movie about a film", "nothing"]) == [2.0, 0.0]
    assert source.mean is None and source.description == "function keyword"


def test_imported_reward_function_gets_prompts_responses_and_kwargs(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def echo(prompts, responses, bonus=0.0):\n    return [len(p) + len(r) + bonus for p, r in zip(prompts, responses)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    source = function_reward("my_rewards:echo", {"bonus": 0.5})
    assert source.score(["ab"], ["cde"]) == [5.5]
    sys.modules.pop("my_rewards", None)


@pytest.mark.parametrize(
    "spec,kwargs,message",
    [
        ("nonsense", {}, "expected a built-in reward function .* or 'module:function'"),
        ("no_such_module_xyz:f", {}, "cannot be imported: No module named 'no_such_module_xyz'"),
        ("json:no_such_function", {}, "cannot be imported: .*no attribute 'no_such_function'"),
        ("keyword", {"keyword": "typo"}, "cannot take \\(prompts, responses\\) with kwargs"),
    ],
)
def test_bad_reward_function_names_what_is_wrong(spec, kwargs, message):
    with pytest.raises(RecipeError, match=message):
        function_reward(spec, kwargs)


def test_classifier_run_without_reward_label_is_refused(tmp_path):
    (tmp_path / "alignment_model.json").write_text(json.dumps({"kind": "seq_cls", "label_names": ["negative", "positive"]}))
    config = PPOConfig(reward_model=str(tmp_path))
    with pytest.raises(RecipeError, match="is a classifier with labels \\['negative', 'positive'\\]: name the rewarded one"):
        load_reward(config, actor_critic=None, policy_base=None, device="cpu")


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "set exactly one of reward_model"),
        (["--reward_function", "length", "--reward_model", "x"], "set exactly one of reward_model"),
        (["--reward_function", "length", "--temperature", "0"], "temperature must be > 0"),
        (["--reward_function", "length", "--batch_size", "6", "--num_mini_batches", "4"], "batch_size \\(6\\) must be divisible"),
        (["--reward_function", "length", "--kl_estimator", "k9"], "key 'kl_estimator'"),
        (["--reward_function", "length", "--method", "full"], "method must be lora or qlora"),
        (["--reward_function", "length", "--kl_coef", "-1"], "kl_coef must be >= 0, got -1"),
        (["--reward_function", "length", "--cliprange", "0"], "cliprange must be > 0"),
        (["--reward_model", "runs/no-such-classifier", "--reward_label", "positive"], "reward_model: .*no such run folder"),
        (["--reward_model", "./no/such/rm"], "reward_model: no such folder: ./no/such/rm"),
    ],
)
def test_bad_recipes_stop_with_one_clear_line(tmp_path, capsys, flags, message):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hello"}) + "\n")
    assert main(["--dataset_path", str(prompts), "--output_dir", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
