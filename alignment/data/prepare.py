"""load_data: read the recipe's sources, normalise them to a task's schema and prepare the splits.

Order: read and normalise every source (bad rows per on_bad_rows) -> check all sources share one schema ->
map class labels -> clean text -> drop empty -> drop duplicates -> length filter -> mixture sampling ->
balance -> validation/test split -> max_samples. Every step appends a line to the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import datasets

from alignment.data.args import TASKS, DataArguments, MixtureEntry, Task, column_map
from alignment.data.formats import (
    FORMAT_COLUMNS,
    TASK_FORMATS,
    RowSpec,
    describe_shape,
    detect_format,
    infer_label_names,
    label_id,
    normalise_row,
    resolve_columns,
    row_shape,
)
from alignment.data.rows import BadRow, BadRows, Row
from alignment.data.sources import SPLIT_NAMES, Source, open_source
from alignment.data.steps import (
    CLEANERS,
    balance,
    clean,
    duplicate_key,
    empty_columns,
    feedback_counts,
    label_counts,
    sample,
    seeded,
    text_length,
)
from alignment.data.steps import split as split_rows
from alignment.errors import DataError, RecipeError

SPLITS = ("train", "validation", "test")
HELD_OUT = SPLITS[1:]
SHOWN_LOCATIONS = 3
LABELLED_TASKS = ("classification", "feedback")  # held-out splits keep their label proportions


@dataclass
class PreparedData:
    """The prepared splits, the class names (classification) and one report line per step."""

    splits: datasets.DatasetDict  # keys among "train", "validation", "test"
    label_names: list[str] | None  # classification: index -> name
    report: list[str]


@dataclass
class _Entry:
    """One source: its own reading settings, the split it feeds and its share of the training mixture."""

    args: DataArguments
    index: int = 0  # position in the datasets list; rows remember it
    split: str = "train"
    weight: float | None = None
    rows: int | None = None


@dataclass
class _Run:
    """State of one load_data call."""

    task: str
    bad: BadRows
    report: list[str] = field(default_factory=list)
    source_label_names: list[str] | None = None  # names of a ClassLabel label column in a datasets source


def load_data(args: DataArguments, task: Task) -> PreparedData:
    """Reads, normalises and prepares the data of a recipe for a task (classification, sft, preference, feedback,
    prompts).

    Raises RecipeError for invalid keys, DataError for unreadable sources and (with on_bad_rows: error) bad rows.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    _check_args(args, task)
    entries = _entries(args, task)
    run = _Run(task, BadRows(args.on_bad_rows))
    splits = _read_all(args, entries, run)
    _check_schema(splits, run)
    names = _map_labels(splits, args.label_names, run) if task == "classification" else None
    _prepare_rows(splits, args, run)
    if args.datasets:
        splits["train"] = _mix(splits["train"], entries, args.split_seed, run)
    if args.balance != "none" and splits["train"]:
        splits["train"], line = balance(splits["train"], args.balance, names, seeded(args.split_seed, "balance"))
        run.report.append(line)
    _split_by_ratio(splits, args, task, run)
    _cap_train(splits, args.max_samples, args.split_seed, run)
    return PreparedData(_datasets(splits, names, run), names, run.report)


def _check_args(args: DataArguments, task: str) -> None:
    """What depends on the task, and a source to read (DataArguments checks the rest when it is made)."""
    if args.dataset_path is None and args.datasets is None:
        raise RecipeError("set either dataset_path (one source) or datasets (a mixture)")
    _check_format(args.data_format, task, "data_format")
    if args.min_margin is not None and task != "preference":
        raise RecipeError(f"min_margin: only for preference data, not for task '{task}'")
    if args.extra_columns and task != "prompts":
        raise RecipeError(f"extra_columns: only for prompt data (PPO/GRPO rewards), not for task '{task}'")
    if args.balance != "none" and task != "classification":
        raise RecipeError(f"balance: only for classification data, not for task '{task}'")


def _check_format(data_format: str, task: str, key: str) -> None:
    if data_format != "auto" and data_format not in TASK_FORMATS[task]:
        known = data_format in FORMAT_COLUMNS
        raise RecipeError(
            f"{key}: {'format' if known else 'unknown format'} '{data_format}' "
            f"{'cannot be used for' if known else 'for'} task '{task}' "
            f"(expected auto or one of: {', '.join(TASK_FORMATS[task])})"
        )


def _entries(args: DataArguments, task: str) -> list[_Entry]:
    if args.dataset_path is not None:
        return [_Entry(args)]
    entries = [_entry(args, task, item, index) for index, item in enumerate(args.datasets)]
    training = [entry for entry in entries if entry.split == "train"]
    weights = [entry.weight for entry in training if entry.weight is not None]
    if weights and len(weights) < len(training) and sum(weights) >= 1:
        raise RecipeError(
            "datasets: the weights must sum to less than 1 when other entries give rows (or all their rows), "
            f"got {sum(weights):g}"
        )
    return entries


def _entry(args: DataArguments, task: str, item: MixtureEntry, index: int) -> _Entry:
    entry_args = replace(args, dataset_path=item.path, datasets=None, **item.source_keys())
    _check_format(entry_args.data_format, task, f"datasets entry {index + 1}: format")
    return _Entry(entry_args, index, item.split, item.weight, item.rows)


def _read_all(args: DataArguments, entries: list[_Entry], run: _Run) -> dict[str, list[Row]]:
    """Rows of every split: training entries with their own splits, held-out entries, then validation_path and
    test_path, which replace whatever the entries gave for their split."""
    splits: dict[str, list[Row]] = {"train": []}
    for entry in entries:
        if entry.split == "train":
            parts = _read_source(entry.args, run, entry.index)
        else:
            parts = {entry.split: _read_held_out(entry.args, entry.split, run, entry.index)}
        for name, rows in parts.items():
            splits.setdefault(name, []).extend(rows)
    for name in HELD_OUT:
        path = getattr(args, f"{name}_path")
        if path is not None:
            if name in splits:
                run.report.append(f"{name}: {name}_path {path} replaces the {name} rows of the datasets")
            splits[name] = _read_held_out(replace(args, dataset_path=path), name, run, len(entries))
    return splits


def _read_held_out(args: DataArguments, split: str, run: _Run, entry: int) -> list[Row]:
    """The rows of a validation or test source: its split of that name, or its only split."""
    path = args.dataset_path
    sources = open_source(path, args.csv_quoting, args.dataset_config)
    matching = [source for name, source in sources.items() if SPLIT_NAMES.get(name) == split]
    if not matching and len(sources) != 1:
        raise DataError(f"{path}: has splits {', '.join(sources)}; none is a {split} split")
    return _read_split((matching or list(sources.values()))[0], args, run, entry, split)


def _read_source(args: DataArguments, run: _Run, entry: int) -> dict[str, list[Row]]:
    path = args.dataset_path
    sources = open_source(path, args.csv_quoting, args.dataset_config)
    split_of = {name: SPLIT_NAMES.get(name) for name in sources}
    ignored = [name for name, split in split_of.items() if split is None]
    if ignored:
        used = "train, validation/valid/val/dev, test"
        run.report.append(f"{path}: ignored split(s) {', '.join(ignored)} (used: {used})")
    used = [split for split in split_of.values() if split is not None]
    if "train" not in used or len(set(used)) != len(used):
        raise DataError(
            f"{path}: needs one train split and at most one validation and test split, has {', '.join(sources)}"
        )
    return {split: _read_split(sources[name], args, run, entry, split) for name, split in split_of.items() if split}


def _read_split(source: Source, args: DataArguments, run: _Run, entry: int, split: str) -> list[Row]:
    """The normalised rows of one source split; bad rows go to run.bad, the outcome to the report."""
    rows: list[Row] = []
    spec = shape = how = None
    records = 0
    for number, record in source.records:
        records += 1
        where = f"{source.unit} {number}"
        try:
            if isinstance(record, BadRow):
                raise record
            if spec is None:
                spec, how = _row_spec(source, record, args, run)
            for data in normalise_row(record, spec):
                this_shape = row_shape(data)
                shape = shape or this_shape
                if this_shape != shape:
                    raise BadRow(f"has {describe_shape(this_shape)} but earlier rows have {describe_shape(shape)}")
                rows.append(Row(data, source.name, where, (entry, split, number), entry, spec.columns))
        except BadRow as problem:
            run.bad.add(source.name, where, str(problem))
    run.report.append(_read_line(split, source, spec, how, records, len(rows)))
    return rows


def _read_line(split: str, source: Source, spec: RowSpec | None, how: str | None, records: int, rows: int) -> str:
    if spec is None:
        return f"{split}: no rows in {source.name}"
    counts = "".join(f"; {count} {event}" for event, count in spec.counts.items())
    return f"{split}: {rows} rows from {records} records of {source.name}, format {spec.format} ({how}){counts}"


def _row_spec(source: Source, first: dict, args: DataArguments, run: _Run) -> tuple[RowSpec, str]:
    """How to read a source, from its first row; and how its format was chosen, for the report."""
    present = set(first)
    columns = resolve_columns(column_map(args), present)
    run.source_label_names = run.source_label_names or source.class_names.get(columns["label"])
    extra = tuple(args.extra_columns or ())
    if args.data_format != "auto":
        return RowSpec(args.data_format, run.task, columns, extra), "set by data_format"
    data_format = detect_format(source.name, present, columns, run.task)
    evidence = [  # a preference prompt may come from the conversation column
        columns[name] if columns[name] in present else columns["messages"] for name in FORMAT_COLUMNS[data_format]
    ]
    return RowSpec(data_format, run.task, columns, extra), f"detected from columns {', '.join(evidence)}"


def _check_schema(splits: dict[str, list[Row]], run: _Run) -> None:
    """All rows must share one schema; a margin missing in some sources is filled with 0.0 (no margin)."""
    rows = [row for part in splits.values() for row in part]
    if any("margin" in row.data for row in rows):
        without = [row for row in rows if "margin" not in row.data and "chosen" in row.data]
        for row in without:
            row.data["margin"] = 0.0
        for source, count in Counter(row.source for row in without).items():
            run.report.append(f"margin: 0.0 (no margin) filled in for {count} rows of {source} without a margin")
    first_of_shape: dict[tuple, Row] = {}
    for row in rows:
        first_of_shape.setdefault(row_shape(row.data), row)
    if len(first_of_shape) > 1:
        described = "; ".join(f"{row.source} gives {describe_shape(shape)}" for shape, row in first_of_shape.items())
        raise DataError(f"the sources give rows of different schemas, which cannot be combined: {described}")


def _map_labels(splits: dict[str, list[Row]], label_names: list[str] | None, run: _Run) -> list[str]:
    """Label names (given, from a ClassLabel column, or inferred) and every row's label as an id."""
    names = label_names or run.source_label_names
    origin = "label_names" if label_names else "the source's ClassLabel feature" if names else "the data"
    names = names or infer_label_names([row.data["label"] for part in splits.values() for row in part])
    label_ids = {name: index for index, name in enumerate(names)}
    for split, rows in splits.items():
        splits[split] = [row for row in rows if _with_label_id(row, label_ids, run)]
    run.report.append(f"labels: {len(names)} classes from {origin}: {', '.join(names)}")
    return names


def _with_label_id(row: Row, label_ids: dict[str, int], run: _Run) -> bool:
    try:
        row.data["label"] = label_id(row.data["label"], label_ids)
        return True
    except BadRow as problem:
        run.bad.add(row.source, row.where, str(problem))
        return False


def _prepare_rows(splits: dict[str, list[Row]], args: DataArguments, run: _Run) -> None:
    """Cleaning, empty rows, duplicates and the length filter, on every split; then the bad-row summary."""
    for name, cleaner in CLEANERS.items():
        if getattr(args, name):
            totals = {split: len(rows) for split, rows in splits.items()}
            changed = {split: clean(rows, cleaner) for split, rows in splits.items()}
            run.report.append(f"{name}: changed {_per_split(changed, totals)}")
    empty_step = "drop_empty" if args.drop_empty else "empty rows (drop_empty is off: bad rows)"
    _remove(splits, empty_step, lambda split, row: _not_empty(row, args.drop_empty, run), run)
    if args.drop_duplicates:
        seen: set[tuple[str, str]] = set()
        _remove(splits, "drop_duplicates", lambda split, row: _first_time((split, duplicate_key(row)), seen), run)
    if args.min_chars is not None or args.max_chars is not None:
        low, high = args.min_chars or 0, args.max_chars if args.max_chars is not None else float("inf")
        limits = {"min_chars": args.min_chars, "max_chars": args.max_chars}
        bounds = ", ".join(f"{key}={value}" for key, value in limits.items() if value is not None)
        _remove(splits, f"length filter ({bounds})", lambda split, row: low <= text_length(row) <= high, run)
    if args.min_margin is not None:
        _remove(splits, f"min_margin={args.min_margin:g}", lambda split, row: row.data.get("margin", 0.0) >= args.min_margin, run)
    run.report.extend(run.bad.report())


def _not_empty(row: Row, drop_empty: bool, run: _Run) -> bool:
    """True for rows with text in every text column; empty rows are bad rows when drop_empty is off."""
    empty = empty_columns(row)
    if empty and not drop_empty:
        run.bad.add(row.source, row.where, f"column '{row.column(empty[0])}' is empty")
    return not empty


def _first_time(key: tuple[str, str], seen: set[tuple[str, str]]) -> bool:
    if key in seen:
        return False
    seen.add(key)
    return True


def _remove(splits: dict[str, list[Row]], step: str, keep: Callable[[str, Row], bool], run: _Run) -> None:
    """Keeps the rows for which keep(split, row) holds and reports how many each split lost, with examples."""
    removed: list[Row] = []
    counts, totals = {}, {}
    for split, rows in splits.items():
        kept = [row for row in rows if keep(split, row)]
        counts[split], totals[split] = len(rows) - len(kept), len(rows)
        if len(kept) < len(rows):
            kept_ids = {id(row) for row in kept}
            removed += [row for row in rows if id(row) not in kept_ids]
        splits[split] = kept
    examples = "; ".join(f"{row.source} {row.where}" for row in removed[:SHOWN_LOCATIONS])
    run.report.append(f"{step}: removed {_per_split(counts, totals)}" + (f" (e.g. {examples})" if examples else ""))


def _per_split(counts: dict[str, int], totals: dict[str, int]) -> str:
    """'12 of 300 rows' for train alone, else '12 of 300 rows in train, 1 of 30 rows in validation'."""
    shown = [split for split in counts if split == "train" or totals[split]]
    parts = [f"{counts[split]} of {totals[split]} rows in {split}" for split in shown]
    return parts[0].removesuffix(" in train") if len(parts) == 1 else ", ".join(parts)


def _mix(rows: list[Row], entries: list[_Entry], seed: int, run: _Run) -> list[Row]:
    """The training rows sampled per entry by weight or rows (see _mixture_counts), reproducibly for the seed."""
    entries = [entry for entry in entries if entry.split == "train"]
    parts = [[row for row in rows if row.entry == entry.index] for entry in entries]
    counts = _mixture_counts([len(part) for part in parts], entries)
    mixed, described = [], []
    for entry, part, count in zip(entries, parts, counts):
        if not part and (count or entry.weight):
            raise DataError(
                f"datasets entry {entry.index + 1} ({entry.args.dataset_path}): no training rows left to sample"
            )
        mixed += sample(part, count, seeded(seed, f"mixture {entry.index}"))
        share = f"weight {entry.weight:g}" if entry.weight else f"rows {entry.rows}" if entry.rows else "all rows"
        repeated = ", repeated" if count > len(part) else ""
        described.append(f"{count} of {len(part)} rows from {entry.args.dataset_path} ({share}{repeated})")
    run.report.append(f"mixture: {len(mixed)} rows: {'; '.join(described)}")
    return mixed


def _mixture_counts(available: list[int], entries: list[_Entry]) -> list[int]:
    """Rows per entry. rows: that count; neither: all rows; weight: that fraction of the mixed total.
    When every entry has a weight, the total is the largest one that repeats no row."""
    fixed = sum(entry.rows or size for entry, size in zip(entries, available) if entry.weight is None)
    weights = [entry.weight for entry in entries if entry.weight is not None]
    if len(weights) == len(entries):
        shares = [weight / sum(weights) for weight in weights]
        total = min(size / share for size, share in zip(available, shares))
        return [min(size, round(share * total)) for size, share in zip(available, shares)]
    total = fixed / (1 - sum(weights))
    return [
        round(entry.weight * total) if entry.weight is not None else entry.rows or size
        for entry, size in zip(entries, available)
    ]


def _split_by_ratio(splits: dict[str, list[Row]], args: DataArguments, task: str, run: _Run) -> None:
    ratios = {}
    for name in HELD_OUT:
        ratio = getattr(args, f"{name}_split")
        if ratio and name in splits:
            run.report.append(
                f"{name}_split {ratio:g} ignored: the {name} rows come from the data source or {name}_path"
            )
        elif ratio:
            ratios[name] = ratio
    if ratios:
        parts, how = split_rows(splits["train"], ratios, args.split_seed, stratify=task in LABELLED_TASKS)
        splits.update(parts)
        sizes = ", ".join(f"{name} {len(rows)}" for name, rows in parts.items())
        run.report.append(f"split (seed {args.split_seed}, {how}): {sizes}")


def _cap_train(splits: dict[str, list[Row]], max_samples: int | None, seed: int, run: _Run) -> None:
    if max_samples is not None:
        before = len(splits["train"])
        splits["train"] = sample(splits["train"], min(max_samples, before), seeded(seed, "max_samples"))
        run.report.append(f"max_samples: kept {len(splits['train'])} of {before} training rows")


def _datasets(splits: dict[str, list[Row]], names: list[str] | None, run: _Run) -> datasets.DatasetDict:
    if not splits["train"]:
        raise DataError("no training rows left after preparation. Report:\n" + "\n".join(run.report))
    features = None
    if names:
        features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    train = datasets.Dataset.from_list([row.data for row in splits["train"]], features=features)
    result = datasets.DatasetDict({"train": train})
    for name in HELD_OUT:
        if splits.get(name):
            result[name] = datasets.Dataset.from_list([row.data for row in splits[name]], features=train.features)
        elif name in splits:
            run.report.append(f"{name}: no rows left, so there is no {name} split")
    sizes = ", ".join(f"{name} {len(dataset)}" for name, dataset in result.items())
    labels = f"; training labels: {label_counts(splits['train'], names)}" if names else ""
    if run.task == "feedback":
        labels = f"; training labels: {feedback_counts(splits['train'])}"
    run.report.append(f"result: {sizes} rows{labels}")
    return result
