"""Recipe keys of the data layer: where the data is, how to read its columns and how to prepare it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, get_args

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


COLUMN_SUFFIX = "_column"
COLUMN_FIELDS = tuple(f.name for f in fields(DataArguments) if f.name.endswith(COLUMN_SUFFIX))
# Keys a `datasets:` mixture entry may set for its own source.
SOURCE_FIELDS = ("data_format", "dataset_config", "csv_quoting", *COLUMN_FIELDS)


def column_map(args: DataArguments) -> dict[str, str]:
    """Normalised column name (e.g. 'text') -> the source's column name (e.g. 'sentence')."""
    return {name.removesuffix(COLUMN_SUFFIX): getattr(args, name) for name in COLUMN_FIELDS}
