"""PPO checkpoints: ``checkpoint-<step>/`` with the policy adapter, the value weights, optimizer, scheduler, the
trainer's own state (``trainer_state.json``) and every process's RNG state; written atomically, pruned to
``save_total_limit``, restored exactly."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from alignment.errors import AlignmentError
from alignment.ppo.modeling import POLICY, ActorCritic
from alignment.run import write_json

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) generator states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    run_dir: Path, step: int, acc: Accelerator, model: ActorCritic, optimizer, scheduler, trainer_state: dict,
    limit: int | None,
) -> Path:  # fmt: skip
    """Write ``checkpoint-<step>``: everything goes to a temporary folder renamed into place last, so an interrupted
    save never leaves a checkpoint that looks complete; then keep only the newest ``limit`` checkpoints."""
    from safetensors.torch import save_file

    final, temp = run_dir / f"{CHECKPOINT_PREFIX}{step}", run_dir / f"{TEMP_PREFIX}{step}"
    if acc.is_main_process:
        for stale in run_dir.glob(f"{TEMP_PREFIX}*"):
            shutil.rmtree(stale)
        temp.mkdir()
    acc.wait_for_everyone()
    torch.save(rng_state(), temp / f"rng_state_{acc.process_index}.pth")
    if acc.is_main_process:
        model.model.save_pretrained(str(temp), selected_adapters=[POLICY])
        save_file(model.value_state(), str(temp / "value_state.safetensors"))
        torch.save(optimizer.state_dict(), temp / "optimizer.pt")
        torch.save(scheduler.state_dict(), temp / "scheduler.pt")
        write_json(temp / "trainer_state.json", {**trainer_state, "world_size": acc.num_processes})
    acc.wait_for_everyone()
    if acc.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.rename(temp, final)
        prune(run_dir, limit)
    acc.wait_for_everyone()
    return final


def prune(run_dir: Path, limit: int | None) -> None:
    """Delete all but the newest ``limit`` checkpoints (none when ``limit`` is None)."""
    if limit is None:
        return
    found = sorted(
        (int(p.name[len(CHECKPOINT_PREFIX):]), p)
        for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if p.name[len(CHECKPOINT_PREFIX):].isdigit()
    )
    for _, path in found[: max(len(found) - limit, 0)]:
        shutil.rmtree(path)


def load(path: Path, acc: Accelerator, model: ActorCritic, optimizer, scheduler) -> dict[str, Any]:
    """Restore adapters, value weights, optimizer, scheduler and this process's RNG from ``path``; return the
    trainer state saved with them. Refuses a checkpoint written by another number of processes or another model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((path / "trainer_state.json").read_text())
    if state["world_size"] != acc.num_processes:
        raise AlignmentError(
            f"{path} was written by {state['world_size']} processes; resume with the same number (got "
            f"{acc.num_processes}), or start a new output_dir"
        )
    adapter = load_file(str(path / "adapter_model.safetensors"))
    loaded = set_peft_model_state_dict(model.model, adapter, adapter_name=POLICY)
    value = model.load_state_dict(load_file(str(path / "value_state.safetensors")), strict=False)
    unexpected = list(loaded.unexpected_keys) + list(value.unexpected_keys)
    if unexpected:
        raise AlignmentError(
            f"{path} does not match this model (unexpected weights {unexpected[:3]}...); was the recipe changed?"
        )
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / f"rng_state_{acc.process_index}.pth", weights_only=False))
    return state
