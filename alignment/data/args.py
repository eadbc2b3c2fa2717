"""Recipe keys of the data layer: where the data is, how to read its columns and how to prepare it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, make_dataclass
from typing import Any, Literal, get_args

from alignment.config import build_dataclasses
from alignment.errors import RecipeError

Task = Literal["classification", "sft", "preference", "feedback", "prompts"]
TASKS: tuple[str, ...] = get_args(Task)
DataFormat = Literal[
    "auto", "classification", "text", "prompt", "prompt_completion", "messages", "alpaca", "preference", "hh", "ranking",
    "feedback",
]


def _column(default: str, what: str) -> str:
    return field(default=default, metadata={"help": f"Source column holding {what}."})


@dataclass
class DataArguments:
    """Flat recipe keys shared by every stage that reads data (see alignment.data.load_data)."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a .jsonl, .json, .csv, .tsv or .parquet file (each may be .gz), "
            "a datasets.save_to_disk folder, or a Hugging Face Hub dataset id."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Hub dataset configuration (subset) name; only for hub ids."}
    )
    validation_path: str | None = field(
        default=None,
        metadata={"help": "Validation data file or folder (read with the top-level keys); wins over validation_split."},
    )
    test_path: str | None = field(
        default=None,
        metadata={"help": "Test data file or folder (read with the top-level keys); wins over test_split."},
    )
    datasets: list[dict] | None = field(
        default=None,
        metadata={
            "help": "Mixture instead of dataset_path: a list of {path, split, format, weight | rows, <any *_column>, "
            "csv_quoting, dataset_config}. weight: fraction of the mixed training rows; rows: a row count "
            "(rows are repeated when the source has fewer); neither: all rows. split: train (default), or "
            "validation/test for a held-out source with its own columns. Entry keys override the top-level keys."
        },
    )
    data_format: DataFormat = field(
        default="auto",
        metadata={
            "help": "Row format: auto (detected from the columns), classification (text, label), text, "
            "prompt (prompts only), prompt_completion, messages, alpaca (instruction, input, output), "
            "preference (prompt, chosen, rejected[, margin]), hh (HH-RLHF chosen/rejected transcripts), "
            "ranking (prompt, completions, ranks; lower rank is better), "
            "feedback (prompt, completion, label: true for a desirable completion, false for an undesirable one)."
        },
    )
    text_column: str = _column("text", "the text")
    label_column: str = _column("label", "the class label (a name or an integer id), or feedback's true/false")
    prompt_column: str = _column("prompt", "the prompt (a string or a list of messages)")
    completion_column: str = _column("completion", "the completion (a string or a list of messages)")
    messages_column: str = _column(
        "messages", "the conversation (a list of {role, content}, or ShareGPT {from, value}); "
        "a 'conversations' column is used when this one is absent"
    )
    chosen_column: str = _column("chosen", "the preferred reply (or the full HH-RLHF transcript)")
    rejected_column: str = _column("rejected", "the dispreferred reply (or the full HH-RLHF transcript)")
    margin_column: str = _column("margin", "the preference margin (a number)")
    completions_column: str = _column("completions", "the list of ranked completions")
    ranks_column: str = _column("ranks", "the list of ranks, one per completion (lower is better, equal is a tie)")
    instruction_column: str = _column("instruction", "the Alpaca instruction")
    input_column: str = _column("input", "the Alpaca input (optional, may be empty)")
    output_column: str = _column("output", "the Alpaca output")
    extra_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Prompt data only: source columns kept beside the prompt (strings or numbers), passed by name to "
            "reward functions that take them, e.g. the answer an exact-match reward checks."
        },
    )
    csv_quoting: bool = field(
        default=True,
        metadata={"help": "Honour CSV quotes; false reads quotes literally (csv.QUOTE_NONE), e.g. for SST-2 TSV."},
    )
    label_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Class names in id order; labels must be one of them or an id below their count. "
            "Default: sorted unique labels (non-negative integer labels are kept as ids)."
        },
    )
    strip_html: bool = field(
        default=False, metadata={"help": "Remove HTML tags (<br> becomes a line break) and unescape entities."}
    )
    normalize_whitespace: bool = field(
        default=False,
        metadata={
            "help": "Collapse runs of spaces inside lines, strip line ends, keep at most one blank line, "
            "and strip the text (leading indentation is kept)."
        },
    )
    lowercase: bool = field(default=False, metadata={"help": "Lower-case all text."})
    drop_empty: bool = field(
        default=True,
        metadata={"help": "Remove rows with an empty text field; false makes such rows bad rows (see on_bad_rows)."},
    )
    drop_duplicates: bool = field(default=False, metadata={"help": "Remove exact duplicate rows within each split."})
    balance: Literal["none", "down", "up"] = field(
        default="none",
        metadata={
            "help": "Classification only: down-sample every label to the rarest one's count, or up-sample "
            "(repeat rows) to the commonest one's count, before the validation/test split."
        },
    )
    min_chars: int | None = field(
        default=None, metadata={"help": "Remove rows with fewer characters of text (for pairs: prompt + longer reply)."}
    )
    max_chars: int | None = field(
        default=None, metadata={"help": "Remove rows with more characters of text (for pairs: prompt + longer reply)."}
    )
    min_margin: float | None = field(
        default=None,
        metadata={"help": "Preference data only: remove pairs whose margin (preference strength) is below this."},
    )
    validation_split: float = field(
        default=0.0,
        metadata={"help": "Fraction of the training rows held out for validation (stratified by label for classification and feedback)."},
    )
    test_split: float = field(default=0.0, metadata={"help": "Fraction of the training rows held out for testing."})
    split_seed: int = field(
        default=42, metadata={"help": "Seed for the splits, mixture sampling, balancing and max_samples."}
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many training rows (sampled with split_seed), for quick runs."},
    )
    on_bad_rows: Literal["error", "skip"] = field(
        default="error",
        metadata={"help": "error: stop at the first bad row; skip: leave bad rows out and count them in the report."},
    )


    def __post_init__(self) -> None:
        """The checks that need no data and no task (ValueErrors reach the user as RecipeErrors naming the recipe);
        load_data checks what depends on the task, and that there is a source at all."""
        if self.dataset_path is not None and self.datasets is not None:
            raise ValueError("set either dataset_path (one source) or datasets (a mixture), not both")
        for key in ("validation_split", "test_split"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 0 and below 1, got {getattr(self, key)}")
        if self.validation_split + self.test_split >= 1:
            raise ValueError("validation_split + test_split must be below 1 to leave training rows")
        for key in ("min_chars", "max_chars"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"{key}: must be non-negative, got {getattr(self, key)}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples: must be positive, got {self.max_samples}")
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        if self.label_names is not None and (not self.label_names or len(set(self.label_names)) != len(self.label_names)):
            raise ValueError(f"label_names: must be a non-empty list of distinct names, got {self.label_names}")
        if self.datasets is not None:
            self.datasets = mixture(self.datasets)

    def to_dict(self) -> dict[str, Any]:
        """The recipe keys, mixture entries with only the keys they set (the resolved recipe.yaml)."""
        out = asdict(self)
        if self.datasets is not None:
            out["datasets"] = [entry.to_dict() for entry in self.datasets]
        return out


COLUMN_SUFFIX = "_column"
COLUMN_FIELDS = tuple(f.name for f in fields(DataArguments) if f.name.endswith(COLUMN_SUFFIX))
# Keys a `datasets:` mixture entry may set for its own source, over the top-level keys.
SOURCE_FIELDS = ("data_format", "dataset_config", "csv_quoting", *COLUMN_FIELDS)
ENTRY_ALIASES = {"format": "data_format", "config": "dataset_config"}


@dataclass
class _MixtureShare:
    """One source of a ``datasets:`` mixture: where it is, the split it feeds and its share of the training rows."""

    path: str
    split: Literal["train", "validation", "test"] = "train"
    weight: float | None = None
    rows: int | None = None

    def __post_init__(self) -> None:
        if self.weight is not None and self.rows is not None:
            raise ValueError("give weight or rows, not both")
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"weight must be a positive number, got {self.weight!r}")
        if self.rows is not None and self.rows < 1:
            raise ValueError(f"rows must be a positive integer, got {self.rows!r}")
        if (self.weight is not None or self.rows is not None) and self.split != "train":
            raise ValueError(f"weight and rows sample training rows; a {self.split} entry is used whole")

    def source_keys(self) -> dict[str, Any]:
        """The reading keys this entry sets for its own source."""
        return {name: getattr(self, name) for name in SOURCE_FIELDS if getattr(self, name) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "split" and v == "train")}


_FIELD_TYPES = {f.name: f.type for f in fields(DataArguments)}
# The entry's own reading keys are DataArguments' (null: the top-level value), declared once, there.
MixtureEntry = make_dataclass(
    "MixtureEntry", [(name, f"{_FIELD_TYPES[name]} | None", field(default=None)) for name in SOURCE_FIELDS],
    bases=(_MixtureShare,), namespace={"__module__": __name__},
)


def mixture(items: list[Any]) -> list[Any]:
    """``datasets:`` as MixtureEntry objects; ValueError naming the entry (its number from 1) and key."""
    if not isinstance(items, list) or not items:
        raise ValueError("datasets: must be a non-empty list of {path: ..., weight | rows: ...} entries")
    entries = []
    for index, item in enumerate(items, start=1):
        if isinstance(item, MixtureEntry):
            entries.append(item)
            continue
        where = f"datasets entry {index}"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ValueError(f"{where}: must be a mapping with a 'path' (a file, folder or hub id), got {item!r}")
        try:
            (entry,) = build_dataclasses({ENTRY_ALIASES.get(k, k): v for k, v in item.items()}, (MixtureEntry,), where)
        except RecipeError as exc:
            raise ValueError(str(exc).replace("invalid MixtureEntry: ", "")) from None
        entries.append(entry)
    if not any(entry.split == "train" for entry in entries):
        raise ValueError("datasets: no entry feeds the train split")
    return entries


def column_map(args: DataArguments) -> dict[str, str]:
    """Normalised column name (e.g. 'text') -> the source's column name (e.g. 'sentence')."""
    return {name.removesuffix(COLUMN_SUFFIX): getattr(args, name) for name in COLUMN_FIELDS}
