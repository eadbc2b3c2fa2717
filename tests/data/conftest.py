"""Fixtures for the data-layer tests: small data files under tmp_path, loading with recipe keys, report lines."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from alignment.config import build_dataclasses
from alignment.data import DataArguments, PreparedData, load_data


class Files:
    """Writes data files under one folder; a name ending in .gz is gzipped. Each method returns the path."""

    def __init__(self, root: Path):
        self.root = root

    def raw(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return str(path)

    def text(self, name: str, text: str) -> str:
        return self.raw(name, text.encode())

    def jsonl(self, name: str, rows: list[dict]) -> str:
        return self.text(name, "".join(json.dumps(row) + "\n" for row in rows))

    def json(self, name: str, value: object) -> str:
        return self.text(name, json.dumps(value, indent=2))

    def csv(self, name: str, rows: list[dict], delimiter: str = ",") -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return self.text(name, out.getvalue())


def _load(task: str, **keys) -> PreparedData:
    """load_data with recipe keys given as keyword arguments, read as a recipe is (bad keys: a RecipeError)."""
    (args,) = build_dataclasses(keys, (DataArguments,), "recipe.yaml")
    return load_data(args, task)


def _report_line(prepared: PreparedData, prefix: str) -> str:
    """The one report line starting with prefix."""
    lines = [line for line in prepared.report if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one report line starting with {prefix!r}, got {prepared.report}"
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def load() -> Callable[..., PreparedData]:
    """load(task, **recipe_keys) -> PreparedData."""
    return _load


@pytest.fixture
def report_line() -> Callable[[PreparedData, str], str]:
    """report_line(prepared, prefix) -> the single report line starting with prefix."""
    return _report_line
