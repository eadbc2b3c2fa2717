"""Schema v3: the upgrade from v2 keeps every row, undo marks instead of deleting, ids are never reused,
and one rater's history never shows another's records (SQLite and PostgreSQL unless noted)."""

from __future__ import annotations

import sqlite3
import uuid

from sqlalchemy import select

from alignment.annotations import AnnotationStore
from alignment.annotations.schema import CURRENT_VERSION, judgements

# The v2 schema as alignment/annotations/schema.py created it (SQLAlchemy's SQLite DDL), with rows: an old
# judgement (id 2) and a history row of judgement 7, which a v2 undo deleted.
V2_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE prompts (id INTEGER NOT NULL, text TEXT NOT NULL, content_hash VARCHAR(64) NOT NULL, meta JSON,
  created_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (content_hash));
CREATE TABLE users (id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, role VARCHAR(16) NOT NULL,
  password_hash VARCHAR(400) NOT NULL, failed_logins INTEGER DEFAULT '0' NOT NULL, locked_until DATETIME,
  created_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE judgement_history (id INTEGER NOT NULL, judgement_id INTEGER NOT NULL, task_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL, submission_id VARCHAR(64) NOT NULL, event VARCHAR(16) NOT NULL, snapshot JSON NOT NULL,
  recorded_at DATETIME NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_judgement_history_judgement_id ON judgement_history (judgement_id);
CREATE INDEX ix_judgement_history_submission_id ON judgement_history (submission_id);
CREATE TABLE candidates (id INTEGER NOT NULL, prompt_id INTEGER NOT NULL, text TEXT NOT NULL,
  policy VARCHAR(200) NOT NULL, sampling JSON, content_hash VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL,
  PRIMARY KEY (id), UNIQUE (prompt_id, content_hash), FOREIGN KEY(prompt_id) REFERENCES prompts (id));
CREATE INDEX ix_candidates_prompt_id ON candidates (prompt_id);
CREATE TABLE tasks (id INTEGER NOT NULL, prompt_id INTEGER NOT NULL, kind VARCHAR(16) NOT NULL,
  judgements_needed INTEGER NOT NULL, is_gold BOOLEAN NOT NULL, gold_ranks JSON, created_at DATETIME NOT NULL,
  PRIMARY KEY (id), FOREIGN KEY(prompt_id) REFERENCES prompts (id));
CREATE INDEX ix_tasks_prompt_id ON tasks (prompt_id);
CREATE TABLE task_candidates (task_id INTEGER NOT NULL, candidate_id INTEGER NOT NULL, position INTEGER NOT NULL,
  PRIMARY KEY (task_id, candidate_id), UNIQUE (task_id, position), FOREIGN KEY(task_id) REFERENCES tasks (id),
  FOREIGN KEY(candidate_id) REFERENCES candidates (id));
CREATE TABLE reservations (id INTEGER NOT NULL, task_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
  expires_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (task_id, user_id), FOREIGN KEY(task_id) REFERENCES tasks (id),
  FOREIGN KEY(user_id) REFERENCES users (id));
CREATE INDEX ix_reservations_user_id ON reservations (user_id);
CREATE TABLE judgements (id INTEGER NOT NULL, task_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
  submission_id VARCHAR(64) NOT NULL, shown_order JSON NOT NULL, choice VARCHAR(16), strength VARCHAR(16), ranks JSON,
  rationale TEXT NOT NULL, flag_harmful BOOLEAN NOT NULL, flag_off_topic BOOLEAN NOT NULL, flag_broken BOOLEAN NOT NULL,
  skipped BOOLEAN NOT NULL, seconds FLOAT NOT NULL, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL,
  PRIMARY KEY (id), UNIQUE (task_id, user_id), FOREIGN KEY(task_id) REFERENCES tasks (id),
  FOREIGN KEY(user_id) REFERENCES users (id), UNIQUE (submission_id));
CREATE INDEX ix_judgements_user_id ON judgements (user_id);
INSERT INTO schema_version VALUES (2);
INSERT INTO prompts VALUES (1, 'old prompt', 'h1', NULL, '2024-05-01 10:00:00.000000');
INSERT INTO candidates VALUES (1, 1, 'old good', 'sft', NULL, 'c1', '2024-05-01 10:00:00.000000');
INSERT INTO candidates VALUES (2, 1, 'old bad', 'base', NULL, 'c2', '2024-05-01 10:00:00.000000');
INSERT INTO tasks VALUES (1, 1, 'pairwise', 3, 0, NULL, '2024-05-01 10:00:00.000000');
INSERT INTO task_candidates VALUES (1, 1, 0), (1, 2, 1);
INSERT INTO users VALUES (1, 'old', 'rater', 'scrypt$16384$8$1$00$00', 4, NULL, '2024-05-01 10:00:00.000000');
INSERT INTO users VALUES (2, 'gone', 'rater', 'scrypt$16384$8$1$00$00', 0, NULL, '2024-05-01 10:00:00.000000');
INSERT INTO judgements VALUES (2, 1, 1, 'sub-2', '[2, 1]', 'B', 'much', '{"1": 1, "2": 2}', 'kept', 1, 0, 0, 0, 4.5,
  '2024-05-01 10:05:00.000000', '2024-05-01 10:05:00.000000');
INSERT INTO judgement_history VALUES (1, 7, 1, 2, 'sub-7', 'undo', '{"id": 7}', '2024-05-01 10:06:00.000000');
"""


def sid() -> str:
    return str(uuid.uuid4())


def test_a_version_2_file_is_upgraded_in_place_and_keeps_its_rows(tmp_path, clock):
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V2_SCHEMA)
    store = AnnotationStore(path, clock=clock)
    assert store.upgraded_from == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("select version from schema_version").fetchall() == [(CURRENT_VERSION,)]
        assert conn.execute("select id, submission_id, withdrawn_at, rating from judgements").fetchall() == [
            (2, "sub-2", None, None)
        ]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        tables = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
    assert {"app_settings", "login_throttle"} <= tables and "judgements_v2" not in tables
    assert store.export_preferences("per-rater") == []  # the old judgement flagged its task
    assert store.export_preferences("per-rater", include_flagged=True) == [
        {"prompt": "old prompt", "chosen": "old good", "rejected": "old bad", "margin": 3.0, "rater": "old",
         "rationale": "kept", "flags": ["harmful"]}
    ]  # fmt: skip
    assert store.tasks()[0] | {"prompt": None} == {
        "id": 1, "task_set": "default", "kind": "pairwise", "prompt": None, "candidates": 2, "judgements": 1,
        "judgements_needed": 3, "is_gold": False, "flagged": 1,
    }  # fmt: skip
    assert [(u["name"], u["quota"], u["removed"]) for u in store.users()] == [("gone", None, False), ("old", None, False)]

    # new columns and the v3 rules work on the old rows
    store.set_quota("old", 5)
    store.remove_user("gone")
    store.set_guidelines("Be kind.")
    store.add_user("new", "rater", "pw")
    view = store.next_task("new")
    first = store.submit("new", view.task_id, sid(), choice="tie")
    assert first > 7  # above every id a judgement had, including the v2 undo's deleted row 7
    store.undo_last("new")
    second = store.submit("new", view.task_id, sid(), choice="A", strength="slightly")
    assert second > first
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "select id, withdrawn_at is not null from judgements where user_id = 3 order by id"
        ).fetchall()
    assert rows == [(first, 1), (second, 0)]  # the old UNIQUE(task_id, user_id) is gone; one current row
    store.close()
    again = AnnotationStore(path, clock=clock)
    assert again.upgraded_from == CURRENT_VERSION and again.guidelines() == "Be kind."
    assert again.progress("old")["quota"] == 5 and [u["name"] for u in again.users()] == ["new", "old"]
    again.close()


def test_ids_of_deleted_rows_are_not_handed_out_again(prompt_with, db):
    """AUTOINCREMENT on SQLite, a sequence on PostgreSQL: even a row deleted behind the store keeps its id."""
    store, _ = prompt_with(2, raters=("r1", "r2"))
    store.create_tasks("pairwise", judgements_per_task=2)
    first = store.submit("r1", store.next_task("r1").task_id, sid(), choice="tie")
    with db._engine.begin() as conn:
        conn.execute(judgements.delete().where(judgements.c.id == first))
    assert store.submit("r2", store.next_task("r2").task_id, sid(), choice="tie") > first


def test_undo_marks_the_row_and_answering_again_adds_a_new_one(prompt_with, db, clock):
    store, _ = prompt_with(3, raters=("r1", "r2"))
    store.create_tasks("ranking", k=3, judgements_per_task=1)
    view = store.next_task("r1")
    first = store.submit("r1", view.task_id, sid(), ranks=[1, 2, 3])
    clock.advance(5)
    assert store.undo_last("r1").previous["ranks"] == [1, 2, 3]
    rows = db.rows(select(judgements.c.id, judgements.c.withdrawn_at))
    assert [(i, w is not None) for i, w in rows] == [(first, True)]
    assert rows[0][1] == clock.now.replace(tzinfo=None)
    # withdrawn rows count nowhere
    assert store.judgements("r1") == [] and store.export_rankings() == [] and store.records()[0] == []
    assert store.progress("r1")["done"] == 0 and store.progress()["judgements"] == 0
    assert store.task_view("r1", view.task_id).previous is None
    second = store.submit("r1", view.task_id, sid(), ranks=[3, 2, 1])
    assert second > first
    assert [j["judgement_id"] for j in store.judgements("r1")] == [second]
    assert db.scalar("select count(*) from judgements") == 2
    assert store.next_task("r2") is None  # the new current judgement fills the one place


def test_an_undone_submission_sent_again_returns_the_original_id_and_changes_nothing(prompt_with, db):
    store, _ = prompt_with(2, raters=("r1",))
    store.create_tasks("pairwise", judgements_per_task=1)
    view = store.next_task("r1")
    submission = sid()
    original = store.submit("r1", view.task_id, submission, choice="A", strength="much")
    store.undo_last("r1")
    assert store.submit("r1", view.task_id, submission, choice="B", strength="slightly") == original
    assert store.judgements("r1") == []  # still withdrawn, the retry stored nothing
    assert db.scalar("select count(*) from judgements") == 1
    assert store.next_task("r1").task_id == view.task_id  # still the rater's to answer


def test_an_undone_task_whose_reservation_expires_goes_to_another_rater(prompt_with, clock):
    store, _ = prompt_with(2, raters=("r1", "r2"), reservation_ttl_s=60)
    store.create_tasks("pairwise", judgements_per_task=1)
    view = store.next_task("r1")
    store.submit("r1", view.task_id, sid(), choice="tie")
    store.undo_last("r1")
    assert store.next_task("r2") is None
    clock.advance(61)
    assert store.next_task("r2").task_id == view.task_id


def test_history_for_a_rater_holds_only_their_own_records(prompt_with):
    store, _ = prompt_with(2, raters=("r1", "r2"))
    store.create_tasks("pairwise", judgements_per_task=2, tasks_per_prompt=1)
    mine = {}
    for name in ("r1", "r2"):
        view = store.next_task(name)
        mine[name] = store.submit(name, view.task_id, sid(), choice="A", strength="slightly")
        store.submit(name, view.task_id, sid(), choice="tie")  # an edit
        store.undo_last(name)
    for name, other in (("r1", "r2"), ("r2", "r1")):
        records = store.history(rater=name)
        assert [(h["event"], h["judgement_id"]) for h in records] == [("edit", mine[name]), ("undo", mine[name])]
        assert store.history(rater=name, judgement_id=mine[other]) == []
    assert len(store.history()) == 4  # an admin may ask for everyone's
