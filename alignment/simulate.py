"""Simulated raters: scripted annotators that judge tasks through the same store API the web UI calls
(``next_task`` → ``submit``), so demos and tests exercise the real path.

Each rater ranks candidates by an oracle reward (a reward model, a classifier or a Python function — see
:func:`alignment.rewards.resolve_reward`) plus noise: a shared noise level, a per-rater disagreement level, and a tie
threshold. ``python -m alignment.simulate --db annotations.db --oracle RUN_DIR#positive --raters 3``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from alignment.annotations.store import AnnotationStore, TaskView
from alignment.config import parse_recipe
from alignment.errors import RecipeError
from alignment.rewards import RewardFn, resolve_reward
from alignment.run import stage_main

logger = logging.getLogger(__name__)


@dataclass
class SimulatedRaters:
    """How the simulated raters judge (also the pipeline's annotate-stage keys)."""

    raters: int = field(default=3, metadata={"help": "Number of simulated raters (users sim-1 … sim-N are created)."})
    noise: float = field(default=0.1, metadata={"help": "Oracle error shared by all raters (per candidate), in units of the score spread."})
    disagreement: float = field(default=0.1, metadata={"help": "Each rater's own noise: raises disagreement between raters."})
    tie_threshold: float = field(default=0.02, metadata={"help": "Noisy scores closer than this (in spread units) tie."})


@dataclass
class SimulationArguments(SimulatedRaters):
    db: str = field(default="annotations.db", metadata={"help": "The annotation store (path or URL)."})
    oracle: str = field(default="", metadata={"help": "Reward spec: RM run folder, CLASSIFIER_RUN#label, or module:function."})
    seed: int = field(default=0, metadata={"help": "Seed of the raters' noise."})


def ranks_from_scores(scores: np.ndarray, tie: float) -> list[int]:
    """Competition ranks (1 = best); scores within ``tie`` of the previous one share its rank."""
    order = np.argsort(-scores, kind="stable")
    ranks = [0] * len(scores)
    for position, idx in enumerate(order):
        prev = order[position - 1] if position else None
        if prev is not None and scores[prev] - scores[idx] <= tie:
            ranks[idx] = ranks[prev]
        else:
            ranks[idx] = position + 1
    return ranks


def judge(view: TaskView, scores: np.ndarray, tie: float) -> dict:
    """Submission fields for one task from (noisy) scores in the rater's shown order."""
    if view.kind == "ranking":
        return {"ranks": ranks_from_scores(scores, tie)}
    diff = float(scores[0] - scores[1])
    if abs(diff) <= tie:
        return {"choice": "tie"}
    strength = "much" if abs(diff) > 1.0 else "clearly" if abs(diff) > 0.4 else "slightly"
    return {"choice": "A" if diff > 0 else "B", "strength": strength}


def simulate(store: AnnotationStore, oracle: RewardFn, args: SimulationArguments, password: str = "simulated") -> int:
    """Let ``args.raters`` scripted raters work until the queue has nothing left for them; return judgements made."""
    names = [f"sim-{i + 1}" for i in range(args.raters)]
    for name in names:
        if store.role(name) is None:
            store.add_user(name, "rater", password)
    own_rng = {name: np.random.default_rng([args.seed, i]) for i, name in enumerate(names)}
    made = 0
    spread: float | None = None
    progress = tqdm(desc="simulated judgements", unit="judgement")
    active = list(names)
    while active:
        for name in list(active):
            view = store.next_task(name)
            if view is None:
                active.remove(name)
                continue
            raw = np.asarray(oracle([view.prompt] * len(view.candidates), [c.text for c in view.candidates]), dtype=float)
            spread = spread or float(np.std(raw)) or 1.0
            shared = np.array([np.random.default_rng([args.seed, 10**6 + c.id]).normal(0, args.noise) for c in view.candidates])
            own = own_rng[name].normal(0, args.disagreement, len(raw))
            noisy = raw / spread + shared + own
            store.submit(name, view.task_id, str(uuid.uuid4()), **judge(view, noisy, args.tie_threshold), seconds=1.0)
            made += 1
            progress.update()
    progress.close()
    return made


@stage_main(keys=lambda: ((SimulationArguments,), {}))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.simulate [RECIPE.yaml] --db annotations.db --oracle SPEC [--raters 3 --noise 0.1]"""
    (args,) = parse_recipe(argv, (SimulationArguments,))
    if not args.oracle:
        raise RecipeError("--oracle is required (RM run folder, CLASSIFIER_RUN#label, or module:function)")
    made = simulate(AnnotationStore(args.db), resolve_reward(args.oracle), args)
    print(f"{made} simulated judgements written to {args.db}")


if __name__ == "__main__":
    raise SystemExit(main())
