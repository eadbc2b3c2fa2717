"""The real HH-RLHF file in ../shared/data beside the repository (skipped when that folder is absent)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

HH_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf" / "helpful-online" / "test.jsonl.gz"


@pytest.fixture(scope="module")
def source_rows() -> list[dict]:
    if not HH_FILE.exists():
        pytest.skip(f"{HH_FILE.parent.parent} is absent")
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_real_hh_rows_split_into_prompt_and_replies(source_rows, load, report_line):
    prepared = load("preference", dataset_path=str(HH_FILE), on_bad_rows="skip")
    pairs = prepared.splits["train"].to_list()
    skipped = report_line(prepared, "on_bad_rows:")
    identical = sum(row["chosen"] == row["rejected"] for row in source_rows)
    assert skipped.startswith(f"on_bad_rows: skipped {identical} bad rows") and "chosen and rejected are identical" in skipped
    assert len(pairs) > 0.99 * len(source_rows) - identical

    first = pairs[0]
    assert first["prompt"] == [{"role": "user", "content": "If I were to give you some coordinates, could you tell me "
                                                           "where the location is?"}]
    assert first["chosen"][0]["content"].startswith("Certainly!  I can tell you if the given coordinates")
    assert first["rejected"][0]["content"].startswith("Yes, I can determine the location")
    kept_rows = [row for row in source_rows if row["chosen"] != row["rejected"]]  # no empty reply among the first 50
    for pair, row in zip(pairs[:50], kept_rows[:50]):
        roles = [message["role"] for message in pair["prompt"]]
        assert roles[0] == roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:])), "turns alternate"
        assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
        assert row["chosen"].endswith(pair["chosen"][0]["content"]) and row["rejected"].endswith(pair["rejected"][0]["content"])
        assert pair["prompt"][-1]["content"] in row["chosen"] and pair["prompt"][-1]["content"] in row["rejected"]
