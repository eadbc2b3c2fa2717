"""Preparation steps on normalised rows: cleaning, emptiness, duplicates, length, sampling, balancing, splitting."""

from __future__ import annotations

import html
import json
import random
import re
from collections import Counter
from collections.abc import Callable

from sklearn.model_selection import train_test_split

from alignment.data.rows import Row
from alignment.errors import DataError

NOT_TEXT = ("label", "margin")  # normalised columns that cleaning and length leave alone
HTML_BREAK = re.compile(r"<br\s*/?>|</p\s*>", re.IGNORECASE)
HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
INNER_SPACES = re.compile(r"(?<=\S)[^\S\n]+")  # a run of spaces after a non-space character, within a line
BLANK_LINES = re.compile(r"\n{3,}")


def strip_html(text: str) -> str:
    """Tags removed (<br> and </p> become line breaks), entities such as &amp; unescaped."""
    return html.unescape(HTML_TAG.sub("", HTML_BREAK.sub("\n", text)))


def normalize_whitespace(text: str) -> str:
    """Inner runs of spaces become one space, line ends are stripped, at most one blank line in a row;
    leading indentation is kept and the text is stripped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return BLANK_LINES.sub("\n\n", "\n".join(INNER_SPACES.sub(" ", line.rstrip()) for line in lines)).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "strip_html": strip_html,
    "normalize_whitespace": normalize_whitespace,
    "lowercase": str.lower,
}


def clean(rows: list[Row], cleaner: Callable[[str], str]) -> int:
    """Applies a text cleaner to every text and message content in place; returns how many rows changed."""
    changed = 0
    for row in rows:
        cleaned = {name: value if name in NOT_TEXT else _map_text(value, cleaner) for name, value in row.data.items()}
        if cleaned != row.data:
            row.data = cleaned
            changed += 1
    return changed


def _map_text(value: object, cleaner: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return cleaner(value)
    if isinstance(value, list):
        return [{**message, "content": cleaner(message["content"])} for message in value]
    return value


def empty_columns(row: Row) -> list[str]:
    """Text columns without text: a blank string, an empty message list, or one whose last message is blank."""
    return [name for name, value in row.data.items() if name not in NOT_TEXT and _is_blank(value)]


def _is_blank(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value or not value[-1]["content"].strip()
    return False


def duplicate_key(row: Row) -> str:
    return json.dumps(row.data, sort_keys=True, ensure_ascii=False)


def text_length(row: Row) -> int:
    """Characters of text in a row; for preference pairs the prompt plus the longer reply."""
    lengths = {name: _chars(value) for name, value in row.data.items() if name not in NOT_TEXT}
    if "chosen" in lengths:
        return lengths["prompt"] + max(lengths["chosen"], lengths["rejected"])
    return sum(lengths.values())


def _chars(value: object) -> int:
    if isinstance(value, list):
        return sum(len(message["content"]) for message in value)
    return len(value) if isinstance(value, str) else 0


def seeded(seed: int, purpose: str) -> random.Random:
    """An independent, reproducible random stream per purpose (mixture entry, balancing, max_samples)."""
    return random.Random(f"{seed}:{purpose}")


def sample(rows: list[Row], count: int, rng: random.Random) -> list[Row]:
    """count rows: a random subset in their original order, or, when count exceeds the rows, every row
    repeated as often as fits plus a random subset for the rest."""
    if not rows:
        return []
    whole, rest = divmod(count, len(rows))
    return rows * whole + [rows[index] for index in sorted(rng.sample(range(len(rows)), rest))]


def balance(rows: list[Row], mode: str, names: list[str], rng: random.Random) -> tuple[list[Row], str]:
    """Every label down-sampled to the rarest count ('down') or repeated up to the commonest count ('up')."""
    by_label: dict[int, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row.data["label"], []).append(row)
    sizes = {label: len(members) for label, members in sorted(by_label.items())}
    target = min(sizes.values()) if mode == "down" else max(sizes.values())
    if mode == "down":
        kept = {id(row) for members in by_label.values() for row in sample(members, target, rng)}
        balanced = [row for row in rows if id(row) in kept]
    else:
        balanced = rows + [row for members in by_label.values() for row in sample(members, target - len(members), rng)]
    before = ", ".join(f"{names[label]} {size}" for label, size in sizes.items())
    return balanced, f"balance ({mode}): {len(rows)} -> {len(balanced)} rows, {target} per label (before: {before})"


def split(
    rows: list[Row], ratios: dict[str, float], seed: int, stratify: bool
) -> tuple[dict[str, list[Row]], str]:
    """Rows divided into 'train' and the named held-out splits by ratio, by group (a group never straddles
    splits), deterministic for a seed, stratified by label when asked and possible. Returns a note for the report."""
    groups = list(dict.fromkeys(row.group for row in rows))
    counts = {name: max(1, round(len(groups) * ratio)) for name, ratio in ratios.items()}
    if sum(counts.values()) >= len(groups):
        held_out = ", ".join(f"{count} for {name}" for name, count in counts.items())
        raise DataError(f"{len(groups)} training rows (or groups of pairs) are too few to hold out {held_out}")
    labels = _group_labels(rows) if stratify else None
    assignment: dict = {}
    remaining = list(range(len(groups)))
    notes = []
    for name, count in counts.items():
        remaining, held, note = _hold_out(remaining, count, seed, labels)
        assignment.update((groups[index], name) for index in held)
        notes += [note] if note else []
    result: dict[str, list[Row]] = {"train": [], **{name: [] for name in counts}}
    for row in rows:
        result[assignment.get(row.group, "train")].append(row)
    how = "stratified by label" if stratify and not notes else "random" + (f", {notes[0]}" if notes else "")
    return result, how


def _group_labels(rows: list[Row]) -> list[int]:
    first = {}
    for row in rows:
        first.setdefault(row.group, row.data["label"])
    return list(first.values())


def _hold_out(
    indices: list[int], count: int, seed: int, labels: list[int] | None
) -> tuple[list[int], list[int], str | None]:
    strata = [labels[index] for index in indices] if labels else None
    try:
        keep, held = train_test_split(indices, test_size=count, random_state=seed, stratify=strata)
        return sorted(keep), sorted(held), None
    except ValueError as error:  # too few rows of a label to stratify
        if strata is None:
            raise
        keep, held = train_test_split(indices, test_size=count, random_state=seed)
        return sorted(keep), sorted(held), f"cannot stratify: {error}"


def feedback_counts(rows: list[Row]) -> str:
    desirable = sum(row.data["label"] for row in rows)
    return f"{desirable} desirable, {len(rows) - desirable} undesirable"


def label_counts(rows: list[Row], names: list[str]) -> str:
    counts = Counter(row.data["label"] for row in rows)
    return ", ".join(f"{name} {counts[index]}" for index, name in enumerate(names))
