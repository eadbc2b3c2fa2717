"""The whole loop end to end on real weights with tiny settings: every manifest artifact exists and loads, a failed
run resumes at the failed stage, an unchanged re-run skips everything, a changed stage re-runs with its successors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from alignment.pipeline import main as pipeline_main

from helpers import RESULT_LINE, ROOT, read_jsonl

TINY = {
    "classify": {"max_samples": 48, "num_train_epochs": 1, "eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False, "early_stopping_patience": None, "baseline": "none"},
    "sft": {"max_samples": 8, "max_steps": 2, "max_length": 96, "per_device_train_batch_size": 4, "save_strategy": "no", "num_samples": 1, "sample_max_new_tokens": 8},
    "candidates": {"dataset_path": "data/prompts/movie_reviews.jsonl", "max_samples": 4, "num_return_sequences": 3, "max_new_tokens": 12, "k": 3, "judgements_per_task": 2},
    "rm": {"model_name_or_path": "builtin:minilm-l6", "method": "full", "num_train_epochs": 1, "max_length": 64, "save_strategy": "no", "eval_strategy": "no", "validation_split": 0.0, "test_split": 0.25},
    "dpo": {"max_samples": 4, "max_steps": 2, "max_length": 64, "per_device_train_batch_size": 2, "save_strategy": "no", "eval_strategy": "no", "validation_split": 0.0, "eval_max_prompts": 3, "eval_max_new_tokens": 8},
    "ppo": {"total_steps": 2, "batch_size": 4, "num_mini_batches": 1, "response_length": 8, "use_chat_template": True, "eval_steps": 1, "eval_max_prompts": 3, "save_steps": 2},
    "evaluate": {"dataset_path": "data/prompts/movie_reviews_heldout.jsonl", "max_samples": 4, "max_new_tokens": 12, "bootstrap": 200},
}
RECIPES = {
    "classify": "recipes/classify/demo.yaml", "sft": "recipes/sft/demo.yaml", "candidates": "recipes/annotation/candidates.yaml",
    "rm": "recipes/rm/demo.yaml", "dpo": "recipes/dpo/demo.yaml", "ppo": "recipes/ppo/demo.yaml",
}


def write_pipeline(path: Path, out: Path, **changes) -> str:
    stages = []
    for name in ["classify", "sft", "candidates", "annotate", "rm", "dpo", "ppo", "evaluate"]:
        if name == "annotate":
            stages.append({"name": "annotate", "raters": 2, "noise": 0.05})
            continue
        stage = {"name": name, "overrides": {**TINY[name], **changes.get(name, {})}}
        if name in RECIPES:
            stage["recipe"] = str(ROOT / RECIPES[name])
        stages.append(stage)
    validation = str(ROOT / "data/prompts/movie_reviews_validation.jsonl")
    path.write_text(yaml.safe_dump({"output_dir": str(out), "stages": stages, "validation_prompts": validation}))
    return str(path)


def statuses(out: Path) -> dict[str, tuple[str, str]]:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {name: (info["status"], info["hash"]) for name, info in stages.items()}


@pytest.mark.slow
def test_pipeline_end_to_end_resume_and_skip(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "pipe"
    recipe = tmp_path / "pipeline.yaml"
    # 1. a bad DPO key makes the run fail at dpo, after the earlier stages finished
    assert pipeline_main([write_pipeline(recipe, out, dpo={"learnig_rate": 1e-4})]) == 2
    first = statuses(out)
    assert first["rm"][0] == "done" and first["dpo"][0] == "running" and "evaluate" not in first
    # 2. fixed: it resumes at dpo; the stages before it are skipped (same hashes)
    assert pipeline_main([write_pipeline(recipe, out)]) == 0
    second = statuses(out)
    assert all(status == "done" for status, _ in second.values())
    assert {n: h for n, (_, h) in second.items() if n not in ("dpo", "ppo", "evaluate")} == {n: h for n, (_, h) in first.items() if n not in ("dpo",)}
    log = capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("classify", "sft", "rm", "dpo", "ppo"):
        assert (out / name / "alignment_model.json").is_file(), name
    from alignment.models import load_trained
    from alignment.rewards import load_reward_model

    load_trained(out / "dpo")
    assert load_reward_model(out / "rm").score(["Hi"], ["Hello!"])
    assert (out / "preferences.jsonl").read_text().strip()
    evaluation = manifest["stages"]["evaluate"]["metrics"]
    assert list(evaluation["policies"]) == [str(out / "sft"), str(out / "ppo"), str(out / "dpo")]
    assert evaluation["judges"] == {"proxy": str(out / "rm"), "gold": f"{out / 'classify'}#positive"}
    # the summary ends with one parseable result line per optimiser, its figures those of evaluation.json
    results = [RESULT_LINE.match(line) for line in log.out.strip().splitlines()[-2:]]
    assert [m.group(1) for m in results if m] == ["ppo", "dpo"], log.out[-800:]
    for m in results:
        gold = evaluation["policies"][str(out / m.group(1))]["gold"]
        assert m.group(3) == f"{gold['win_rate_vs_baseline']:.2f}"
    # evaluate prints every figure with its interval
    printed = [line for line in log.out.splitlines() if line.startswith(str(out / "ppo") + ": proxy reward")]
    assert len(printed) == 1 and re.search(r"gold win rate [\d.]+ \[[\d.]+, [\d.]+\], KL -?[\d.]+ \[", printed[0]), printed
    # both monitors scored the validation prompts with proxy, gold and KL, before and after training
    ppo_rows, dpo_rows = read_jsonl(out / "ppo" / "eval.jsonl"), read_jsonl(out / "dpo" / "eval.jsonl")
    assert [r["step"] for r in ppo_rows] == [0, 1, 2] and [r["step"] for r in dpo_rows] == [0, 2]
    assert all({"proxy_reward", "gold_reward", "kl"} <= set(r) and r["num_prompts"] == 3 for r in ppo_rows + dpo_rows)
    page = (out / "report.html").read_text()
    assert page.index('<section id="result">') < page.index('<section id="overview">')
    # 3. unchanged: everything is skipped
    before = {n: i.get("wall_time_s") for n, i in manifest["stages"].items()}
    assert pipeline_main([write_pipeline(recipe, out)]) == 0
    after = json.loads((out / "manifest.json").read_text())["stages"]
    assert {n: i.get("wall_time_s") for n, i in after.items()} == before
    # 4. changing the evaluation re-runs evaluate only
    assert pipeline_main([write_pipeline(recipe, out, evaluate={"seed": 7})]) == 0
    changed = json.loads((out / "manifest.json").read_text())["stages"]
    assert [n for n in changed if changed[n]["hash"] != after[n]["hash"]] == ["evaluate"]
