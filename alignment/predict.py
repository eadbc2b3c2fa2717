"""Classify texts with a trained classifier.

    python -m alignment.predict RUN_DIR --text "a warm, funny film" [--text ...]
    python -m alignment.predict RUN_DIR --file in.jsonl [--text_column text] [--out out.jsonl] [--max_length N]

Each output line (JSONL, to stdout or ``--out``) is the input row (``{"text": ...}`` for ``--text``) plus ``label``
(the most probable class) and ``probabilities`` (label -> probability); an input ``label`` is kept as
``gold_label``. Texts longer than the run's ``max_length`` (or ``--max_length``) are cut to it, and how many were
cut is printed. The classifier itself is :func:`alignment.rewards.load_classifier`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from alignment.data import read_rows
from alignment.errors import DataError, RecipeError
from alignment.rewards import load_classifier
from alignment.run import stage_main


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
