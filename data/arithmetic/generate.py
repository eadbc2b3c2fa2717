"""Writes train/validation/test.jsonl: one-step addition and subtraction problems with their answers.

    python data/arithmetic/generate.py      # deterministic (seed 0); the committed files are its output

Half are bare sums ("What is 7 + 5?"), half short word problems; every prompt ends with "Answer with the number
only." No (operation, a, b) pair appears in two splits, so held-out accuracy measures arithmetic, not recall.
"""

import json
import random
from pathlib import Path

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kemal", "Lena"]
ITEMS = ["apples", "pencils", "marbles", "stickers", "books", "coins", "shells", "cards"]
SPLITS = {"train": 130, "validation": 30, "test": 50}
SUFFIX = " Answer with the number only."


def problem(rng: random.Random, op: str, a: int, b: int) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if op == "+":
        text = rng.choice([f"What is {a} + {b}?", f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"])
        return {"prompt": text + SUFFIX, "answer": str(a + b)}
    text = rng.choice([f"What is {a} - {b}?", f"{name} had {a} {item} and gave away {b}. How many {item} are left?"])
    return {"prompt": text + SUFFIX, "answer": str(a - b)}


def main() -> None:
    rng = random.Random(0)
    pairs = [("+", a, b) for a in range(1, 13) for b in range(1, 13)] + [("-", a, b) for a in range(2, 13) for b in range(1, a)]
    rng.shuffle(pairs)
    start = 0
    for split, count in SPLITS.items():
        rows = [problem(rng, *pair) for pair in pairs[start : start + count]]
        start += count
        path = Path(__file__).with_name(f"{split}.jsonl")
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
