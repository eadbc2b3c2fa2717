"""Benchmark: SST-2 with builtin:minilm-l6, ``alignment.classify`` against a plain ``transformers.Trainer`` script
with the same settings, in one run. Reports dev accuracy, wall time, training time, samples/s and the ratio.

    python bench/classify_sst2.py [PATH] [--max-train-samples N] [--plain-epochs E] [--out results.json]

PATH is the SST-2 folder (train.tsv, dev.tsv; default ../shared/data/sst2). Both runs read the same files: the
training rows (a seeded sample of N when --max-train-samples is given) and dev.tsv with its header made to match
train.tsv, and train with the settings of recipes/classify/sst2.yaml. ``alignment.classify`` runs the recipe as a
user would: it holds out 1% of the training rows for validation (evaluated every ``eval_steps``), keeps the model
the recipe keeps, and scores dev once at the end as its test split (dev picks no checkpoint; the recipe's settings
were chosen from earlier dev-scored runs, see its comments). The plain Trainer trains on every training row and is
scored on dev at the end. Each run is a separate process, one after the other.

The plain Trainer runs in fp32 (TrainingArguments' default): 79 samples/s measured on an AMX CPU (39 on one without
bf16), so the recipe's 2 epochs take it ~28 minutes there; ``--plain-epochs 0.25`` trains it for a quarter epoch only (same settings otherwise) and the speed-up
is then the ratio of training samples/s (training times are not comparable across epoch counts), and its dev
accuracy is that of a quarter-trained model.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "classify" / "sst2.yaml"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2"
SEED = 42


def read_tsv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n").writerows(rows)
    return path


def prepare(data: Path, work: Path, max_train_samples: int | None, seed: int) -> tuple[Path, Path]:
    """train.tsv (optionally a seeded sample) and dev.tsv, both with the header ``label\\tsentence``."""
    train = read_tsv(data / "train.tsv")[1:]
    if max_train_samples:
        train = random.Random(seed).sample(train, min(max_train_samples, len(train)))
    dev = read_tsv(data / "dev.tsv")[1:]
    header = [["label", "sentence"]]
    return write_tsv(work / "train.tsv", header + train), write_tsv(work / "dev.tsv", header + dev)


def recipe_settings() -> dict:
    import yaml

    return yaml.safe_load(RECIPE.read_text())


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def run_alignment(train: Path, dev: Path, out: Path) -> dict:
    overrides = {"seed": SEED, "dataset_path": train, "test_path": dev, "output_dir": out}
    cmd = [sys.executable, "-m", "alignment.classify", str(RECIPE)] + [f"--{k}={v}" for k, v in overrides.items()]
    wall = timed(cmd)
    m = json.loads((out / "metrics.json").read_text())
    return summary(m["test"]["accuracy"], m["train"], wall, len(read_tsv(train)) - 1, recipe_settings()["num_train_epochs"])


def run_plain(train: Path, dev: Path, out: Path, epochs: float) -> dict:
    wall = timed([sys.executable, __file__, "--plain", str(train), str(dev), str(out), str(epochs)])
    m = json.loads((out / "plain.json").read_text())
    return summary(m["eval_accuracy"], m["train"], wall, len(read_tsv(train)) - 1, epochs)


def summary(accuracy: float, train_metrics: dict, wall: float, rows: int, epochs: float) -> dict:
    return {
        "epochs": epochs,
        "dev_accuracy": accuracy,
        "train_seconds": train_metrics["train_runtime"],
        "wall_seconds": wall,
        "train_samples_per_second": train_metrics["train_samples_per_second"],
        "train_rows": rows,
    }


def plain_trainer(train: Path, dev: Path, out: Path, epochs: float) -> None:
    """The reference: what a user writes with transformers alone for the recipe's settings (same model, same frozen
    layers, same optimiser settings; the Trainer's default sampler and dynamic padding)."""
    import numpy as np
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from alignment.models.builtin import resolve

    s = recipe_settings()
    path = resolve(s["model_name_or_path"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    n_frozen = s.get("freeze_layers", 0)
    if s.get("freeze_embeddings") or n_frozen:
        model.get_input_embeddings().requires_grad_(False)
    for layer in model.bert.encoder.layer[:n_frozen]:
        layer.requires_grad_(False)
    files = {"train": str(train), "dev": str(dev)}
    data = load_dataset("csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=s["max_length"]), batched=True)
    args = TrainingArguments(
        output_dir=str(out),
        learning_rate=float(s["learning_rate"]),
        num_train_epochs=epochs,
        per_device_train_batch_size=s["per_device_train_batch_size"],
        per_device_eval_batch_size=s["per_device_eval_batch_size"],
        warmup_steps=s["warmup_steps"],
        weight_decay=s["weight_decay"],
        lr_scheduler_type=s["lr_scheduler_type"],
        eval_strategy="no",
        save_strategy="no",
        logging_steps=s["logging_steps"],
        seed=SEED,
        use_cpu=True,
        report_to="none",
    )
    accuracy = lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}  # noqa: E731
    trainer = Trainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data["dev"], processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    result = trainer.train()
    (out / "plain.json").write_text(json.dumps({"train": result.metrics, **trainer.evaluate()}))


def report(ours: dict, plain: dict) -> dict:
    same_epochs = ours["epochs"] == plain["epochs"]
    speed = ours["train_samples_per_second"] / plain["train_samples_per_second"]
    ratio = plain["train_seconds"] / ours["train_seconds"] if same_epochs else speed
    rows = [("alignment.classify", ours), ("plain Trainer", plain)]
    print(f"{'':20} {'epochs':>6} {'dev acc':>8} {'train s':>9} {'wall s':>9} {'samples/s':>10}")
    for name, r in rows:
        print(f"{name:20} {r['epochs']:6g} {r['dev_accuracy']:8.4f} {r['train_seconds']:9.1f} {r['wall_seconds']:9.1f} "
              f"{r['train_samples_per_second']:10.1f}")
    if same_epochs:
        print(f"speed-up over the plain Trainer: {ratio:.2f}x training time, {plain['wall_seconds'] / ours['wall_seconds']:.2f}x wall time")
    else:
        print(f"speed-up over the plain Trainer: {speed:.2f}x training samples/s (epochs differ: times not comparable)")
    return {"alignment": ours, "plain_trainer": plain, "speedup_train": ratio}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--plain":
        plain_trainer(*(Path(a) for a in sys.argv[2:5]), float(sys.argv[5]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", nargs="?", type=Path, default=DEFAULT_DATA, help="SST-2 folder with train.tsv and dev.tsv")
    p.add_argument("--max-train-samples", type=int, default=None, help="Train on a seeded sample (quick check).")
    p.add_argument("--plain-epochs", type=float, default=None,
                   help="Epochs for the plain Trainer (default: the recipe's); see the module docstring.")
    p.add_argument("--out", type=Path, default=None, help="Also write the results as JSON here.")
    args = p.parse_args()
    if not (args.path / "train.tsv").is_file():
        sys.exit(f"no SST-2 train.tsv in {args.path} (the SST-2 TSV files of GLUE: train.tsv and dev.tsv)")
    with tempfile.TemporaryDirectory(prefix="sst2-bench-") as tmp:
        work = Path(tmp)
        train, dev = prepare(args.path, work, args.max_train_samples, SEED)
        print(f"SST-2: {len(read_tsv(train)) - 1} training rows, {len(read_tsv(dev)) - 1} dev rows", flush=True)
        ours = run_alignment(train, dev, work / "alignment")
        plain = run_plain(train, dev, work / "plain", args.plain_epochs or recipe_settings()["num_train_epochs"])
    results = report(ours, plain)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
