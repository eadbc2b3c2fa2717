"""Plain records read out of the store, shared by the export and the agreement report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import combinations

STRENGTH_MARGIN: dict[str, float] = {"slightly": 1.0, "clearly": 2.0, "much": 3.0}
"""Margin of a pairwise A/B judgement by its strength; rankings use the rank difference."""


@dataclass(frozen=True)
class Candidate:
    id: int
    prompt_id: int
    text: str
    policy: str


@dataclass(frozen=True)
class JudgementRecord:
    """One rater's current (not undone) judgement of one task, in canonical candidate ids.

    ``ranks`` maps candidate id -> rank (1 = best, ties share a rank); empty for a skip and for a rating
    task, whose answer is ``rating`` on the ``rating_scale`` of its one candidate ``candidate_ids[0]``.
    A pairwise "tie" or "both_bad" is stored as both candidates at rank 1.
    """

    judgement_id: int
    task_id: int
    prompt_id: int
    prompt: str
    kind: str
    is_gold: bool
    gold_ranks: dict[int, int] | None
    rater: str
    choice: str | None
    strength: str | None
    ranks: dict[int, int]
    skipped: bool
    task_set: str = "default"
    candidate_ids: tuple[int, ...] = ()
    rating: int | None = None
    rating_scale: str | None = None
    rationale: str = ""
    flags: tuple[str, ...] = ()
    seconds: float = 0.0
    created_at: datetime | None = None

    def outcome(self, first: int, second: int) -> int:
        """+1 when ``first`` is preferred, -1 when ``second`` is, 0 for a tie."""
        return _sign(self.ranks[second] - self.ranks[first])

    def preferences(self) -> list[tuple[int, int, float]]:
        """(chosen id, rejected id, margin) for every strictly ordered candidate pair; ties give none."""
        rows = []
        for a, b in combinations(sorted(self.ranks), 2):
            if self.ranks[a] == self.ranks[b]:
                continue
            chosen, rejected = (a, b) if self.ranks[a] < self.ranks[b] else (b, a)
            if self.kind == "pairwise":
                margin = STRENGTH_MARGIN[self.strength or "slightly"]
            else:
                margin = float(self.ranks[rejected] - self.ranks[chosen])
            rows.append((chosen, rejected, margin))
        return rows


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)
