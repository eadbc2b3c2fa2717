"""Database schema of the annotation store and its in-place migrations.

The schema version lives in the one-row table ``schema_version``. ``ensure_schema`` creates a new
database at ``CURRENT_VERSION`` or upgrades an older one step by step; each step is a function of
``MIGRATIONS`` that keeps every row: it adds tables and nullable or defaulted columns, and where a
constraint changes it rebuilds the table around the same rows.

Version history:
  1: prompts, candidates, tasks, task_candidates, users, reservations, judgements.
  2: users.failed_logins + users.locked_until (login lockout), judgement_history (edits and undos).
  3: judgement ids never reused (AUTOINCREMENT); an undo marks judgements.withdrawn_at instead of deleting,
     so one (task, user) may hold withdrawn rows plus at most one current row (a partial unique index);
     judgements.rating and tasks.task_set/instructions/rating_scale (the "rating" kind); users.quota and
     users.removed_at; app_settings (project guidelines); login_throttle (per pair/address/account backoff,
     replacing users.failed_logins/locked_until, which stay but are no longer read).
     On SQLite the judgements table is rebuilt (constraints change); everything else only adds.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Index,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.schema import CreateColumn

from alignment.errors import DataError

CURRENT_VERSION = 3

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

prompts = Table(
    "prompts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("text", Text, nullable=False),
    Column("content_hash", String(64), nullable=False, unique=True),
    Column("meta", JSON),
    Column("created_at", DateTime, nullable=False),
)

candidates = Table(
    "candidates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prompt_id", ForeignKey("prompts.id"), nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("policy", String(200), nullable=False),
    Column("sampling", JSON),
    Column("content_hash", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("prompt_id", "content_hash"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prompt_id", ForeignKey("prompts.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # "pairwise" | "ranking" | "rating"
    Column("judgements_needed", Integer, nullable=False),
    Column("is_gold", Boolean, nullable=False, default=False),
    Column("gold_ranks", JSON),  # {candidate_id (str): rank}, 1 = best; gold tasks only
    Column("created_at", DateTime, nullable=False),
    Column("task_set", String(200), nullable=False, server_default="default"),  # v3
    Column("instructions", Text),  # v3: markdown shown with the task
    Column("rating_scale", String(16)),  # v3: rating tasks: "binary" (0 | 1) | "likert5" (1..5)
)

task_candidates = Table(
    "task_candidates",
    metadata,
    Column("task_id", ForeignKey("tasks.id"), primary_key=True),
    Column("candidate_id", ForeignKey("candidates.id"), primary_key=True),
    Column("position", Integer, nullable=False),  # canonical order; raters see their own shuffle
    UniqueConstraint("task_id", "position"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # "rater" | "admin"
    Column("password_hash", String(400), nullable=False),
    Column("failed_logins", Integer, nullable=False, server_default="0"),  # v2; unread since v3
    Column("locked_until", DateTime),  # v2; unread since v3
    Column("created_at", DateTime, nullable=False),
    Column("quota", Integer),  # v3: most judgements (skips included) this user is served; None: no limit
    Column("removed_at", DateTime),  # v3: a removed user cannot log in and keeps their judgements
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", ForeignKey("tasks.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("expires_at", DateTime, nullable=False),
    UniqueConstraint("task_id", "user_id"),
)

judgements = Table(
    "judgements",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", ForeignKey("tasks.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("submission_id", String(64), nullable=False, unique=True),
    Column("shown_order", JSON, nullable=False),  # candidate ids in the order the rater saw them
    Column("choice", String(16)),  # pairwise: "A" | "B" | "tie" | "both_bad"
    Column("strength", String(16)),  # pairwise A/B: "slightly" | "clearly" | "much"
    Column("ranks", JSON),  # {candidate_id (str): rank}, 1 = best, ties share a rank; None when skipped
    Column("rationale", Text, nullable=False, default=""),
    Column("flag_harmful", Boolean, nullable=False, default=False),
    Column("flag_off_topic", Boolean, nullable=False, default=False),
    Column("flag_broken", Boolean, nullable=False, default=False),
    Column("skipped", Boolean, nullable=False, default=False),
    Column("seconds", Float, nullable=False, default=0.0),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("withdrawn_at", DateTime),  # v3: set by an undo; rows with NULL here are the current judgements
    Column("rating", Integer),  # v3: rating tasks
    sqlite_autoincrement=True,  # v3: ids of withdrawn or old rows are never handed out again
)
CURRENT_JUDGEMENT = judgements.c.withdrawn_at.is_(None)
Index(
    "uq_judgements_current_task_user",
    judgements.c.task_id,
    judgements.c.user_id,
    unique=True,
    sqlite_where=CURRENT_JUDGEMENT,
    postgresql_where=CURRENT_JUDGEMENT,
)

judgement_history = Table(  # v2
    "judgement_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("judgement_id", Integer, nullable=False, index=True),
    Column("task_id", Integer, nullable=False),
    Column("user_id", Integer, nullable=False),
    Column("submission_id", String(64), nullable=False, index=True),
    Column("event", String(16), nullable=False),  # "edit" | "undo"
    Column("snapshot", JSON, nullable=False),  # the judgement row before the event
    Column("recorded_at", DateTime, nullable=False),
)

app_settings = Table(  # v3
    "app_settings",
    metadata,
    Column("key", String(100), primary_key=True),  # "guidelines"
    Column("value", Text, nullable=False),
)

login_throttle = Table(  # v3
    "login_throttle",
    metadata,
    Column("key", String(400), primary_key=True),  # "pair:<name>@<address>" | "address:<address>" | "account:<name>"
    Column("failures", Integer, nullable=False),  # failed logins in a row
    Column("blocked_until", DateTime),
    Column("updated_at", DateTime, nullable=False),
)


def _add_column(conn: Connection, column: Column) -> None:
    """ALTER TABLE ... ADD COLUMN with the column's DDL rendered by the connection's dialect."""
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    table = conn.dialect.identifier_preparer.format_table(column.table)
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {ddl}"))


def _v1_to_v2(conn: Connection) -> None:
    _add_column(conn, users.c.failed_logins)
    _add_column(conn, users.c.locked_until)
    judgement_history.create(conn)


def _v2_to_v3(conn: Connection) -> None:
    for column in (
        tasks.c.task_set,
        tasks.c.instructions,
        tasks.c.rating_scale,
        users.c.quota,
        users.c.removed_at,
    ):
        _add_column(conn, column)
    app_settings.create(conn)
    login_throttle.create(conn)
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite_judgements(conn)
    else:
        _add_column(conn, judgements.c.withdrawn_at)
        _add_column(conn, judgements.c.rating)
        for constraint in inspect(conn).get_unique_constraints("judgements"):
            if sorted(constraint["column_names"]) == ["task_id", "user_id"]:
                conn.execute(text(f'ALTER TABLE judgements DROP CONSTRAINT "{constraint["name"]}"'))
        for index in judgements.indexes:
            if index.unique:
                index.create(conn)


def _rebuild_sqlite_judgements(conn: Connection) -> None:
    """Re-create judgements with the v3 constraints around the same rows (same ids).

    The AUTOINCREMENT counter starts above every id a judgement ever had, including v2 rows that an undo
    deleted and that only judgement_history still names.
    """
    old_indexes = conn.execute(
        text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'judgements' AND sql IS NOT NULL")
    ).scalars()
    for name in list(old_indexes):
        conn.execute(text(f'DROP INDEX "{name}"'))
    conn.execute(text("ALTER TABLE judgements RENAME TO judgements_v2"))
    judgements.create(conn)
    kept = ", ".join(c.name for c in judgements.columns if c.name not in ("withdrawn_at", "rating"))
    conn.execute(text(f"INSERT INTO judgements ({kept}) SELECT {kept} FROM judgements_v2"))
    conn.execute(text("DROP TABLE judgements_v2"))
    highest = conn.scalar(
        text(
            "SELECT max(coalesce((SELECT max(id) FROM judgements), 0),"
            " coalesce((SELECT max(judgement_id) FROM judgement_history), 0))"
        )
    )
    conn.execute(text("DELETE FROM sqlite_sequence WHERE name = 'judgements'"))
    conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES ('judgements', :seq)"), {"seq": highest})


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


def ensure_schema(conn: Connection, where: str) -> int:
    """Create the schema in an empty database or upgrade an older one; return the version found.

    ``where`` names the database in error messages. Runs inside the caller's transaction.
    """
    inspector = inspect(conn)
    if not inspector.has_table("schema_version"):
        if inspector.has_table("judgements"):
            raise DataError(f"{where}: has annotation tables but no schema_version table; not an annotation store")
        metadata.create_all(conn)
        conn.execute(insert(schema_version).values(version=CURRENT_VERSION))
        return 0
    found = conn.scalar(select(schema_version.c.version))
    if found is None or found > CURRENT_VERSION:
        raise DataError(
            f"{where}: schema_version is {found}, this code reads versions 1..{CURRENT_VERSION}; "
            "upgrade the alignment package"
        )
    for version in range(found, CURRENT_VERSION):
        MIGRATIONS[version](conn)
    conn.execute(update(schema_version).values(version=CURRENT_VERSION))
    return found
