"""Classify texts with a trained classifier.

    python -m alignment.predict RUN_DIR --text "a warm, funny film" [--text ...]
    python -m alignment.predict RUN_DIR --file in.jsonl [--text_column text] [--out out.jsonl] [--max_length N]

Each output line (JSONL, to stdout or ``--out``) is the input row (``{"text": ...}`` for ``--text``) plus ``label``
(the most probable class) and ``probabilities`` (label -> probability); an input ``label`` is kept as
``gold_label``. Texts longer than the run's ``max_length`` (or ``--max_length``) are cut to it, and how many were
cut is printed. In Python, :func:`load_classifier` returns a
:class:`Classifier`; its ``scores(texts, label="positive")`` lets RL stages use a classifier as a reward.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from alignment.data import read_rows
from alignment.errors import DataError, ModelError, RecipeError
from alignment.models import load_trained
from alignment.run import stage_main


def prediction_rows(probabilities: np.ndarray, label_names: list[str]) -> list[dict[str, Any]]:
    """``{"label": most probable name, "probabilities": {name: p}}`` per row of ``probabilities``."""
    return [
        {"label": label_names[int(p.argmax())], "probabilities": {n: float(x) for n, x in zip(label_names, p)}}
        for p in probabilities
    ]


@dataclass
class Classifier:
    """A trained classifier with its tokenizer, label names, and the ``max_length`` and precision (``bf16``: under
    bf16 autocast, as the stage's own evaluations ran) it was trained with."""

    model: Any
    tokenizer: Any
    label_names: list[str]
    max_length: int = 512
    bf16: bool = False

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """``(len(texts), num_labels)`` class probabilities; texts are batched by length, results keep input order."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.zeros((len(ids), len(self.label_names)), dtype=np.float32)
        for start in tqdm(range(0, len(order), batch_size), desc="classifying", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            enc = self.tokenizer.pad([{"input_ids": ids[i]} for i in rows], return_tensors="pt").to(self.model.device)
            with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(**enc).logits
            out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def count_truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` are longer than ``max_length`` tokens (and so are read cut)."""
        return sum(len(ids) > self.max_length for ids in self.tokenizer(list(texts))["input_ids"])

    def predict(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> list[dict[str, Any]]:
        """One ``{"label", "probabilities"}`` dict per text."""
        return prediction_rows(self.probabilities(texts, batch_size, progress), self.label_names)

    def scores(self, texts: list[str], label: str = "positive", batch_size: int = 32) -> list[float]:
        """The probability of ``label`` for each text (a reward in [0, 1])."""
        if label not in self.label_names:
            raise ModelError(f"label {label!r} is not one of this classifier's labels {self.label_names}")
        return self.probabilities(texts, batch_size)[:, self.label_names.index(label)].tolist()


def load_classifier(run_dir: str | Path, **overrides: Any) -> Classifier:
    """Load a classifier saved by ``alignment.classify`` (full weights or a peft adapter with its head)."""
    model, tokenizer, meta = load_trained(run_dir, "seq_cls", **overrides)
    names = meta.get("label_names") or [model.config.id2label[i] for i in range(model.config.num_labels)]
    if len(names) < 2:
        raise ModelError(f"{run_dir} is not a classifier (it has {len(names)} output); use alignment.score for reward models")
    return Classifier(model, tokenizer, list(names), meta.get("max_length", 512), bool(meta.get("bf16", False)))


def input_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows to classify; a row without text in ``text_column`` stops the run, or is left out and counted with
    ``--on_bad_rows skip``."""
    if args.text:
        return [{args.text_column: t} for t in args.text]
    rows, bad = [], []
    for number, row in read_rows(args.file, csv_quoting=not args.no_csv_quoting):
        if isinstance(row.get(args.text_column), str):
            rows.append(row)
        elif args.on_bad_rows == "skip":
            bad.append(number)
        else:
            raise DataError(
                f"{args.file} line/row {number}: no text in column '{args.text_column}' "
                "(set --text_column, or --on_bad_rows skip to leave such rows out)"
            )
    if bad:
        print(f"{args.file}: {len(bad)} rows without text in '{args.text_column}' left out (e.g. line/row {bad[0]})", file=sys.stderr)
    return rows


def output_row(row: dict[str, Any], prediction: dict[str, Any]) -> dict[str, Any]:
    """The input row plus the prediction; a ``label`` already in the input is kept as ``gold_label``."""
    gold = {"gold_label": row["label"]} if "label" in row else {}
    return {**row, **gold, **prediction}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alignment.predict", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="A run folder written by alignment.classify.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="A text to classify (repeatable).")
    source.add_argument("--file", help="A .jsonl/.json/.csv/.tsv/.parquet file of texts.")
    p.add_argument("--text_column", "--text-column", default="text", help="Column of --file holding the text.")
    p.add_argument("--no_csv_quoting", "--no-csv-quoting", action="store_true", help="Read quotes in CSV/TSV literally (e.g. SST-2).")
    p.add_argument("--on_bad_rows", "--on-bad-rows", choices=["error", "skip"], default="error",
                   help="A row without text: stop (error) or leave it out and count it (skip).")
    p.add_argument("--max_length", "--max-length", type=int, help="Read up to N tokens per text (default: the run's max_length).")
    p.add_argument("--out", help="Write JSONL here instead of stdout.")
    p.add_argument("--batch_size", "--batch-size", type=int, default=32)
    return p


@stage_main
def main(argv: list[str]) -> None:
    """usage: python -m alignment.predict RUN_DIR (--text TEXT [--text ...] | --file FILE) [--text_column text]
    [--out out.jsonl] [--batch_size 32] [--max_length N] [--on_bad_rows skip] [--no_csv_quoting]"""
    args = parser().parse_args(argv)
    if args.max_length is not None and args.max_length < 1:
        raise RecipeError(f"--max_length must be a positive number of tokens, got {args.max_length}")
    rows = input_rows(args)
    if not rows:
        raise RecipeError(f"{args.file}: no rows to classify")
    classifier = load_classifier(args.run_dir)
    classifier.max_length = args.max_length or classifier.max_length
    texts = [r[args.text_column] for r in rows]
    if cut := classifier.count_truncated(texts):
        print(f"{cut} of {len(texts)} texts are longer than max_length {classifier.max_length} tokens and were cut to it "
              "(--max_length N reads more)", file=sys.stderr)
    predictions = classifier.predict(texts, batch_size=args.batch_size, progress=True)
    lines = [json.dumps(output_row(row, pred), ensure_ascii=False, default=str) + "\n" for row, pred in zip(rows, predictions)]
    if args.out:
        Path(args.out).write_text("".join(lines), encoding="utf-8")
    else:
        sys.stdout.writelines(lines)


if __name__ == "__main__":
    raise SystemExit(main())
