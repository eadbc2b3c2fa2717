"""Sample candidates for human ranking: ``python -m alignment.candidates recipe.yaml [--key value ...]``.

Prompts come through the data layer; K completions per prompt are sampled from each policy (an SFT run folder, a
base model, an adapter) with the sampling settings recorded next to each candidate; prompts, candidates and
ranking/pairwise tasks go into the annotation store. Re-running adds, never duplicates (content hashes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from alignment.annotations.store import AnnotationStore
from alignment.config import parse_recipe
from alignment.data import DataArguments, load_data
from alignment.generation import SamplingArguments, generate, prompt_text
from alignment.models import load_trained
from alignment.run import stage_main, write_jsonl

logger = logging.getLogger(__name__)


@dataclass
class CandidateArguments:
    db: str = field(default="annotations.db", metadata={"help": "Store: a SQLite path or any SQLAlchemy URL."})
    policies: list[str] = field(
        default_factory=lambda: ["builtin:smollm2-135m-instruct"],
        metadata={"help": "Models to sample from: run folders, builtin: names, paths or hub ids."},
    )
    task_kind: Literal["ranking", "pairwise"] = field(default="ranking", metadata={"help": "What raters are asked."})
    k: int = field(default=4, metadata={"help": "Candidates shown per ranking task (2 for pairwise)."})
    judgements_per_task: int = field(default=1, metadata={"help": "Distinct raters wanted per task."})
    tasks_per_prompt: int = field(default=1, metadata={"help": "Tasks made per prompt (0: none; the candidates wait for a selection, e.g. a pipeline round's)."})
    candidates_out: str | None = field(
        default=None,
        metadata={"help": "Also write the sampled prompts and candidates here as JSONL, one prompt a line: "
                          "{prompt, candidates: [{text, policy, sampling}]} (what `annotation_ui tasks import` reads)."},
    )

    def __post_init__(self) -> None:
        if self.tasks_per_prompt < 0:
            raise ValueError(f"tasks_per_prompt must be >= 0, got {self.tasks_per_prompt}")


def sample_into_store(store: AnnotationStore, prompts: list, policies: list[str], sampling: SamplingArguments) -> list[dict]:
    """Sample ``num_return_sequences`` completions per prompt from each policy into the store; return one row per
    prompt, ``{"prompt", "candidates": [{"text", "policy", "sampling"}, ...]}``."""
    texts = [prompt_text(p) for p in prompts]
    prompt_ids = [store.add_prompt(t) for t in texts]
    rows = [{"prompt": t, "candidates": []} for t in texts]
    for policy in policies:
        model, tokenizer, _ = load_trained(policy, "causal")
        outputs = generate(model, tokenizer, prompts, sampling, progress=True)
        record = {"policy": policy, "sampling": sampling.as_record()}
        for pid, row, completions in zip(prompt_ids, rows, outputs):
            items = [{"text": c["text"], **record} for c in completions if c["text"]]
            store.add_candidates(pid, items)
            row["candidates"].extend(items)
        del model
    return rows


CLASSES = (CandidateArguments, DataArguments, SamplingArguments)
DEFAULTS = {"num_return_sequences": 4, "temperature": 0.9}


@stage_main(keys=lambda: (CLASSES, DEFAULTS))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.candidates RECIPE.yaml [--key value ...]"""
    args, data_args, sampling = parse_recipe(argv, CLASSES, defaults=DEFAULTS, check_paths=("dataset_path",))
    prompts = list(load_data(data_args, "prompts").splits["train"]["prompt"])
    store = AnnotationStore(args.db)
    rows = sample_into_store(store, prompts, args.policies, sampling)
    if args.candidates_out:
        write_jsonl(args.candidates_out, rows)
    new_tasks = store.create_tasks(args.task_kind, k=args.k, judgements_per_task=args.judgements_per_task, tasks_per_prompt=args.tasks_per_prompt)
    n = sum(len(r["candidates"]) for r in rows)
    print(f"{len(prompts)} prompts, {n} candidates sampled into {args.db}; {len(new_tasks)} new {args.task_kind} tasks")


if __name__ == "__main__":
    raise SystemExit(main())
