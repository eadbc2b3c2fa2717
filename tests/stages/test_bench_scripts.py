"""The benchmark scripts in bench/ run end to end on tiny inputs shaped like their real data (quick-check flags), so
an API change in a stage breaks a test here instead of the next hour-long benchmark run."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from helpers import ROOT, read_jsonl

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_classify_sst2_bench_reports_both_runs(tmp_path):
    """SST-2's layout: train.tsv (label, sentence) and dev.tsv (label, content), tab-separated, labels 0/1."""
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    for name, source, column in [("train", "train", "sentence"), ("dev", "test", "content")]:
        rows = read_jsonl(ROOT / "data" / "sentiment" / f"{source}.jsonl")
        lines = [f"label\t{column}"] + [f"{int(r['label'] == 'positive')}\t{r['text']}" for r in rows]
        (sst2 / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "results.json"
    proc = run_bench("classify_sst2.py", str(sst2), "--max-train-samples", "200", "--plain-epochs", "0.5", "--out", str(out))

    results = json.loads(out.read_text())
    ours, plain = results["alignment"], results["plain_trainer"]
    assert ours["train_rows"] == plain["train_rows"] == 200
    assert ours["epochs"] != plain["epochs"] == 0.5
    for run in (ours, plain):
        assert 0.0 <= run["dev_accuracy"] <= 1.0 and run["train_samples_per_second"] > 0
    assert results["speedup_train"] == pytest.approx(ours["train_samples_per_second"] / plain["train_samples_per_second"])
    assert "targets" not in results and "MISSED" not in proc.stdout  # figures and ratios only, no verdicts
    assert "alignment.classify" in proc.stdout and "plain Trainer" in proc.stdout


def test_rm_hh_bench_scores_the_held_out_split(tmp_path):
    """HH-RLHF's layout: <subset>/test.jsonl.gz of {"chosen", "rejected"} transcripts; one pair is made identical,
    which the stage skips and reports."""
    pairs = read_jsonl(ROOT / "data" / "preferences" / "demo.jsonl")
    hh = lambda prompt, reply: f"\n\nHuman: {prompt}\n\nAssistant: {reply}"  # noqa: E731
    rows = [{"chosen": hh(p["prompt"], p["chosen"]), "rejected": hh(p["prompt"], p["rejected"])} for p in pairs]
    rows[0]["rejected"] = rows[0]["chosen"]
    half = len(rows) // 2
    for subset, subset_rows in [("helpful-online", rows[:half]), ("helpful-rejection-sampled", rows[half:])]:
        (tmp_path / "hh" / subset).mkdir(parents=True)
        with gzip.open(tmp_path / "hh" / subset / "test.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in subset_rows)
    out = tmp_path / "results.json"
    proc = run_bench("rm_hh.py", str(tmp_path / "hh"), "--models", "minilm", "--max-pairs", "80", "--max-length", "48",
              "--epochs", "1", "--work", str(tmp_path / "work"), "--out", str(out))

    results = json.loads(out.read_text())
    minilm = results["models"]["minilm"]
    assert results["best"] == "minilm"
    assert minilm["validation_pairs"] == 8  # 10% of each subset's sampled rows
    assert minilm["train_pairs"] in (71, 72)  # the other 72, less the identical pair if the sample drew it
    assert minilm["settings"]["max_length"] == 48
    assert 0.0 <= minilm["validation_accuracy"] <= 1.0 and minilm["pairs_per_second"] > 0
    assert f"best validation accuracy: minilm ({minilm['validation_accuracy']:.4f})" in proc.stdout
