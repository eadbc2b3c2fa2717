"""Fast units of gold-judged evaluation: win rates and paired intervals computed by hand on a known oracle, reward
specs checked before any model loads, the pipeline's result lines in their fixed form."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from alignment.errors import RecipeError
from alignment.evaluate import judge_stats
from alignment.evaluate import main as evaluate_main
from alignment.pipeline import PipelineSpec, StageSpec, gold_spec, result_lines, wiring
from alignment.rewards import check_reward_spec
from alignment.stats import bootstrap_indices, win_rates

from helpers import RESULT_LINE, ROOT, says_great

SFT = ["It was great.", "Boring.", "Fine.", "A great cast."]
PPO = ["Great fun!", "Great.", "Great acting.", "Dull."]
PROMPTS = ["The film", "The plot", "The acting", "The cast"]


def scores(responses: list[str]) -> np.ndarray:
    return np.asarray(says_great(PROMPTS, responses)).reshape(-1, 1)


def test_gold_win_rate_and_reward_on_a_keyword_oracle_match_the_hand_computation():
    # says_great: sft 1 0 0 1, ppo 1 1 1 0 -> per prompt tie, win, win, loss -> (0.5 + 1 + 1 + 0) / 4
    stats = judge_stats({"sft": scores(SFT), "ppo": scores(PPO)}, "sft", bootstrap_indices(4, 500))
    assert stats["ppo"]["win_rate_vs_baseline"] == 0.625
    assert stats["ppo"]["mean_reward"] == 0.75 and stats["sft"]["mean_reward"] == 0.5
    assert stats["ppo"]["reward_gain"] == 0.25
    low, high = stats["ppo"]["win_rate_ci95"]
    assert 0.0 <= low < 0.625 < high <= 1.0


def test_several_samples_per_prompt_count_every_answer_pair():
    # one prompt: policy answers score [1, 0], the baseline's [0, 0]: pairs 1>0, 1>0, 0=0, 0=0 -> (1 + 1 + .5 + .5) / 4
    assert win_rates(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]])).tolist() == [0.75]
    assert win_rates(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])).tolist() == [0.25]


def test_intervals_are_paired_over_prompts():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (64, 2))
    stats = judge_stats({"sft": base, "same": base.copy(), "shifted": base + 1.0}, "sft", bootstrap_indices(64, 1000))
    assert stats["same"]["win_rate_ci95"] == (0.5, 0.5)  # a policy against itself: no noise once paired
    assert stats["shifted"]["reward_gain_ci95"] == pytest.approx((1.0, 1.0))
    low, high = stats["shifted"]["mean_reward_ci95"]
    assert high - low > 0.3  # the reward itself varies across prompts; its gain over the baseline does not


def run_folder(path, **meta):
    path.mkdir()
    (path / "alignment_model.json").write_text(json.dumps(meta))
    return str(path)


def test_reward_specs_are_checked_without_loading(tmp_path):
    clf = run_folder(tmp_path / "clf", label_names=["negative", "positive"])
    rm = run_folder(tmp_path / "rm", num_labels=1)
    check_reward_spec(f"{clf}#positive", "gold")
    check_reward_spec(rm, "reward")
    check_reward_spec("helpers:says_great", "gold")
    (tmp_path / "plain").mkdir()
    for spec, message in [
        (f"{clf}#neutral", "has no label 'neutral'"),
        (str(tmp_path / "plain"), "not an alignment run"),
        (str(tmp_path / "missing"), "no such run folder, and not module:function"),
        ("helpers:no_such_function", "cannot be imported"),
        ("no_such_module_xyz:f", "cannot be imported"),
        (f"{rm}#positive", "has no label 'positive'"),
    ]:
        with pytest.raises(RecipeError, match=f"^gold: .*{re.escape(message)}"):
            check_reward_spec(spec, "gold")


def test_a_bad_gold_spec_fails_before_any_model_loads(monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("alignment.evaluate.load_trained", no_loading)
    monkeypatch.setattr("alignment.evaluate.resolve_reward", no_loading)
    argv = ["--policies", '["builtin:smollm2-135m-instruct"]', "--reward", "helpers:says_great", "--gold", "runs/no-such-oracle#positive",
            "--dataset_path", str(ROOT / "data/prompts/movie_reviews_heldout.jsonl")]
    assert evaluate_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: gold: 'runs/no-such-oracle#positive' is not a reward"), err


def test_a_judge_that_reads_a_data_column_needs_it_kept_before_any_model_loads(monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("alignment.evaluate.load_trained", no_loading)
    argv = ["--policies", '["builtin:smollm2-135m-instruct"]', "--reward", "exact_match",
            "--dataset_path", str(ROOT / "data/arithmetic/test.jsonl")]
    assert evaluate_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: reward: 'exact_match' reads the data column(s) ['answer']: add them to extra_columns (now [])"]


def test_pipeline_wires_the_gold_judge_and_the_monitor(tmp_path):
    root = tmp_path / "pipe"
    prompts = tmp_path / "validation.jsonl"
    prompts.write_text('{"prompt": "The film"}\n')
    stages = [StageSpec(name=n) for n in ("classify", "sft", "annotate", "rm", "dpo", "ppo", "evaluate")]
    spec = PipelineSpec(validation_prompts=str(prompts))
    gold = gold_spec(spec, stages, root)
    assert gold == f"{root / 'classify'}#positive"  # the simulated raters' oracle
    present = {s.name for s in stages}
    evaluate = wiring(StageSpec(name="evaluate"), root, present, spec, gold)
    assert evaluate["gold"] == gold and evaluate["reward"] == str(root / "rm")
    assert evaluate["policies"] == [str(root / "sft"), str(root / "ppo"), str(root / "dpo")]
    ppo = wiring(StageSpec(name="ppo"), root, present, spec, gold)
    assert ppo["eval_prompts"] == str(prompts) and ppo["gold_reward"] == gold and "proxy_reward" not in ppo
    dpo = wiring(StageSpec(name="dpo"), root, present, spec, gold)
    assert dpo["proxy_reward"] == str(root / "rm") and dpo["gold_reward"] == gold
    # human raters have no oracle: no gold unless the pipeline names one
    human = [StageSpec(name="annotate", mode="human")]
    assert gold_spec(PipelineSpec(), human, root) is None
    assert gold_spec(PipelineSpec(gold="judges:trusted"), human, root) == "judges:trusted"


def test_result_lines_have_the_fixed_form():
    def policy(win, reward, proxy, kl):
        return {"mean_reward": proxy, "win_rate_vs_baseline": 0.5, "win_rate_ci95": [0.5, 0.5], "kl_to_reference": kl,
                "gold": {"mean_reward": reward, "win_rate_vs_baseline": win, "win_rate_ci95": [win - 0.08, win + 0.07]}}

    evaluation = {"num_prompts": 80, "samples_per_prompt": 2, "judges": {"proxy": "runs/rm", "gold": "runs/c#positive"},
                  "policies": {"runs/sft": policy(0.5, 0.76, 2.1, 0.0), "runs/ppo": policy(0.74, 0.93, 3.4, 2.9),
                               "runs/dpo": policy(0.63, 0.86, 2.6, 0.8)}}
    lines = result_lines(evaluation)
    parsed = [RESULT_LINE.match(line).groups() for line in lines[-2:]]
    assert parsed == [
        ("ppo", "sft", "0.74", "0.66", "0.81", "0.76", "0.93", "2.10", "3.40", "2.90"),
        ("dpo", "sft", "0.63", "0.55", "0.70", "0.76", "0.86", "2.10", "2.60", "0.80"),
    ]
    assert "80 held-out prompts x 2 samples" in lines[1]


def test_batched_response_logprobs_equal_one_at_a_time(smollm_path):
    """Right-padded batches give each response the log-probability it gets alone (chat and raw prompts, with and
    without a final EOS)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.generation import response_logprobs

    model = AutoModelForCausalLM.from_pretrained(smollm_path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm_path)
    prompts = ["The film", "I watched this movie last weekend and", "The plot"]
    responses = ["was a delight from start to finish.", "loved it", "Dull."]
    for chat in (True, False):
        finished = [True, False, True]
        alone = [response_logprobs(model, tok, [p], [r], chat, [f])[0] for p, r, f in zip(prompts, responses, finished)]
        together = response_logprobs(model, tok, prompts, responses, chat, finished, batch_size=3)
        assert together == pytest.approx(alone, abs=1e-3) and all(x < 0 for x in together)


def test_a_bad_monitor_gold_spec_names_the_recipe_before_any_model_loads(capsys):
    from alignment.dpo import main as dpo_main

    validation = str(ROOT / "data/prompts/movie_reviews_validation.jsonl")
    recipe = str(ROOT / "recipes/dpo/demo.yaml")
    assert dpo_main([recipe, "--eval_prompts", validation, "--gold_reward", "runs/no-such-oracle#positive"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {recipe}: invalid MonitorArguments: gold_reward: "), err
    assert dpo_main([recipe, "--gold_reward", "helpers:says_great"]) == 2
    assert "scored on eval_prompts: set eval_prompts too" in capsys.readouterr().err
