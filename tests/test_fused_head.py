"""trl's fused LM head on CPU: only labelled positions are projected, with the loss unchanged."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM
from trl.trainer import utils
from trl.trainer.utils import add_fused_lm_head

from alignment.training import score_labelled_positions_only


def test_cpu_projects_only_labelled_positions_and_keeps_the_loss(tiny_llama_dir, monkeypatch):
    # start unpatched (a stage run earlier in this process may have patched it) and undo the patch after the test
    monkeypatch.setattr(utils, "_use_triton", getattr(utils._use_triton, "__wrapped__", utils._use_triton))
    projected: list[int] = []
    apply = utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(utils._ChunkedLogProbFunction, "apply", lambda hidden, *a: projected.append(len(hidden)) or apply(hidden, *a))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    add_fused_lm_head(model)
    input_ids = torch.randint(0, 1000, (2, 12))
    labels = input_ids.clone()
    labels[:, :8] = -100  # a prompt: labels 8..11 are scored, 4 per row

    def loss() -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=input_ids, labels=labels, fused_lm_head=True).loss

    before = loss()
    score_labelled_positions_only()
    score_labelled_positions_only()  # idempotent
    after = loss()
    assert projected == [2 * 11, 2 * 4]
    torch.testing.assert_close(after, before)
