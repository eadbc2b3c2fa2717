"""Every stage on every architecture family, on tiny random-init models built from configs (no hub): each decoder
family goes through SFT, reward modelling and DPO for a step (PPO: tests/ppo/test_model_families.py); each encoder
family through classification and reward modelling, and reloads to identical scores."""

from __future__ import annotations

import pytest
import torch
import transformers

from alignment.classify.stage import main as classify_main
from alignment.dpo import main as dpo_main
from alignment.rewards import load_classifier, load_reward_model
from alignment.rm import main as rm_main
from alignment.sft import main as sft_main

from helpers import ROOT, metrics
from tiny_models import ENCODERS, FAMILIES, build_decoder, build_encoder

QUICK = ["--method", "lora", "--lora_r", "4", "--lora_target_modules", "all-linear", "--bf16", "false", "--use_cpu", "true",
         "--max_steps", "1", "--per_device_train_batch_size", "2", "--save_strategy", "no", "--eval_strategy", "no",
         "--max_length", "64", "--report_to", "none", "--logging_steps", "1"]
PAIRS = ROOT / "data" / "preferences" / "demo.jsonl"


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_llama_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)


NO_CLASSIFICATION_HEAD = {"granite", "cohere"}  # transformers has no ...ForSequenceClassification for them


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sft_rm_and_dpo_run_on_every_decoder_family(family, chat_tokenizer, tmp_path, capsys):
    path = build_decoder(family, chat_tokenizer, tmp_path / family)
    base = ["--model_name_or_path", path, *QUICK]
    assert sft_main(["recipes/sft/demo.yaml", *base, "--max_samples", "4", "--num_samples", "0", "--output_dir", str(tmp_path / "sft")]) == 0
    assert metrics(tmp_path / "sft")["global_step"] == 1
    assert dpo_main(["recipes/dpo/demo.yaml", *base, "--max_samples", "8", "--output_dir", str(tmp_path / "dpo")]) == 0
    assert metrics(tmp_path / "dpo")["global_step"] == 1
    capsys.readouterr()
    code = rm_main(["recipes/rm/demo.yaml", *base, "--max_samples", "8", "--output_dir", str(tmp_path / "rm")])
    if family in NO_CLASSIFICATION_HEAD:  # a clear refusal, not a wrong result
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith("error: ") and "transformers has no sequence-classification" in err[-1]
        return
    assert code == 0
    rm = load_reward_model(tmp_path / "rm")
    scores = rm.score(["Hello"] * 2, ["a kind reply", "a rude and much longer reply, far from kind"])
    assert all(torch.isfinite(torch.tensor(scores))) and scores[0] != scores[1]


@pytest.mark.slow
@pytest.mark.parametrize("family", ENCODERS)
def test_classify_and_rm_run_and_reload_identically_on_every_encoder_family(family, minilm_path, tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    path = build_encoder(family, tokenizer, tmp_path / family)
    base = ["--model_name_or_path", path, *QUICK, "--method", "full"]
    texts = ["a warm and funny film", "dull, far too long"]
    assert classify_main(["recipes/classify/demo.yaml", *base, "--baseline", "none", "--max_samples", "16", "--early_stopping_patience", "null",
                          "--output_dir", str(tmp_path / "clf")]) == 0
    first, second = load_classifier(tmp_path / "clf"), load_classifier(tmp_path / "clf")
    assert first.probabilities(texts).tolist() == second.probabilities(texts).tolist()
    assert rm_main(["recipes/rm/demo.yaml", *base, "--max_samples", "8", "--output_dir", str(tmp_path / "rm")]) == 0
    a, b = load_reward_model(tmp_path / "rm"), load_reward_model(tmp_path / "rm")
    assert a.score(["Hi"] * 2, texts) == b.score(["Hi"] * 2, texts)
