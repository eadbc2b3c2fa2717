"""Store unit tests on real stores (SQLite and PostgreSQL): content, queue, submissions, history, logins, upgrade."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from sqlalchemy import select

from alignment.annotations import AccessDenied, AnnotationStore
from alignment.annotations.schema import CURRENT_VERSION, judgements
from alignment.errors import DataError


def sid() -> str:
    return str(uuid.uuid4())


def count(store_path, sql: str) -> int:
    with sqlite3.connect(store_path) as conn:
        return conn.execute(sql).fetchone()[0]


def test_prompts_and_candidates_are_deduplicated_by_content(make_store, db):
    store = make_store()
    pid = store.add_prompt("p")
    assert store.add_prompt("p") == pid
    first = store.add_candidates(pid, [{"text": "x", "policy": "a"}, {"text": "y", "policy": "b"}])
    again = store.add_candidates(pid, [{"text": "y", "policy": "c"}, {"text": "x"}, {"text": "z"}])
    assert again[:2] == [first[1], first[0]]
    other = store.add_candidates(store.add_prompt("q"), [{"text": "x"}])
    assert other[0] not in first  # dedup is per prompt
    assert db.scalar("select count(*) from candidates") == 4
    with pytest.raises(DataError, match="no prompt with id 999"):
        store.add_candidates(999, [{"text": "x"}])


def test_create_tasks_samples_distinct_sets_and_tops_up(prompt_with):
    store, ids = prompt_with(4)
    small = store.add_prompt("only two")
    store.add_candidates(small, [{"text": "a"}, {"text": "b"}])
    first = store.create_tasks("ranking", k=3, judgements_per_task=2, tasks_per_prompt=3)
    assert len(first) == 3  # the two-candidate prompt cannot give a 3-way ranking
    assert store.create_tasks("ranking", k=3, tasks_per_prompt=3) == []
    assert len(store.create_tasks("ranking", k=3, tasks_per_prompt=4)) == 1  # C(4,3) = 4 sets in all
    assert len(store.create_tasks("pairwise", tasks_per_prompt=10)) == 6 + 1  # C(4,2) + the small prompt
    with pytest.raises(DataError, match="exactly 2"):
        store.create_tasks("pairwise", gold=[ids[:3]])


def test_each_task_gets_n_distinct_raters_and_never_twice(prompt_with, judge):
    store, ids = prompt_with(2, raters=("r1", "r2", "r3"))
    store.create_tasks("pairwise", judgements_per_task=2)
    held_1, held_2 = store.next_task("r1"), store.next_task("r2")
    assert held_1.task_id == held_2.task_id
    assert store.next_task("r3") is None  # both places are reserved
    assert store.next_task("r1").task_id == held_1.task_id  # a rater's own reservation comes back
    for rater in ("r1", "r2"):
        store.submit(rater, held_1.task_id, sid(), choice="A", strength="slightly")
        assert store.next_task(rater) is None  # never the same task twice
    assert store.next_task("r3") is None
    assert store.progress()["tasks_complete"] == 1


def test_skip_frees_the_place_for_another_rater(prompt_with):
    store, _ = prompt_with(2, raters=("r1", "r2"))
    store.create_tasks("pairwise", judgements_per_task=1)
    view = store.next_task("r1")
    store.submit("r1", view.task_id, sid(), skip=True)
    assert store.next_task("r1") is None
    assert store.next_task("r2").task_id == view.task_id


def test_reservations_expire_back_to_the_pool_and_late_work_is_kept(prompt_with, clock):
    store, _ = prompt_with(2, raters=("r1", "r2"), reservation_ttl_s=60)
    store.create_tasks("pairwise", judgements_per_task=1)
    abandoned = store.next_task("r1")
    assert store.next_task("r2") is None
    clock.advance(59)
    assert store.next_task("r2") is None
    clock.advance(2)
    assert store.next_task("r2").task_id == abandoned.task_id
    late = store.submit("r1", abandoned.task_id, sid(), choice="B", strength="much")  # never lose work
    assert late > 0
    assert store.progress("r1") == {"rater": "r1", "done": 1, "skipped": 0, "remaining": 0, "quota": None, "total": 1}


def test_submit_needs_a_served_task(prompt_with):
    store, _ = prompt_with(2)
    (task_id,) = store.create_tasks("pairwise")
    with pytest.raises(AccessDenied, match="not served"):
        store.submit("r1", task_id, sid(), choice="A", strength="clearly")
    with pytest.raises(AccessDenied, match="no user named"):
        store.next_task("nobody")


def test_positions_are_shuffled_per_rater_and_recorded(make_store, db):
    store = make_store(seed=3)
    pid = store.add_prompt("p")
    ids = store.add_candidates(pid, [{"text": t} for t in "abcde"])
    raters = [f"r{i}" for i in range(6)]
    for name in raters:
        store.add_user(name, "rater", "pw")
    store.create_tasks("ranking", k=5, judgements_per_task=6)
    orders = set()
    for name in raters:
        view = store.next_task(name)
        orders.add(tuple(c.id for c in view.candidates))
        assert [c.label for c in view.candidates] == list("ABCDE")
        store.submit(name, view.task_id, sid(), ranks=view.shown_ranks({c: i + 1 for i, c in enumerate(ids)}))
    assert len(orders) > 1
    recorded = {tuple(order) for (order,) in db.rows(select(judgements.c.shown_order))}
    assert recorded == orders
    # whatever the shuffle, the stored answer is the one each rater meant: a ranked before b before ...
    rows = store.export_rankings("per-rater")
    assert all(row["completions"] == list("abcde") and row["ranks"] == [1, 2, 3, 4, 5] for row in rows)


def test_pairwise_choice_refers_to_the_raters_labels(prompt_with):
    store, ids = prompt_with(2, raters=[f"r{i}" for i in range(5)], seed=1)
    store.create_tasks("pairwise", judgements_per_task=5)
    for i in range(5):
        view = store.next_task(f"r{i}")
        store.submit(f"r{i}", view.task_id, sid(), choice=view.label_of(ids[1]), strength="much")
    rows = store.export_preferences("per-rater")
    assert len(rows) == 5 and all(r["chosen"] == "answer 1" and r["rejected"] == "answer 0" for r in rows)


def test_resubmitting_a_submission_id_never_duplicates(prompt_with, db):
    store, _ = prompt_with(3)
    store.create_tasks("ranking", k=3, judgements_per_task=3)
    store.create_tasks("pairwise")
    view = store.next_task("r1")
    submission = sid()
    first = store.submit("r1", view.task_id, submission, ranks=[1, 2, 3])
    assert store.submit("r1", view.task_id, submission, ranks=[3, 2, 1]) == first
    assert db.scalar("select count(*) from judgements") == 1
    assert store.judgements("r1")[0]["ranks"] == [1, 2, 3]  # the retry changed nothing
    other = store.next_task("r1")
    with pytest.raises(DataError, match="already used"):
        store.submit("r1", other.task_id, submission, choice="A", strength="slightly")


def test_invalid_answers_are_refused_with_the_reason(prompt_with):
    store, _ = prompt_with(3)
    store.create_tasks("ranking", k=3)
    view = store.next_task("r1")
    with pytest.raises(DataError, match=r"^Give every candidate a rank \(ties allowed\)\.$"):
        store.submit("r1", view.task_id, sid(), ranks=[1, 2])
    with pytest.raises(DataError, match=r"^Give every candidate a rank"):
        store.submit("r1", view.task_id, sid(), ranks=[1, None, 2])
    with pytest.raises(DataError, match=r"^Ranks go from 1 \(best\) to 3 \(worst\); got 1, 2, 4\.$"):
        store.submit("r1", view.task_id, sid(), ranks=[1, 2, 4])
    with pytest.raises(DataError, match="Unknown flag spam"):
        store.submit("r1", view.task_id, sid(), ranks=[1, 2, 3], flags=["spam"])
    store.create_tasks("pairwise")
    store.submit("r1", view.task_id, sid(), ranks=[1, 1, 2], flags=["off-topic", "harmful"])
    pair = store.next_task("r1")
    with pytest.raises(DataError, match=r"^Choose how much better A is: slightly, clearly or much\.$"):
        store.submit("r1", pair.task_id, sid(), choice="A")
    with pytest.raises(DataError, match=r"^Choose which is better: A, B, a tie, or both bad\.$"):
        store.submit("r1", pair.task_id, sid(), choice="C")
    assert store.judgements("r1")[0]["task_id"] == view.task_id  # nothing refused was stored
    assert store.judgements("r1")[0]["flags"] == ["harmful", "off_topic"]


def test_undo_withdraws_the_last_judgement_and_serves_it_again(prompt_with):
    store, ids = prompt_with(3)
    store.create_tasks("ranking", k=3, judgements_per_task=1)
    assert store.undo_last("r1") is None
    view = store.next_task("r1")
    judgement = store.submit("r1", view.task_id, sid(), ranks=[2, 1, 3], rationale="B reads best")
    again = store.undo_last("r1")
    assert again.task_id == view.task_id
    assert again.previous["ranks"] == [2, 1, 3] and again.previous["rationale"] == "B reads best"
    assert store.judgements("r1") == []
    assert [h["event"] for h in store.history(judgement_id=judgement)] == ["undo"]
    assert store.next_task("r2") is None  # the task is held for r1 again
    assert store.next_task("r1").task_id == view.task_id
    store.submit("r1", view.task_id, sid(), ranks=[1, 2, 3])
    assert store.judgements("r1")[0]["ranks"] == [1, 2, 3]


def test_edits_keep_the_old_versions(prompt_with):
    store, _ = prompt_with(2)
    store.create_tasks("pairwise")
    view = store.next_task("r1")
    judgement = store.submit("r1", view.task_id, sid(), choice="A", strength="slightly")
    edit_view = store.task_view("r1", view.task_id)
    assert edit_view.previous["choice"] == "A"
    assert store.submit("r1", view.task_id, sid(), choice="B", strength="much", rationale="changed") == judgement
    assert store.submit("r1", view.task_id, sid(), choice="tie") == judgement
    versions = [h["snapshot"] for h in store.history(judgement_id=judgement)]
    assert [(v["choice"], v["strength"]) for v in versions] == [("A", "slightly"), ("B", "much")]
    assert store.judgements("r1")[0]["choice"] == "tie"
    with pytest.raises(AccessDenied):
        store.task_view("r2", view.task_id)


def test_gold_tasks_are_mixed_in_at_the_configured_rate(prompt_with):
    store, ids = prompt_with(3, gold_rate=1.0)
    regular = store.create_tasks("pairwise", tasks_per_prompt=2)
    store.create_tasks("pairwise", tasks_per_prompt=2, gold=[[ids[2], ids[0]]])
    served = [store.next_task(name).task_id for name in ("r1", "r2", "r3")]
    assert not set(served) & set(regular)  # gold_rate 1: every rater gets the gold task first
    store.settings.gold_rate = 0.0
    store.submit("r1", served[0], sid(), choice="A", strength="clearly")
    assert store.next_task("r1").task_id in regular


def test_gold_tasks_come_after_regular_work_at_rate_zero(prompt_with):
    store, ids = prompt_with(3)
    regular = store.create_tasks("pairwise", tasks_per_prompt=2)
    store.create_tasks("pairwise", tasks_per_prompt=2, gold=[[ids[2], ids[0]]])
    served = []
    while (view := store.next_task("r1")) is not None:
        served.append(view.task_id)
        store.submit("r1", view.task_id, sid(), skip=True)
    assert served[:2] == sorted(regular) and len(served) == 3


def test_logins_hash_passwords_and_lock_after_failures(make_store, clock, db):
    store = make_store(max_failed_logins=3, lockout_s=60)
    store.add_user("ann", "admin", "correct horse")
    stored = db.scalar("select password_hash from users")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    with pytest.raises(DataError, match="already exists"):
        store.add_user("ann", "rater", "x")
    with pytest.raises(DataError, match="role must be"):
        store.add_user("bob", "boss", "x")
    assert store.authenticate("ann", "correct horse")
    assert not store.authenticate("nobody", "correct horse")
    for _ in range(3):
        assert not store.authenticate("ann", "wrong")
    assert not store.authenticate("ann", "correct horse")  # backing off for 2**0 s
    clock.advance(1)
    assert store.authenticate("ann", "correct horse")
    assert store.role("ann") == "admin" and store.role("nobody") is None


def test_progress_counts_per_rater_and_overall(prompt_with, judge):
    store, ids = prompt_with(3, raters=("r1", "r2"))
    store.create_tasks("pairwise", judgements_per_task=2, tasks_per_prompt=3)
    assert store.progress("r1") == {"rater": "r1", "done": 0, "skipped": 0, "remaining": 3, "quota": None, "total": 3}
    judge(store, "r1", winner=None, skip=True)
    judge(store, "r1", winner=None, choice="tie")
    judge(store, "r2", winner=None, choice="both_bad")
    assert store.progress("r1") == {"rater": "r1", "done": 1, "skipped": 1, "remaining": 1, "quota": None, "total": 3}
    overall = store.progress()
    assert overall["tasks"] == 3 and overall["judgements"] == 2 and overall["judgements_needed"] == 6
    assert overall["raters"] == {"r1": 2, "r2": 1}


V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE prompts (id INTEGER PRIMARY KEY, text TEXT NOT NULL, content_hash VARCHAR(64) NOT NULL UNIQUE,
  meta JSON, created_at DATETIME NOT NULL);
CREATE TABLE candidates (id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts (id), text TEXT NOT NULL,
  policy VARCHAR(200) NOT NULL, sampling JSON, content_hash VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL,
  UNIQUE (prompt_id, content_hash));
CREATE TABLE tasks (id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts (id), kind VARCHAR(16) NOT NULL,
  judgements_needed INTEGER NOT NULL, is_gold BOOLEAN NOT NULL, gold_ranks JSON, created_at DATETIME NOT NULL);
CREATE TABLE task_candidates (task_id INTEGER NOT NULL REFERENCES tasks (id),
  candidate_id INTEGER NOT NULL REFERENCES candidates (id), position INTEGER NOT NULL,
  PRIMARY KEY (task_id, candidate_id), UNIQUE (task_id, position));
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL UNIQUE, role VARCHAR(16) NOT NULL,
  password_hash VARCHAR(400) NOT NULL, created_at DATETIME NOT NULL);
CREATE TABLE reservations (id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks (id),
  user_id INTEGER NOT NULL REFERENCES users (id), expires_at DATETIME NOT NULL, UNIQUE (task_id, user_id));
CREATE TABLE judgements (id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks (id),
  user_id INTEGER NOT NULL REFERENCES users (id), submission_id VARCHAR(64) NOT NULL UNIQUE, shown_order JSON NOT NULL,
  choice VARCHAR(16), strength VARCHAR(16), ranks JSON, rationale TEXT NOT NULL, flag_harmful BOOLEAN NOT NULL,
  flag_off_topic BOOLEAN NOT NULL, flag_broken BOOLEAN NOT NULL, skipped BOOLEAN NOT NULL, seconds FLOAT NOT NULL,
  created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, UNIQUE (task_id, user_id));
INSERT INTO schema_version VALUES (1);
INSERT INTO prompts VALUES (1, 'old prompt', 'h1', NULL, '2024-05-01 10:00:00.000000');
INSERT INTO candidates VALUES (1, 1, 'old good', 'sft', NULL, 'c1', '2024-05-01 10:00:00.000000');
INSERT INTO candidates VALUES (2, 1, 'old bad', 'base', NULL, 'c2', '2024-05-01 10:00:00.000000');
INSERT INTO tasks VALUES (1, 1, 'pairwise', 2, 0, NULL, '2024-05-01 10:00:00.000000');
INSERT INTO task_candidates VALUES (1, 1, 0), (1, 2, 1);
INSERT INTO users VALUES (1, 'old', 'rater', 'scrypt$16384$8$1$00$00', '2024-05-01 10:00:00.000000');
INSERT INTO judgements VALUES (1, 1, 1, 'sub-1', '[2, 1]', 'B', 'much', '{"1": 1, "2": 2}', 'kept', 0, 0, 0, 0, 4.5,
  '2024-05-01 10:05:00.000000', '2024-05-01 10:05:00.000000');
"""


def test_a_version_1_file_is_upgraded_in_place(tmp_path, clock):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
    store = AnnotationStore(path, clock=clock)
    assert store.upgraded_from == 1
    assert count(path, "select version from schema_version") == CURRENT_VERSION
    assert store.export_preferences("per-rater") == [
        {"prompt": "old prompt", "chosen": "old good", "rejected": "old bad", "margin": 3.0, "rater": "old",
         "rationale": "kept", "flags": []}
    ]  # fmt: skip
    assert not store.authenticate("old", "x")  # the v2 lockout columns exist and work on the old row
    store.add_user("new", "rater", "pw")
    view = store.next_task("new")
    judgement = store.submit("new", view.task_id, sid(), choice="tie")
    store.submit("new", view.task_id, sid(), choice=view.label_of(1), strength="slightly")
    assert len(store.history(judgement_id=judgement)) == 1  # the v2 history table exists
    store.close()
    assert AnnotationStore(path, clock=clock).upgraded_from == CURRENT_VERSION  # a second open is a no-op


def test_an_in_memory_database_is_refused():
    with pytest.raises(DataError, match="give a file path"):
        AnnotationStore("sqlite://")


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    AnnotationStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("update schema_version set version = 99")
    with pytest.raises(DataError, match="schema_version is 99"):
        AnnotationStore(path)


def test_a_small_task_cache_still_serves_every_task_right(prompt_with, monkeypatch):
    from alignment.annotations import store as store_module

    monkeypatch.setattr(store_module, "_TASK_CACHE", 1)
    store, ids = prompt_with(3, raters=("r1",))
    store.create_tasks("pairwise", tasks_per_prompt=3)
    seen = set()
    while (view := store.next_task("r1")) is not None:
        seen.add(frozenset(c.id for c in view.candidates))
        store.submit("r1", view.task_id, sid(), choice="A", strength="clearly")
    assert len(seen) == 3 and len(store._tasks) == 1
    assert len(store.export_preferences("per-rater")) == 3


@pytest.mark.parametrize("url", ["mysql://rater:s3cret@localhost/votes", "nosuch://rater:s3cret@host/db", "postgres ql://x"])
def test_a_url_the_store_cannot_open_is_a_data_error_that_hides_the_password(url):
    """A missing driver, an unknown dialect or an unparsable URL: one message naming the URL (password masked) and
    what the store takes, not a SQLAlchemy traceback."""
    with pytest.raises(DataError, match=r"cannot open this database URL .*postgresql\+psycopg") as raised:
        AnnotationStore(url)
    assert "s3cret" not in str(raised.value) and url.split("://")[0] in str(raised.value)
