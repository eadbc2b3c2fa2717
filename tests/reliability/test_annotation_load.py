"""20 raters at once against one launched annotation app, for a bounded time, over HTTP.

The app runs as its own process (``python -m annotation_ui``) on a SQLite file. RATERS distinct users each log in
with their own gradio_client.Client and run the rater loop (/next_task, then /submit of a complete random answer)
for DURATION_S seconds, all starting together. Measured: acknowledged submissions per second and the p50/p95
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
    rater_login,
)
from reliability.support import record

pytest.importorskip("gradio_client")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RATERS, DURATION_S = 20, 20


def test_twenty_concurrent_raters_lose_and_duplicate_nothing(tmp_path, annotation_app, rater_login):  # noqa: F811
    db = tmp_path / "annotations.db"
    names = [f"load{i:02d}" for i in range(RATERS)]
    build_store(db, names, prompts=100)  # 200 tasks per rater, more than anyone can do in DURATION_S
    server = annotation_app(db)
    raters = [rater_login(server.url, name) for name in names]  # 20 logins, 20 clients
    start = time.monotonic()
    stop = threading.Event()
    threads = [threading.Thread(target=r.work, args=(stop, start + DURATION_S), daemon=True) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DURATION_S + 150)
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
        "raters": RATERS,
        "seconds": round(elapsed, 1),
        "acknowledged": len(sent),
        "stored": len(rows),
        "submissions_per_s": round(len(sent) / elapsed, 2),
        "submit_p50_s": round(percentile(latencies, 50), 3),
        "submit_p95_s": round(percentile(latencies, 95), 3),
        "per_rater_min_max": [min(len(r.sent) for r in raters), max(len(r.sent) for r in raters)],
        "errors": 0,
    }
    record("annotation_load", **figures)
