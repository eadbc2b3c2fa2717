"""Row formats: detecting a source's format from its columns and normalising each row to a task's schema.

Normalised schemas (trl's dataset formats):
- classification: text (str), label (the raw name or id; load_data maps it with label_id)
- sft: text | prompt + completion | messages (a list of {"role", "content"})
- preference: prompt, chosen, rejected[, margin]; all strings, or all conversational (prompt a message list,
  chosen/rejected assistant message lists)
- feedback: prompt, completion, label (a bool: desirable or not); strings, or conversational (prompt a message list,
  completion an assistant message list)
- prompts: prompt (a string or a message list)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

from alignment.data.rows import BadRow, type_name
from alignment.errors import DataError

# Normalised columns that identify each format, in detection order.
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "ranking": ("prompt", "completions", "ranks"),
    "preference": ("prompt", "chosen", "rejected"),
    "hh": ("chosen", "rejected"),
    "alpaca": ("instruction", "output"),
    "feedback": ("prompt", "completion", "label"),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "classification": ("text", "label"),
    "text": ("text",),
    "prompt": ("prompt",),
}
TASK_FORMATS: dict[str, tuple[str, ...]] = {
    "classification": ("classification",),
    "sft": ("text", "prompt_completion", "messages", "alpaca"),
    "preference": ("preference", "hh", "ranking"),
    "feedback": ("feedback",),
    "prompts": ("prompt", "prompt_completion", "preference", "hh", "ranking", "messages", "alpaca", "text"),
}
SHAREGPT_MESSAGES_COLUMN = "conversations"
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool",
         "human": "user", "gpt": "assistant", "bot": "assistant"}  # ShareGPT 'from' values too
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
HH_ASSISTANT = "\n\nAssistant:"
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
INTEGER = re.compile(r"-?\d+")
BOOLEAN_TEXT = {"true": True, "false": False}  # how a CSV/TSV cell holds a feedback label


@dataclass
class RowSpec:
    """How to read one source's rows."""

    format: str
    task: str
    columns: dict[str, str]  # normalised column name -> source column name
    extra: tuple[str, ...] = ()  # prompt data: source columns kept as they are (extra_columns)
    counts: Counter = field(default_factory=Counter)  # notable events while normalising, for the report


def resolve_columns(columns: dict[str, str], present: set[str]) -> dict[str, str]:
    """The column map, using ShareGPT's 'conversations' column when the default 'messages' column is absent."""
    if columns["messages"] == "messages" and "messages" not in present and SHAREGPT_MESSAGES_COLUMN in present:
        return {**columns, "messages": SHAREGPT_MESSAGES_COLUMN}
    return columns


def detect_format(source: str, present: set[str], columns: dict[str, str], task: str) -> str:
    """The first format of the task whose columns the source has; DataError listing what was expected."""
    normalised = {name for name, column in columns.items() if column in present}
    for name in FORMAT_COLUMNS:
        if name in TASK_FORMATS[task] and set(FORMAT_COLUMNS[name]) <= _with_prompt_fallback(normalised):
            return name
    expected = "; ".join(f"{', '.join(FORMAT_COLUMNS[name])} ({name})" for name in TASK_FORMATS[task])
    raise DataError(
        f"{source}: cannot tell the row format for task '{task}' from its columns {', '.join(sorted(present))}. "
        f"Expected columns: {expected}. Map your columns with the *_column keys or set data_format."
    )


def _with_prompt_fallback(normalised: set[str]) -> set[str]:
    """Preference rows without a prompt column (ShareGPT) take their prompt from the conversation."""
    return normalised | {"prompt"} if "messages" in normalised and "chosen" in normalised else normalised


def normalise_row(row: dict, spec: RowSpec) -> list[dict]:
    """The task-schema rows made from one source row (a ranking gives several, a fully tied one none).

    Raises BadRow when the row is invalid.
    """
    view = RowView(row, spec.columns, FORMAT_COLUMNS[spec.format])
    if spec.task == "prompts":
        return [{"prompt": _prompt_of(view, spec), **{name: _extra(row, name) for name in spec.extra}}]
    return NORMALISERS[spec.format](view, spec)


def row_shape(data: dict) -> tuple[tuple[str, str], ...]:
    """The columns of a normalised row and their kinds, which all rows of a dataset must share.
    An optional margin is left out: load_data fills in missing margins."""
    return tuple(
        (name, "label" if name == "label" else _kind(value)) for name, value in data.items() if name != "margin"
    )


def describe_shape(shape: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in shape)


KINDS = {str: "string", list: "messages", float: "number"}


def _kind(value: object) -> str:
    return KINDS.get(type(value)) or type_name(value)


def infer_label_names(labels: list[int | str]) -> list[str]:
    """Names for labels without label_names: ids 0..max for non-negative integers, else sorted unique names."""
    ids = [_as_id(label) for label in labels]
    if ids and all(i is not None and i >= 0 for i in ids):
        return [str(i) for i in range(max(ids) + 1)]
    return sorted({str(label) for label in labels})


def label_id(label: int | str, label_ids: dict[str, int]) -> int:
    """A label that equals a name maps to that name's id; otherwise an integer label below the count is an id."""
    if str(label) in label_ids:
        return label_ids[str(label)]
    number = _as_id(label)
    if number is not None and 0 <= number < len(label_ids):
        return number
    raise BadRow(f"unknown label {label!r} (label names: {', '.join(label_ids)})")


def _as_id(label: int | str) -> int | None:
    if isinstance(label, int):
        return label
    return int(label) if INTEGER.fullmatch(label) else None


class RowView:
    """One raw row seen through the column map; its accessors raise BadRow naming the source column."""

    def __init__(self, row: dict, columns: dict[str, str], required: tuple[str, ...]):
        self.row, self.columns, self.required = row, columns, required

    def has(self, name: str) -> bool:
        return self.columns[name] in self.row

    def get(self, name: str) -> object:
        column = self.columns[name]
        if column not in self.row:
            expected = ", ".join(self.columns[required] for required in self.required)
            raise BadRow(f"column '{column}' is missing (expected: {expected})")
        return self.row[column]

    def string(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise BadRow(f"column '{self.columns[name]}' must be a string, got {type_name(value)}")
        return value

    def text_or_messages(self, name: str) -> str | list[dict]:
        return text_or_messages(self.get(name), self.columns[name])

    def sequence(self, name: str) -> list:
        value = _decoded(self.get(name))
        if not isinstance(value, list):
            raise BadRow(f"column '{self.columns[name]}' must be a list, got {type_name(value)}")
        return value

    def number(self, name: str) -> float:
        return to_number(self.get(name), self.columns[name])

    def boolean(self, name: str) -> bool:
        return to_bool(self.get(name), self.columns[name])

    def prompt(self) -> str | list[dict]:
        """The prompt column, or the conversation when there is no prompt column (ShareGPT preference rows)."""
        if not self.has("prompt") and self.has("messages"):
            return self.text_or_messages("messages")
        return self.text_or_messages("prompt")


def _decoded(value: object) -> object:
    """Lists and objects stored as JSON text (e.g. in a CSV cell) are decoded; anything else is returned as is."""
    if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def text_or_messages(value: object, column: str) -> str | list[dict]:
    """A string, or messages from a message list, one message, or either stored as JSON text."""
    if isinstance(value, str):
        decoded = _decoded(value)
        is_messages = isinstance(decoded, dict) or (
            isinstance(decoded, list) and decoded and all(isinstance(item, dict) for item in decoded)
        )
        return to_messages(decoded, column) if is_messages else value
    if isinstance(value, (list, dict)):
        return to_messages(value, column)
    raise BadRow(f"column '{column}' must be a string or a list of messages, got {type_name(value)}")


def to_messages(value: object, column: str) -> list[dict]:
    """A list of {"role", "content"} from messages or ShareGPT {"from", "value"} items (one dict = one message)."""
    value = _decoded(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise BadRow(f"column '{column}' must be a list of messages, got {type_name(value)}")
    return [_message(item, f"column '{column}' message {index}") for index, item in enumerate(value)]


def _message(item: object, where: str) -> dict:
    if not isinstance(item, dict):
        raise BadRow(f"{where}: expected an object with role and content, got {type_name(item)}")
    role, content = item.get("role", item.get("from")), item.get("content", item.get("value"))
    if not isinstance(role, str) or not isinstance(content, str):
        raise BadRow(f"{where}: needs string 'role' and 'content' (or ShareGPT 'from' and 'value')")
    if role.lower() not in ROLES:
        raise BadRow(f"{where}: unknown role '{role}' (expected one of: {', '.join(ROLES)})")
    return {"role": ROLES[role.lower()], "content": content}


def to_number(value: object, column: str) -> float:
    """A finite float from a number or numeric text."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number):
        raise BadRow(f"column '{column}' must be a number, got {value!r}")
    return number


def to_bool(value: object, column: str) -> bool:
    """A bool from a JSON boolean or the text true/false (any case). Numbers are refused: a rating is not a label."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOLEAN_TEXT:
        return BOOLEAN_TEXT[value.strip().lower()]
    raise BadRow(
        f"column '{column}' must be true (desirable) or false (undesirable), got {type_name(value)} {value!r}"
    )


def _classification(view: RowView, spec: RowSpec) -> list[dict]:
    text, label = view.string("text"), view.get("label")
    column = view.columns["label"]
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise BadRow(f"column '{column}' must be a class name or an integer id, got {type_name(label)} {label!r}")
    if isinstance(label, str):
        label = label.strip()
        if not label:
            raise BadRow(f"column '{column}' is empty")
    return [{"text": text, "label": label}]


def _text(view: RowView, spec: RowSpec) -> list[dict]:
    return [{"text": view.string("text")}]


def _prompt_completion(view: RowView, spec: RowSpec) -> list[dict]:
    prompt, completion = view.text_or_messages("prompt"), view.text_or_messages("completion")
    if isinstance(prompt, list) or isinstance(completion, list):
        prompt, completion = _as_turns(prompt, "user"), _as_turns(completion, "assistant")
    return [{"prompt": prompt, "completion": completion}]


def _feedback(view: RowView, spec: RowSpec) -> list[dict]:
    (row,) = _prompt_completion(view, spec)
    return [{**row, "label": view.boolean("label")}]


def _messages(view: RowView, spec: RowSpec) -> list[dict]:
    return [{"messages": to_messages(view.get("messages"), view.columns["messages"])}]


def _alpaca(view: RowView, spec: RowSpec) -> list[dict]:
    instruction, output = view.string("instruction"), view.string("output")
    extra = view.string("input") if view.has("input") and view.get("input") is not None else ""
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}]


def _preference(view: RowView, spec: RowSpec) -> list[dict]:
    chosen, rejected = view.text_or_messages("chosen"), view.text_or_messages("rejected")
    return [_pair(view.prompt(), chosen, rejected, _margin(view))]


def _hh(view: RowView, spec: RowSpec) -> list[dict]:
    chosen, rejected = view.get("chosen"), view.get("rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if chosen == rejected:
            raise BadRow("chosen and rejected are identical")
        prompt, chosen, rejected = split_transcripts(chosen, rejected)
    else:
        chosen, rejected = view.text_or_messages("chosen"), view.text_or_messages("rejected")
        if not isinstance(chosen, list) or not isinstance(rejected, list):
            raise BadRow("chosen and rejected must both be HH-RLHF transcripts (strings) or both message lists")
        prompt, chosen, rejected = _split_conversations(chosen, rejected)
    return [_pair(prompt, chosen, rejected, _margin(view))]


def _ranking(view: RowView, spec: RowSpec) -> list[dict]:
    prompt = view.prompt()
    completions, ranks = view.sequence("completions"), view.sequence("ranks")
    completions_column, ranks_column = view.columns["completions"], view.columns["ranks"]
    if len(ranks) != len(completions):
        raise BadRow(
            f"column '{ranks_column}' has {len(ranks)} entries but column '{completions_column}' has {len(completions)}"
        )
    if len(completions) < 2:
        raise BadRow(f"column '{completions_column}' needs at least 2 completions to rank, got {len(completions)}")
    replies = [text_or_messages(item, f"{completions_column}[{index}]") for index, item in enumerate(completions)]
    numbers = [to_number(rank, f"{ranks_column}[{index}]") for index, rank in enumerate(ranks)]
    pairs = []
    for i, j in combinations(range(len(replies)), 2):
        if numbers[i] == numbers[j]:
            spec.counts["tied pairs dropped"] += 1
            continue
        better, worse = (i, j) if numbers[i] < numbers[j] else (j, i)
        what = f"completions {better} and {worse} are identical but ranked differently"
        pairs.append(_pair(prompt, replies[better], replies[worse], abs(numbers[i] - numbers[j]), what))
    return pairs


def _margin(view: RowView) -> float | None:
    """The row's margin; None when the column is absent, null or an empty CSV cell (load_data then fills in 0.0,
    i.e. no margin)."""
    return None if view.row.get(view.columns["margin"]) in (None, "") else view.number("margin")


def _pair(prompt, chosen, rejected, margin: float | None = None, identical: str = "chosen and rejected are identical"):
    """A preference row; when any part is conversational, all parts are (strings become single turns)."""
    if any(isinstance(part, list) for part in (prompt, chosen, rejected)):
        prompt = _as_turns(prompt, "user")
        chosen, rejected = _as_turns(chosen, "assistant"), _as_turns(rejected, "assistant")
    if chosen == rejected:
        raise BadRow(identical)
    pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return pair if margin is None else {**pair, "margin": margin}


def _as_turns(value: str | list[dict], role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def split_transcripts(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """HH-RLHF: the shared prompt (up to the last '\\n\\nAssistant:' both share) as messages, and the two replies."""
    cut = os.path.commonprefix([chosen, rejected]).rfind(HH_ASSISTANT)
    if cut < 0:
        raise BadRow(
            "chosen and rejected share no '\\n\\nAssistant:' turn "
            "(expected HH-RLHF transcripts '\\n\\nHuman: ...\\n\\nAssistant: ...')"
        )
    start = cut + len(HH_ASSISTANT)
    return transcript_messages(chosen[:cut]), chosen[start:].strip(), rejected[start:].strip()


def transcript_messages(text: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' as user/assistant messages; it must start and end with a Human turn."""
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise BadRow("the transcript does not start with a 'Human:' turn")
    messages = [{"role": HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]
    if not messages or messages[-1]["role"] != "user":
        raise BadRow("the shared prompt does not end with a 'Human:' turn")
    return messages


def _split_conversations(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Full conversations (trl's implicit prompt): the shared leading messages, and what follows in each."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if chosen == rejected:
        raise BadRow("chosen and rejected are identical")
    if shared == 0 or shared in (len(chosen), len(rejected)):
        raise BadRow("chosen and rejected must share leading prompt messages and each continue after them")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _extra(row: dict, name: str) -> str | float:
    """An ``extra_columns`` value: a string or a number (a bool is neither)."""
    if name not in row:
        raise BadRow(f"column '{name}' (extra_columns) is missing")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRow(f"column '{name}' (extra_columns) must be a string or a number, got {type_name(value)}")
    return value if isinstance(value, str) else float(value)


def _prompt_of(view: RowView, spec: RowSpec) -> str | list[dict]:
    """The prompt a row offers: its prompt column, an HH transcript's prompt, a text, or a conversation's
    first user turn."""
    if spec.format == "text":
        return view.string("text")
    if spec.format in ("messages", "alpaca"):
        return _first_user_turn(NORMALISERS[spec.format](view, spec)[0]["messages"])
    if spec.format == "hh":
        return _hh(view, spec)[0]["prompt"]
    return view.prompt()


def _first_user_turn(messages: list[dict]) -> list[dict]:
    for index, message in enumerate(messages):
        if message["role"] == "user":
            return messages[: index + 1]
    raise BadRow("the conversation has no user message to use as the prompt")


NORMALISERS: dict[str, Callable[[RowView, RowSpec], list[dict]]] = {
    "classification": _classification,
    "text": _text,
    "prompt_completion": _prompt_completion,
    "feedback": _feedback,
    "messages": _messages,
    "alpaca": _alpaca,
    "preference": _preference,
    "hh": _hh,
    "ranking": _ranking,
}
