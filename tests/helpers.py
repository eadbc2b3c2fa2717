"""Run a stage module as a user would (a subprocess), for end-to-end tests."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage_cmd(stage: str, recipe: str, **overrides) -> list[str]:
    cmd = [sys.executable, "-m", f"alignment.{stage}", recipe]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, bool)) else str(value)]
    return cmd


def run_stage(stage: str, recipe: str, timeout: int = 900, **overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(stage_cmd(stage, recipe, **overrides), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def read_jsonl(path: Path) -> list[dict]:
    """Strict, for assertions: a missing file raises (``alignment.run.read_jsonl`` returns [] for a run still
    being written, which would let a comparison of two missing files pass)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def fewer_the(prompts: list, responses: list[str]) -> list[float]:
    """A gold reward that disagrees with a proxy rewarding the word "the": minus its count."""
    from alignment.reward_functions import keyword

    return [-x for x in keyword(prompts, responses, ["the"])]


def says_great(prompts: list, responses: list[str]) -> list[float]:
    """A known oracle: 1.0 when the response contains "great" (any case), else 0.0."""
    return [float("great" in r.lower()) for r in responses]


# The pipeline summary's result line, as scripts read it (alignment.pipeline.result_lines).
RESULT_LINE = re.compile(
    r"^(\w+): gold win rate vs (\w+) (\d\.\d\d) \(95% CI (\d\.\d\d)–(\d\.\d\d)\), gold reward (-?[\d.]+) → (-?[\d.]+), "
    r"proxy reward (-?[\d.]+) → (-?[\d.]+), KL (-?[\d.]+)$"
)
