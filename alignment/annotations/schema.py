"""Database schema of the annotation store and its in-place migrations.

The schema version lives in the one-row table ``schema_version``. ``ensure_schema`` creates a new
database at ``CURRENT_VERSION`` or upgrades an older one step by step; each step is a function of
``MIGRATIONS`` that only adds (tables, nullable or defaulted columns), so old rows stay valid.

Version history:
  1: prompts, candidates, tasks, task_candidates, users, reservations, judgements.
  2: users.failed_logins + users.locked_until (login lockout), judgement_history (edits and undos).
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
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.schema import CreateColumn

from alignment.errors import DataError

CURRENT_VERSION = 2

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
    Column("kind", String(16), nullable=False),  # "pairwise" | "ranking"
    Column("judgements_needed", Integer, nullable=False),
    Column("is_gold", Boolean, nullable=False, default=False),
    Column("gold_ranks", JSON),  # {candidate_id (str): rank}, 1 = best; gold tasks only
    Column("created_at", DateTime, nullable=False),
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
    Column("failed_logins", Integer, nullable=False, server_default="0"),  # v2
    Column("locked_until", DateTime),  # v2
    Column("created_at", DateTime, nullable=False),
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
    UniqueConstraint("task_id", "user_id"),
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


def _add_column(conn: Connection, column: Column) -> None:
    """ALTER TABLE ... ADD COLUMN with the column's DDL rendered by the connection's dialect."""
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    table = conn.dialect.identifier_preparer.format_table(column.table)
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {ddl}"))


def _v1_to_v2(conn: Connection) -> None:
    _add_column(conn, users.c.failed_logins)
    _add_column(conn, users.c.locked_until)
    judgement_history.create(conn)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}


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
