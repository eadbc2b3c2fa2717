"""Turn judgements into the data layer's preference, ranking and feedback rows, and write them as JSONL.

Rules (every mode): skipped judgements, pairwise "tie"/"both_bad" and tied pairs inside a ranking give
no preference row; gold tasks are left out unless ``include_gold``; a task any rater flagged (harmful,
off-topic, broken) is left out entirely unless ``include_flagged``. A ranking of K candidates expands to
its strictly ordered pairs (all C(K, 2) when there are no ties). Margin: pairwise strength
slightly=1, clearly=2, much=3; rankings the rank difference.

- ``per-rater``: one row per judgement and ordered pair, with its "rater", "rationale" and "flags".
- ``majority``: one row per candidate pair over all raters and tasks; the side with more strict votes
  wins (an even split gives no row) and the margin is the mean margin of the winning votes. "rationales"
  lists the winning votes' non-empty rationales, "flags" the sorted union of flags over all its votes.

Feedback rows (rating tasks, the unpaired shape of trl's KTOTrainer): binary 1 -> label True, 0 -> False;
likert5 4-5 -> True, 1-2 -> False, 3 gives no row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from alignment.annotations.records import Candidate, JudgementRecord
from alignment.errors import DataError

MODES = ("majority", "per-rater")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise DataError(f"export mode must be one of {MODES}, got {mode!r}")


def _usable(records: Iterable[JudgementRecord], include_gold: bool, include_flagged: bool) -> list[JudgementRecord]:
    """Judgements that are not skips, of tasks the options keep (flags of skips count too)."""
    records = list(records)
    flagged = set() if include_flagged else {r.task_id for r in records if r.flags}
    return [
        r for r in records if not r.skipped and (include_gold or not r.is_gold) and r.task_id not in flagged
    ]


def _flags_of(group: Iterable[JudgementRecord]) -> list[str]:
    return sorted({flag for r in group for flag in r.flags})


def _rationales_of(group: Iterable[JudgementRecord]) -> list[str]:
    return [r.rationale for r in group if r.rationale]


def preference_rows(
    records: Iterable[JudgementRecord],
    candidates: dict[int, Candidate],
    mode: str = "majority",
    include_gold: bool = False,
    include_flagged: bool = False,
) -> list[dict[str, Any]]:
    """Rows ``{"prompt", "chosen", "rejected", "margin", ...}`` by the rules in this module's docstring."""
    _check_mode(mode)
    usable = _usable(records, include_gold, include_flagged)
    if mode == "per-rater":
        return [
            _preference(r.prompt, candidates[chosen], candidates[rejected], margin)
            | {"rater": r.rater, "rationale": r.rationale, "flags": list(r.flags)}
            for r in usable
            for chosen, rejected, margin in r.preferences()
        ]
    votes: dict[tuple[int, int], dict[int, list[tuple[float, JudgementRecord]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in usable:
        for chosen, rejected, margin in r.preferences():
            votes[min(chosen, rejected), max(chosen, rejected)][chosen].append((margin, r))
    rows = []
    for pair in sorted(votes):
        first, second = (votes[pair].get(c, []) for c in pair)
        if len(first) == len(second):
            continue
        (winner, loser), won = (pair, first) if len(first) > len(second) else (pair[::-1], second)
        margin = sum(m for m, _ in won) / len(won)
        row = _preference(won[0][1].prompt, candidates[winner], candidates[loser], margin)
        row["rationales"] = _rationales_of(r for _, r in won)
        row["flags"] = _flags_of(r for _, r in first + second)
        rows.append(row)
    return rows


def _preference(prompt: str, chosen: Candidate, rejected: Candidate, margin: float) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen.text, "rejected": rejected.text, "margin": margin}


def ranking_rows(
    records: Iterable[JudgementRecord],
    candidates: dict[int, Candidate],
    mode: str = "per-rater",
    include_gold: bool = False,
    include_flagged: bool = False,
) -> list[dict[str, Any]]:
    """Rows ``{"prompt", "completions", "ranks", ...}`` (1 = best, ties share a rank) of ranking tasks.

    ``per-rater``: one row per judgement, with "rater", "rationale", "flags". ``majority``: one row per
    task, candidates ranked by their mean rank over raters (equal means tie), with "rationales" and
    "flags" over its raters. Rankings with every candidate tied are left out.
    """
    _check_mode(mode)
    usable = [r for r in _usable(records, include_gold, include_flagged) if r.kind == "ranking"]
    if mode == "per-rater":
        rankings = [
            (r.prompt, r.ranks, {"rater": r.rater, "rationale": r.rationale, "flags": list(r.flags)}) for r in usable
        ]
    else:
        by_task: dict[int, list[JudgementRecord]] = defaultdict(list)
        for r in usable:
            by_task[r.task_id].append(r)
        rankings = [
            (group[0].prompt, _consensus(group), {"rationales": _rationales_of(group), "flags": _flags_of(group)})
            for _, group in sorted(by_task.items())
        ]
    return [
        {
            "prompt": prompt,
            "completions": [candidates[c].text for c in sorted(ranks)],
            "ranks": [ranks[c] for c in sorted(ranks)],
            **notes,
        }
        for prompt, ranks, notes in rankings
        if len(set(ranks.values())) > 1
    ]


def _consensus(group: list[JudgementRecord]) -> dict[int, int]:
    """Competition ranking ("1224") of the candidates' mean ranks."""
    mean = {c: sum(r.ranks[c] for r in group) / len(group) for c in group[0].ranks}
    return {c: 1 + sum(other < m for other in mean.values()) for c, m in mean.items()}


def feedback_label(rating_scale: str | None, rating: int) -> bool | None:
    """Desirable (True) or not (False) by the rules in this module's docstring; None for a neutral 3 of 5."""
    if rating_scale == "binary":
        return rating == 1
    return True if rating >= 4 else False if rating <= 2 else None


def feedback_rows(
    records: Iterable[JudgementRecord],
    candidates: dict[int, Candidate],
    include_gold: bool = False,
    include_flagged: bool = False,
) -> list[dict[str, Any]]:
    """Rows ``{"prompt", "completion", "label", "rating", "rater"}``, one per rating judgement with a label."""
    rows = []
    for r in _usable(records, include_gold, include_flagged):
        if r.kind != "rating" or r.rating is None:
            continue
        label = feedback_label(r.rating_scale, r.rating)
        if label is not None:
            completion = candidates[r.candidate_ids[0]].text
            rows.append({"prompt": r.prompt, "completion": completion, "label": label, "rating": r.rating, "rater": r.rater})
    return rows
