"""SFT end to end with real SmolLM2 weights + LoRA: eval loss falls, the adapter reloads and generations end with
EOS, a killed run resumes to the same final step, export merges the adapter."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch

from alignment.generation import SamplingArguments, generate
from alignment.models import load_trained

from helpers import ROOT, metrics, run_stage, stage_cmd

RECIPE = "recipes/sft/demo.yaml"
QUICK = dict(max_samples=32, max_length=128, per_device_train_batch_size=4, num_samples=2, sample_max_new_tokens=16, learning_rate=3e-4)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    small_validation = out.parent / "validation.jsonl"
    small_validation.write_text("".join((ROOT / "data/sft/validation.jsonl").read_text().splitlines(True)[:8]))
    proc = run_stage(
        "sft", RECIPE, output_dir=out, validation_path=small_validation, eval_on_start=True, num_train_epochs=2,
        save_strategy="no", **QUICK,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_sft_lowers_eval_loss_and_writes_run_folder(sft_run):
    m = metrics(sft_run)
    evals = [row for row in json.loads((sft_run / "log_history.json").read_text()) if "eval_loss" in row]
    assert evals[0]["step"] == 0 and m["eval_loss"] < evals[0]["eval_loss"] - 0.05
    assert m["eval_perplexity"] == pytest.approx(torch.tensor(m["eval_loss"]).exp().item(), rel=1e-4)
    for name in ("recipe.yaml", "environment.json", "log.txt", "adapter_config.json", "alignment_model.json", "samples.jsonl"):
        assert (sft_run / name).is_file(), name


@pytest.mark.slow
def test_sft_adapter_reloads_and_generations_stop(sft_run):
    model, tok, meta = load_trained(sft_run)
    assert meta["base_model"] == "builtin:smollm2-135m-instruct" and tok.pad_token_id != tok.eos_token_id
    prompts = ["Give me one tip for sleeping better.", "What is 7 times 6?", "Name a primary colour."]
    outs = generate(model, tok, prompts, SamplingArguments(max_new_tokens=96, temperature=0.0))
    assert all(o[0]["finished"] for o in outs), outs
    assert all(o[0]["text"] for o in outs)


@pytest.mark.slow
def test_export_merges_adapter(sft_run, tmp_path):
    from alignment.export import main as export_main

    assert export_main([str(sft_run), str(tmp_path / "merged")]) == 0
    merged, tok, _ = load_trained(tmp_path / "merged")
    adapter, _, _ = load_trained(sft_run)
    enc = tok(["Hello there, how are you?"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**enc).logits, adapter(**enc).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_step(tmp_path):
    out = tmp_path / "run"
    args = dict(output_dir=out, max_steps=6, save_strategy="steps", save_steps=2, eval_strategy="no", logging_steps=1, **QUICK)
    proc = subprocess.Popen(stage_cmd("sft", RECIPE, **args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    again = run_stage("sft", RECIPE, **args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming from" in again.stderr
    assert metrics(out)["global_step"] == 6


def test_bad_recipe_fails_before_loading_a_model(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / RECIPE).read_text() + "\nlearnig_rate: 0.1\n")
    start = time.time()
    proc = run_stage("sft", str(bad))
    assert proc.returncode == 2
    assert "unknown key 'learnig_rate'. Did you mean 'learning_rate'?" in proc.stderr
    assert "Traceback" not in proc.stderr and time.time() - start < 60
