"""Data-parallel with no code change: `torchrun --nproc_per_node 2` gives two synchronised gloo ranks on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.distributed
def test_sft_runs_on_two_cpu_processes(tmp_path, tiny_llama_dir):
    out = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), "--nproc_per_node", "2", "--master_port", "29531", "-m", "alignment.sft", "recipes/sft/demo.yaml",
        "--model_name_or_path", tiny_llama_dir, "--max_samples", "16", "--per_device_train_batch_size", "2",
        "--max_length", "64", "--eval_strategy", "no", "--save_strategy", "no", "--output_dir", str(out),
        "--num_samples", "0", "--logging_steps", "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # 16 rows, 2 per device, 2 ranks: 4 optimizer steps over one epoch (one process alone would take 8)
    assert metrics["world_size"] == 2
    assert metrics["global_step"] == 4
