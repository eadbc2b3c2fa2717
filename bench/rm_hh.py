"""Benchmark: reward models on Anthropic HH-RLHF helpful pairs with the real ``alignment.rm`` stage, MiniLM (full
fine-tune) and SmolLM2-135M + LoRA, on one seeded train/validation split. Reports held-out pairwise accuracy,
training time, wall time and pairs/s for each.

    python bench/rm_hh.py [PATH] [--models minilm,smollm] [--max-pairs N] [--epochs E] [--max-length L]
                          [--train-pairs MODEL=N] [--set KEY=VALUE ...] [--work DIR] [--out results.json]

PATH is the HH-RLHF folder (default ../shared/data/hh-rlhf) holding helpful-online/test.jsonl.gz and
helpful-rejection-sampled/test.jsonl.gz (3,886 pairs). The split is built once: 10% of each subset (seeded) is held
out for validation (389 rows), the rest (3,497) is the training pool; both are written as raw HH rows and read by
the stage with ``data_format: hh`` and ``on_bad_rows: skip``, which drops ~40 rows (identical chosen and rejected,
empty replies) and prints the counts: 3,462 training and 387 validation pairs. Both models are scored on the same
validation pairs. Each model runs as its own ``python -m alignment.rm`` process, one after the other;
the figures come from its metrics.json (held-out pairwise accuracy; the trainer's train_runtime and
train_samples_per_second, where one sample is one pair).

Settings, chosen for a 2-core CPU without bf16 (fp32) from the token counts of these pairs (SmolLM2 chat template:
median dialogue 273 tokens, 90th percentile 580; final reply median 83, 90th percentile ~220; final human turn
median ~12). Sequences are left-truncated by the stage: the final reply and the final turns before it are kept.

* ``minilm`` (recipes/rm/hh.yaml, builtin:minilm-l6, 22M parameters, full fine-tune): all 3,462 training pairs,
  max_length 256, 2 epochs, batch 16, lr 5e-5 (cosine, 5% warm-up). The input is
  ``[CLS] end of the dialogue [SEP] reply [SEP]``; at 256 tokens the whole reply fits for ~97% of replies and the
  rest of the budget holds the final turns. The reference point (final turn, 160 tokens, 1 epoch, ~10 min, ~0.64)
  puts its speed at ~1.9k tokens/s, so 2 epochs x 3.46k pairs x 2 sequences x 256 tokens should take ~35 min.
* ``smollm`` (recipes/rm/demo.yaml, builtin:smollm2-135m-instruct + LoRA r=16 on q/k/v/o, scalar head trained):
  a seeded subset of 1,600 training pairs, max_length 128, 1 epoch, batch 8, lr 2e-4. This backbone trains at only
  ~150-220 tokens/s here, so the budget is tokens: 1,600 pairs x 2 x 128 = 410k tokens, ~31-46 min. 128 tokens keep
  the median reply whole plus the final human turn (85% of dialogues are cut); a longer window would cost pairs in
  proportion, and one pass over more pairs is worth more than a second epoch over fewer.

* ``smollm-full`` (not run by default): SmolLM2 fully fine-tuned (135M parameters; the LoRA run above barely moved
  its loss off ln 2), all 3,462 training pairs at 192 tokens, 1 epoch, batch 8, lr 1e-5 — affordable on CPUs with
  native bf16: measured on an AMX CPU, 0.615 held-out accuracy (the best of all settings tried) in 2,468 s of
  training, 1.40 pairs/s (bench/results/rm_hh_smollm_full.json); ``--set learning_rate=3e-5``: 0.581;
  ``--max-length 256`` (more of the earlier turns kept): 0.589 in 3,296 s (rm_hh_smollm_full_256.json).
* ``minilm-final-turn`` (not run by default): MiniLM on the final user turn + reply, 160 tokens, one epoch, through
  the stage. Measured on this split: 0.538 (bf16; a plain torch loop with the same settings, mean pooling and
  Bradley-Terry loss: 0.535).

For all: evaluation once after training (eval_strategy/save_strategy ``no``: no per-epoch eval pass over the same
pairs, no checkpoints; the final model is saved), reward mean/std over 128 training pairs (``stats_samples``; the
stage default 512 would add minutes of SmolLM2 scoring to the wall time). These choices follow from the token
budget; they were not tuned on the validation pairs. ``--max-pairs``, ``--epochs`` and ``--max-length`` override
them for quick checks (e.g. ``--max-pairs 64 --max-length 32`` runs in about a minute); ``--set KEY=VALUE`` sets
any other stage key for every model run (experiments: settings chosen that way are chosen on the validation pairs).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf"
SUBSETS = ("helpful-online", "helpful-rejection-sampled")
SEED, VALIDATION_FRACTION = 42, 0.1

# What every run shares: the bench's own split, read as HH transcripts; one evaluation after training.
SHARED = {
    "data_format": "hh",
    "on_bad_rows": "skip",
    "validation_split": 0,
    "test_split": 0,
    "eval_strategy": "no",
    "save_strategy": "no",
    "stats_samples": 128,
    "logging_steps": 20,
    "seed": SEED,
    "split_seed": SEED,
    "resume": "false",
    "report_to": "none",
}
# Per model: the base recipe, the stage keys set here, and the training subset (None: the whole training pool).
MODELS = {
    "minilm": {
        "recipe": "recipes/rm/hh.yaml",
        "keys": {
            "model_name_or_path": "builtin:minilm-l6", "method": "full", "max_length": 256, "num_train_epochs": 2,
            "per_device_train_batch_size": 16, "learning_rate": 5e-5,
        },
        "train_pairs": None,
    },
    "smollm": {
        "recipe": "recipes/rm/demo.yaml",
        "keys": {
            "model_name_or_path": "builtin:smollm2-135m-instruct", "method": "lora", "max_length": 128,
            "num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 2e-4,
        },
        "train_pairs": 1600,
    },
    # SmolLM2 fully fine-tuned (not run by default): bf16 CPUs make all pairs at 192 tokens affordable.
    "smollm-full": {
        "recipe": "recipes/rm/demo.yaml",
        "keys": {
            "model_name_or_path": "builtin:smollm2-135m-instruct", "method": "full", "max_length": 192,
            "num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-5,
        },
        "train_pairs": None,
    },
    # Final user turn + reply, 160 tokens, one epoch, through the stage.
    "minilm-final-turn": {
        "recipe": "recipes/rm/hh.yaml",
        "keys": {
            "model_name_or_path": "builtin:minilm-l6", "method": "full", "max_length": 160, "num_train_epochs": 1,
            "per_device_train_batch_size": 16, "learning_rate": 5e-5, "prompt_turns": 1,
        },
        "train_pairs": None,
    },
}


def read_subset(path: Path) -> list[str]:
    """The subset's raw JSONL lines, unparsed: malformed rows are left for the stage to skip and count."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def build_split(data: Path, work: Path, max_pairs: int | None, seed: int) -> tuple[Path, Path, dict]:
    """train.jsonl / validation.jsonl: VALIDATION_FRACTION of each subset held out (seeded), optionally from a seeded
    sample of ``max_pairs`` rows of both subsets together."""
    rng = random.Random(seed)
    tagged = [(name, line) for name in SUBSETS for line in read_subset(data / name / "test.jsonl.gz")]
    if max_pairs:
        tagged = rng.sample(tagged, min(max_pairs, len(tagged)))
    train, validation, counts = [], [], {}
    for name in SUBSETS:
        lines = [line for source, line in tagged if source == name]
        rng.shuffle(lines)
        n_val = max(1, round(VALIDATION_FRACTION * len(lines))) if lines else 0
        validation += lines[:n_val]
        train += lines[n_val:]
        counts[name] = {"train": len(lines) - n_val, "validation": n_val}
    rng.shuffle(train)
    rng.shuffle(validation)
    paths = work / "train.jsonl", work / "validation.jsonl"
    for path, lines in zip(paths, (train, validation)):
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return *paths, counts


def run_rm(name: str, train: Path, validation: Path, work: Path, args: argparse.Namespace) -> dict:
    spec = MODELS[name]
    keys = {**spec["keys"], **SHARED, "dataset_path": train, "validation_path": validation, "output_dir": work / name}
    pairs = args.train_pairs.get(name, spec["train_pairs"])
    if pairs:
        keys["max_samples"] = pairs
    if args.epochs is not None:
        keys["num_train_epochs"] = args.epochs
    if args.max_length is not None:
        keys["max_length"] = args.max_length
    keys.update(args.set)
    cmd = [sys.executable, "-m", "alignment.rm", spec["recipe"]] + [f"--{k}={v}" for k, v in keys.items()]
    log = work / f"{name}.log"
    print(f"[{name}] training: max_length {keys['max_length']}, {keys['num_train_epochs']:g} epoch(s), batch "
          f"{keys['per_device_train_batch_size']}, lr {keys['learning_rate']} (log: {log})", flush=True)
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"[{name}] alignment.rm failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    m = json.loads((work / name / "metrics.json").read_text())
    held_out, train_m = m["validation"], m["train"]
    for line in m.get("data_report", []):
        print(f"[{name}] data: {line}", flush=True)
    accuracy, n = held_out["pairwise_accuracy"], held_out["num_pairs"]
    result = {
        "validation_accuracy": accuracy,
        "accuracy_ci95": 1.96 * math.sqrt(accuracy * (1 - accuracy) / n),
        "validation_pairs": n,
        "mean_margin": held_out["mean_margin"],
        "ece": held_out["ece"],
        "train_pairs": train_rows(m.get("data_report", [])),
        "train_seconds": train_m["train_runtime"],
        "wall_seconds": wall,
        "pairs_per_second": train_m["train_samples_per_second"],
        "train_loss": train_m.get("train_loss"),
        "settings": {k: keys[k] for k in dict.fromkeys([*spec["keys"], *args.set, *(("max_samples",) if pairs else ())])},
        "data_report": m.get("data_report", []),
    }
    print(f"[{name}] validation accuracy {accuracy:.4f} on {n} pairs, training {result['train_seconds']:.0f} s, "
          f"wall {wall:.0f} s", flush=True)
    return result


def train_rows(data_report: list[str]) -> int | None:
    """Training pairs after bad-row skipping and max_samples, from the data layer's final report line."""
    found = [re.match(r"result: train (\d+)", line) for line in data_report]
    return next((int(f.group(1)) for f in found if f), None)


def report(results: dict[str, dict]) -> dict:
    print(f"\n{'model':18} {'train pairs':>11} {'max len':>7} {'epochs':>6} {'val acc':>8} {'±95%':>6} "
          f"{'train s':>8} {'wall s':>8} {'pairs/s':>8}")
    for name, r in results.items():
        s = r["settings"]
        print(f"{name:18} {r['train_pairs'] or '?':>11} {s['max_length']:>7} {s['num_train_epochs']:>6g} "
              f"{r['validation_accuracy']:8.4f} {r['accuracy_ci95']:6.3f} {r['train_seconds']:8.0f} "
              f"{r['wall_seconds']:8.0f} {r['pairs_per_second']:8.2f}")
    best = max(results, key=lambda k: results[k]["validation_accuracy"])
    print(f"best validation accuracy: {best} ({results[best]['validation_accuracy']:.4f})")
    return {"models": results, "best": best}


def train_pairs_arg(text: str) -> dict[str, int]:
    """``smollm=600,minilm=2000`` -> {"smollm": 600, "minilm": 2000}."""
    try:
        pairs = {k.strip(): int(v) for k, v in (item.split("=") for item in text.split(",") if item.strip())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL=N[,MODEL=N], got {text!r}") from None
    unknown = sorted(set(pairs) - set(MODELS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    return pairs


def stage_key(text: str) -> tuple[str, str]:
    """``learning_rate=3e-5`` -> ("learning_rate", "3e-5"), passed to the stage as ``--learning_rate=3e-5``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", nargs="?", type=Path, default=DEFAULT_DATA, help="HH-RLHF folder with the helpful subsets")
    p.add_argument("--models", default="minilm,smollm", help="Comma-separated, from: " + ", ".join(MODELS))
    p.add_argument("--max-pairs", type=int, default=None,
                   help="Use a seeded sample of N pairs of both subsets (split 90/10 as usual) - for quick checks.")
    p.add_argument("--train-pairs", type=train_pairs_arg, default={}, metavar="MODEL=N[,MODEL=N]",
                   help="Train MODEL on a seeded subset of N training pairs (the validation pairs stay the same).")
    p.add_argument("--epochs", type=float, default=None, help="Override every model's epochs.")
    p.add_argument("--max-length", type=int, default=None, help="Override every model's max_length (quick checks).")
    p.add_argument("--set", type=stage_key, action="append", default=[], metavar="KEY=VALUE",
                   help="Set a stage recipe key for every model (repeatable), e.g. --set learning_rate=3e-5.")
    p.add_argument("--work", type=Path, default=None, help="Keep the split, logs and runs here (default: a temp dir).")
    p.add_argument("--out", type=Path, default=None, help="Also write the results as JSON here.")
    args = p.parse_args()
    args.set = dict(args.set)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        sys.exit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    missing = [s for s in SUBSETS if not (args.path / s / "test.jsonl.gz").is_file()]
    if missing:
        sys.exit(f"no {', '.join(s + '/test.jsonl.gz' for s in missing)} in {args.path} (see its SOURCE.md)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its run and cleans up
    work = args.work or Path(tempfile.mkdtemp(prefix="rm-hh-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        train, validation, counts = build_split(args.path, work, args.max_pairs, SEED)
        sizes = "; ".join(f"{k}: {v['train']} train, {v['validation']} validation" for k, v in counts.items())
        print(f"HH-RLHF split (rows before bad-row skipping): {sizes}", flush=True)
        results = {name: run_rm(name, train, validation, work, args) for name in models}
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    out = report(results)
    out["split"] = {"seed": SEED, "validation_fraction": VALIDATION_FRACTION, "rows": counts,
                    "max_pairs": args.max_pairs}
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
