"""The launched app (real server on 127.0.0.1) driven through its named API with gradio_client and login."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def login(url: str, name: str, password: str | None = None):
    return gradio_client.Client(url, auth=(name, password or f"{name}-pw"), verbose=False)


@pytest.fixture
def app(served, tmp_path):
    store, url = served(max_failed_logins=3)
    pid = store.add_prompt("Name a colour.")
    colours = (("red", "sft"), ("blue", "base"), ("green", "dpo"))
    store.add_candidates(pid, [{"text": t, "policy": p} for t, p in colours])
    store.create_tasks("ranking", k=3, judgements_per_task=2)
    store.create_tasks("pairwise", judgements_per_task=2)
    return store, url, tmp_path / "annotations.db"


def test_a_rater_logs_in_fetches_submits_and_the_row_is_stored(app):
    store, url, db = app
    alice = login(url, "alice")
    view = alice.predict(api_name="/next_task")
    assert view["kind"] == "ranking" and [c["label"] for c in view["candidates"]] == ["A", "B", "C"]
    ranks = [{"red": 1, "blue": 3, "green": 2}[c["text"]] for c in view["candidates"]]
    submission = str(uuid.uuid4())
    args = (view["task_id"], submission, None, None, ranks, "red first", ["off_topic"], False, 4.0)
    result = alice.predict(*args, api_name="/submit")
    assert alice.predict(*args, api_name="/submit")["judgement_id"] == result["judgement_id"]  # idempotent
    assert result["progress"] == {"rater": "alice", "done": 1, "skipped": 0, "remaining": 1, "quota": None, "total": 2}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select submission_id, rationale, flag_off_topic, seconds from judgements").fetchall()
    assert rows == [(submission, "red first", 1, 4.0)]
    mine = alice.predict(api_name="/my_judgements")
    assert len(mine) == 1 and mine[0]["ranks"] == ranks
    undone = alice.predict(api_name="/undo")
    assert undone["task_id"] == view["task_id"] and undone["previous"]["ranks"] == ranks
    assert store.judgements("alice") == []


def test_a_rater_cannot_export_or_read_other_raters_work(app):
    store, url, _ = app
    bob = login(url, "bob")
    bob_view = bob.predict(api_name="/next_task")
    bob.predict(bob_view["task_id"], str(uuid.uuid4()), None, None, [1, 2, 3], "", [], False, 1.0, api_name="/submit")
    alice = login(url, "alice")
    for endpoint, args in (
        ("/export_preferences", ("majority", False)),
        ("/export_rankings", ("per-rater", False)),
        ("/agreement", ()),
        ("/overall_progress", ()),
        ("/rater_judgements", ("bob",)),
    ):
        with pytest.raises(AppError, match="'alice' is not an admin"):
            alice.predict(*args, api_name=endpoint)
    assert alice.predict(api_name="/my_judgements") == []
    other = store.next_task("bob")  # bob's pairwise task, never served to alice
    with pytest.raises(AppError, match="not served to you"):
        alice.predict(other.task_id, str(uuid.uuid4()), "A", "much", None, "", [], False, 1.0, api_name="/submit")
    with pytest.raises(AppError, match="not assigned to 'alice'"):
        alice.predict(other.task_id, api_name="/task_for_edit")
    root = login(url, "root", "root-pw")
    assert len(root.predict("per-rater", False, api_name="/export_preferences")) == 3
    assert root.predict("bob", api_name="/rater_judgements")[0]["task_id"] == bob_view["task_id"]


def test_failed_logins_are_refused_and_lock_the_account(app):
    store, url, _ = app
    for _ in range(3):
        with pytest.raises(ValueError, match="Could not login"):
            login(url, "alice", "wrong")
    with pytest.raises(ValueError, match="Could not login"):
        login(url, "alice")  # the right password, but the account is throttled now (the test clock stands still)
    assert login(url, "bob").predict(api_name="/progress")["rater"] == "bob"
    store.unlock("alice")
    assert login(url, "alice").predict(api_name="/progress")["rater"] == "alice"


def test_users_add_through_the_app_command(tmp_path, capsys):
    from annotation_ui.__main__ import main

    db = tmp_path / "users.db"
    assert main(["users", "add", "nora", "--role", "admin", "--password", "pw-1", "--db", str(db)]) == 0
    assert "added admin 'nora'" in capsys.readouterr().out
    from alignment.annotations import AnnotationStore

    store = AnnotationStore(db)
    assert [(u["name"], u["role"]) for u in store.users()] == [("nora", "admin")] and store.authenticate("nora", "pw-1")
