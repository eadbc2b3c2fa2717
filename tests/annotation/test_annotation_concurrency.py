"""20 concurrent writers (threads, then processes) x 50 judgements on one real SQLite file.

Each writer runs the rater loop (next_task, submit) and retries every tenth submission with the same
submission id. Expected: exactly 1000 judgements, one per (task, rater), no duplicate submission ids,
nothing lost, and no "database is locked" (any exception in a writer fails the test).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from alignment.annotations import AnnotationStore, QueueSettings
from alignment.annotations.schema import users as store_users

WRITERS, PER_WRITER = 20, 50
pytestmark = pytest.mark.timeout(300)  # a stuck writer fails the test instead of hanging CI


def rater_loop(db_path: str, rater: str) -> list[str]:
    """Judge PER_WRITER tasks as ``rater``; return the submission ids sent."""
    store = AnnotationStore(db_path, QueueSettings(gold_rate=0.0))
    sent = []
    for i in range(PER_WRITER):
        view = store.next_task(rater)
        assert view is not None, f"{rater} found no task after {i} judgements"
        submission = f"{rater}-{view.task_id}"
        ranks = list(range(1, len(view.candidates) + 1))
        first = store.submit(rater, view.task_id, submission, ranks=ranks)
        if i % 10 == 0:
            assert store.submit(rater, view.task_id, submission, ranks=ranks) == first
        sent.append(submission)
    store.close()
    return sent


@pytest.fixture
def shared_db(tmp_path) -> Path:
    """PER_WRITER ranking tasks that each want a judgement from every one of the WRITERS raters."""
    path = tmp_path / "shared.db"
    store = AnnotationStore(path)
    for p in range(PER_WRITER):
        pid = store.add_prompt(f"prompt {p}")
        store.add_candidates(pid, [{"text": f"p{p} c{c}", "policy": "x"} for c in range(3)])
    store.create_tasks("ranking", k=3, judgements_per_task=WRITERS)
    with store._tx() as conn:  # users straight into the table: 20 scrypt hashes would only cost time here
        conn.execute(
            store_users.insert(),
            [
                {"name": f"w{i}", "role": "rater", "password_hash": "-", "created_at": store._now()}
                for i in range(WRITERS)
            ],
        )
    store.close()
    return path


def check(path: Path, sent: list[list[str]]) -> None:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "select count(*), count(distinct submission_id), count(distinct task_id || '/' || user_id) from judgements"
        ).fetchone()
        stored = {s for (s,) in conn.execute("select submission_id from judgements")}
    assert rows == (WRITERS * PER_WRITER,) * 3
    assert stored == {s for batch in sent for s in batch}


def test_threads(shared_db):
    with ThreadPoolExecutor(WRITERS) as pool:
        sent = list(pool.map(rater_loop, [str(shared_db)] * WRITERS, [f"w{i}" for i in range(WRITERS)]))
    check(shared_db, sent)


def test_processes(shared_db):
    # fork: the test module is not importable by name in a fresh interpreter (pytest's importlib mode)
    with multiprocessing.get_context("fork").Pool(WRITERS) as pool:
        sent = pool.starmap(rater_loop, [(str(shared_db), f"w{i}") for i in range(WRITERS)])
    check(shared_db, sent)
