"""Rows in preparation and the bookkeeping of bad rows."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from alignment.errors import DataError

SHOWN_BAD_ROWS = 5


class BadRow(Exception):
    """One source row is invalid; the message says why, without the row's location."""


@dataclass
class Row:
    """A normalised row and where it came from."""

    data: dict
    source: str  # the file, folder or hub id, as the recipe names it
    where: str  # "line 7" (1-based line) or "row 7" (0-based row index)
    group: Hashable  # rows of one group always land in the same split (pairs of one ranking, balancing copies)
    entry: int  # index of the mixture entry (0 for a single source)
    columns: dict[str, str] = field(repr=False)  # normalised column name -> source column name

    def column(self, name: str) -> str:
        """The source column name behind a normalised column, for messages."""
        return self.columns.get(name, name)


class BadRows:
    """Applies on_bad_rows: raises DataError ('error') or records the row for the report ('skip')."""

    def __init__(self, mode: str):
        self.mode = mode
        self.skipped: dict[str, list[str]] = {}

    def add(self, source: str, where: str, message: str) -> None:
        if self.mode == "error":
            raise DataError(f"{source} {where}: {message} (set on_bad_rows: skip to leave such rows out)")
        self.skipped.setdefault(source, []).append(f"{where}: {message}")

    def report(self) -> list[str]:
        """One line per source with skipped rows: the count and the first few locations and reasons."""
        lines = []
        for source, problems in self.skipped.items():
            shown = "; ".join(problems[:SHOWN_BAD_ROWS])
            more = f"; and {len(problems) - SHOWN_BAD_ROWS} more" if len(problems) > SHOWN_BAD_ROWS else ""
            lines.append(f"on_bad_rows: skipped {len(problems)} bad rows in {source}: {shown}{more}")
        return lines


def type_name(value: object) -> str:
    """JSON-style name of a value's type, for messages: null, bool, int, float, string, list, object."""
    names = {type(None): "null", bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)
