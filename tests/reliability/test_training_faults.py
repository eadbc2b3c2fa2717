"""Faults during real training runs of a tiny random Llama (a tiny random BERT for classify): kill -9 and re-run
(resumes to the same final step),
torn checkpoints (skipped, never loaded), an unwritable run folder or a full disk (clear error before training), and
a diverging run (stops at the first non-finite loss or gradient with exit 2, keeping the last good checkpoint)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignment import sft
from alignment.training import is_complete_checkpoint, last_complete_checkpoint
from reliability.support import error_lines, record

from helpers import ROOT, metrics, run_stage, stage_cmd

MAX_STEPS = 8
SEED = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 10_000))
faults = {"injected": 0, "survived": 0}

COMMON = dict(
    max_steps=MAX_STEPS, save_strategy="steps", save_steps=1, logging_steps=1, eval_strategy="no", max_length=64,
    per_device_train_batch_size=2, max_samples=32, learning_rate=1e-3, warmup_steps=0, report_to="none", seed=0,
)
STAGE_KEYS = {
    "sft": dict(method="full", dataset_path=str(ROOT / "data/sft/chat.jsonl"), num_samples=0),
    "rm": dict(method="full", dataset_path=str(ROOT / "data/preferences/demo.jsonl"), validation_split=0.0, stats_samples=8),
    "dpo": dict(method="lora", dataset_path=str(ROOT / "data/preferences/demo.jsonl"), validation_split=0.0),
    "classify": dict(
        method="full", dataset_path=str(ROOT / "data/sentiment/train.jsonl"), data_format="classification",
        load_best_model_at_end=False, baseline="none",
    ),
}
Run = namedtuple("Run", "stage recipe out log")


def make_run(tmp_path: Path, model_dir: str, stage: str, name: str = "run", **keys) -> Run:
    """A recipe for ``stage`` on the tiny model in ``model_dir``, writing to tmp_path/<name>."""
    recipe = tmp_path / f"{stage}-{name}.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": model_dir, **COMMON, **STAGE_KEYS[stage], **keys}))
    return Run(stage, str(recipe), tmp_path / name, tmp_path / f"{name}.log")


def launch(run: Run) -> subprocess.CompletedProcess:
    proc = run_stage(run.stage, run.recipe, timeout=600, output_dir=run.out)
    run.log.write_text(proc.stderr)
    return proc


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("checkpoint-"))


def final_step(run: Run) -> int:
    m = metrics(run.out)
    return (m["train"] if run.stage == "rm" else m)["global_step"]


def kill_after_checkpoint(run: Run, step: int) -> None:
    """Start the run, SIGKILL it as soon as checkpoint-<step> is complete, and check it really died mid-run."""
    faults["injected"] += 1
    with run.log.open("w") as log:
        proc = subprocess.Popen(stage_cmd(run.stage, run.recipe, output_dir=run.out), cwd=ROOT, stdout=log, stderr=log)
        deadline = time.time() + 600
        while not (run.out / f"checkpoint-{step}" / "trainer_state.json").exists():
            assert proc.poll() is None, f"run ended before checkpoint-{step}: {run.log.read_text()[-3000:]}"
            assert time.time() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    assert not (run.out / "metrics.json").exists(), "the run finished before it was killed"


def resumed(run: Run) -> subprocess.CompletedProcess:
    """Re-run the same command; it must finish, say where it resumed from, and reach the same final step."""
    proc = launch(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from" in proc.stderr, proc.stderr[-3000:]
    faults["survived"] += 1
    record("training_faults", seed=SEED, **faults)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "classify"])
def test_killed_run_resumes_to_the_uninterrupted_final_step(tmp_path, request, stage):
    model_dir = request.getfixturevalue("tiny_bert_dir" if stage == "classify" else "tiny_llama_dir")
    reference = make_run(tmp_path, model_dir, stage, "reference")
    proc = launch(reference)
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = make_run(tmp_path, model_dir, stage)
    kill_at = random.Random(f"{SEED}-{stage}").randint(1, 3)
    kill_after_checkpoint(killed, kill_at)
    proc = resumed(killed)
    resumed_from = int(re.search(r"Resuming from \S*checkpoint-(\d+)", proc.stderr).group(1))
    assert resumed_from >= kill_at
    assert final_step(killed) == final_step(reference) == MAX_STEPS


@pytest.mark.slow
def test_torn_checkpoints_are_skipped_never_loaded(tmp_path, tiny_llama_dir):
    run = make_run(tmp_path, tiny_llama_dir, "sft", save_total_limit=3)
    kill_after_checkpoint(run, 3)
    complete = sorted((p for p in run.out.glob("checkpoint-*") if is_complete_checkpoint(p)), key=step_of)
    oldest, second, newest = complete[-3:]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # killed while writing the weights
    (second / "trainer_state.json").unlink()  # killed before the trainer state was written
    faults["injected"] += 2
    proc = resumed(run)
    for torn in (newest, second):
        assert f"Skipping incomplete checkpoint {torn}" in proc.stderr
    assert f"Resuming from {oldest}" in proc.stderr
    faults["survived"] += 1  # the second tear was survived by the same resumed run
    record("training_faults", **faults)
    steps = [row["step"] for row in json.loads((run.out / "log_history.json").read_text()) if "loss" in row]
    assert steps == list(range(1, MAX_STEPS + 1))  # steps after the oldest checkpoint were trained again, once
    assert final_step(run) == MAX_STEPS


def forbid_model_loading(monkeypatch) -> None:
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded although the run folder check failed")

    monkeypatch.setattr(sft, "load_model", loaded)
    monkeypatch.setattr(sft, "load_tokenizer", loaded)


@pytest.mark.parametrize("where", ["under-a-file", "sysfs"])
def test_unwritable_run_folder_fails_before_training(tmp_path, tiny_llama_dir, monkeypatch, capsys, where):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    out = {"under-a-file": blocker / "run", "sysfs": Path("/sys/alignment-reliability-run")}[where]
    run = make_run(tmp_path, tiny_llama_dir, "sft")
    forbid_model_loading(monkeypatch)
    faults["injected"] += 1
    assert sft.main([run.recipe, "--output_dir", str(out)]) == 2
    assert f"error: Run folder {out} is not writable" in capsys.readouterr().err
    assert not out.exists()
    faults["survived"] += 1
    record("training_faults", **faults)


def test_ranks_check_one_run_folder_without_touching_each_other(tmp_path):
    """Every rank of a torchrun job checks the same run folder at start; one rank's probe file is never the
    other's (a shared probe name let rank 0 delete the file rank 1 was about to remove, and rank 1 stopped)."""
    from alignment.run import check_writable

    others = [tmp_path / ".write-probe", tmp_path / ".write-probe-rank1"]
    for other in others:
        other.write_text("another rank's probe")
    check_writable(tmp_path)
    assert all(other.read_text() == "another rank's probe" for other in others)
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_full_disk_fails_before_training(tmp_path, tiny_llama_dir, monkeypatch, capsys):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=100 * 2**20))
    run = make_run(tmp_path, tiny_llama_dir, "sft")
    forbid_model_loading(monkeypatch)
    faults["injected"] += 1
    assert sft.main([run.recipe, "--output_dir", str(run.out)]) == 2
    assert "error: Only 0.10 GiB free on the disk holding" in capsys.readouterr().err
    assert not list(run.out.glob("checkpoint-*"))
    faults["survived"] += 1
    record("training_faults", **faults)


@pytest.mark.slow
def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_llama_dir):
    # Adam steps of 1e30 overflow the weights after the first update; logging every 4th step must not let a
    # checkpoint of NaN weights through (every checkpoint is written here, logging_steps does not line up).
    run = make_run(tmp_path, tiny_llama_dir, "sft", learning_rate=1e30, logging_steps=4, max_steps=6)
    faults["injected"] += 1
    proc = launch(run)
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    bad_step = int(re.search(r"became (?:nan|inf|-inf) at step (\d+)\. Likely causes: learning rate too high", errors[0]).group(1))
    assert "Traceback" not in proc.stderr and not (run.out / "metrics.json").exists()
    kept = last_complete_checkpoint(run.out)
    assert kept == str(run.out / f"checkpoint-{bad_step - 1}")
    assert all(step_of(p) < bad_step for p in run.out.glob("checkpoint-*"))
    assert all(torch.isfinite(t).all() for t in load_file(Path(kept) / "model.safetensors").values())
    faults["survived"] += 1
    record("training_faults", **faults, nan_stopped_at_step=bad_step)
