"""kill -9 of the annotation app while raters submit: nothing a rater was told is saved gets lost.

The app runs as its own process (``python -m annotation_ui``) on a SQLite file, then on a PostgreSQL database (the
server itself keeps running: the app is what dies); RATERS raters, each with its own gradio_client login, judge
tasks continuously over HTTP. Once KILL_AFTER submissions (random per RELIABILITY_SEED) are acknowledged, and while
a submission is in flight, the app gets SIGKILL. Then, on the database as the crash left it: SQLite's
integrity_check is ok, every acknowledged judgement is there exactly as sent (id, task, answer, a 4.9 kB rationale
spanning several pages: a torn row would show), none twice, no row that no rater sent. The app is restarted on the
same database; every rater logs in again, resends what got no answer with the same submission id (a retry: stored once
whether or not the first try was committed), then gets a next task and submits it.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from reliability.annotation_support import (  # noqa: F401 - annotation_app, rater_login: fixtures
    Rater,
    annotation_app,
    assert_stored_as_sent,
    backend_of,
    build_store,
    judgement_rows,
    postgres_server,
    rater_login,
    store_url,
)
from reliability.support import record

pytest.importorskip("gradio_client")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RATERS = 5
SEED = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 10_000))
KILL_AFTER = random.Random(f"{SEED}-annotation-kill").randint(20, 50)


def in_flight(raters: list[Rater]) -> int:
    """Submissions sent and not answered yet (raters stopped by an error left out)."""
    return sum(1 for r in raters if not r.errors and r.sent and r.sent[-1].judgement_id is None)


def test_kill_9_mid_stream_loses_and_duplicates_no_acknowledged_judgement(store_url, annotation_app, rater_login):  # noqa: F811
    db = store_url
    names = [f"rater{i}" for i in range(RATERS)]
    build_store(db, names, prompts=60)  # 120 tasks per rater: nobody runs out before the kill
    server = annotation_app(db)
    raters = [rater_login(server.url, name, SEED) for name in names]
    stop = threading.Event()
    threads = [threading.Thread(target=r.work, args=(stop,), daemon=True) for r in raters]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 180
    while not (sum(len(r.acknowledged()) for r in raters) >= KILL_AFTER and in_flight(raters)):
        assert not any(r.errors for r in raters), [r.errors for r in raters]
        assert time.monotonic() < deadline, "raters did not reach the kill point within 180 s"
        time.sleep(0.005)
    server.kill9()
    stop.set()
    for t in threads:
        t.join(150)
        assert not t.is_alive(), "a rater still waits for an answer 150 s after the kill"
    assert any(r.errors for r in raters), "the kill interrupted no call: it did not hit the server mid-stream"

    acknowledged = [s for r in raters for s in r.acknowledged()]
    unanswered = [s for r in raters for s in r.unacknowledged()]
    rows = judgement_rows(db)  # the database as the crash left it
    for sent in acknowledged:
        assert_stored_as_sent(rows, sent)
    sent_ids = {s.submission_id for s in acknowledged + unanswered}
    assert set(rows) <= sent_ids, f"rows nobody sent: {set(rows) - sent_ids}"
    committed_unanswered = sum(s.submission_id in rows for s in unanswered)

    restarted = annotation_app(db)  # same database, after the crash
    again = [rater_login(restarted.url, name, f"{SEED}-again") for name in names]  # everyone logs in again
    for before, rater in zip(raters, again):
        for sent in before.unacknowledged():  # the retry a client makes when its call got no answer
            rater.submit(sent)
        view = rater.call(api_name="/next_task")
        assert view is not None and view["task_id"] not in {s.task_id for s in before.sent}
        done = rater.submit(rater.answer(view))
        assert done.progress["done"] == len(before.sent) + 1
    rows_after = judgement_rows(db)
    every = list({s.submission_id: s for r in raters + again for s in r.sent}.values())
    assert len(rows_after) == len(every) and all(s.judgement_id is not None for s in every)
    for sent in every:
        assert_stored_as_sent(rows_after, sent)
    record(
        f"annotation_server_kill_{backend_of(db)}",
        seed=SEED,
        raters=RATERS,
        acknowledged_before_kill=len(acknowledged),
        acknowledged_found_after_kill=sum(s.submission_id in rows for s in acknowledged),
        unanswered_at_kill=len(unanswered),
        unanswered_but_committed=committed_unanswered,
        rows_after_kill=len(rows),
        rows_after_restart_and_retries=len(rows_after),
        duplicates=0,
        integrity_check="ok" if backend_of(db) == "sqlite" else "n/a (PostgreSQL)",
    )
