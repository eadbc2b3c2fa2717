"""Reading data sources (files, save_to_disk folders, hub ids) into numbered raw rows.

JSONL and CSV/TSV rows are numbered by their 1-based line in the file; JSON, Parquet, folder and hub rows by
their 0-based row index. A problem with one row is yielded as a BadRow in its place, so the caller decides
whether to stop or skip; a problem with the whole source raises DataError at once.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from alignment.data.rows import BadRow, type_name
from alignment.errors import DataError

FILE_TYPES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
GZIP_SUFFIX = ".gz"
# Split names of folders and hub datasets -> the names load_data uses.
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
               "dev": "validation", "test": "test"}

Records = Iterable[tuple[int, dict | BadRow]]


@dataclass
class Source:
    """One split of a data source: its rows, numbered, each a dict or a BadRow (iterate once)."""

    name: str  # how messages name it: the path or hub id, plus the split for multi-split sources
    unit: str  # "line" (1-based) or "row" (0-based index)
    records: Records
    class_names: dict[str, list[str]] = field(default_factory=dict)  # ClassLabel columns -> their names


def open_source(path: str, csv_quoting: bool = True, config: str | None = None) -> dict[str, Source]:
    """The splits of a source, keyed by the source's own split names; a file has the single split 'train'.

    Raises DataError for a missing file, an unsupported file type, a folder that datasets cannot load,
    or a hub id that cannot be loaded.
    """
    if os.path.isdir(path):
        return _dataset_splits(path, _load_from_disk(path))
    if os.path.isfile(path):
        return {"train": Source(path, *_file_records(path, csv_quoting))}
    if _looks_like_local_path(path):
        raise DataError(f"{path}: no such file or folder")
    return _dataset_splits(path, _load_from_hub(path, config))


def read_rows(path: str, csv_quoting: bool = True) -> list[tuple[int, dict]]:
    """All rows of a file (or of the 'train' or only split of a folder/hub dataset) as (line or row number, row).

    Raises DataError naming the path and line/row of the first bad row.
    """
    splits = open_source(path, csv_quoting)
    if "train" not in splits and len(splits) != 1:
        raise DataError(f"{path}: has splits {', '.join(splits)} but no 'train' split to read")
    source = splits.get("train") or next(iter(splits.values()))
    rows = []
    for number, row in source.records:
        if isinstance(row, BadRow):
            raise DataError(f"{source.name} {source.unit} {number}: {row}")
        rows.append((number, row))
    return rows


def file_type(path: str) -> str:
    """'jsonl', 'json', 'csv', 'tsv' or 'parquet' from the file name (a trailing .gz is ignored)."""
    name = path.lower().removesuffix(GZIP_SUFFIX)
    extension = os.path.splitext(name)[1]
    if extension not in FILE_TYPES:
        raise DataError(
            f"{path}: unsupported file type '{extension or os.path.basename(path)}' "
            f"(expected {', '.join(FILE_TYPES)}, each optionally gzipped as {GZIP_SUFFIX})"
        )
    return FILE_TYPES[extension]


def _looks_like_local_path(path: str) -> bool:
    has_data_suffix = path.lower().removesuffix(GZIP_SUFFIX).endswith(tuple(FILE_TYPES))
    parent = os.path.dirname(path)
    return has_data_suffix or path.startswith(("/", ".", "~")) or (bool(parent) and os.path.isdir(parent))


def _file_records(path: str, csv_quoting: bool) -> tuple[str, Records]:
    kind = file_type(path)
    if kind == "jsonl":
        return "line", _guarded(path, _jsonl_records(path))
    if kind in ("csv", "tsv"):
        delimiter = "\t" if kind == "tsv" else ","
        return "line", _guarded(path, _csv_records(path, delimiter, csv_quoting))
    if kind == "json":
        return "row", _guarded(path, _json_records(path))
    return "row", _guarded(path, _parquet_records(path))


def _open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.lower().endswith(GZIP_SUFFIX) else open(path, "rb")


def _guarded(path: str, records: Iterator) -> Iterator:
    """Turns I/O failures while reading (unreadable or corrupt gzip, truncated file) into DataError."""
    try:
        yield from records
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot be read: {error}") from error


def _decode(raw: bytes, first: bool) -> str:
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as error:
        raise BadRow(_utf8_message(raw, error)) from None


def _utf8_message(raw: bytes, error: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start}); save the file as UTF-8"


def _jsonl_records(path: str) -> Iterator[tuple[int, dict | BadRow]]:
    with _open_binary(path) as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                text = _decode(raw, first=number == 1)
                if text.strip():
                    yield number, _json_object(json.loads(text.rstrip("\r\n")))
            except json.JSONDecodeError as error:
                yield number, BadRow(f"invalid JSON: {error.msg} (column {error.colno})")
            except BadRow as bad:
                yield number, bad


def _json_object(value: object) -> dict:
    if not isinstance(value, dict):
        raise BadRow(f"expected a JSON object, got {type_name(value)}")
    return value


def _csv_records(path: str, delimiter: str, quoting: bool) -> Iterator[tuple[int, dict | BadRow]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents exceed the default 128 KiB per field
    bad_lines: dict[int, str] = {}

    def lines() -> Iterator[str]:
        with _open_binary(path) as raw_lines:
            for number, raw in enumerate(raw_lines, start=1):
                try:
                    yield _decode(raw, first=number == 1)
                except BadRow as bad:
                    bad_lines[number] = str(bad)
                    yield raw.decode("utf-8", errors="replace")

    reader = csv.reader(lines(), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        header = next(reader, None)
        if header is None:
            return
        if 1 in bad_lines:
            raise DataError(f"{path} line 1 (the header): {bad_lines[1]}")
        next_line = reader.line_num + 1
        for fields in reader:
            number, next_line = next_line, reader.line_num + 1
            if fields:
                problems = [bad_lines[line] for line in range(number, next_line) if line in bad_lines]
                yield number, _csv_row(header, fields, problems)
    except csv.Error as error:
        raise DataError(f"{path} line {reader.line_num}: not valid CSV: {error}") from error


def _csv_row(header: list[str], fields: list[str], encoding_problems: list[str]) -> dict | BadRow:
    if encoding_problems:
        return BadRow(encoding_problems[0])
    if len(fields) != len(header):
        return BadRow(f"expected {len(header)} fields ({', '.join(header)}), got {len(fields)}")
    return dict(zip(header, fields))


def _json_records(path: str) -> Iterator[tuple[int, dict | BadRow]]:
    with _open_binary(path) as file:
        data = file.read()
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: {_utf8_message(data, error)}") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path} line {error.lineno}: invalid JSON: {error.msg} (column {error.colno})") from None
    items = value.get("data") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise DataError(f'{path}: expected a JSON list of objects or {{"data": [...]}}, got {type_name(value)}')
    for index, item in enumerate(items):
        yield index, item if isinstance(item, dict) else BadRow(f"expected a JSON object, got {type_name(item)}")


def _parquet_records(path: str) -> Iterator[tuple[int, dict]]:
    with _open_binary(path) as file:
        data = file.read()
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as error:
        raise DataError(f"{path}: not a readable Parquet file: {error}") from error
    yield from enumerate(table.to_pylist())


def _load_from_disk(path: str) -> datasets.Dataset | datasets.DatasetDict:
    try:
        return datasets.load_from_disk(path)
    except FileNotFoundError as error:
        raise DataError(f"{path}: a folder, but not one written by datasets' save_to_disk ({error})") from error


def _load_from_hub(path: str, config: str | None) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(path, config)
    except Exception as error:  # the hub client raises many types (connection, auth, missing repo, bad config)
        raise DataError(
            f"{path} is not a local file or folder, and loading it from the Hugging Face Hub failed: {error}"
        ) from error


def _dataset_splits(path: str, data: datasets.Dataset | datasets.DatasetDict) -> dict[str, Source]:
    if isinstance(data, datasets.Dataset):
        return {"train": Source(path, "row", enumerate(data), _class_names(data))}
    return {
        split: Source(f"{path} (split {split})", "row", enumerate(dataset), _class_names(dataset))
        for split, dataset in data.items()
    }


def _class_names(dataset: datasets.Dataset) -> dict[str, list[str]]:
    return {
        column: feature.names
        for column, feature in dataset.features.items()
        if isinstance(feature, datasets.ClassLabel)
    }
