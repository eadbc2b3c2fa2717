"""Many raters at once against one launched annotation app, for a bounded time, over HTTP.

The app runs as its own process (``python -m annotation_ui``) on a SQLite file, then on a PostgreSQL database (10
raters for 10 s there: the same checks at a smaller size). Each rater is a distinct user that logs in with its own
gradio_client.Client and runs the rater loop (/next_task, then /submit of a complete random answer) for the given
seconds, all starting together. Measured: acknowledged submissions per second and the p50/p95
latency of /submit as a rater sees it. Required: no error returned to any rater, every rater served, and the
database holds exactly the acknowledged judgements (count equal, each as sent, one per rater and task, none twice).
"""

from __future__ import annotations

import threading
import time

import pytest

from reliability.annotation_support import (  # noqa: F401 - annotation_app, rater_login: fixtures
    annotation_app,
    assert_stored_as_sent,
    build_store,
    judgement_rows,
    percentile,
    backend_of,
    postgres_server,
    rater_login,
    store_url,
)
from reliability.support import record

pytest.importorskip("gradio_client")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

SIZE = {"sqlite": (20, 20), "postgresql": (10, 10)}  # backend: raters, seconds


def test_concurrent_raters_lose_and_duplicate_nothing(store_url, annotation_app, rater_login):  # noqa: F811
    db, backend = store_url, backend_of(store_url)
    count, duration_s = SIZE[backend]
    names = [f"load{i:02d}" for i in range(count)]
    build_store(db, names, prompts=100)  # 200 tasks per rater, more than anyone can do in the time
    server = annotation_app(db)
    raters = [rater_login(server.url, name) for name in names]  # one login and one client each
    start = time.monotonic()
    stop = threading.Event()
    threads = [threading.Thread(target=r.work, args=(stop, start + duration_s), daemon=True) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + 150)
        assert not t.is_alive(), "a rater's call did not return within 150 s of the end"
    elapsed = time.monotonic() - start

    assert [e for r in raters for e in r.errors] == []
    sent = [s for r in raters for s in r.sent]
    assert all(s.judgement_id is not None for s in sent)  # nothing left unanswered when no error happened
    assert all(r.sent for r in raters), "a rater got no submission through"
    rows = judgement_rows(db)
    assert len(rows) == len(sent)
    for s in sent:
        assert_stored_as_sent(rows, s)
    latencies = [s.latency_s for s in sent]
    figures = {
        "backend": backend,
        "raters": count,
        "seconds": round(elapsed, 1),
        "acknowledged": len(sent),
        "stored": len(rows),
        "submissions_per_s": round(len(sent) / elapsed, 2),
        "submit_p50_s": round(percentile(latencies, 50), 3),
        "submit_p95_s": round(percentile(latencies, 95), 3),
        "per_rater_min_max": [min(len(r.sent) for r in raters), max(len(r.sent) for r in raters)],
        "errors": 0,
    }
    record(f"annotation_load_{backend}", **figures)
