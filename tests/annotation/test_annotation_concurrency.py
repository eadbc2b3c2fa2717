"""Concurrent writers on one real store, on SQLite and on PostgreSQL (``store_url``).

20 writers (threads, then processes) x 50 judgements: each runs the rater loop (next_task, submit) and retries
every tenth submission with the same submission id. Expected: exactly 1000 judgements, one per (task, rater), no
duplicate submission ids, nothing lost, and no "database is locked" or serialization error (any exception in a
writer fails the test). Then many raters race for few places: no task may get more judgements than it needs.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from alignment.annotations import AnnotationStore, QueueSettings
from alignment.annotations.schema import users as store_users
from annotation.conftest import Database

WRITERS, PER_WRITER = 20, 50
pytestmark = pytest.mark.timeout(300)  # a stuck writer fails the test instead of hanging CI


def rater_loop(url: str, rater: str) -> list[str]:
    """Judge PER_WRITER tasks as ``rater``; return the submission ids sent."""
    store = AnnotationStore(url, QueueSettings(gold_rate=0.0))
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


def fill(url: str, prompts: int, raters: int, needed: int) -> None:
    """``prompts`` ranking tasks (3 candidates) that want ``needed`` judgements each, and raters w0, w1, ..."""
    store = AnnotationStore(url)
    for p in range(prompts):
        pid = store.add_prompt(f"prompt {p}")
        store.add_candidates(pid, [{"text": f"p{p} c{c}", "policy": "x"} for c in range(3)])
    store.create_tasks("ranking", k=3, judgements_per_task=needed)
    with store._tx() as conn:  # users straight into the table: scrypt hashes would only cost time here
        rows = [{"name": f"w{i}", "role": "rater", "password_hash": "-", "created_at": store._now()} for i in range(raters)]
        conn.execute(store_users.insert(), rows)
    store.close()


@pytest.fixture
def shared_db(store_url) -> str:
    """PER_WRITER ranking tasks that each want a judgement from every one of the WRITERS raters."""
    fill(store_url, PER_WRITER, WRITERS, needed=WRITERS)
    return store_url


def check(url: str, sent: list[list[str]]) -> None:
    database = Database(url)
    rows = database.rows(
        "select count(*), count(distinct submission_id), "
        "(select count(*) from (select distinct task_id, user_id from judgements) as pairs) from judgements"
    )[0]
    stored = {s for (s,) in database.rows("select submission_id from judgements")}
    database.close()
    assert tuple(rows) == (WRITERS * PER_WRITER,) * 3
    assert stored == {s for batch in sent for s in batch}


def test_threads(shared_db):
    with ThreadPoolExecutor(WRITERS) as pool:
        sent = list(pool.map(rater_loop, [shared_db] * WRITERS, [f"w{i}" for i in range(WRITERS)]))
    check(shared_db, sent)


def test_processes(shared_db):
    # fork: the test module is not importable by name in a fresh interpreter (pytest's importlib mode)
    with multiprocessing.get_context("fork").Pool(WRITERS) as pool:
        sent = pool.starmap(rater_loop, [(shared_db, f"w{i}") for i in range(WRITERS)])
    check(shared_db, sent)


def test_racing_raters_never_overbook_a_task(store_url):
    """20 raters released together on 10 tasks that want 2 judgements each: every place is filled exactly once."""
    tasks, raters, needed = 10, 20, 2
    fill(store_url, tasks, raters, needed)
    store = AnnotationStore(store_url, QueueSettings(gold_rate=0.0))
    start = threading.Barrier(raters)

    def work(rater: str) -> list[int]:
        judged = []
        start.wait()
        while (view := store.next_task(rater)) is not None:
            store.submit(rater, view.task_id, f"{rater}-{view.task_id}", ranks=[1, 2, 3])
            judged.append(view.task_id)
        return judged

    with ThreadPoolExecutor(raters) as pool:
        judged = Counter(t for batch in pool.map(work, [f"w{i}" for i in range(raters)]) for t in batch)
    store.close()
    assert sorted(judged.values()) == [needed] * tasks, f"judgements per task: {dict(judged)}"
    database = Database(store_url)
    assert database.scalar("select count(*) from judgements") == tasks * needed
    database.close()
