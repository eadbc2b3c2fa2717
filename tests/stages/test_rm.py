"""Reward model end to end with real MiniLM weights: held-out accuracy well above chance, identical scores after
reload, the scorer prefers chosen responses, bad rows named."""

from __future__ import annotations

import json

import pytest

from alignment.rewards import load_reward_model, preference_metrics

from helpers import ROOT, metrics, run_stage

QUICK = dict(
    model_name_or_path="builtin:minilm-l6", method="full", learning_rate=5e-5, num_train_epochs=4,
    per_device_train_batch_size=8, max_length=128, save_strategy="no", eval_strategy="no", test_split=0.2,
    validation_split=0.0, prompt_turns=1,
)


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "run"
    proc = run_stage("rm", "recipes/rm/demo.yaml", output_dir=out, **QUICK)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_rm_learns_preferences(rm_run):
    m = metrics(rm_run)
    assert m["test"]["num_pairs"] >= 20
    assert m["test"]["pairwise_accuracy"] >= 0.7, m["test"]
    assert 0 <= m["test"]["ece"] <= 1
    stats = json.loads((rm_run / "alignment_model.json").read_text())["reward_stats"]
    assert stats["std"] > 0 and stats["n"] > 0


@pytest.mark.slow
def test_reloaded_rm_scores_identically_and_prefers_chosen(rm_run, tmp_path):
    rows = [json.loads(line) for line in (ROOT / "data/preferences/demo.jsonl").read_text().splitlines()][-24:]
    rm = load_reward_model(rm_run)
    assert rm.prompt_turns == 1 and rm.max_length == 128  # the encoding the model was trained with
    chosen = rm.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    again = load_reward_model(rm_run).score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    assert chosen == pytest.approx(again, abs=1e-6)
    rejected = rm.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    assert preference_metrics(chosen, rejected)["pairwise_accuracy"] >= 0.7
    normalized = rm.score([r["prompt"] for r in rows], [r["chosen"] for r in rows], normalize=True)
    assert normalized[0] == pytest.approx((chosen[0] - rm.mean) / rm.std)


@pytest.mark.slow
def test_score_cli_reports_metrics(rm_run, tmp_path):
    out = tmp_path / "scored.jsonl"
    proc = run_stage("score", str(rm_run), file=ROOT / "data/preferences/demo.jsonl", out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["num_pairs"] == 120 and report["pairwise_accuracy"] > 0.6
    assert len(out.read_text().splitlines()) == 120


@pytest.mark.parametrize(
    "row,message",
    [
        ({"prompt": "Hi", "chosen": "Same answer", "rejected": "Same answer"}, "identical"),
        ({"prompt": "Hi", "chosen": "", "rejected": "No"}, "empty"),
        ({"prompt": "Hi", "chosen": "Yes"}, "rejected"),
    ],
    ids=["identical", "empty", "missing-field"],
)
def test_bad_preference_rows_are_named(tmp_path, row, message):
    good = {"prompt": "Hello", "chosen": "Hello! How can I help?", "rejected": "What."}
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [good, good | {"prompt": "Hey"}, row]) + "\n")
    proc = run_stage("rm", "recipes/rm/demo.yaml", dataset_path=path, output_dir=tmp_path / "run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "prefs.jsonl line 3" in proc.stderr and message in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


def test_encoder_pairs_keep_the_final_tokens(minilm_path):
    """An encoder RM reads [CLS] prompt [SEP] response [SEP]: the prompt loses its start first (its final turn stays
    next to the response), and a response longer than the whole budget keeps its end instead of raising."""
    from alignment.models import load_tokenizer
    from alignment.rewards import encode

    tok = load_tokenizer(minilm_path)
    assert encode(tok, "hello there", "hi!", 64) == tok("hello there", "hi!")["input_ids"]
    assert tok.decode(encode(tok, "one two three four five six", "alpha beta gamma", 8)) == (
        "[CLS] five six [SEP] alpha beta gamma [SEP]"
    )
    long_reply = " ".join(["word"] * 20 + ["last"])
    ids = encode(tok, [{"role": "user", "content": "first"}, {"role": "user", "content": "final"}], long_reply, 8)
    assert len(ids) == 8 and tok.decode(ids) == "[CLS] [SEP] word word word word last [SEP]"
    assert tok.truncation_side == "right"


def test_prompt_turns_keeps_the_final_turns(minilm_path, tiny_llama_dir):
    """prompt_turns: N keeps the final N turns of a conversational prompt (1: the final user turn), before truncation;
    a string prompt is one turn; 0 drops the prompt."""
    from alignment.models import load_tokenizer
    from alignment.rewards import encode

    turns = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"}, {"role": "user", "content": "final"}]
    tok = load_tokenizer(minilm_path)
    assert tok.decode(encode(tok, turns, "answer", 64, prompt_turns=1)) == "[CLS] final [SEP] answer [SEP]"
    assert tok.decode(encode(tok, turns, "answer", 64, prompt_turns=2)) == "[CLS] reply final [SEP] answer [SEP]"
    assert encode(tok, turns, "answer", 64) == encode(tok, turns, "answer", 64, prompt_turns=3)
    assert encode(tok, "final", "answer", 64, prompt_turns=1) == encode(tok, "final", "answer", 64)
    assert tok.decode(encode(tok, turns, "answer", 64, prompt_turns=0)) == "[CLS] [SEP] answer [SEP]"
    chat = load_tokenizer(tiny_llama_dir)
    last = encode(chat, turns, "answer", 256, prompt_turns=1)
    assert last == encode(chat, turns[-1:], "answer", 256) != encode(chat, turns, "answer", 256)


def test_negative_prompt_turns_is_a_recipe_error(tmp_path):
    proc = run_stage("rm", "recipes/rm/demo.yaml", prompt_turns=-1, output_dir=tmp_path / "run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "key 'prompt_turns'" in proc.stderr and ">= 0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # stopped before the run folder or any model
