"""Every source type: JSONL, JSON, CSV, TSV, Parquet (each also gzipped), save_to_disk folders and hub ids."""

from __future__ import annotations

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignment.data import read_rows
from alignment.errors import DataError

ROWS = [{"text": "good film", "label": "pos"}, {"text": "dull, slow film", "label": "neg"}]


def _write(files, kind: str, name: str) -> str:
    if kind == "jsonl":
        return files.jsonl(name, ROWS)
    if kind == "json":
        return files.json(name, ROWS)
    if kind == "json-data":
        return files.json(name, {"data": ROWS})
    if kind == "csv":
        return files.csv(name, ROWS)
    if kind == "tsv":
        return files.csv(name, ROWS, delimiter="\t")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(ROWS), sink)
    return files.raw(name, sink.getvalue().to_pybytes())


# (writer, file name, first row number): lines are 1-based (CSV line 1 is the header), rows 0-based indices.
FILE_KINDS = [
    ("jsonl", "d.jsonl", 1),
    ("json", "d.json", 0),
    ("json-data", "d.json", 0),
    ("csv", "d.csv", 2),
    ("tsv", "d.tsv", 2),
    ("parquet", "d.parquet", 0),
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("kind, name, first", FILE_KINDS, ids=[f"{kind}" for kind, _, _ in FILE_KINDS])
def test_every_file_type_reads_the_same_rows_with_their_numbers(files, kind, name, first, gz, load):
    path = _write(files, kind, name + (".gz" if gz else ""))
    assert read_rows(path) == [(first, ROWS[0]), (first + 1, ROWS[1])]
    prepared = load("classification", dataset_path=path)
    assert prepared.splits["train"]["text"] == ["good film", "dull, slow film"]
    assert prepared.label_names == ["neg", "pos"]


def test_jsonl_skips_blank_lines_but_keeps_line_numbers(files):
    path = files.text("d.jsonl", '{"text": "a", "label": 1}\n\n   \n{"text": "b", "label": 0}\n')
    assert read_rows(path) == [(1, {"text": "a", "label": 1}), (4, {"text": "b", "label": 0})]


def test_csv_line_numbers_count_lines_inside_quoted_fields(files):
    path = files.text("d.csv", 'text,label\n"two\nlines",1\nthird,0\n')
    assert read_rows(path) == [(2, {"text": "two\nlines", "label": "1"}), (4, {"text": "third", "label": "0"})]


def test_utf8_byte_order_mark_is_ignored(files):
    path = files.raw("d.csv", "\ufefftext,label\nok,1\n".encode())
    assert read_rows(path) == [(2, {"text": "ok", "label": "1"})]


def test_tsv_with_quoting_off_reads_quotes_literally(files, load):
    text = 'label\tsentence\n0\t" the film \'s opening\n1\tfine\n'
    path = files.text("sst.tsv", text)
    assert read_rows(path, csv_quoting=False) == [
        (2, {"label": "0", "sentence": "\" the film 's opening"}),
        (3, {"label": "1", "sentence": "fine"}),
    ]
    quoted = read_rows(path, csv_quoting=True)
    assert len(quoted) == 1  # the opening quote swallows the rest of the file: why SST-2 needs quoting off
    prepared = load("classification", dataset_path=path, csv_quoting=False, text_column="sentence",
                    label_names=["negative", "positive"])
    assert prepared.splits["train"]["label"] == [0, 1]


def test_save_to_disk_dataset_dict_gives_its_splits(files, tmp_path, load, report_line):
    folder = str(tmp_path / "saved")
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(ROWS * 3),
        "valid": datasets.Dataset.from_list(ROWS[:1]),
        "test": datasets.Dataset.from_list(ROWS[1:]),
        "unsupervised": datasets.Dataset.from_list(ROWS),
    }).save_to_disk(folder)
    prepared = load("classification", dataset_path=folder)
    assert {name: len(split) for name, split in prepared.splits.items()} == {"train": 6, "validation": 1, "test": 1}
    assert "unsupervised" in report_line(prepared, f"{folder}: ignored split")


def test_save_to_disk_dataset_and_its_class_label_names(tmp_path, load):
    folder = str(tmp_path / "saved")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["bad", "good"])})
    datasets.Dataset.from_list([{"text": "x", "label": 1}, {"text": "y", "label": 0}], features=features).save_to_disk(folder)
    assert read_rows(folder) == [(0, {"text": "x", "label": 1}), (1, {"text": "y", "label": 0})]
    prepared = load("classification", dataset_path=folder)
    assert prepared.label_names == ["bad", "good"]
    assert prepared.splits["train"]["label"] == [1, 0]


def test_unreachable_hub_id_is_a_clear_data_error(monkeypatch, load):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"^nobody/no-such-dataset is not a local file or folder, and loading it "
                                        r"from the Hugging Face Hub failed: "):
        load("sft", dataset_path="nobody/no-such-dataset")


def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "data" / "train.jsonl")
    with pytest.raises(DataError, match=f"^{path}: no such file or folder$"):
        read_rows(path)


def test_unsupported_file_type(files):
    path = files.text("notes.txt", "hello\n")
    with pytest.raises(DataError, match=r"notes\.txt: unsupported file type '\.txt' \(expected \.jsonl, \.json"):
        read_rows(path)


def test_folder_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(DataError, match="a folder, but not one written by datasets' save_to_disk"):
        read_rows(str(tmp_path))


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match=r"d\.jsonl\.gz: cannot be read: "):
        read_rows(str(path))


def test_json_syntax_error_names_the_line(files):
    path = files.text("d.json", '[\n {"text": "a"},\n {"text": }\n]')
    with pytest.raises(DataError, match=r"d\.json line 3: invalid JSON"):
        read_rows(path)


def test_json_must_be_a_list_or_data_object(files):
    path = files.json("d.json", {"rows": ROWS})
    with pytest.raises(DataError, match=r'd\.json: expected a JSON list of objects or \{"data": \[\.\.\.\]\}, got object'):
        read_rows(path)
