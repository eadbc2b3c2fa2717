"""Shared by the annotation reliability tests and bench/annotation_load.py (imported as reliability.annotation_support):
the app launched as its own process the way an admin runs it, simulated raters that drive it over HTTP with
gradio_client (one client and one login per rater), and checks of what the database really holds. A store is a
SQLite file or a PostgreSQL URL (the ``store_url`` fixture gives each test both)."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from alignment.annotations import AnnotationStore, QueueSettings
from alignment.annotations.records import STRENGTH_MARGIN
from alignment.annotations.schema import judgements, tasks, users
from alignment.annotations.store import CHOICES
from annotation.conftest import Database, backend_of, free_port, postgres_server, store_url  # noqa: F401 - fixtures

from helpers import ROOT

CALL_TIMEOUT_S = 120  # one API call; a stuck call fails the rater instead of hanging the test
RATIONALE_BYTES = 4900  # longer than an SQLite page (4096), within the store's 5,000-character cap: a torn row shows


def password(name: str) -> str:
    return f"{name}-pw"


def build_store(db: str | Path, raters: list[str], prompts: int, needed: int | None = None) -> None:
    """``prompts`` prompts of 3 candidates, each with a ranking (k=3) and a pairwise task that want ``needed``
    judgements (default: one from every rater); the raters log in with ``password(name)``."""
    store = AnnotationStore(db, QueueSettings(gold_rate=0.0))
    for p in range(prompts):
        pid = store.add_prompt(f"Prompt {p}: which answer is best?")
        store.add_candidates(pid, [{"text": f"answer {c} to prompt {p}", "policy": f"policy-{c}"} for c in range(3)])
    store.create_tasks("ranking", k=3, judgements_per_task=needed or len(raters))
    store.create_tasks("pairwise", judgements_per_task=needed or len(raters))
    for name in raters:
        store.add_user(name, "rater", password(name))
    store.close()


class AppProcess:
    """``python -m annotation_ui --db DB --port PORT`` as a process of its own, killable with SIGKILL."""

    def __init__(self, db: str | Path, log: Path, port: int | None = None) -> None:
        self.db, self.log = db, log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> AppProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        cmd = [sys.executable, "-m", "annotation_ui", "--db", str(self.db), "--port", str(self.port)]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"the app exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the app did not answer within {timeout_s} s: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(self.url, timeout=2).status_code < 500:  # any page (the login page, a redirect)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def annotation_app(tmp_path):
    """annotation_app(db, port=None) -> a started AppProcess (stopped at teardown, whatever the test did to it)."""
    started: list[AppProcess] = []

    def start(db: str | Path, port: int | None = None) -> AppProcess:
        app = AppProcess(db, tmp_path / f"app-{len(started)}.log", port)
        started.append(app)
        return app.start()

    yield start
    for app in started:
        app.stop()


@dataclass
class Sent:
    """One submission as the rater sent it, and what the server answered (judgement_id None: no answer came)."""

    rater: str
    task_id: int
    kind: str
    submission_id: str
    choice: str | None
    strength: str | None
    ranks: list[int] | None  # in the rater's shown order
    rank_of: dict[int, int]  # candidate id -> rank, what the row must say
    rationale: str
    seconds: float
    judgement_id: int | None = None
    latency_s: float | None = None
    progress: dict | None = None

    def args(self) -> tuple:
        return (self.task_id, self.submission_id, self.choice, self.strength, self.ranks, self.rationale, [],
                False, self.seconds)  # fmt: skip


@dataclass
class Rater:
    """One simulated rater: its own gradio_client.Client, logged in as ``name`` over HTTP."""

    url: str
    name: str
    seed: int | str = 0
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import gradio_client

        self.rng = random.Random(f"{self.seed}-{self.name}")
        # ssl_verify=False: plain http on 127.0.0.1, no TLS anywhere; it only spares gradio_client loading the CA
        # bundle for the httpx client it makes per request (~60 ms CPU each), which on a small machine would make
        # the clients, not the app, what the load test measures.
        self.client = gradio_client.Client(
            self.url, auth=(self.name, password(self.name)), verbose=False, analytics_enabled=False, ssl_verify=False
        )

    def call(self, *args: Any, api_name: str) -> Any:
        return self.client.submit(*args, api_name=api_name).result(timeout=CALL_TIMEOUT_S)

    def answer(self, view: dict) -> Sent:
        """A random but complete answer to the task on screen."""
        shown = [c["id"] for c in view["candidates"]]
        choice = strength = ranks = None
        if view["kind"] == "pairwise":
            choice = self.rng.choice(CHOICES)
            strength = self.rng.choice(list(STRENGTH_MARGIN)) if choice in ("A", "B") else None
            rank_of = dict(zip(shown, {"A": (1, 2), "B": (2, 1)}.get(choice, (1, 1))))
        else:
            ranks = [self.rng.randint(1, len(shown)) for _ in shown]
            rank_of = dict(zip(shown, ranks))
        submission_id = str(uuid.uuid4())
        head = f"{self.name} {submission_id} "
        rationale = head + self.rng.randbytes(RATIONALE_BYTES).hex()[: RATIONALE_BYTES - len(head)]
        return Sent(self.name, view["task_id"], view["kind"], submission_id, choice, strength, ranks, rank_of,
                    rationale, round(self.rng.uniform(1, 60), 3))  # fmt: skip

    def submit(self, sent: Sent) -> Sent:
        """Send ``sent`` (again, when it is already in ``self.sent``) and keep the server's answer in it."""
        if sent not in self.sent:
            self.sent.append(sent)  # before the call: the server may die while it is in flight
        start = time.perf_counter()
        result = self.call(*sent.args(), api_name="/submit")
        sent.latency_s = time.perf_counter() - start
        sent.judgement_id, sent.progress = result["judgement_id"], result["progress"]
        return sent

    def work(self, stop: threading.Event, deadline: float = float("inf"), think_s: tuple[float, float] = (0, 0)) -> None:
        """Judge task after task until ``stop`` is set, ``deadline`` (time.monotonic) passes or no task is left,
        reading each task for uniform(*think_s) seconds first. The first error ends the loop and is kept in ``errors``."""
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                view = self.call(api_name="/next_task")
                if view is None:
                    return
                if stop.wait(self.rng.uniform(*think_s)):
                    return
                self.submit(self.answer(view))
        except Exception as err:  # noqa: BLE001 - every error a rater sees is a finding; the test decides
            self.errors.append(f"{type(err).__name__}: {err}")

    def acknowledged(self) -> list[Sent]:
        return [s for s in self.sent if s.judgement_id is not None]

    def unacknowledged(self) -> list[Sent]:
        return [s for s in self.sent if s.judgement_id is None]

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def rater_login():
    """rater_login(url, name, seed=0) -> a Rater logged in over HTTP (its client closed at teardown)."""
    raters: list[Rater] = []

    def login(url: str, name: str, seed: int | str = 0) -> Rater:
        raters.append(Rater(url, name, seed))
        return raters[-1]

    yield login
    with ThreadPoolExecutor(max(1, len(raters))) as pool:  # each close waits up to 1 s for its heartbeat thread
        list(pool.map(Rater.close, raters))


def judgement_rows(db: str | Path) -> dict[str, dict]:
    """Check the database (SQLite: integrity and foreign keys; PostgreSQL enforces both itself) and every judgement
    row on its own (a complete, valid answer to its task); return the rows by submission id. Duplicates fail."""
    database = Database(str(db))
    try:
        if database.dialect == "sqlite":
            assert [tuple(r) for r in database.rows("PRAGMA integrity_check")] == [("ok",)]
            assert database.rows("PRAGMA foreign_key_check") == []
        members: dict[int, set[int]] = {}
        for task_id, candidate_id in database.rows("select task_id, candidate_id from task_candidates"):
            members.setdefault(task_id, set()).add(candidate_id)
        query = (
            select(judgements, users.c.name.label("rater"), tasks.c.kind)
            .join(users, users.c.id == judgements.c.user_id)
            .join(tasks, tasks.c.id == judgements.c.task_id)
            .where(judgements.c.withdrawn_at.is_(None))  # an undo keeps the withdrawn row
            .order_by(judgements.c.id)
        )
        rows = [row._asdict() for row in database.rows(query)]  # Core: JSON columns decoded on both backends
    finally:
        database.close()
    by_submission = Counter(r["submission_id"] for r in rows)
    assert [s for s, n in by_submission.items() if n > 1] == [], "a submission is stored twice"
    pairs = Counter((r["task_id"], r["rater"]) for r in rows)
    assert [p for p, n in pairs.items() if n > 1] == [], "a rater has two judgements of one task"
    out = {}
    for row in rows:
        shown, ranks = row["shown_order"], {int(k): v for k, v in row["ranks"].items()}
        task = members[row["task_id"]]
        where = f"judgement {row['id']} ({row['rater']}, task {row['task_id']})"
        assert sorted(shown) == sorted(task) and set(ranks) == task, f"{where}: candidates {shown} {ranks} != {task}"
        assert all(isinstance(v, int) and 1 <= v <= len(task) for v in ranks.values()), f"{where}: ranks {ranks}"
        assert not row["skipped"] and row["created_at"] and row["updated_at"], where
        if row["kind"] == "pairwise":
            assert row["choice"] in CHOICES, f"{where}: choice {row['choice']!r}"
            wanted = {"A": (1, 2), "B": (2, 1)}.get(row["choice"], (1, 1))
            assert [ranks[c] for c in shown] == list(wanted), f"{where}: ranks {ranks} do not match {row['choice']}"
            assert (row["strength"] in STRENGTH_MARGIN) == (row["choice"] in ("A", "B")), where
        else:
            assert row["choice"] is None and row["strength"] is None, where
        row["rank_of"] = ranks
        out[row["submission_id"]] = row
    return out


def assert_stored_as_sent(rows: dict[str, dict], sent: Sent) -> None:
    """The row of ``sent`` says exactly what the rater sent (and has the id the server acknowledged, if any)."""
    row = rows.get(sent.submission_id)
    assert row is not None, f"{sent.rater}'s judgement of task {sent.task_id} ({sent.submission_id}) is missing"
    if sent.judgement_id is not None:
        assert row["id"] == sent.judgement_id, f"{sent.submission_id}: stored as {row['id']}, acknowledged as {sent.judgement_id}"
    stored = (row["task_id"], row["rater"], row["choice"], row["strength"], row["rank_of"], row["rationale"], row["seconds"])
    assert stored == (sent.task_id, sent.rater, sent.choice, sent.strength, sent.rank_of, sent.rationale, sent.seconds)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
