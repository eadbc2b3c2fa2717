"""Merge an adapter into its de-quantised base: ``python -m alignment.export RUN_DIR OUT_DIR [--dtype bfloat16]``.

The base is loaded in 16 or 32 bits (never merged into 4-bit weights), the adapter merged, and a plain checkpoint
plus tokenizer written to OUT_DIR, loadable by any transformers code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from alignment.config import parse_recipe
from alignment.errors import RecipeError
from alignment.models import merge_adapter
from alignment.models.loader import is_adapter
from alignment.run import stage_main


@dataclass
class ExportArguments:
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={"help": "Merged weights' dtype."})


@stage_main(keys=lambda: ((ExportArguments,), {}))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.export RUN_DIR OUT_DIR [--dtype float32|bfloat16|float16]"""
    if len(argv) < 2 or argv[0].startswith("--") or argv[1].startswith("--"):
        raise RecipeError("usage: python -m alignment.export RUN_DIR OUT_DIR [--dtype float32|bfloat16|float16]")
    (args,) = parse_recipe(argv[2:], (ExportArguments,))
    if not is_adapter(argv[0]):
        raise RecipeError(f"{argv[0]} holds no peft adapter (adapter_config.json); it is already a plain checkpoint")
    out = merge_adapter(argv[0], argv[1], dtype=args.dtype)
    print(f"merged checkpoint written to {out}")


if __name__ == "__main__":
    raise SystemExit(main())
