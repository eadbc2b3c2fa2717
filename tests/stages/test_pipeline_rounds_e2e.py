"""Two rounds of the loop on real weights with human raters: a scripted rater works through the store API (as the web
app does), the pipeline is killed (SIGKILL) while it waits for round 2's judgements and resumes there, keeping the
rounds before and the tasks round 2 selected; round 2 samples from round 1's PPO policy and is chosen by the head
ensemble's disagreement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from alignment.annotations.store import AnnotationStore

from helpers import ROOT, read_jsonl
from stages.test_pipeline import RECIPES, TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
BUDGET = 3


def write_recipe(path: Path, out: Path) -> str:
    stages = []
    for name in ("classify", "sft", "candidates", "annotate", "rm", "ppo", "evaluate"):
        if name == "annotate":
            stages.append({"name": "annotate", "mode": "human", "port": 7999})
            continue
        overrides = {**TINY[name], **({"judgements_per_task": 1, "task_kind": "pairwise"} if name == "candidates" else {})}
        stages.append({"name": name, "overrides": overrides, **({"recipe": str(ROOT / RECIPES[name])} if name in RECIPES else {})})
    path.write_text(yaml.safe_dump({
        "output_dir": str(out), "stages": stages, "gold": f"{out / 'classify'}#positive",
        "rounds": 2, "round_prompts": 4, "round_budget": BUDGET, "selection": "disagreement", "ensemble_members": 4,
    }))
    return str(path)


class ScriptedRater(threading.Thread):
    """Judges every task it is given, preferring the longer answer, while ``allowed`` is set."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.allowed, self.stop, self.done = out, threading.Event(), threading.Event(), 0

    def run(self) -> None:
        while manifest(self.out)["stages"].get("round-1/candidates", {}).get("status") != "done":  # the store exists
            if self.stop.wait(0.5):
                return
        store = AnnotationStore(str(self.out / "annotations.db"))
        if store.role("rater-1") is None:
            store.add_user("rater-1", "rater", "pw")
        while not self.stop.is_set():
            view = store.next_task("rater-1") if self.allowed.is_set() else None
            if view is None:
                time.sleep(0.5)
                continue
            a, b = (len(c.text) for c in view.candidates)
            store.submit("rater-1", view.task_id, f"sub-{view.task_id}", choice="A" if a >= b else "B", strength="clearly")
            self.done += 1


def start(recipe: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alignment.pipeline", recipe], cwd=ROOT, stdout=log.open("a"),
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def manifest(out: Path) -> dict:
    path = out / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def wait_until(condition, proc: subprocess.Popen, timeout: float = 1200) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the pipeline exited with {proc.returncode}"
        assert time.time() < deadline, "timed out"
        time.sleep(1)


def test_two_human_rounds_survive_a_kill_while_waiting_for_judgements(tmp_path):
    out, log = tmp_path / "pipe", tmp_path / "pipeline.log"
    recipe = write_recipe(tmp_path / "pipeline.yaml", out)
    rater = ScriptedRater(out)
    rater.start()
    rater.allowed.set()
    try:
        proc = start(recipe, log)
        round_two = lambda: any(t["task_set"] == "round-2" for t in AnnotationStore(str(out / "annotations.db")).task_sets())  # noqa: E731
        wait_until(lambda: manifest(out)["stages"].get("round-1/evaluate", {}).get("status") == "done", proc)
        rater.allowed.clear()  # round 2's tasks stay unjudged: the pipeline waits for them
        wait_until(round_two, proc)
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = manifest(out)["stages"]
        assert before["round-2/annotate"]["status"] == "running"
        assert {k for k, v in before.items() if v["status"] == "done"} == {
            "classify", "sft", *(f"round-1/{n}" for n in ("candidates", "annotate", "rm", "ppo", "evaluate")), "round-2/candidates"}

        rater.allowed.set()
        proc = start(recipe, log)
        assert proc.wait(timeout=1500) == 0, log.read_text()[-3000:]
    finally:
        rater.stop.set()
    after = manifest(out)
    for key, info in before.items():  # what finished before the kill is not run again
        if info["status"] == "done":
            assert after["stages"][key]["wall_time_s"] == info["wall_time_s"], key
    assert all(info["status"] == "done" for info in after["stages"].values())
    store = AnnotationStore(str(out / "annotations.db"))
    sets = {s["task_set"]: s for s in store.task_sets()}
    assert sets["round-1"]["tasks"] == sets["round-2"]["tasks"] == BUDGET  # the resumed round kept its selection
    assert rater.done == 2 * BUDGET == store.progress()["judgements"]
    # round 2 sampled from round 1's PPO policy, on prompts of its own
    round2 = read_jsonl(out / "round-2" / "candidates.jsonl")
    assert {c["policy"] for row in round2 for c in row["candidates"]} == {str(out / "round-1" / "ppo")}
    assert not {r["prompt"] for r in round2} & {r["prompt"] for r in read_jsonl(out / "round-1" / "candidates.jsonl")}
    # the round-2 RM learnt from both rounds' judgements; the report and the summary show both rounds
    assert len(read_jsonl(out / "round-2" / "preferences.jsonl")) == 2 * len(read_jsonl(out / "round-1" / "preferences.jsonl"))
    rounds = after["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["judgements"] for r in rounds] == [BUDGET, 2 * BUDGET]
    assert all(r["ppo"]["judge"] == "gold" and 0 <= r["ppo"]["win_rate"] <= 1 for r in rounds)
    assert '<section id="rounds">' in (out / "report.html").read_text()
    assert "round 2: 6 judgements" in log.read_text()
