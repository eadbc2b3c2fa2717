"""DPO end to end with real SmolLM2 weights on a QLoRA policy: the DPO loss falls and the chosen-vs-rejected margin
grows on the preference pairs; the reference is the adapter-disabled base (no second model)."""

from __future__ import annotations

import json

import pytest

from alignment.models import load_trained, read_meta

from helpers import ROOT, metrics, run_stage


@pytest.mark.slow
def test_dpo_lowers_loss_and_widens_margin(tmp_path):
    pairs = (ROOT / "data/preferences/demo.jsonl").read_text().splitlines()[:12]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(pairs) + "\n")
    out = tmp_path / "run"
    proc = run_stage(
        "dpo", "recipes/dpo/demo.yaml", output_dir=out, dataset_path=data, validation_path=data, validation_split=0.0,
        num_train_epochs=3, per_device_train_batch_size=4, per_device_eval_batch_size=6, max_length=96,
        learning_rate=5e-4, eval_on_start=True, save_strategy="no", lr_scheduler_type="constant", warmup_steps=0,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    evals = [row for row in json.loads((out / "log_history.json").read_text()) if "eval_loss" in row]
    start, end = evals[0], evals[-1]
    assert start["step"] == 0 and end["eval_loss"] < start["eval_loss"] - 0.05
    assert end["eval_rewards/margins"] > start["eval_rewards/margins"]
    assert end["eval_reward_margin"] == end["eval_rewards/margins"]  # plain-language name logged too
    assert metrics(out)["global_step"] == 9
    meta = read_meta(out)
    assert meta["method"] == "qlora" and meta["base_model"] == "builtin:smollm2-135m-instruct"
    model, _, _ = load_trained(out)
    assert sum(1 for n, _ in model.named_parameters() if "lora_A" in n) > 0
