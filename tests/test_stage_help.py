"""``--help`` on every stage lists every recipe key, grouped by where it is declared, with its type, the default
the stage really uses and its help text."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

STAGES = {
    "alignment.sft": ["--dataset_path", "--max_length", "--learning_rate", "--lora_r"],
    "alignment.rm": ["--prompt_turns", "--max_length", "--extra_columns"],
    "alignment.dpo": ["--beta", "--eval_prompts", "--gold_reward"],
    "alignment.kto": ["--desirable_weight", "--undesirable_weight", "--beta", "--loss_type", "--eval_prompts"],
    "alignment.classify.stage": ["--baseline", "--label_column", "--pooling"],
    "alignment.ppo.__main__": ["--advantage_estimator", "--num_generations", "--rewards", "--kl_in", "--extra_columns"],
    "alignment.grpo": ["--advantage_estimator", "--loss_aggregation"],
    "alignment.evaluate": ["--gold", "--samples_per_prompt", "--temperature"],
    "alignment.candidates": ["--db", "--num_return_sequences"],
    "alignment.simulate": ["--oracle"],
}


@pytest.mark.parametrize("module", STAGES)
def test_help_lists_every_key_with_type_default_and_help(module, capsys):
    main = importlib.import_module(module).main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^usage: python -m ", out, re.M)
    for key in STAGES[module]:
        assert re.search(rf"^  {key}: .+; default ", out, re.M), key
    listed = re.findall(r"^  --(\w+): ", out, re.M)
    assert len(listed) == len(set(listed))  # a key shared by two classes is listed once


def test_help_shows_the_stage_defaults_not_the_field_defaults(capsys):
    from alignment.grpo import main as grpo_main
    from alignment.ppo.__main__ import main as ppo_main
    from alignment.ppo.trainer import CLASSES

    assert ppo_main(["--help"]) == 0
    ppo = capsys.readouterr().out
    assert grpo_main(["--help"]) == 0
    grpo = capsys.readouterr().out
    assert re.search(r"--advantage_estimator: one of 'gae', .*; default 'gae'", ppo)
    assert re.search(r"--advantage_estimator: one of 'gae', .*; default 'grpo'", grpo)
    assert "--method: " in ppo and "default 'qlora'" in ppo.split("--method: ")[1].splitlines()[0]
    from alignment.config import unused_key

    every_key = {f.name for cls in CLASSES for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")
                 and not unused_key(CLASSES, f.name)}
    listed = set(re.findall(r"^  --(\w+): ", ppo, re.M))
    assert every_key == listed
    # PPOConfig is a TrainingArguments: its run and optimiser keys are listed, the Trainer keys PPO never reads are not
    assert {"learning_rate", "warmup_steps", "adam_epsilon", "batch_size"} <= listed
    assert not {"per_device_train_batch_size", "logging_steps", "push_to_hub"} & listed
    assert "Responses sampled per prompt" in ppo  # help texts are shown
