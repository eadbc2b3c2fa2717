"""Score with a trained reward model: ``python -m alignment.score RUN_DIR --file pairs.jsonl [--out scored.jsonl]``.

A preference file (``prompt``/``chosen``/``rejected``, or anything the data layer reads as preferences) gets both
rewards per row and the pairwise metrics; a file of ``prompt``/``response`` rows gets one reward per row. The data
layer's keys apply to preference files (``data_format``, ``on_bad_rows``, the ``*_column`` keys, ``max_samples``, …).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from alignment.config import parse_recipe
from alignment.data import DataArguments, load_data, read_rows
from alignment.errors import DataError, RecipeError
from alignment.rewards import load_reward_model, preference_metrics
from alignment.run import stage_main


@dataclass
class ScoreArguments:
    file: str | None = field(default=None, metadata={"help": "Preference pairs or prompt/response rows."})
    out: str | None = field(default=None, metadata={"help": "Write scored rows here (JSONL)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass."})
    normalize: bool = field(default=False, metadata={"help": "Normalise with the training reward mean/std."})


def score_file(rm, args: ScoreArguments, data_args: DataArguments) -> tuple[list[dict], dict]:
    rows = [row for _, row in read_rows(args.file)]
    if rows and "response" in rows[0]:
        rewards = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows], batch_size=args.batch_size, normalize=args.normalize, progress=True)
        return [{**r, "reward": x} for r, x in zip(rows, rewards)], {"mean_reward": sum(rewards) / max(len(rewards), 1)}
    pairs = load_data(replace(data_args, dataset_path=args.file), "preference").splits["train"]
    kw = dict(batch_size=args.batch_size, normalize=args.normalize, progress=True)
    chosen = rm.score(pairs["prompt"], pairs["chosen"], **kw)
    rejected = rm.score(pairs["prompt"], pairs["rejected"], **kw)
    scored = [{**row, "reward_chosen": c, "reward_rejected": r} for row, c, r in zip(pairs, chosen, rejected)]
    margins = pairs["margin"] if "margin" in pairs.column_names else None
    return scored, preference_metrics(chosen, rejected, margins)


@stage_main(keys=lambda: ((ScoreArguments, DataArguments), {}))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.score RUN_DIR --file pairs.jsonl [--out scored.jsonl] [--normalize]"""
    if not argv or argv[0].startswith("--"):
        raise RecipeError("usage: python -m alignment.score RUN_DIR --file pairs.jsonl [--out scored.jsonl]")
    args, data_args = parse_recipe(argv[1:], (ScoreArguments, DataArguments), check_paths=("file",))
    if args.file is None:
        raise RecipeError("--file is required")
    if data_args.dataset_path is not None:
        raise RecipeError("score reads --file; dataset_path is not used")
    rm = load_reward_model(argv[0])
    scored, metrics = score_file(rm, args, data_args)
    if not scored:
        raise DataError(f"{args.file}: no rows to score")
    if args.out:
        with Path(args.out).open("w") as f:
            f.writelines(json.dumps(r, default=str) + "\n" for r in scored)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
