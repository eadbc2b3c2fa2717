"""Two app processes (``python -m annotation_ui --db postgresql+psycopg://...``) serving one PostgreSQL store.

RATERS raters, half logged in to each app over HTTP, work until no task is left: PROMPTS prompts give a ranking and
a pairwise task each, and every task wants NEEDED judgements, fewer than there are raters, so the two processes
race for the same places. Required: no error returned to any rater, every place filled exactly once (no task gets
more judgements than it needs), the database holds exactly the acknowledged judgements (each as sent, none twice),
and a retry of each rater's last submission through the OTHER app returns the same judgement id and stores nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from reliability.annotation_support import (  # noqa: F401 - annotation_app, rater_login, postgres_server: fixtures
    annotation_app,
    assert_stored_as_sent,
    build_store,
    judgement_rows,
    postgres_server,
    rater_login,
)

pytest.importorskip("gradio_client")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RATERS, PROMPTS, NEEDED = 8, 15, 2


def test_two_apps_on_one_postgres_store_lose_and_duplicate_nothing(postgres_server, annotation_app, rater_login):  # noqa: F811
    names = [f"rater{i}" for i in range(RATERS)]
    with postgres_server.database() as url:
        build_store(url, names, prompts=PROMPTS, needed=NEEDED)
        with ThreadPoolExecutor(2) as pool:  # both start at once: each opens (and checks) the schema
            apps = list(pool.map(lambda _: annotation_app(url), range(2)))
        raters = [rater_login(apps[i % 2].url, name) for i, name in enumerate(names)]
        stop = threading.Event()
        threads = [threading.Thread(target=r.work, args=(stop, time.monotonic() + 240), daemon=True) for r in raters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
            assert not t.is_alive(), "a rater's call did not return"

        assert [e for r in raters for e in r.errors] == []
        sent = [s for r in raters for s in r.sent]
        assert all(s.judgement_id is not None for s in sent) and all(r.sent for r in raters)
        per_task = Counter(s.task_id for s in sent)
        assert sorted(per_task.values()) == [NEEDED] * (2 * PROMPTS), f"judgements per task: {dict(per_task)}"
        rows = judgement_rows(url)
        assert len(rows) == len(sent) == 2 * PROMPTS * NEEDED
        for s in sent:
            assert_stored_as_sent(rows, s)

        for i, rater in enumerate(raters):  # the same submission again, through the other process
            last = rater.sent[-1]
            other = rater_login(apps[(i + 1) % 2].url, rater.name)
            assert other.submit(last).judgement_id == rows[last.submission_id]["id"]
        assert len(judgement_rows(url)) == len(rows)
