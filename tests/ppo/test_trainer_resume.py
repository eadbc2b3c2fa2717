"""A PPO run killed while writing a checkpoint resumes, by re-running the same command, to exactly the result of an
uninterrupted run (real SmolLM2 weights; LoRA on the full-precision base, which loads faster than 4-bit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.ppo import checkpoint as checkpoint_module
from alignment.ppo.__main__ import main
from alignment.training import last_complete_checkpoint

PROMPTS = ["I watched this film last weekend and", "The director's new thriller", "Honestly, the soundtrack", "The plot"]


def _run_keys(tmp_path: Path, name: str, extra: tuple[str, ...] = ()) -> list[str]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return [
        "--model_name_or_path", "builtin:smollm2-135m-instruct", "--method", "lora", "--lora_r", "8",
        "--dataset_path", str(prompts), "--use_chat_template", "false", "--use_cpu", "true", "--bf16", "false",
        "--reward_function", "length", "--batch_size", "2", "--num_mini_batches", "1", "--ppo_epochs", "1",
        "--total_steps", "3", "--save_steps", "1", "--save_total_limit", "2", "--response_length", "6",
        "--learning_rate", "1e-3", "--output_dir", str(tmp_path / name), *extra,
    ]


ESTIMATORS = {
    "gae": (),
    # critic-free, 2 prompts x 2 answers per step: a resumed run must rebuild the same groups for the steps it redoes
    "grpo": ("--advantage_estimator", "grpo", "--num_generations", "2", "--batch_size", "4"),
}


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_run_killed_while_saving_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, estimator):
    extra = ESTIMATORS[estimator]
    assert main(_run_keys(tmp_path, "straight", extra)) == 0

    real_write_json = checkpoint_module.write_json

    def killed_while_saving_step_3(path, data):
        if Path(path).parent.name == ".tmp-checkpoint-3":
            raise KeyboardInterrupt  # the process dies after the weights and optimizer, before the trainer state
        real_write_json(path, data)

    monkeypatch.setattr(checkpoint_module, "write_json", killed_while_saving_step_3)
    with pytest.raises(KeyboardInterrupt):
        main(_run_keys(tmp_path, "killed", extra))
    killed = tmp_path / "killed"
    assert (killed / ".tmp-checkpoint-3").is_dir() and not (killed / "checkpoint-3").exists()
    assert last_complete_checkpoint(killed) == str(killed / "checkpoint-2")
    monkeypatch.setattr(checkpoint_module, "write_json", real_write_json)

    assert main(_run_keys(tmp_path, "killed", extra)) == 0  # the same command again
    assert sorted(p.name for p in killed.iterdir() if "checkpoint" in p.name) == ["checkpoint-2", "checkpoint-3"]
    assert json.loads((killed / "checkpoint-3" / "trainer_state.json").read_text())["step"] == 3
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    straight_rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["reward_mean"] == straight_rows[-1]["reward_mean"]
    resumed, straight = load_file(killed / "adapter_model.safetensors"), load_file(tmp_path / "straight" / "adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=0)
    value_resumed = load_file(killed / "checkpoint-3" / "value_state.safetensors")
    value_straight = load_file(tmp_path / "straight" / "checkpoint-3" / "value_state.safetensors")
    if estimator == "gae":
        assert any(not torch.equal(v, torch.zeros_like(v)) for v in value_straight.values())
    else:  # a critic-free run trains no value function
        assert value_straight == {}
    for name in value_straight:
        torch.testing.assert_close(value_resumed[name], value_straight[name], atol=1e-6, rtol=0)
