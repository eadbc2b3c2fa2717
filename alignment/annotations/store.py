"""The annotation store: prompts, candidates, tasks, raters, the work queue and judgements.

Every public method runs in its own transaction. On SQLite (the default: a file path) connections use
WAL, foreign keys and a busy timeout, and write transactions start with ``BEGIN IMMEDIATE`` so
concurrent writers queue for the lock instead of failing with "database is locked". Any other
SQLAlchemy URL (e.g. ``postgresql://...``) works through the same Core statements; on PostgreSQL write
transactions first take one transaction-level advisory lock, so writers queue there too and a task is
never booked twice by raters racing for its last place.

Judgements are never deleted: an undo marks the row ``withdrawn_at``, and only rows without that mark
(the *current* judgements) count anywhere (queue, progress, exports, reports).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import statistics
import string
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from alignment.annotations import agreement
from alignment.annotations import export as export_rules
from alignment.annotations.passwords import dummy_hash, hash_password, verify_password
from alignment.annotations.records import STRENGTH_MARGIN, Candidate, JudgementRecord
from alignment.annotations.schema import (
    CURRENT_JUDGEMENT,
    app_settings,
    candidates,
    ensure_schema,
    judgement_history,
    judgements,
    login_throttle,
    prompts,
    reservations,
    task_candidates,
    tasks,
    users,
)
from alignment.errors import AlignmentError, DataError

ROLES = ("rater", "admin")
CHOICES = ("A", "B", "tie", "both_bad")
FLAGS = ("harmful", "off_topic", "broken")
TASK_KINDS = ("pairwise", "ranking", "rating")
RATING_SCALES: dict[str, tuple[int, ...]] = {"binary": (0, 1), "likert5": (1, 2, 3, 4, 5)}
"""Allowed ratings per scale: binary 0 = thumbs down, 1 = up; likert5 1 (worst) .. 5 (best)."""
TaskKind = Literal["pairwise", "ranking", "rating"]

WRONG_LOGIN = "Wrong user name or password."
THROTTLE_SCOPES = {
    "pair": "for this account from your address",
    "address": "from your address",
    "account": "for this account",
}
_ASK_RATING = {
    "binary": "Choose thumbs up or thumbs down.",
    "likert5": "Choose a rating from 1 (worst) to 5 (best).",
}


class AccessDenied(AlignmentError):
    """A user asked for something their role or assignments do not allow."""


@dataclass
class QueueSettings:
    """How the work queue, logins and content limits behave."""

    reservation_ttl_s: int = field(
        default=1800,
        metadata={"help": "Seconds a served task stays reserved for its rater before returning to the pool."},
    )
    gold_rate: float = field(
        default=0.1, metadata={"help": "Probability that next_task serves a gold task when one is available."}
    )
    max_failed_logins: int = field(
        default=5,
        metadata={"help": "Failed logins in a row for one account from one address before logins back off."},
    )
    max_failed_logins_per_address: int = field(
        default=20, metadata={"help": "Failed logins in a row from one address (any names) before logins back off."}
    )
    max_failed_logins_per_account: int = field(
        default=50, metadata={"help": "Failed logins in a row for one account (any address) before logins back off."}
    )
    lockout_s: int = field(
        default=300,
        metadata={"help": "Longest login back-off in seconds: a failure at or past a limit blocks for "
                          "min(lockout_s, 2**(failures - limit)) seconds."},
    )
    max_text_chars: int = field(
        default=100_000,
        metadata={"help": "Longest prompt, candidate, task instructions or guidelines, in characters."},
    )
    max_rationale_chars: int = field(default=5_000, metadata={"help": "Longest rater rationale, in characters."})
    seed: int = field(default=0, metadata={"help": "Seed of task sampling, gold mixing and per-rater shuffles."})


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login: ``message`` is shown to the person logging in when ``ok`` is False."""

    ok: bool
    message: str = ""
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class CandidateView:
    id: int
    label: str
    text: str


@dataclass(frozen=True)
class TaskView:
    """A task as one rater sees it: candidates in that rater's shuffled order, labelled A, B, C...

    ``previous`` holds the rater's earlier answer (after an undo, or when editing) in the same order.
    ``instructions`` (markdown) come with the task; ``rating_scale`` is set for rating tasks.
    """

    task_id: int
    kind: str
    prompt: str
    candidates: list[CandidateView]
    expires_at: str | None = None
    previous: dict[str, Any] | None = None
    task_set: str = "default"
    instructions: str | None = None
    rating_scale: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label_of(self, candidate_id: int) -> str:
        """The label ("A", "B", ...) under which this rater sees a candidate."""
        return next(c.label for c in self.candidates if c.id == candidate_id)

    def shown_ranks(self, rank_of: dict[int, int]) -> list[int]:
        """``submit(ranks=...)`` for ranks keyed by candidate id: one rank per candidate in shown order."""
        return [rank_of[c.id] for c in self.candidates]


def _content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _utc(moment: datetime) -> datetime:
    """Naive UTC, as stored in DateTime columns on every backend."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _int_keys(mapping: dict | None) -> dict[int, int]:
    return {int(k): int(v) for k, v in (mapping or {}).items()}


def _str_keys(mapping: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in mapping.items()}


def _jsonable(row: Row) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row._mapping.items()}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _check_length(what: str, text: str, limit: int) -> None:
    """DataError naming ``what`` when ``text`` is longer than ``limit`` characters."""
    if len(text) > limit:
        raise DataError(f"{what} is {len(text):,} characters long; the limit is {limit:,} characters.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag_names(row: Any) -> list[str]:
    return [f for f in FLAGS if row[f"flag_{f}"]]


_ANY_FLAG = or_(judgements.c.flag_harmful, judgements.c.flag_off_topic, judgements.c.flag_broken)


def _throttle_keys(name: str, address: str) -> dict[str, str]:
    """The login_throttle keys of one login attempt, by scope."""
    return {"pair": f"pair:{name}@{address}", "address": f"address:{address}", "account": f"account:{name}"}


def _throttled_account(key: str) -> str | None:
    """The account name a pair: or account: throttle key is about; None for address: keys."""
    scope, _, rest = key.partition(":")
    if scope == "account":
        return rest
    return rest.rpartition("@")[0] if scope == "pair" else None


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` (``\\`` escapes)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://")[0] + "://…"


def _make_engine(url_or_path: str | Path) -> Engine:
    url = str(url_or_path)
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    if not url.startswith("sqlite"):
        try:
            return create_engine(url, pool_pre_ping=True)
        except (ArgumentError, ModuleNotFoundError) as e:  # a bad URL, an unknown dialect or a missing driver
            raise DataError(f"{_without_password(url)}: cannot open this database URL ({e}); a SQLite file path, or "
                            "postgresql+psycopg://USER:PASSWORD@HOST/DB with `pip install 'alignment[postgres]'`") from e
    if url in ("sqlite://", "sqlite:///:memory:"):
        raise DataError(f"{url}: an in-memory SQLite database is not shared between connections; give a file path")
    engine = create_engine(url, connect_args={"timeout": 60}, pool_size=10, max_overflow=30)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cursor = dbapi_conn.cursor()
        for pragma in ("busy_timeout=60000", "journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


_TASK_CACHE = 4096


@dataclass(frozen=True)
class _TaskContent:
    kind: str
    prompt: str
    texts: dict[int, str]  # candidate id -> text, canonical order
    task_set: str
    instructions: str | None
    rating_scale: str | None


@dataclass(frozen=True)
class _ImportRow:
    """One validated row of a task or gold file."""

    prompt: str
    candidates: list[dict[str, Any]]  # {"text", "policy"?, "sampling"?}
    instructions: str | None
    ranks: list[int] | None  # gold files only


@functools.cache
def _eligible_tasks() -> Select:
    """Task ids that user :user_id may be served at :now, best first.

    Not currently judged by the user, and gold or not fully booked (current judgements + others' live
    reservations < needed); partly done tasks first so tasks complete early.
    """
    user_id, now = bindparam("user_id"), bindparam("now")
    judged = select(judgements.c.task_id).where(judgements.c.user_id == user_id, CURRENT_JUDGEMENT)
    done = (
        select(judgements.c.task_id, func.count().label("n"))
        .where(judgements.c.skipped.is_(False), CURRENT_JUDGEMENT)
        .group_by(judgements.c.task_id)
        .subquery()
    )
    held = (
        select(reservations.c.task_id, func.count().label("n"))
        .where(reservations.c.expires_at > now, reservations.c.user_id != user_id)
        .group_by(reservations.c.task_id)
        .subquery()
    )
    load = func.coalesce(done.c.n, 0) + func.coalesce(held.c.n, 0)
    return (
        select(tasks.c.id)
        .outerjoin(done, done.c.task_id == tasks.c.id)
        .outerjoin(held, held.c.task_id == tasks.c.id)
        .where(tasks.c.id.not_in(judged), or_(tasks.c.is_gold, load < tasks.c.judgements_needed))
        .order_by(load.desc(), tasks.c.id)
    )


@functools.cache
def _first_eligible() -> Select:
    return _eligible_tasks().where(tasks.c.is_gold == bindparam("gold")).limit(1)


@functools.cache
def _held_task() -> Select:
    """The oldest live reservation of :user_id on a task they have no current judgement of."""
    user_id = bindparam("user_id")
    judged = select(judgements.c.task_id).where(judgements.c.user_id == user_id, CURRENT_JUDGEMENT)
    return (
        select(reservations.c.task_id)
        .where(
            reservations.c.user_id == user_id,
            reservations.c.expires_at > bindparam("now"),
            reservations.c.task_id.not_in(judged),
        )
        .order_by(reservations.c.id)
        .limit(1)
    )


@functools.cache
def _task_table() -> Select:
    """One row per task: set, kind, gold, needed, current non-skipped judgements, flagged judgements, size."""
    counts = (
        select(
            judgements.c.task_id,
            func.sum(case((judgements.c.skipped.is_(False), 1), else_=0)).label("done"),
            func.sum(case((_ANY_FLAG, 1), else_=0)).label("flagged"),
        )
        .where(CURRENT_JUDGEMENT)
        .group_by(judgements.c.task_id)
        .subquery()
    )
    sizes = (
        select(task_candidates.c.task_id, func.count().label("n")).group_by(task_candidates.c.task_id).subquery()
    )
    return (
        select(
            tasks.c.id,
            tasks.c.task_set,
            tasks.c.kind,
            tasks.c.is_gold,
            tasks.c.judgements_needed,
            func.substr(prompts.c.text, 1, 200).label("prompt"),
            func.coalesce(sizes.c.n, 0).label("candidates"),
            func.coalesce(counts.c.done, 0).label("judgements"),
            func.coalesce(counts.c.flagged, 0).label("flagged"),
        )
        .join(prompts, prompts.c.id == tasks.c.prompt_id)
        .outerjoin(sizes, sizes.c.task_id == tasks.c.id)
        .outerjoin(counts, counts.c.task_id == tasks.c.id)
        .order_by(tasks.c.id)
    )


def _summarise(rows: Sequence[Row]) -> dict[str, int]:
    """Collection counts over task-table rows; gold tasks count only in gold_tasks (and flagged_tasks)."""
    regular = [r for r in rows if not r.is_gold]
    return {
        "tasks": len(regular),
        "tasks_complete": sum(r.judgements >= r.judgements_needed for r in regular),
        "judgements": sum(min(r.judgements, r.judgements_needed) for r in regular),
        "judgements_needed": sum(r.judgements_needed for r in regular),
        "gold_tasks": len(rows) - len(regular),
        "flagged_tasks": sum(r.flagged > 0 for r in rows),
    }


_SQLITE_WRITE_LOCKS: dict[str, threading.Lock] = {}
_POSTGRES_WRITE_LOCK = 0x616E6E6F  # the advisory lock key every write transaction holds ("anno")


def _process_write_lock(engine: Engine) -> AbstractContextManager:
    """One lock per SQLite file for this process's writers: threads queue here instead of SQLite's busy-sleep."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    return _SQLITE_WRITE_LOCKS.setdefault(str(engine.url), threading.Lock())


class AnnotationStore:
    """Preference annotations in a SQL database (a SQLite file path or any SQLAlchemy URL).

    Opening an older schema upgrades it in place. ``clock`` returns the current time (tests move it).
    """

    def __init__(
        self,
        url_or_path: str | Path,
        settings: QueueSettings | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings or QueueSettings()
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._rng = random.Random(self.settings.seed)
        self._where = str(url_or_path)
        self._engine = _make_engine(url_or_path)
        self._write_lock = _process_write_lock(self._engine)
        self._user_ids: dict[str, int] = {}
        self._tasks: OrderedDict[int, _TaskContent] = OrderedDict()  # LRU, at most _TASK_CACHE entries
        with self._tx() as conn:
            self.upgraded_from = ensure_schema(conn, self._where)

    def close(self) -> None:
        self._engine.dispose()

    # ---------------------------------------------------------------- plumbing

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Connection]:
        with self._write_lock if write else nullcontext(), self._engine.connect() as conn:
            conn.execution_options(write=write)
            with conn.begin():
                if write and conn.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(_POSTGRES_WRITE_LOCK)))
                yield conn

    def _now(self) -> datetime:
        return _utc(self._clock())

    def _user_id(self, conn: Connection, name: str) -> int:
        """The id of a user who is not removed (cached: users are never renumbered); AccessDenied otherwise."""
        if name not in self._user_ids:
            found = conn.scalar(select(users.c.id).where(users.c.name == name, users.c.removed_at.is_(None)))
            if found is None:
                raise AccessDenied(f"{self._where}: no user named {name!r}")
            self._user_ids[name] = found
        return self._user_ids[name]

    def _task(self, conn: Connection, task_id: int) -> _TaskContent:
        """A task's content and candidate texts in canonical order (cached: tasks never change)."""
        if task_id in self._tasks:
            self._tasks.move_to_end(task_id)
        else:
            task = conn.execute(
                select(tasks.c.kind, tasks.c.task_set, tasks.c.instructions, tasks.c.rating_scale, prompts.c.text)
                .join(prompts, prompts.c.id == tasks.c.prompt_id)
                .where(tasks.c.id == task_id)
            ).first()
            if task is None:
                raise DataError(f"{self._where}: no task with id {task_id}")
            texts = conn.execute(
                select(candidates.c.id, candidates.c.text)
                .join(task_candidates, task_candidates.c.candidate_id == candidates.c.id)
                .where(task_candidates.c.task_id == task_id)
                .order_by(task_candidates.c.position)
            )
            self._tasks[task_id] = _TaskContent(
                task.kind, task.text, dict(texts.all()), task.task_set, task.instructions, task.rating_scale
            )
            if len(self._tasks) > _TASK_CACHE:
                self._tasks.popitem(last=False)
        return self._tasks[task_id]

    def _check_text(self, what: str, text: Any) -> str:
        if not isinstance(text, str):
            raise DataError(f"{what}: expected a string, got {type(text).__name__}")
        _check_length(what, text, self.settings.max_text_chars)
        return text

    # ---------------------------------------------------------------- users

    def role(self, name: str) -> str | None:
        """The user's role ("rater" | "admin"), or None when there is no such user (or they were removed)."""
        with self._tx(write=False) as conn:
            return conn.scalar(select(users.c.role).where(users.c.name == name, users.c.removed_at.is_(None)))

    def require_admin(self, name: str) -> None:
        """Raise AccessDenied unless ``name`` is an admin."""
        if self.role(name) != "admin":
            raise AccessDenied(f"user {name!r} is not an admin")

    def users(self, include_removed: bool = False) -> list[dict[str, Any]]:
        """Every user by name: name, role, quota, created_at, removed, blocked_until, failed_logins.

        ``blocked_until`` is the latest back-off end of the account's throttle keys while it lies in the
        future (else None); ``failed_logins`` counts failures in a row for the account from any address.
        """
        query = select(users).order_by(users.c.name)
        if not include_removed:
            query = query.where(users.c.removed_at.is_(None))
        with self._tx(write=False) as conn:
            rows = conn.execute(query).all()
            throttle = conn.execute(
                select(login_throttle).where(
                    or_(login_throttle.c.key.like("pair:%"), login_throttle.c.key.like("account:%"))
                )
            ).all()
        now = self._now()
        blocked: dict[str, datetime] = {}
        failures: dict[str, int] = {}
        for t in throttle:
            name = _throttled_account(t.key)
            if t.key.startswith("account:"):
                failures[name] = t.failures
            if t.blocked_until is not None and t.blocked_until > now:
                blocked[name] = max(blocked.get(name, t.blocked_until), t.blocked_until)
        return [
            {
                "name": u.name,
                "role": u.role,
                "quota": u.quota,
                "created_at": u.created_at.isoformat(),
                "removed": u.removed_at is not None,
                "blocked_until": _iso(blocked.get(u.name)),
                "failed_logins": failures.get(u.name, 0),
            }
            for u in rows
        ]

    def add_user(self, name: str, role: str, password: str, quota: int | None = None) -> int:
        """Add a user with a salted scrypt hash of ``password``; return the id."""
        if role not in ROLES:
            raise DataError(f"add_user {name!r}: role must be one of {ROLES}, got {role!r}")
        if not name or not password:
            raise DataError("add_user: name and password must not be empty")
        self._check_quota(name, quota)
        with self._tx() as conn:
            existing = conn.execute(select(users.c.removed_at).where(users.c.name == name)).first()
            if existing is not None:
                removed = " (removed, with their judgements kept)" if existing.removed_at else ""
                raise DataError(f"{self._where}: user {name!r} already exists{removed}; choose another name")
            values = {
                "name": name,
                "role": role,
                "password_hash": hash_password(password),
                "quota": quota,
                "created_at": self._now(),
            }
            return conn.execute(insert(users).values(**values)).inserted_primary_key[0]

    def remove_user(self, name: str) -> None:
        """Remove a user: they can no longer log in, their reservations are released, their judgements stay."""
        with self._tx() as conn:
            user = self._user_row(conn, name)
            self._keep_an_admin(conn, user, "remove")
            conn.execute(update(users).where(users.c.id == user.id).values(removed_at=self._now()))
            conn.execute(delete(reservations).where(reservations.c.user_id == user.id))
        self._user_ids.pop(name, None)

    def set_password(self, name: str, password: str) -> None:
        """Give a user a new password; this also unlocks the account (see ``unlock``)."""
        if not password:
            raise DataError(f"set_password {name!r}: the password must not be empty")
        with self._tx() as conn:
            user = self._user_row(conn, name)
            conn.execute(update(users).where(users.c.id == user.id).values(password_hash=hash_password(password)))
            self._clear_throttle(conn, name)

    def unlock(self, name: str) -> None:
        """Forget the account's failed logins (its pair: and account: throttle keys; address keys stay)."""
        with self._tx() as conn:
            self._user_row(conn, name)
            self._clear_throttle(conn, name)

    def set_role(self, name: str, role: str) -> None:
        """Make a user a rater or an admin; the last admin cannot be demoted."""
        if role not in ROLES:
            raise DataError(f"set_role {name!r}: role must be one of {ROLES}, got {role!r}")
        with self._tx() as conn:
            user = self._user_row(conn, name)
            if role != "admin":
                self._keep_an_admin(conn, user, "demote")
            conn.execute(update(users).where(users.c.id == user.id).values(role=role))

    def set_quota(self, name: str, quota: int | None) -> None:
        """Limit how many tasks (judgements and skips) the user is served; None removes the limit."""
        self._check_quota(name, quota)
        with self._tx() as conn:
            user = self._user_row(conn, name)
            conn.execute(update(users).where(users.c.id == user.id).values(quota=quota))

    @staticmethod
    def _check_quota(name: str, quota: Any) -> None:
        if quota is not None and not (_is_int(quota) and quota >= 0):
            raise DataError(f"quota of {name!r}: expected a whole number >= 0 or none, got {quota!r}")

    def _user_row(self, conn: Connection, name: str) -> Row:
        user = conn.execute(select(users).where(users.c.name == name, users.c.removed_at.is_(None))).first()
        if user is None:
            raise DataError(f"{self._where}: no user named {name!r}")
        return user

    @staticmethod
    def _keep_an_admin(conn: Connection, user: Row, doing: str) -> None:
        if user.role != "admin":
            return
        admins = conn.scalar(
            select(func.count()).where(users.c.role == "admin", users.c.removed_at.is_(None))
        )
        if admins <= 1:
            raise DataError(f"{user.name!r} is the last admin; make another user an admin before you {doing} them")

    @staticmethod
    def _clear_throttle(conn: Connection, name: str) -> None:
        pairs = conn.execute(
            select(login_throttle.c.key).where(login_throttle.c.key.like(_like_prefix(f"pair:{name}@"), escape="\\"))
        ).scalars()
        keys = [key for key in pairs if _throttled_account(key) == name] + [f"account:{name}"]
        conn.execute(delete(login_throttle).where(login_throttle.c.key.in_(keys)))

    # ---------------------------------------------------------------- logins

    def login(self, name: str, password: str, address: str = "local") -> LoginResult:
        """Check a password, with back-off per account+address, per address and per account.

        Each scope (``pair:<name>@<address>``, ``address:<address>``, ``account:<name>``) counts failures
        in a row; once they reach its limit (``settings.max_failed_logins``, ``..._per_address``,
        ``..._per_account``) each failure blocks the scope for min(``lockout_s``, 2**(failures - limit))
        seconds, during which attempts are refused without checking the password (and not counted). A success clears the pair and account scopes,
        so a stranger guessing from another address cannot lock a rater out for long. Unknown and
        removed names are checked against a dummy hash and get the same message as a wrong password.
        """
        address = str(address)[:150]
        keys = _throttle_keys(name, address)
        now = self._now()
        with self._tx(write=False) as conn:
            blocked = dict(
                conn.execute(
                    select(login_throttle.c.key, login_throttle.c.blocked_until).where(
                        login_throttle.c.key.in_(list(keys.values())), login_throttle.c.blocked_until > now
                    )
                ).all()
            )
            stored = conn.scalar(
                select(users.c.password_hash).where(users.c.name == name, users.c.removed_at.is_(None))
            )
        if blocked:
            scope = max((s for s in keys if keys[s] in blocked), key=lambda s: blocked[keys[s]])
            wait = (blocked[keys[scope]] - now).total_seconds()
            return LoginResult(
                False,
                f"Too many failed logins {THROTTLE_SCOPES[scope]}. Try again in {math.ceil(wait)} s, "
                "or ask an admin to unlock the account.",
                wait,
            )
        ok = verify_password(password, stored or dummy_hash()) and stored is not None
        self._record_login(keys, ok, now)
        return LoginResult(True) if ok else LoginResult(False, WRONG_LOGIN)

    def _record_login(self, keys: dict[str, str], ok: bool, now: datetime) -> None:
        limits = {
            "pair": self.settings.max_failed_logins,
            "address": self.settings.max_failed_logins_per_address,
            "account": self.settings.max_failed_logins_per_account,
        }
        with self._tx() as conn:
            if ok:
                conn.execute(delete(login_throttle).where(login_throttle.c.key.in_([keys["pair"], keys["account"]])))
                return
            for scope, key in keys.items():
                self._count_failure(conn, key, limits[scope], now)

    def _count_failure(self, conn: Connection, key: str, limit: int, now: datetime) -> None:
        previous = conn.scalar(select(login_throttle.c.failures).where(login_throttle.c.key == key))
        failures = (previous or 0) + 1
        over = failures - limit
        blocked = now + timedelta(seconds=min(self.settings.lockout_s, 2**over)) if over >= 0 else None
        values = {"failures": failures, "blocked_until": blocked, "updated_at": now}
        if previous is None:
            conn.execute(insert(login_throttle).values(key=key, **values))
        else:
            conn.execute(update(login_throttle).where(login_throttle.c.key == key).values(**values))

    def authenticate(self, name: str, password: str) -> bool:
        """``login(name, password).ok`` (address "local"), for callers that only need yes or no."""
        return self.login(name, password).ok

    # ---------------------------------------------------------------- content

    def add_prompt(self, text: str, meta: dict | None = None) -> int:
        """Id of the prompt with this text, adding it if new (deduplicated by content hash)."""
        with self._tx() as conn:
            return self._add_prompt(conn, self._check_text("the prompt", text), meta)

    def _add_prompt(self, conn: Connection, text: str, meta: dict | None = None) -> int:
        digest = _content_hash(text)
        found = conn.scalar(select(prompts.c.id).where(prompts.c.content_hash == digest))
        if found is not None:
            return found
        values = {"text": text, "content_hash": digest, "meta": meta, "created_at": self._now()}
        return conn.execute(insert(prompts).values(**values)).inserted_primary_key[0]

    def add_candidates(self, prompt_id: int, items: Sequence[dict[str, Any]]) -> list[int]:
        """Ids of candidates ``{"text", "policy", "sampling"}`` for a prompt, one per item, in order.

        A text already stored for this prompt (same content hash) returns the existing id; nothing is duplicated.
        """
        checked = [self._candidate(f"candidate {i} for prompt {prompt_id}", item) for i, item in enumerate(items)]
        with self._tx() as conn:
            if conn.scalar(select(prompts.c.id).where(prompts.c.id == prompt_id)) is None:
                raise DataError(f"{self._where}: no prompt with id {prompt_id}")
            return [self._add_candidate(conn, prompt_id, item) for item in checked]

    def _candidate(self, where: str, item: Any) -> dict[str, Any]:
        """A candidate given as a text or ``{"text", "policy"?, "sampling"?}``, checked."""
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise DataError(f"{where}: expected a text string or an object with a 'text' string, got {item!r:.80}")
        _check_length(where, item["text"], self.settings.max_text_chars)
        sampling = item.get("sampling")
        if sampling is not None and not isinstance(sampling, dict):
            raise DataError(f"{where}: 'sampling' must be an object of sampling settings, got {sampling!r:.80}")
        return {"text": item["text"], "policy": str(item.get("policy", "unknown")), "sampling": sampling}

    def _add_candidate(self, conn: Connection, prompt_id: int, item: dict[str, Any]) -> int:
        digest = _content_hash(item["text"])
        found = conn.scalar(
            select(candidates.c.id).where(candidates.c.prompt_id == prompt_id, candidates.c.content_hash == digest)
        )
        if found is not None:
            return found
        values = {"prompt_id": prompt_id, **item, "content_hash": digest, "created_at": self._now()}
        return conn.execute(insert(candidates).values(**values)).inserted_primary_key[0]

    # ---------------------------------------------------------------- tasks

    def create_tasks(
        self,
        kind: TaskKind = "ranking",
        k: int = 4,
        judgements_per_task: int = 3,
        tasks_per_prompt: int = 1,
        gold: Sequence[Sequence[int]] | None = None,
    ) -> list[int]:
        """Top up every prompt to ``tasks_per_prompt`` tasks of ``kind`` in task set "default"; return new ids.

        Each task covers ``k`` distinct candidates of one prompt (always 2 for pairwise), sampled without
        repeating a candidate set; prompts with fewer than ``k`` candidates get none. Each task wants
        ``judgements_per_task`` judgements from distinct raters. ``gold`` lists known answers, each
        candidate ids best first (one prompt each): a gold task is made for each set not yet present.
        Gold tasks are shown to every rater once, mixed in at ``settings.gold_rate``.
        Rating tasks come from ``import_tasks``.
        """
        if kind not in ("pairwise", "ranking"):
            raise DataError(f"create_tasks: kind must be 'pairwise' or 'ranking', got {kind!r}")
        k = 2 if kind == "pairwise" else k
        if k < 2 or judgements_per_task < 1:
            raise DataError(f"create_tasks: need k >= 2 and judgements_per_task >= 1, got k={k}, {judgements_per_task}")
        with self._tx() as conn:
            existing = self._existing_sets(conn, kind, "default")
            by_prompt: dict[int, list[int]] = {}
            for cid, pid in conn.execute(select(candidates.c.id, candidates.c.prompt_id).order_by(candidates.c.id)):
                by_prompt.setdefault(pid, []).append(cid)
            new = []
            for pid, ids in by_prompt.items():
                have = existing.get((pid, False), set())
                for subset in self._sample_sets(pid, ids, k, tasks_per_prompt - len(have), have):
                    new.append(self._insert_task(conn, pid, kind, subset, judgements_per_task))
            for answer in gold or ():
                new.extend(self._insert_gold(conn, kind, list(answer), judgements_per_task, existing))
            return new

    def _existing_sets(self, conn: Connection, kind: str, task_set: str) -> dict[tuple[int, bool], set[frozenset[int]]]:
        """(prompt id, is gold) -> candidate sets of the tasks of this kind in this task set."""
        rows = conn.execute(
            select(tasks.c.id, tasks.c.prompt_id, tasks.c.is_gold, task_candidates.c.candidate_id)
            .join(task_candidates, task_candidates.c.task_id == tasks.c.id)
            .where(tasks.c.kind == kind, tasks.c.task_set == task_set)
        )
        members: dict[int, tuple[tuple[int, bool], set[int]]] = {}
        for task_id, pid, is_gold, cid in rows:
            members.setdefault(task_id, ((pid, bool(is_gold)), set()))[1].add(cid)
        existing: dict[tuple[int, bool], set[frozenset[int]]] = {}
        for key, ids in members.values():
            existing.setdefault(key, set()).add(frozenset(ids))
        return existing

    def _sample_sets(
        self, prompt_id: int, ids: list[int], k: int, count: int, taken: set[frozenset[int]]
    ) -> list[tuple[int, ...]]:
        if count <= 0 or len(ids) < k:
            return []
        subsets = [s for s in combinations(ids, k) if frozenset(s) not in taken]
        random.Random(f"{self.settings.seed}:{prompt_id}:{k}").shuffle(subsets)
        return subsets[:count]

    def _insert_gold(
        self, conn: Connection, kind: str, best_first: list[int], needed: int, existing: dict
    ) -> list[int]:
        if kind == "pairwise" and len(best_first) != 2:
            raise DataError(f"gold answer {best_first}: a pairwise gold task needs exactly 2 candidate ids")
        rows = conn.execute(select(candidates.c.id, candidates.c.prompt_id).where(candidates.c.id.in_(best_first)))
        prompt_of = dict(rows.all())
        missing = [c for c in best_first if c not in prompt_of]
        if missing or len(set(prompt_of.values())) != 1 or len(set(best_first)) < 2:
            raise DataError(
                f"gold answer {best_first}: needs >= 2 distinct existing candidate ids of one prompt "
                f"(unknown: {missing})"
            )
        pid = prompt_of[best_first[0]]
        if frozenset(best_first) in existing.get((pid, True), set()):
            return []
        ranks = {cid: rank for rank, cid in enumerate(best_first, start=1)}
        return [self._insert_task(conn, pid, kind, tuple(best_first), needed, ranks)]

    def _insert_task(
        self,
        conn: Connection,
        prompt_id: int,
        kind: str,
        ids: Sequence[int],
        needed: int,
        gold: dict | None = None,
        task_set: str = "default",
        instructions: str | None = None,
        rating_scale: str | None = None,
    ) -> int:
        values = {
            "prompt_id": prompt_id,
            "kind": kind,
            "judgements_needed": needed,
            "is_gold": gold is not None,
            "gold_ranks": _str_keys(gold) if gold else None,
            "created_at": self._now(),
            "task_set": task_set,
            "instructions": instructions,
            "rating_scale": rating_scale,
        }
        task_id = conn.execute(insert(tasks).values(**values)).inserted_primary_key[0]
        rows = [{"task_id": task_id, "candidate_id": c, "position": i} for i, c in enumerate(sorted(ids))]
        conn.execute(insert(task_candidates), rows)
        return task_id

    def import_tasks(
        self,
        rows: Iterable[Any],
        *,
        task_set: str,
        kind: TaskKind = "ranking",
        k: int | None = None,
        judgements_per_task: int = 3,
        instructions: str | None = None,
        rating_scale: str = "likert5",
        source: str = "import",
    ) -> dict[str, int]:
        """Add the tasks of a file's rows to ``task_set``; return how many prompts, candidates, tasks were new.

        A row is ``{"prompt", "candidates": [text | {"text", "policy"?, "sampling"?}, ...]}`` or a ranking
        file's ``{"prompt", "completions": [...], "ranks"?}`` (ranks ignored), with optional
        ``"instructions"`` (markdown; else the ``instructions`` given here). ranking: one task per row over
        all its candidates, or over ``k`` sampled ones; pairwise: a row has exactly 2 candidates, or with
        ``k`` given, ``k`` distinct pairs are sampled from its candidates as ``create_tasks`` does; rating:
        one task per candidate on ``rating_scale``. A bad row raises DataError "<source> row <n>: ..." and
        nothing of the file is stored. Re-importing adds nothing: prompts and candidates are deduplicated by
        content, tasks by candidate set, task set and kind.
        """
        self._check_task_set(source, task_set)
        if kind not in TASK_KINDS:
            raise DataError(f"{source}: kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}")
        if not _is_int(judgements_per_task) or judgements_per_task < 1:
            raise DataError(f"{source}: judgements_per_task must be a whole number >= 1, got {judgements_per_task!r}")
        if kind == "rating" and rating_scale not in RATING_SCALES:
            raise DataError(f"{source}: rating_scale must be one of {', '.join(RATING_SCALES)}, got {rating_scale!r}")
        if k is not None and (kind == "rating" or not _is_int(k) or k < (2 if kind == "ranking" else 1)):
            expected = {"ranking": "candidates per task, >= 2", "pairwise": "pairs per row, >= 1"}
            raise DataError(f"{source}: k ({expected.get(kind, 'unused by rating tasks')}) got {k!r}")
        if instructions is not None:
            self._check_text(f"{source}: the instructions", instructions)
        parsed = [self._import_row(f"{source} row {n}", row, kind, k, gold=False) for n, row in enumerate(rows, 1)]
        with self._tx() as conn:
            return self._store_rows(
                conn, parsed, task_set, kind, k, judgements_per_task, instructions,
                rating_scale if kind == "rating" else None,
            )  # fmt: skip

    def import_gold(
        self, rows: Iterable[Any], *, task_set: str, kind: TaskKind = "ranking", source: str = "gold"
    ) -> dict[str, int]:
        """Add gold tasks (known answers) to ``task_set``; return how many prompts, candidates, tasks were new.

        A row is ``{"prompt", "completions" | "candidates", "ranks": [1 = best, ...]}`` (pairwise: exactly 2
        completions, ranks not tied). Prompts and candidates are found (or added) by text; a gold task is
        made per row unless one with that candidate set exists. Gold tasks get the instructions of the
        task set's regular tasks, so raters cannot tell them apart. Errors as in ``import_tasks``.
        """
        self._check_task_set(source, task_set)
        if kind not in ("pairwise", "ranking"):
            raise DataError(f"{source}: gold tasks are 'pairwise' or 'ranking', got {kind!r}")
        parsed = [self._import_row(f"{source} row {n}", row, kind, None, gold=True) for n, row in enumerate(rows, 1)]
        with self._tx() as conn:
            instructions = conn.scalar(
                select(tasks.c.instructions)
                .where(
                    tasks.c.task_set == task_set,
                    tasks.c.is_gold.is_(False),
                    tasks.c.instructions.is_not(None),
                )
                .limit(1)
            )
            # judgements_needed is not used for gold tasks (every rater gets each once); 3 as import_tasks
            return self._store_rows(conn, parsed, task_set, kind, None, 3, instructions, None, gold=True)

    @staticmethod
    def _check_task_set(source: str, task_set: Any) -> None:
        if not isinstance(task_set, str) or not 0 < len(task_set.strip()) <= 200:
            raise DataError(f"{source}: the task set name must be 1..200 characters, got {task_set!r:.80}")

    def _import_row(self, where: str, row: Any, kind: str, k: int | None, gold: bool) -> _ImportRow:
        """One row of a task or gold file, checked; DataError naming ``where`` ("<file> row <n>")."""
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with \"prompt\" and \"candidates\" (or \"completions\"), "
                            f"got {type(row).__name__}")  # fmt: skip
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: \"prompt\" must be a non-empty string, got {prompt!r:.80}")
        _check_length(f"{where}: the prompt", prompt, self.settings.max_text_chars)
        items = row.get("candidates", row.get("completions"))
        if not isinstance(items, list):
            raise DataError(f"{where}: expected a \"candidates\" (or \"completions\") list, got {items!r:.80}")
        found = [self._candidate(f"{where}: candidate {i}", item) for i, item in enumerate(items, 1)]
        texts = [c["text"] for c in found]
        for i, text in enumerate(texts, 1):
            if texts.index(text) + 1 != i:
                raise DataError(f"{where}: candidates {texts.index(text) + 1} and {i} have the same text")
        self._check_candidate_count(where, kind, len(found), k, gold)
        instructions = row.get("instructions")
        if instructions is not None:
            self._check_text(f"{where}: the instructions", instructions)
        return _ImportRow(prompt, found, instructions, self._gold_ranks(where, row.get("ranks"), len(found)) if gold else None)

    @staticmethod
    def _check_candidate_count(where: str, kind: str, n: int, k: int | None, gold: bool) -> None:
        if kind == "pairwise" and (gold or k is None) and n != 2:
            more = "" if gold else "; give k to sample k pairs per row from more"
            raise DataError(f"{where}: a pairwise task needs exactly 2 candidates, got {n}{more}")
        need = {"rating": 1, "pairwise": 2, "ranking": max(2, k or 2)}[kind]
        if n < need:
            raise DataError(f"{where}: a {kind} task needs at least {need} candidates, got {n}")

    @staticmethod
    def _gold_ranks(where: str, ranks: Any, n: int) -> list[int]:
        if not (isinstance(ranks, list) and len(ranks) == n and all(_is_int(r) and 1 <= r <= n for r in ranks)):
            raise DataError(f"{where}: \"ranks\" must give each of the {n} candidates a whole-number rank "
                            f"from 1 (best) to {n}, got {ranks!r:.80}")  # fmt: skip
        if len(set(ranks)) == 1:
            raise DataError(f"{where}: \"ranks\" are all equal; a gold answer needs one candidate better than another")
        return ranks

    def _store_rows(
        self,
        conn: Connection,
        parsed: list[_ImportRow],
        task_set: str,
        kind: str,
        k: int | None,
        needed: int,
        instructions: str | None,
        rating_scale: str | None,
        gold: bool = False,
    ) -> dict[str, int]:
        before = self._content_counts(conn)
        existing = self._existing_sets(conn, kind, task_set)
        for row in parsed:
            pid = self._add_prompt(conn, row.prompt)
            ids = [self._add_candidate(conn, pid, item) for item in row.candidates]
            taken = existing.setdefault((pid, gold), set())
            for subset in self._import_sets(pid, ids, kind, k):
                if frozenset(subset) in taken:
                    continue
                taken.add(frozenset(subset))
                self._insert_task(
                    conn, pid, kind, subset, needed, dict(zip(ids, row.ranks)) if gold else None,
                    task_set, row.instructions or instructions, rating_scale,
                )  # fmt: skip
        after = self._content_counts(conn)
        return {name: after[name] - before[name] for name in after}

    def _import_sets(self, prompt_id: int, ids: list[int], kind: str, k: int | None) -> list[tuple[int, ...]]:
        if kind == "rating":
            return [(cid,) for cid in ids]
        if kind == "pairwise":
            return self._sample_sets(prompt_id, ids, 2, k or 1, set())
        return [tuple(ids)] if k is None else self._sample_sets(prompt_id, ids, k, 1, set())

    @staticmethod
    def _content_counts(conn: Connection) -> dict[str, int]:
        return {
            name: conn.scalar(select(func.count()).select_from(table))
            for name, table in (("prompts", prompts), ("candidates", candidates), ("tasks", tasks))
        }

    def tasks(self, task_set: str | None = None) -> list[dict[str, Any]]:
        """Every task (of one task set), by id: id, task_set, kind, prompt (first 200 characters), candidates
        (count), judgements (current, not skipped), judgements_needed, is_gold, flagged (judgements with a flag)."""
        query = _task_table() if task_set is None else _task_table().where(tasks.c.task_set == task_set)
        with self._tx(write=False) as conn:
            rows = conn.execute(query).all()
        return [
            {
                "id": r.id,
                "task_set": r.task_set,
                "kind": r.kind,
                "prompt": r.prompt,
                "candidates": r.candidates,
                "judgements": r.judgements,
                "judgements_needed": r.judgements_needed,
                "is_gold": bool(r.is_gold),
                "flagged": r.flagged,
            }
            for r in rows
        ]

    def task_sets(self) -> list[dict[str, Any]]:
        """Per task set and kind: task_set, kind, tasks, tasks_complete, judgements, judgements_needed,
        gold_tasks, flagged_tasks (regular-task counts as in ``progress()``)."""
        with self._tx(write=False) as conn:
            return self._task_sets(conn)

    @staticmethod
    def _task_sets(conn: Connection) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for row in conn.execute(_task_table()):
            groups[row.task_set, row.kind].append(row)
        return [{"task_set": s, "kind": kind, **_summarise(rows)} for (s, kind), rows in sorted(groups.items())]

    def set_guidelines(self, markdown: str) -> None:
        """Set the project-wide guidelines (markdown) shown to every rater."""
        self._check_text("the guidelines", markdown)
        with self._tx() as conn:
            key = app_settings.c.key == "guidelines"
            if conn.scalar(select(func.count()).where(key)):
                conn.execute(update(app_settings).where(key).values(value=markdown))
            else:
                conn.execute(insert(app_settings).values(key="guidelines", value=markdown))

    def guidelines(self) -> str:
        """The project-wide guidelines (markdown); "" when none are set."""
        with self._tx(write=False) as conn:
            return conn.scalar(select(app_settings.c.value).where(app_settings.c.key == "guidelines")) or ""

    # ---------------------------------------------------------------- queue

    def next_task(self, rater: str) -> TaskView | None:
        """Reserve and return the rater's next task, or None when nothing is left for them.

        None as well once the rater's current judgements and skips reach their quota. A task the rater
        already holds (unexpired) comes first. Otherwise fully booked tasks (judgements + others' live
        reservations >= needed) and tasks the rater judged are passed over; partly done tasks are filled
        first; a gold task is served with probability ``gold_rate``.
        """
        with self._tx() as conn:
            params = {"user_id": self._user_id(conn, rater), "now": self._now()}
            if self._quota_left(conn, params["user_id"]) == 0:
                return None
            task_id = conn.scalar(_held_task(), params)
            if task_id is None:
                task_id = self._pick(conn, params)
            if task_id is None:
                return None
            expires = self._reserve(conn, task_id, params["user_id"], params["now"])
            return self._view(conn, task_id, params["user_id"], expires)

    def _answered(self, conn: Connection, user_id: int) -> tuple[int, int]:
        """The user's current (judged, skipped) counts."""
        rows = conn.execute(
            select(judgements.c.skipped, func.count())
            .where(judgements.c.user_id == user_id, CURRENT_JUDGEMENT)
            .group_by(judgements.c.skipped)
        )
        counts = {bool(skipped): n for skipped, n in rows}
        return counts.get(False, 0), counts.get(True, 0)

    def _quota_left(self, conn: Connection, user_id: int) -> int | None:
        """Tasks the user may still answer under their quota; None when they have none."""
        quota = conn.scalar(select(users.c.quota).where(users.c.id == user_id))
        return None if quota is None else max(quota - sum(self._answered(conn, user_id)), 0)

    def _pick(self, conn: Connection, params: dict[str, Any]) -> int | None:
        want_gold = self._rng.random() < self.settings.gold_rate
        for gold in (want_gold, not want_gold):
            found = conn.scalar(_first_eligible(), params | {"gold": gold})
            if found is not None:
                return found
        return None

    def _reserve(self, conn: Connection, task_id: int, user_id: int, now: datetime) -> datetime:
        expires = now + timedelta(seconds=self.settings.reservation_ttl_s)
        conn.execute(delete(reservations).where(reservations.c.task_id == task_id, reservations.c.user_id == user_id))
        conn.execute(insert(reservations).values(task_id=task_id, user_id=user_id, expires_at=expires))
        return expires

    def _shown_order(self, task_id: int, user_id: int, ids: list[int]) -> list[int]:
        """The rater's own, reproducible shuffle of a task's candidates."""
        order = list(ids)
        random.Random(f"{self.settings.seed}:{task_id}:{user_id}").shuffle(order)
        return order

    def _view(
        self, conn: Connection, task_id: int, user_id: int, expires: datetime | None, previous: Row | None = None
    ) -> TaskView:
        task = self._task(conn, task_id)
        order = self._shown_order(task_id, user_id, list(task.texts))
        return TaskView(
            task_id=task_id,
            kind=task.kind,
            prompt=task.prompt,
            candidates=[CandidateView(cid, string.ascii_uppercase[i], task.texts[cid]) for i, cid in enumerate(order)],
            expires_at=_iso(expires),
            previous=self._previous(previous, order) if previous is not None else None,
            task_set=task.task_set,
            instructions=task.instructions,
            rating_scale=task.rating_scale,
        )

    @staticmethod
    def _previous(row: Row | dict, order: list[int]) -> dict[str, Any]:
        data = row if isinstance(row, dict) else row._mapping
        ranks = _int_keys(data["ranks"])
        return {
            "choice": data["choice"],
            "strength": data["strength"],
            "ranks": [ranks.get(cid) for cid in order] if ranks else None,
            "rating": data.get("rating"),
            "rationale": data["rationale"],
            "flags": _flag_names(data),
            "skip": bool(data["skipped"]),
        }

    def _current(self, conn: Connection, task_id: int, user_id: int) -> Row | None:
        """The user's current judgement of a task, if any."""
        return conn.execute(
            select(judgements).where(
                judgements.c.task_id == task_id, judgements.c.user_id == user_id, CURRENT_JUDGEMENT
            )
        ).first()

    def task_view(self, rater: str, task_id: int) -> TaskView:
        """A task the rater holds or has judged (with their answer in ``previous``), e.g. to edit it."""
        with self._tx(write=False) as conn:
            user_id = self._user_id(conn, rater)
            mine = self._current(conn, task_id, user_id)
            expires = conn.scalar(
                select(reservations.c.expires_at).where(
                    reservations.c.task_id == task_id, reservations.c.user_id == user_id
                )
            )
            if mine is None and expires is None:
                raise AccessDenied(f"task {task_id} is not assigned to {rater!r}")
            return self._view(conn, task_id, user_id, expires, mine)

    # ---------------------------------------------------------------- judgements

    def submit(
        self,
        rater: str,
        task_id: int,
        submission_id: str,
        *,
        choice: str | None = None,
        strength: str | None = None,
        ranks: Sequence[int] | None = None,
        rating: int | None = None,
        rationale: str = "",
        flags: Iterable[str] = (),
        skip: bool = False,
        seconds: float = 0.0,
    ) -> int:
        """Record the rater's judgement of a task they were served; return the judgement id.

        Pairwise: ``choice`` "A" | "B" | "tie" | "both_bad" (labels as shown to this rater) and, for A/B,
        ``strength`` "slightly" | "clearly" | "much". Ranking: ``ranks`` = one rank per candidate in shown
        order, 1 = best, ties allowed. Rating: ``rating`` on the task's scale (binary 0 | 1, likert5 1..5).
        ``skip=True`` needs none of them and does not count towards the task's judgements.
        ``submission_id`` (a client-made UUID) makes the call idempotent: sending the same id again (even
        after an undo) returns the first judgement's id and changes nothing. Submitting again for a task
        the rater currently has a judgement of, with a new id, edits it and keeps the old version in the
        history. Problems the rater can fix raise DataError with a message meant for them.
        """
        if not isinstance(submission_id, str) or not 0 < len(submission_id) <= 64:
            raise DataError(f"submission_id must be a non-empty string of <= 64 characters, got {submission_id!r}")
        flag_set = {f.replace("-", "_") for f in flags}
        if not flag_set <= set(FLAGS):
            unknown = ", ".join(sorted(flag_set - set(FLAGS)))
            raise DataError(f"Unknown flag {unknown}; the flags are harmful, off-topic and broken.")
        rationale = rationale or ""
        if not isinstance(rationale, str):
            raise DataError("The rationale must be text.")
        _check_length("Your rationale", rationale, self.settings.max_rationale_chars)
        answer = {"choice": choice, "strength": strength, "ranks": ranks, "rating": rating, "skip": skip}
        try:
            return self._submit(rater, task_id, submission_id, answer, rationale, flag_set, float(seconds))
        except IntegrityError:  # a concurrent request with the same submission id won (non-SQLite backends)
            with self._tx(write=False) as conn:
                found = self._existing_submission(conn, submission_id, rater, task_id)
            if found is None:
                raise
            return found

    def _submit(
        self,
        rater: str,
        task_id: int,
        submission_id: str,
        answer: dict,
        rationale: str,
        flags: set[str],
        seconds: float,
    ) -> int:
        with self._tx() as conn:
            user_id = self._user_id(conn, rater)
            found = self._existing_submission(conn, submission_id, rater, task_id)
            if found is not None:
                return found
            task = self._task(conn, task_id)
            order = self._shown_order(task_id, user_id, list(task.texts))
            now = self._now()
            values = {
                "submission_id": submission_id,
                "shown_order": order,
                **self._answer_columns(task, order, **answer),
                "rationale": rationale,
                **{f"flag_{f}": f in flags for f in FLAGS},
                "seconds": max(seconds, 0.0),
                "updated_at": now,
            }
            mine = self._current(conn, task_id, user_id)
            if mine is not None:
                self._record_history(conn, mine, "edit", now)
                conn.execute(update(judgements).where(judgements.c.id == mine.id).values(**values))
                return mine.id
            held = reservations.c.task_id == task_id, reservations.c.user_id == user_id
            if conn.scalar(select(reservations.c.id).where(*held)) is None:
                raise AccessDenied("This task was not served to you (or was handed back); ask for the next task.")
            conn.execute(delete(reservations).where(*held))
            values |= {"task_id": task_id, "user_id": user_id, "created_at": now}
            return conn.execute(insert(judgements).values(**values)).inserted_primary_key[0]

    def _existing_submission(self, conn: Connection, submission_id: str, rater: str, task_id: int) -> int | None:
        """Judgement id an earlier call with this submission id produced (withdrawn or edited since), or None."""
        owner = conn.execute(
            select(judgements.c.id, judgements.c.task_id, users.c.name)
            .join(users, users.c.id == judgements.c.user_id)
            .where(judgements.c.submission_id == submission_id)
        ).first() or conn.execute(
            select(judgement_history.c.judgement_id, judgement_history.c.task_id, users.c.name)
            .join(users, users.c.id == judgement_history.c.user_id)
            .where(judgement_history.c.submission_id == submission_id)
            .limit(1)
        ).first()
        if owner is None:
            return None
        if (owner[1], owner[2]) != (task_id, rater):
            raise DataError(f"submission_id {submission_id!r} was already used for another task or rater")
        return owner[0]

    @staticmethod
    def _answer_columns(
        task: _TaskContent,
        order: list[int],
        choice: str | None,
        strength: str | None,
        ranks: Any,
        rating: Any,
        skip: bool,
    ) -> dict[str, Any]:
        """Validate an answer against the task and turn it into judgement columns (messages for raters)."""
        columns: dict[str, Any] = {"choice": None, "strength": None, "ranks": None, "rating": None, "skipped": skip}
        if skip:
            return columns
        if task.kind == "rating":
            if not (_is_int(rating) and rating in RATING_SCALES[task.rating_scale]):
                raise DataError(_ASK_RATING[task.rating_scale])
            return columns | {"rating": rating}
        if task.kind == "pairwise":
            if choice not in CHOICES:
                raise DataError("Choose which is better: A, B, a tie, or both bad.")
            if choice in ("A", "B") and strength not in STRENGTH_MARGIN:
                raise DataError(f"Choose how much better {choice} is: slightly, clearly or much.")
            first, second = order
            by_choice = {"A": (1, 2), "B": (2, 1)}.get(choice, (1, 1))
            rank_map = {first: by_choice[0], second: by_choice[1]}
            strength = strength if choice in ("A", "B") else None
            return columns | {"choice": choice, "strength": strength, "ranks": _str_keys(rank_map)}
        n = len(order)
        if not isinstance(ranks, (list, tuple)) or len(ranks) != n or any(r is None for r in ranks):
            raise DataError("Give every candidate a rank (ties allowed).")
        if not all(_is_int(r) and 1 <= r <= n for r in ranks):
            raise DataError(f"Ranks go from 1 (best) to {n} (worst); got {', '.join(map(str, ranks))}.")
        return columns | {"ranks": _str_keys(dict(zip(order, ranks)))}

    def _record_history(self, conn: Connection, row: Row, event_name: str, now: datetime) -> None:
        conn.execute(
            insert(judgement_history).values(
                judgement_id=row.id,
                task_id=row.task_id,
                user_id=row.user_id,
                submission_id=row.submission_id,
                event=event_name,
                snapshot=_jsonable(row),
                recorded_at=now,
            )
        )

    def undo_last(self, rater: str) -> TaskView | None:
        """Withdraw the rater's most recent current judgement (the row is marked, and kept) and serve it again.

        Returns the task with the withdrawn answer in ``previous``, or None when there is nothing to undo.
        Answering it again stores a new judgement with a new id.
        """
        with self._tx() as conn:
            user_id = self._user_id(conn, rater)
            last = conn.execute(
                select(judgements)
                .where(judgements.c.user_id == user_id, CURRENT_JUDGEMENT)
                .order_by(judgements.c.id.desc())
                .limit(1)
            ).first()
            if last is None:
                return None
            now = self._now()
            self._record_history(conn, last, "undo", now)
            conn.execute(update(judgements).where(judgements.c.id == last.id).values(withdrawn_at=now))
            expires = self._reserve(conn, last.task_id, user_id, now)
            return self._view(conn, last.task_id, user_id, expires, last)

    def judgements(self, rater: str) -> list[dict[str, Any]]:
        """The rater's own current judgements, newest first, answers in the order the rater saw them."""
        with self._tx(write=False) as conn:
            user_id = self._user_id(conn, rater)
            rows = conn.execute(
                select(judgements, tasks.c.kind, tasks.c.task_set, prompts.c.text.label("prompt"))
                .join(tasks, tasks.c.id == judgements.c.task_id)
                .join(prompts, prompts.c.id == tasks.c.prompt_id)
                .where(judgements.c.user_id == user_id, CURRENT_JUDGEMENT)
                .order_by(judgements.c.id.desc())
            ).all()
        return [
            {
                "judgement_id": r.id,
                "task_id": r.task_id,
                "task_set": r.task_set,
                "kind": r.kind,
                "prompt": r.prompt,
                **self._previous(r, list(r.shown_order)),
                "seconds": r.seconds,
                "created_at": r.created_at.isoformat(),
                "updated_at": r.updated_at.isoformat(),
            }
            for r in rows
        ]

    def history(self, rater: str | None = None, judgement_id: int | None = None) -> list[dict[str, Any]]:
        """Earlier versions of judgements (events "edit" and "undo"), oldest first.

        With ``rater``, only that rater's own (raters must always pass it); with ``judgement_id``, one judgement's.
        """
        query = select(judgement_history).order_by(judgement_history.c.id)
        if judgement_id is not None:
            query = query.where(judgement_history.c.judgement_id == judgement_id)
        with self._tx(write=False) as conn:
            if rater is not None:
                query = query.where(judgement_history.c.user_id == self._user_id(conn, rater))
            return [_jsonable(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- reporting

    def progress(self, rater: str | None = None) -> dict[str, Any]:
        """A rater's ``{"rater", "done", "skipped", "remaining", "quota", "total"}``; without a rater, the
        whole collection (admin view).

        done: current judgements that are not skips; remaining: tasks still available to the rater, capped
        by what their quota leaves; total: the quota when set, else done + skipped + remaining.
        """
        with self._tx(write=False) as conn:
            if rater is None:
                return self._overall_progress(conn)
            user_id = self._user_id(conn, rater)
            done, skipped = self._answered(conn, user_id)
            quota = conn.scalar(select(users.c.quota).where(users.c.id == user_id))
            eligible = select(func.count()).select_from(_eligible_tasks().subquery())
            remaining = conn.scalar(eligible, {"user_id": user_id, "now": self._now()})
            if quota is not None:
                remaining = min(remaining, max(quota - done - skipped, 0))
            total = quota if quota is not None else done + skipped + remaining
            return {"rater": rater, "done": done, "skipped": skipped, "remaining": remaining, "quota": quota, "total": total}

    def _overall_progress(self, conn: Connection) -> dict[str, Any]:
        per_rater = conn.execute(
            select(users.c.name, users.c.role, func.count(judgements.c.id))
            .outerjoin(judgements, (judgements.c.user_id == users.c.id) & CURRENT_JUDGEMENT)
            .group_by(users.c.id, users.c.name, users.c.role)
            .order_by(users.c.name)
        ).all()
        return {
            **_summarise(conn.execute(_task_table()).all()),
            "raters": {name: count for name, role, count in per_rater if role == "rater" or count},
            "per_task_set": self._task_sets(conn),
        }

    def records(self) -> tuple[list[JudgementRecord], dict[int, Candidate]]:
        """Every current judgement (skips included) and every candidate, for exports and reports."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                select(
                    judgements,
                    users.c.name.label("rater"),
                    tasks.c.kind,
                    tasks.c.task_set,
                    tasks.c.rating_scale,
                    tasks.c.is_gold,
                    tasks.c.gold_ranks,
                    tasks.c.prompt_id,
                    prompts.c.text.label("prompt"),
                )
                .join(users, users.c.id == judgements.c.user_id)
                .join(tasks, tasks.c.id == judgements.c.task_id)
                .join(prompts, prompts.c.id == tasks.c.prompt_id)
                .where(CURRENT_JUDGEMENT)
                .order_by(judgements.c.id)
            ).all()
            cands = conn.execute(
                select(candidates.c.id, candidates.c.prompt_id, candidates.c.text, candidates.c.policy)
            )
            candidate_map = {c.id: Candidate(c.id, c.prompt_id, c.text, c.policy) for c in cands}
        records = [
            JudgementRecord(
                judgement_id=r.id,
                task_id=r.task_id,
                prompt_id=r.prompt_id,
                prompt=r.prompt,
                kind=r.kind,
                is_gold=bool(r.is_gold),
                gold_ranks=_int_keys(r.gold_ranks) if r.gold_ranks else None,
                rater=r.rater,
                choice=r.choice,
                strength=r.strength,
                ranks=_int_keys(r.ranks),
                skipped=bool(r.skipped),
                task_set=r.task_set,
                candidate_ids=tuple(sorted(r.shown_order)),
                rating=r.rating,
                rating_scale=r.rating_scale,
                rationale=r.rationale,
                flags=tuple(_flag_names(r._mapping)),
                seconds=r.seconds,
                created_at=r.created_at,
            )
            for r in rows
        ]
        return records, candidate_map

    def rater_stats(self) -> list[dict[str, Any]]:
        """Per rater (every rater account, and anyone who judged), by name: rater, done, skipped,
        median_seconds (over judgements that are not skips; None without any), judgements_last_hour,
        gold_items, gold_accuracy (None without gold items), flags (judgements with a flag)."""
        records, _ = self.records()
        with self._tx(write=False) as conn:
            names = conn.execute(
                select(users.c.name).where(users.c.role == "rater", users.c.removed_at.is_(None))
            ).scalars().all()
        by_rater: dict[str, list[JudgementRecord]] = defaultdict(list)
        for r in records:
            by_rater[r.rater].append(r)
        gold = agreement.gold_accuracy(records)
        hour_ago = self._now() - timedelta(hours=1)
        rows = []
        for name in sorted(set(names) | set(by_rater)):
            mine = by_rater.get(name, [])
            judged = [r for r in mine if not r.skipped]
            rows.append(
                {
                    "rater": name,
                    "done": len(judged),
                    "skipped": len(mine) - len(judged),
                    "median_seconds": statistics.median(r.seconds for r in judged) if judged else None,
                    "judgements_last_hour": sum(r.created_at >= hour_ago for r in judged),
                    "gold_items": gold.get(name, {}).get("items", 0),
                    "gold_accuracy": gold.get(name, {}).get("accuracy"),
                    "flags": sum(bool(r.flags) for r in mine),
                }
            )
        return rows

    def flagged(self) -> list[dict[str, Any]]:
        """Every current judgement with a flag, newest first: judgement_id, task_id, task_set, rater, flags,
        rationale, prompt (first 200 characters), updated_at."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                select(
                    judgements,
                    users.c.name.label("rater"),
                    tasks.c.task_set,
                    func.substr(prompts.c.text, 1, 200).label("prompt"),
                )
                .join(users, users.c.id == judgements.c.user_id)
                .join(tasks, tasks.c.id == judgements.c.task_id)
                .join(prompts, prompts.c.id == tasks.c.prompt_id)
                .where(CURRENT_JUDGEMENT, _ANY_FLAG)
                .order_by(judgements.c.updated_at.desc(), judgements.c.id.desc())
            ).all()
        return [
            {
                "judgement_id": r.id,
                "task_id": r.task_id,
                "task_set": r.task_set,
                "rater": r.rater,
                "flags": _flag_names(r._mapping),
                "rationale": r.rationale,
                "prompt": r.prompt,
                "updated_at": r.updated_at.isoformat(),
            }
            for r in rows
        ]

    def export_preferences(
        self, mode: str = "majority", include_gold: bool = False, include_flagged: bool = False
    ) -> list[dict[str, Any]]:
        """Rows ``{"prompt", "chosen", "rejected", "margin", ...}``; see ``export.preference_rows``."""
        return export_rules.preference_rows(
            *self.records(), mode=mode, include_gold=include_gold, include_flagged=include_flagged
        )

    def export_rankings(
        self, mode: str = "per-rater", include_gold: bool = False, include_flagged: bool = False
    ) -> list[dict[str, Any]]:
        """Rows ``{"prompt", "completions", "ranks", ...}`` of ranking tasks; see ``export.ranking_rows``."""
        return export_rules.ranking_rows(
            *self.records(), mode=mode, include_gold=include_gold, include_flagged=include_flagged
        )

    def export_feedback(self, include_gold: bool = False, include_flagged: bool = False) -> list[dict[str, Any]]:
        """Rows ``{"prompt", "completion", "label", "rating", "rater"}`` of rating tasks; see ``export.feedback_rows``."""
        return export_rules.feedback_rows(*self.records(), include_gold=include_gold, include_flagged=include_flagged)

    def agreement_report(self) -> dict[str, Any]:
        """Inter-rater agreement (with a bootstrap CI), gold accuracy and Bradley-Terry; see ``agreement.report``."""
        return agreement.report(*self.records())
