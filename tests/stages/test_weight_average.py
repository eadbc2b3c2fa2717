"""Weight averaging (``weight_averaging: ema``): the EMA arithmetic, the final model being the average, the average
surviving a resume, and recipe errors before anything loads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignment.classify.stage import main as classify_main
from alignment.models import load_trained
from alignment.training import WeightAverage

from helpers import ROOT

SENTIMENT = ROOT / "data" / "sentiment"


def test_ema_is_the_decay_weighted_mean_of_the_trained_weights_only(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.detach().clone()
    args, state = SimpleNamespace(output_dir=str(tmp_path), should_save=True), SimpleNamespace(global_step=0)
    ema = WeightAverage(decay=0.9)
    ema.on_train_begin(args, state, None, model=model)
    assert set(ema.average) == {"0.weight", "0.bias", "1.bias"}
    history = []
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p))
        state.global_step = step
        ema.on_step_end(args, state, None)
        history.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    # The bias-corrected EMA is the d**(t - s)-weighted mean of the weights after steps 1..t (not the initial ones).
    weights = torch.tensor([0.9 ** (5 - s) for s in range(1, 6)])
    expected = {n: sum(w * h[n] for w, h in zip(weights, history)) / weights.sum() for n in history[0]}
    for n, t in expected.items():
        torch.testing.assert_close(ema.average[n], t)
        assert not torch.equal(ema.average[n], dict(model.named_parameters())[n])
    ema.on_train_end(args, state, None)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n] if n in expected else frozen)


def run(tmp_path: Path, name: str, model_dir: str, **keys) -> Path:
    out = tmp_path / name
    recipe = {
        "model_name_or_path": model_dir, "dataset_path": str(SENTIMENT / "train.jsonl"),
        "validation_path": str(SENTIMENT / "validation.jsonl"), "max_length": 32, "per_device_train_batch_size": 8,
        "learning_rate": 1e-3, "lr_scheduler_type": "constant", "warmup_steps": 0, "eval_strategy": "no",
        "save_strategy": "steps", "save_steps": 3, "save_total_limit": 5, "load_best_model_at_end": False,
        "weight_averaging": "ema", "ema_decay": 0.5, "seed": 0, "report_to": "none", "output_dir": str(out), **keys,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert classify_main([str(path)]) == 0
    return out


def saved_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    model, _, _ = load_trained(run_dir, "seq_cls")
    return {n: p.detach() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_bert_dir) -> Path:
    return run(tmp_path_factory.mktemp("ema"), "whole", tiny_bert_dir, max_steps=6, resume=False)


def test_saved_model_is_the_average_not_the_last_weights(uninterrupted):
    average = load_file(str(uninterrupted / "checkpoint-6" / WeightAverage.FILE))
    last = load_file(str(uninterrupted / "checkpoint-6" / "model.safetensors"))
    saved = saved_weights(uninterrupted)
    assert average.keys() == saved.keys()
    for name, tensor in average.items():
        torch.testing.assert_close(saved[name], tensor)
    assert any(not torch.equal(last[n], average[n]) for n in average if n in last)


def test_resumed_run_continues_the_same_average(uninterrupted, tmp_path, tiny_bert_dir):
    run(tmp_path, "resumed", tiny_bert_dir, max_steps=3, resume=False)
    resumed = saved_weights(run(tmp_path, "resumed", tiny_bert_dir, max_steps=6, resume=True))
    reference = saved_weights(uninterrupted)
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-4, atol=1e-5)
    # Without the saved average the resumed run restarts it and ends elsewhere: the check above can fail.
    run(tmp_path, "restarted", tiny_bert_dir, max_steps=3, resume=False)
    (tmp_path / "restarted" / "checkpoint-3" / WeightAverage.FILE).unlink()
    restarted = saved_weights(run(tmp_path, "restarted", tiny_bert_dir, max_steps=6, resume=True))
    assert any(not torch.allclose(restarted[n], reference[n], rtol=1e-4, atol=1e-5) for n in reference)
