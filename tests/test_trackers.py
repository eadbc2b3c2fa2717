"""Dashboards: every training stage reports to wandb (offline unless an API key is configured) or trackio (a local
database), with the pipeline's group and a run name per stage. The files are read back as the tools store them:
wandb's offline ``run-*.wandb`` log and trackio's SQLite ``<project>.db``."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest

from alignment import pipeline
from alignment.errors import AlignmentError
from alignment.run import configure_trackers

from helpers import ROOT, stage_cmd

WANDB_BLOCK, WANDB_RECORD_HEADER = 32768, 7  # wandb's LevelDB-style log: 32 KiB blocks, crc32 + length + type


def wandb_records(path: Path):
    """The protobuf Records of a ``.wandb`` file: after its 7-byte header (``:W&B``, magic, version), records in
    32 KiB blocks, each split into FULL (1) or FIRST (2), MIDDLE (3), LAST (4) chunks behind a 7-byte header."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb log"
    pos, payload = 7, b""
    while pos + WANDB_RECORD_HEADER <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos:pos + WANDB_RECORD_HEADER])
        if left < WANDB_RECORD_HEADER or (length == 0 and kind == 0):  # the zero-padded tail of a block
            pos += left
            continue
        payload += data[pos + WANDB_RECORD_HEADER:pos + WANDB_RECORD_HEADER + length]
        pos += WANDB_RECORD_HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record
            payload = b""


def tiny_sft(tiny_llama_dir: str, out: Path, **keys) -> list[str]:
    return stage_cmd("sft", "recipes/sft/demo.yaml", model_name_or_path=tiny_llama_dir, max_samples=8,
                     per_device_train_batch_size=2, max_length=64, eval_strategy="no", save_strategy="no",
                     output_dir=out, num_samples=0, logging_steps=1, bf16=False, **keys)


def tracker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No API key, no ~/.netrc and no WANDB_MODE of the test session's: what a new user has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TRACKIO_"))}
    return {**env, "HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1", **extra}


def run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_sft_logs_its_losses_offline_to_wandb_in_the_group_and_name_given(tmp_path, tiny_llama_dir):
    out = tmp_path / "sft"
    run(tiny_sft(tiny_llama_dir, out, run_name="demo-sft"), tracker_env(tmp_path, WANDB_RUN_GROUP="demo"))
    [log] = (out / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(wandb_records(log))
    [meta] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (meta.run_group, meta.display_name, meta.project) == ("demo", "demo-sft", "alignment")
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    logged = json.loads((out / "log_history.json").read_text())
    assert losses == [row["loss"] for row in logged if "loss" in row] and len(losses) == 4  # 8 rows, 2 a step


def test_trackio_keeps_sft_metrics_in_its_local_database(tmp_path, tiny_llama_dir):
    out, store = tmp_path / "sft", tmp_path / "trackio"
    run(tiny_sft(tiny_llama_dir, out, run_name="demo-sft", report_to="trackio"), tracker_env(tmp_path, TRACKIO_DIR=str(store)))
    with sqlite3.connect(store / "alignment.db") as db:
        rows = db.execute("SELECT step, metrics FROM metrics WHERE run_name = 'demo-sft' ORDER BY step").fetchall()
    losses = [json.loads(blob)["train/loss"] for _, blob in rows if "train/loss" in json.loads(blob)]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert not (out / "wandb").exists()


def test_ppo_reports_its_step_metrics_to_trackio(tmp_path, tiny_llama_dir):
    out, store = tmp_path / "ppo", tmp_path / "trackio"
    keys = {"model_name_or_path": tiny_llama_dir, "method": "lora", "use_cpu": True, "bf16": False,
            "dataset_path": str(ROOT / "data" / "prompts" / "movie_reviews.jsonl"), "use_chat_template": False,
            "reward_function": "keyword", "reward_kwargs": {"keywords": ["the"]}, "response_length": 4,
            "batch_size": 4, "num_mini_batches": 1, "ppo_epochs": 1, "total_steps": 2, "save_steps": 100,
            "report_to": ["trackio"], "run_name": "demo-ppo", "output_dir": str(out)}
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in keys.items()))
    run(stage_cmd("ppo", str(recipe)), tracker_env(tmp_path, TRACKIO_DIR=str(store)))
    with sqlite3.connect(store / "alignment.db") as db:
        rows = [json.loads(blob) for (blob,) in db.execute("SELECT metrics FROM metrics WHERE run_name = 'demo-ppo'")]
    ours = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(ours) == 2
    assert [row["rlhf_reward"] for row in rows] == pytest.approx([row["rlhf_reward"] for row in ours])
    assert [row["kl"] for row in rows] == pytest.approx([row["kl"] for row in ours])


@pytest.mark.parametrize("env, expected", [
    ({}, "offline"),  # a new user: nothing leaves the machine, nothing prompts
    ({"WANDB_API_KEY": "x" * 40}, None),  # a configured key: wandb's own default (online)
    ({"WANDB_MODE": "disabled"}, "disabled"),  # the user's choice wins
])
def test_wandb_runs_offline_unless_a_key_is_configured(tmp_path, monkeypatch, env, expected):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    configure_trackers(["wandb"], tmp_path / "run")
    assert os.environ.get("WANDB_MODE") == expected
    assert (os.environ["WANDB_DIR"], os.environ["WANDB_PROJECT"]) == (str(tmp_path / "run"), "alignment")


def test_trackio_alone_leaves_wandb_unconfigured(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    configure_trackers(["trackio"], tmp_path)
    assert "WANDB_MODE" not in os.environ and "WANDB_DIR" not in os.environ


def test_pipeline_names_each_trainer_run_within_one_group(tmp_path, monkeypatch):
    """Every stage of a pipeline lands in one group, named by pipeline and stage: trackio continues a run of the
    same name, so two pipelines must not share stage names; a run_name in the stage's recipe wins."""
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    started = []

    def stage_process(module, recipe, flags, log_path):
        started.append((module, flags.get("run_name"), os.environ.get("WANDB_RUN_GROUP")))
        raise AlignmentError("stop after the first stage")

    monkeypatch.setattr(pipeline, "run_module", stage_process)
    spec = tmp_path / "pipe.yaml"
    spec.write_text(json.dumps({"output_dir": str(tmp_path / "weekly"), "stages": [
        {"name": "sft", "recipe": "recipes/sft/demo.yaml"}, {"name": "rm", "recipe": "recipes/rm/demo.yaml"}]}))
    with pytest.raises(AlignmentError, match="stop after the first stage"):
        pipeline.run_pipeline(str(spec))
    assert started == [("alignment.sft", "weekly-sft", "weekly")]

    started.clear()
    monkeypatch.delenv("WANDB_RUN_GROUP")
    spec.write_text(json.dumps({"output_dir": str(tmp_path / "weekly"), "wandb_group": "team-a", "stages": [
        {"name": "sft", "recipe": "recipes/sft/demo.yaml", "overrides": {"run_name": "mine"}}]}))
    with pytest.raises(AlignmentError):
        pipeline.run_pipeline(str(spec))
    assert started == [("alignment.sft", "mine", "team-a")]
