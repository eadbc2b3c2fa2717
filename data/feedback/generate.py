"""Writes train/validation.jsonl: unpaired binary feedback made from the preference pairs in ../preferences/demo.jsonl.

    python data/feedback/generate.py      # deterministic (seed 0); the committed files are its output

Each pair gives two rows: the chosen reply labelled true (desirable) and the rejected one labelled false, the shape
the annotation store exports for thumbs up/down ratings (without its rating and rater columns). Pairs are split by
prompt (no prompt in both files), and each file's rows are shuffled so that a prompt's two rows are rarely neighbours.
"""

import json
import random
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "preferences" / "demo.jsonl"
VALIDATION_PROMPTS = 20


def unpaired(pair: dict) -> list[dict]:
    return [
        {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
        {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False},
    ]


def main() -> None:
    rng = random.Random(0)
    pairs = [json.loads(line) for line in SOURCE.read_text().splitlines()]
    rng.shuffle(pairs)
    splits = {"validation": pairs[:VALIDATION_PROMPTS], "train": pairs[VALIDATION_PROMPTS:]}
    for split, members in splits.items():
        rows = [row for pair in members for row in unpaired(pair)]
        rng.shuffle(rows)
        Path(__file__).with_name(f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
