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
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 0, "\n".join(errors) + "\n" + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # 16 rows, 2 per device, 2 ranks: 4 optimizer steps over one epoch (one process alone would take 8)
    assert metrics["world_size"] == 2
    assert metrics["global_step"] == 4


def test_a_successful_stage_ends_its_process_group(tmp_path):
    """A stage left alive under torchrun can abort in gloo's teardown at exit; stage_main ends the group on
    success, and leaves it after a failure (the other ranks may still be inside a collective)."""
    import torch.distributed as dist

    from alignment.errors import AlignmentError
    from alignment.run import stage_main

    def init(store: str) -> None:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / store}", rank=0, world_size=1)

    def fails(argv):
        init("failed")
        raise AlignmentError("bad input")

    assert stage_main(lambda argv: init("ok"))([]) == 0
    assert not dist.is_initialized()
    try:
        assert stage_main(fails)([]) == 2
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
