"""Turn judgements into the data layer's preference and ranking rows, and write them as JSONL.

Rules (both modes): skipped judgements, pairwise "tie"/"both_bad" and tied pairs inside a ranking give
no preference row; gold tasks are left out unless ``include_gold``. A ranking of K candidates expands to
its strictly ordered pairs (all C(K, 2) when there are no ties). Margin: pairwise strength
slightly=1, clearly=2, much=3; rankings the rank difference.

- ``per-rater``: one row per judgement and ordered pair.
- ``majority``: one row per candidate pair over all raters and tasks; the side with more strict votes
  wins (an even split gives no row) and the margin is the mean margin of the winning votes.
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


def _usable(records: Iterable[JudgementRecord], include_gold: bool) -> list[JudgementRecord]:
    return [r for r in records if not r.skipped and (include_gold or not r.is_gold)]


def preference_rows(
    records: Iterable[JudgementRecord],
    candidates: dict[int, Candidate],
    mode: str = "majority",
    include_gold: bool = False,
) -> list[dict[str, Any]]:
    """Rows ``{"prompt", "chosen", "rejected", "margin"}`` by the rules in this module's docstring."""
    _check_mode(mode)
    usable = _usable(records, include_gold)
    if mode == "per-rater":
        return [
            _preference(r.prompt, candidates[chosen], candidates[rejected], margin)
            for r in usable
            for chosen, rejected, margin in r.preferences()
        ]
    votes: dict[tuple[int, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    prompt_text: dict[tuple[int, int], str] = {}
    for r in usable:
        for chosen, rejected, margin in r.preferences():
            pair = (min(chosen, rejected), max(chosen, rejected))
            votes[pair][chosen].append(margin)
            prompt_text[pair] = r.prompt
    rows = []
    for pair in sorted(votes):
        first, second = (votes[pair].get(c, []) for c in pair)
        if len(first) == len(second):
            continue
        (winner, loser), margins = (pair, first) if len(first) > len(second) else (pair[::-1], second)
        rows.append(_preference(prompt_text[pair], candidates[winner], candidates[loser], sum(margins) / len(margins)))
    return rows


def _preference(prompt: str, chosen: Candidate, rejected: Candidate, margin: float) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen.text, "rejected": rejected.text, "margin": margin}


def ranking_rows(
    records: Iterable[JudgementRecord],
    candidates: dict[int, Candidate],
    mode: str = "per-rater",
    include_gold: bool = False,
) -> list[dict[str, Any]]:
    """Rows ``{"prompt", "completions", "ranks"}`` (1 = best, ties share a rank) of ranking tasks.

    ``per-rater``: one row per judgement. ``majority``: one row per task, candidates ranked by their mean
    rank over raters (equal means tie). Rankings with every candidate tied are left out.
    """
    _check_mode(mode)
    usable = [r for r in _usable(records, include_gold) if r.kind == "ranking"]
    if mode == "per-rater":
        rankings = [(r.prompt, r.ranks) for r in usable]
    else:
        by_task: dict[int, list[JudgementRecord]] = defaultdict(list)
        for r in usable:
            by_task[r.task_id].append(r)
        rankings = [(group[0].prompt, _consensus(group)) for _, group in sorted(by_task.items())]
    return [
        {
            "prompt": prompt,
            "completions": [candidates[c].text for c in sorted(ranks)],
            "ranks": [ranks[c] for c in sorted(ranks)],
        }
        for prompt, ranks in rankings
        if len(set(ranks.values())) > 1
    ]


def _consensus(group: list[JudgementRecord]) -> dict[int, int]:
    """Competition ranking ("1224") of the candidates' mean ranks."""
    mean = {c: sum(r.ranks[c] for r in group) / len(group) for c in group[0].ranks}
    return {c: 1 + sum(other < m for other in mean.values()) for c, m in mean.items()}
