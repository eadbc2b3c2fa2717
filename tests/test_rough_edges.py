"""What a new user hits on real data: bad rows in score and predict, long texts in predict, a model path that is
nowhere. Each test fails on the code before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.predict import main as predict_main
from alignment.score import main as score_main
from alignment.sft import main as sft_main

from helpers import ROOT, write_jsonl


@pytest.fixture(scope="module")
def encoder_runs(tmp_path_factory, tiny_bert_dir):
    """A reward model and a two-label classifier (random-init tiny BERT), saved as the stages save them."""
    root = tmp_path_factory.mktemp("encoder-runs")
    tok = load_tokenizer(tiny_bert_dir)
    args = ModelArguments(model_name_or_path=tiny_bert_dir, method="full")
    rm, rm_origin = load_model(args, "seq_cls", tok, num_labels=1)
    save_model(rm, tok, root / "rm", kind="seq_cls", origin=rm_origin, num_labels=1, stage="rm", max_length=64)
    classifier, classifier_origin = load_model(args, "seq_cls", tok, num_labels=2)
    save_model(classifier, tok, root / "clf", kind="seq_cls", origin=classifier_origin, num_labels=2,
               label_names=["negative", "positive"], stage="classify", max_length=8)
    return root


def test_score_takes_the_data_layers_keys_and_skips_bad_rows(encoder_runs, tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "The film", "chosen": "was wonderful.", "rejected": "was dull."},
        {"prompt": "The plot", "chosen": "same words", "rejected": "same words"},
        {"prompt": "The cast", "chosen": "shines.", "rejected": "is wooden."},
    ])
    assert score_main([str(encoder_runs / "rm"), "--file", str(pairs)]) == 2
    assert "line 2: chosen and rejected are identical (set on_bad_rows: skip" in capsys.readouterr().err
    out = tmp_path / "scored.jsonl"
    assert score_main([str(encoder_runs / "rm"), "--file", str(pairs), "--on_bad_rows", "skip", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_pairs"] == 2
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == ["The film", "The cast"]
    renamed = write_jsonl(tmp_path / "renamed.jsonl", [{"q": "The film", "good": "fine", "bad": "poor"}])
    flags = ["--prompt_column", "q", "--chosen_column", "good", "--rejected_column", "bad"]
    assert score_main([str(encoder_runs / "rm"), "--file", str(renamed), *flags]) == 0


def test_predict_reports_truncation_and_reads_more_with_max_length(encoder_runs, tmp_path, capsys):
    long_text = "a long and winding review " * 10  # ~50 tokens: over the run's max_length of 8
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": long_text}, {"text": "short"}, {"review": "no text column"}])
    out = tmp_path / "out.jsonl"
    assert predict_main([str(encoder_runs / "clf"), "--file", str(texts), "--out", str(out)]) == 2
    assert "line/row 3: no text in column 'text'" in capsys.readouterr().err
    assert predict_main([str(encoder_runs / "clf"), "--file", str(texts), "--out", str(out), "--on_bad_rows", "skip"]) == 0
    err = capsys.readouterr().err
    assert "1 rows without text in 'text' left out" in err and "1 of 2 texts are longer than max_length 8 tokens" in err
    cut = [json.loads(line)["probabilities"]["positive"] for line in out.read_text().splitlines()]
    assert predict_main([str(encoder_runs / "clf"), "--file", str(texts), "--out", str(out), "--on_bad_rows", "skip", "--max_length", "64"]) == 0
    assert "longer than max_length" not in capsys.readouterr().err
    whole = [json.loads(line)["probabilities"]["positive"] for line in out.read_text().splitlines()]
    assert whole[1] == pytest.approx(cut[1]) and whole[0] != pytest.approx(cut[0])  # only the long text reads more


def test_a_model_path_that_is_nowhere_is_named_before_any_work(capsys):
    argv = [str(ROOT / "recipes/sft/demo.yaml"), "--model_name_or_path", "/nonexistent/model"]
    assert sft_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "recipes/sft/demo.yaml: invalid ModelArguments: model_name_or_path: '/nonexistent/model' is not a local folder (no such path), not a builtin: name" in err[0]
    assert sft_main([str(ROOT / "recipes/sft/demo.yaml"), "--model_name_or_path", "builtin:gpt-9"]) == 2
    assert "unknown builtin model 'builtin:gpt-9'; available: builtin:smollm2-135m-instruct" in capsys.readouterr().err


def test_a_hub_id_the_hub_cannot_give_says_so():
    code = "from alignment.models import load_tokenizer; load_tokenizer('no-such-org/no-such-model')"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert run.returncode != 0
    assert "could not load 'no-such-org/no-such-model': not a local folder, not a builtin: name" in run.stderr
    assert "the hub is unreachable or has no such id" in run.stderr
