"""Batch generation to JSONL: ``python -m alignment.generate MODEL --file prompts.jsonl --out out.jsonl [sampling flags]``.

MODEL is a run folder (full model or adapter), a ``builtin:`` name, a local checkpoint or a hub id. Prompts are read
through the data layer (any format with a prompt: ``prompt``, ``messages``, ``instruction``…). Sampling flags are the
keys of :class:`~alignment.generation.SamplingArguments` (``--max_new_tokens``, ``--temperature``, …).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from alignment.config import parse_recipe
from alignment.data import DataArguments, load_data
from alignment.errors import RecipeError
from alignment.generation import SamplingArguments, generate
from alignment.models import load_trained
from alignment.run import stage_main


@dataclass
class GenerateArguments:
    file: str | None = field(default=None, metadata={"help": "Prompts file (any format the data layer reads)."})
    out: str = field(default="generations.jsonl", metadata={"help": "Output JSONL."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use a seeded random sample of N prompts."})


def read_prompts(path: str, prompt_column: str = "prompt", max_prompts: int | None = None) -> list:
    data = load_data(DataArguments(dataset_path=path, prompt_column=prompt_column, max_samples=max_prompts), "prompts")
    return list(data.splits["train"]["prompt"])


@stage_main(keys=lambda: ((GenerateArguments, SamplingArguments), {}))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.generate MODEL --file prompts.jsonl [--out out.jsonl] [--max_new_tokens N] ..."""
    if not argv or argv[0].startswith("--"):
        raise RecipeError("usage: python -m alignment.generate MODEL --file prompts.jsonl [--out out.jsonl]")
    model_path, rest = argv[0], argv[1:]
    args, sampling = parse_recipe(rest, (GenerateArguments, SamplingArguments), check_paths=("file",))
    if args.file is None:
        raise RecipeError("--file is required (a JSONL/CSV/... of prompts)")
    prompts = read_prompts(args.file, args.prompt_column, args.max_prompts)
    model, tokenizer, _ = load_trained(model_path, "causal")
    outputs = generate(model, tokenizer, prompts, sampling, progress=True)
    with Path(args.out).open("w") as f:
        for prompt, completions in zip(prompts, outputs):
            for c in completions:
                f.write(json.dumps({"prompt": prompt, "completion": c["text"], "finished": c["finished"], "model": model_path}) + "\n")
    print(f"wrote {sum(map(len, outputs))} completions to {args.out}")


if __name__ == "__main__":
    raise SystemExit(main())
