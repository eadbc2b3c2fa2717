"""The annotation store: prompts, candidates, tasks, raters, the work queue and judgements.

Every public method runs in its own transaction. On SQLite (the default: a file path) connections use
WAL, foreign keys and a busy timeout, and write transactions start with ``BEGIN IMMEDIATE`` so
concurrent writers queue for the lock instead of failing with "database is locked". Any other
SQLAlchemy URL (e.g. ``postgresql://...``) works through the same Core statements.
"""

from __future__ import annotations

import functools
import hashlib
import random
import string
import threading
from collections import OrderedDict
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
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from alignment.annotations import agreement
from alignment.annotations import export as export_rules
from alignment.annotations.passwords import dummy_hash, hash_password, verify_password
from alignment.annotations.records import STRENGTH_MARGIN, Candidate, JudgementRecord
from alignment.annotations.schema import (
    candidates,
    ensure_schema,
    judgement_history,
    judgements,
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
TaskKind = Literal["pairwise", "ranking"]


class AccessDenied(AlignmentError):
    """A user asked for something their role or assignments do not allow."""


@dataclass
class QueueSettings:
    """How the work queue and logins behave."""

    reservation_ttl_s: int = field(
        default=1800,
        metadata={"help": "Seconds a served task stays reserved for its rater before returning to the pool."},
    )
    gold_rate: float = field(
        default=0.1, metadata={"help": "Probability that next_task serves a gold task when one is available."}
    )
    max_failed_logins: int = field(
        default=5, metadata={"help": "Failed logins in a row after which an account is locked."}
    )
    lockout_s: int = field(default=300, metadata={"help": "Seconds an account stays locked after too many failures."})
    seed: int = field(default=0, metadata={"help": "Seed of task sampling, gold mixing and per-rater shuffles."})


@dataclass(frozen=True)
class CandidateView:
    id: int
    label: str
    text: str


@dataclass(frozen=True)
class TaskView:
    """A task as one rater sees it: candidates in that rater's shuffled order, labelled A, B, C...

    ``previous`` holds the rater's earlier answer (after an undo, or when editing) in the same order.
    """

    task_id: int
    kind: str
    prompt: str
    candidates: list[CandidateView]
    expires_at: str | None = None
    previous: dict[str, Any] | None = None

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


def _make_engine(url_or_path: str | Path) -> Engine:
    url = str(url_or_path)
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
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


@functools.cache
def _eligible_tasks() -> Select:
    """Task ids that user :user_id may be served at :now, best first.

    Not judged by the user, and gold or not fully booked (judgements + others' live reservations <
    needed); partly done tasks first so tasks complete early.
    """
    user_id, now = bindparam("user_id"), bindparam("now")
    judged = select(judgements.c.task_id).where(judgements.c.user_id == user_id)
    done = (
        select(judgements.c.task_id, func.count().label("n"))
        .where(judgements.c.skipped.is_(False))
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
    """The oldest live reservation of :user_id on a task they have not judged."""
    user_id = bindparam("user_id")
    return (
        select(reservations.c.task_id)
        .where(
            reservations.c.user_id == user_id,
            reservations.c.expires_at > bindparam("now"),
            reservations.c.task_id.not_in(select(judgements.c.task_id).where(judgements.c.user_id == user_id)),
        )
        .order_by(reservations.c.id)
        .limit(1)
    )


_SQLITE_WRITE_LOCKS: dict[str, threading.Lock] = {}


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
                yield conn

    def _now(self) -> datetime:
        return _utc(self._clock())

    def _user_id(self, conn: Connection, name: str) -> int:
        """The user's id (cached: users are never renumbered); AccessDenied for an unknown name."""
        if name not in self._user_ids:
            found = conn.scalar(select(users.c.id).where(users.c.name == name))
            if found is None:
                raise AccessDenied(f"{self._where}: no user named {name!r}")
            self._user_ids[name] = found
        return self._user_ids[name]

    def _task(self, conn: Connection, task_id: int) -> _TaskContent:
        """A task's kind, prompt and candidate texts in canonical order (cached: tasks never change)."""
        if task_id in self._tasks:
            self._tasks.move_to_end(task_id)
        else:
            task = conn.execute(
                select(tasks.c.kind, prompts.c.text)
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
            self._tasks[task_id] = _TaskContent(task.kind, task.text, dict(texts.all()))
            if len(self._tasks) > _TASK_CACHE:
                self._tasks.popitem(last=False)
        return self._tasks[task_id]

    def role(self, name: str) -> str | None:
        """The user's role ("rater" | "admin"), or None when there is no such user."""
        with self._tx(write=False) as conn:
            return conn.scalar(select(users.c.role).where(users.c.name == name))

    def users(self) -> list[dict[str, str]]:
        """Every user's ``{"name", "role"}``, by name."""
        with self._tx(write=False) as conn:
            rows = conn.execute(select(users.c.name, users.c.role).order_by(users.c.name))
            return [{"name": name, "role": role} for name, role in rows]

    def require_admin(self, name: str) -> None:
        """Raise AccessDenied unless ``name`` is an admin."""
        if self.role(name) != "admin":
            raise AccessDenied(f"user {name!r} is not an admin")

    # ---------------------------------------------------------------- content

    def add_prompt(self, text: str, meta: dict | None = None) -> int:
        """Id of the prompt with this text, adding it if new (deduplicated by content hash)."""
        digest = _content_hash(text)
        with self._tx() as conn:
            found = conn.scalar(select(prompts.c.id).where(prompts.c.content_hash == digest))
            if found is not None:
                return found
            values = {"text": text, "content_hash": digest, "meta": meta, "created_at": self._now()}
            return conn.execute(insert(prompts).values(**values)).inserted_primary_key[0]

    def add_candidates(self, prompt_id: int, items: Sequence[dict[str, Any]]) -> list[int]:
        """Ids of candidates ``{"text", "policy", "sampling"}`` for a prompt, one per item, in order.

        A text already stored for this prompt (same content hash) returns the existing id; nothing is duplicated.
        """
        with self._tx() as conn:
            if conn.scalar(select(prompts.c.id).where(prompts.c.id == prompt_id)) is None:
                raise DataError(f"{self._where}: no prompt with id {prompt_id}")
            return [self._add_candidate(conn, prompt_id, i, item) for i, item in enumerate(items)]

    def _add_candidate(self, conn: Connection, prompt_id: int, index: int, item: dict[str, Any]) -> int:
        if not isinstance(item.get("text"), str):
            raise DataError(f"candidate {index} for prompt {prompt_id}: expected a 'text' string, got {item!r:.80}")
        digest = _content_hash(item["text"])
        found = conn.scalar(
            select(candidates.c.id).where(candidates.c.prompt_id == prompt_id, candidates.c.content_hash == digest)
        )
        if found is not None:
            return found
        values = {
            "prompt_id": prompt_id,
            "text": item["text"],
            "policy": str(item.get("policy", "unknown")),
            "sampling": item.get("sampling"),
            "content_hash": digest,
            "created_at": self._now(),
        }
        return conn.execute(insert(candidates).values(**values)).inserted_primary_key[0]

    def create_tasks(
        self,
        kind: TaskKind = "ranking",
        k: int = 4,
        judgements_per_task: int = 3,
        tasks_per_prompt: int = 1,
        gold: Sequence[Sequence[int]] | None = None,
    ) -> list[int]:
        """Top up every prompt to ``tasks_per_prompt`` tasks of ``kind``; return the new task ids.

        Each task covers ``k`` distinct candidates of one prompt (always 2 for pairwise), sampled without
        repeating a candidate set; prompts with fewer than ``k`` candidates get none. Each task wants
        ``judgements_per_task`` judgements from distinct raters. ``gold`` lists known answers, each
        candidate ids best first (one prompt each): a gold task is made for each set not yet present.
        Gold tasks are shown to every rater once, mixed in at ``settings.gold_rate``.
        """
        if kind not in ("pairwise", "ranking"):
            raise DataError(f"create_tasks: kind must be 'pairwise' or 'ranking', got {kind!r}")
        k = 2 if kind == "pairwise" else k
        if k < 2 or judgements_per_task < 1:
            raise DataError(f"create_tasks: need k >= 2 and judgements_per_task >= 1, got k={k}, {judgements_per_task}")
        with self._tx() as conn:
            existing = self._existing_sets(conn, kind)
            by_prompt: dict[int, list[int]] = {}
            for cid, pid in conn.execute(select(candidates.c.id, candidates.c.prompt_id).order_by(candidates.c.id)):
                by_prompt.setdefault(pid, []).append(cid)
            new = []
            for pid, ids in by_prompt.items():
                have = [s for (p, is_gold), sets in existing.items() if p == pid and not is_gold for s in sets]
                for subset in self._sample_sets(pid, ids, k, tasks_per_prompt - len(have), set(have)):
                    new.append(self._insert_task(conn, pid, kind, subset, judgements_per_task, None))
            for answer in gold or ():
                new.extend(self._insert_gold(conn, kind, list(answer), judgements_per_task, existing))
            return new

    def _existing_sets(self, conn: Connection, kind: str) -> dict[tuple[int, bool], set[frozenset[int]]]:
        rows = conn.execute(
            select(tasks.c.id, tasks.c.prompt_id, tasks.c.is_gold, task_candidates.c.candidate_id)
            .join(task_candidates, task_candidates.c.task_id == tasks.c.id)
            .where(tasks.c.kind == kind)
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
        self, conn: Connection, prompt_id: int, kind: str, ids: Sequence[int], needed: int, gold: dict | None
    ) -> int:
        values = {
            "prompt_id": prompt_id,
            "kind": kind,
            "judgements_needed": needed,
            "is_gold": gold is not None,
            "gold_ranks": _str_keys(gold) if gold else None,
            "created_at": self._now(),
        }
        task_id = conn.execute(insert(tasks).values(**values)).inserted_primary_key[0]
        rows = [{"task_id": task_id, "candidate_id": c, "position": i} for i, c in enumerate(sorted(ids))]
        conn.execute(insert(task_candidates), rows)
        return task_id

    # ---------------------------------------------------------------- users

    def add_user(self, name: str, role: str, password: str) -> int:
        """Add a user with a salted scrypt hash of ``password``; return the id."""
        if role not in ROLES:
            raise DataError(f"add_user {name!r}: role must be one of {ROLES}, got {role!r}")
        if not name or not password:
            raise DataError("add_user: name and password must not be empty")
        with self._tx() as conn:
            if conn.scalar(select(users.c.id).where(users.c.name == name)) is not None:
                raise DataError(f"{self._where}: user {name!r} already exists")
            values = {"name": name, "role": role, "password_hash": hash_password(password), "created_at": self._now()}
            return conn.execute(insert(users).values(**values)).inserted_primary_key[0]

    def authenticate(self, name: str, password: str) -> bool:
        """True for a correct password of an unlocked account.

        ``settings.max_failed_logins`` failures in a row lock the account for ``settings.lockout_s``
        seconds, during which even the right password is refused.
        """
        with self._tx(write=False) as conn:
            user = conn.execute(select(users).where(users.c.name == name)).first()
        if user is None:
            verify_password(password, dummy_hash())
            return False
        now = self._now()
        if user.locked_until is not None and user.locked_until > now:
            return False
        ok = verify_password(password, user.password_hash)
        with self._tx() as conn:
            if ok:
                conn.execute(update(users).where(users.c.id == user.id).values(failed_logins=0, locked_until=None))
                return True
            failures = conn.scalar(select(users.c.failed_logins).where(users.c.id == user.id)) + 1
            locked = failures >= self.settings.max_failed_logins
            conn.execute(
                update(users)
                .where(users.c.id == user.id)
                .values(
                    failed_logins=0 if locked else failures,
                    locked_until=now + timedelta(seconds=self.settings.lockout_s) if locked else None,
                )
            )
        return False

    # ---------------------------------------------------------------- queue

    def next_task(self, rater: str) -> TaskView | None:
        """Reserve and return the rater's next task, or None when nothing is left for them.

        A task the rater already holds (unexpired) comes first. Otherwise fully booked tasks
        (judgements + others' live reservations >= needed) and tasks the rater judged are passed over;
        partly done tasks are filled first; a gold task is served with probability ``gold_rate``.
        """
        with self._tx() as conn:
            params = {"user_id": self._user_id(conn, rater), "now": self._now()}
            task_id = conn.scalar(_held_task(), params)
            if task_id is None:
                task_id = self._pick(conn, params)
            if task_id is None:
                return None
            expires = self._reserve(conn, task_id, params["user_id"], params["now"])
            return self._view(conn, task_id, params["user_id"], expires)

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
            expires_at=expires.isoformat() if expires else None,
            previous=self._previous(previous, order) if previous is not None else None,
        )

    @staticmethod
    def _previous(row: Row | dict, order: list[int]) -> dict[str, Any]:
        data = row if isinstance(row, dict) else row._mapping
        ranks = _int_keys(data["ranks"])
        return {
            "choice": data["choice"],
            "strength": data["strength"],
            "ranks": [ranks.get(cid) for cid in order] if ranks else None,
            "rationale": data["rationale"],
            "flags": [f for f in FLAGS if data[f"flag_{f}"]],
            "skip": bool(data["skipped"]),
        }

    def task_view(self, rater: str, task_id: int) -> TaskView:
        """A task the rater holds or has judged (with their answer in ``previous``), e.g. to edit it."""
        with self._tx(write=False) as conn:
            user_id = self._user_id(conn, rater)
            mine = conn.execute(
                select(judgements).where(judgements.c.task_id == task_id, judgements.c.user_id == user_id)
            ).first()
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
        rationale: str = "",
        flags: Iterable[str] = (),
        skip: bool = False,
        seconds: float = 0.0,
    ) -> int:
        """Record the rater's judgement of a task they were served; return the judgement id.

        Pairwise: ``choice`` "A" | "B" | "tie" | "both_bad" (labels as shown to this rater) and, for A/B,
        ``strength`` "slightly" | "clearly" | "much". Ranking: ``ranks`` = one rank per candidate in shown
        order, 1 = best, ties allowed. ``skip=True`` needs neither and does not count towards the task's
        judgements. ``submission_id`` (a client-made UUID) makes the call idempotent: sending the same id
        again returns the first judgement's id and changes nothing. Submitting again for a task the rater
        already judged, with a new id, edits it and keeps the old version in the history.
        """
        if not isinstance(submission_id, str) or not 0 < len(submission_id) <= 64:
            raise DataError(f"submission_id must be a non-empty string of <= 64 characters, got {submission_id!r}")
        flag_set = {f.replace("-", "_") for f in flags}
        if not flag_set <= set(FLAGS):
            raise DataError(f"unknown flags {sorted(flag_set - set(FLAGS))}; expected some of {FLAGS}")
        answer = {"choice": choice, "strength": strength, "ranks": ranks, "skip": skip}
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
                **self._answer_columns(task_id, task.kind, order, **answer),
                "rationale": rationale or "",
                **{f"flag_{f}": f in flags for f in FLAGS},
                "seconds": max(seconds, 0.0),
                "updated_at": now,
            }
            mine = conn.execute(
                select(judgements).where(judgements.c.task_id == task_id, judgements.c.user_id == user_id)
            ).first()
            if mine is not None:
                self._record_history(conn, mine, "edit", now)
                conn.execute(update(judgements).where(judgements.c.id == mine.id).values(**values))
                return mine.id
            held = reservations.c.task_id == task_id, reservations.c.user_id == user_id
            if conn.scalar(select(reservations.c.id).where(*held)) is None:
                raise AccessDenied(f"task {task_id} was not served to {rater!r}; call next_task first")
            conn.execute(delete(reservations).where(*held))
            values |= {"task_id": task_id, "user_id": user_id, "created_at": now}
            return conn.execute(insert(judgements).values(**values)).inserted_primary_key[0]

    def _existing_submission(self, conn: Connection, submission_id: str, rater: str, task_id: int) -> int | None:
        """Judgement id an earlier call with this submission id produced, or None."""
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
        task_id: int, kind: str, order: list[int], choice: str | None, strength: str | None, ranks: Any, skip: bool
    ) -> dict[str, Any]:
        """Validate an answer against the task and turn it into judgement columns."""
        if skip:
            return {"choice": None, "strength": None, "ranks": None, "skipped": True}
        if kind == "pairwise":
            if choice not in CHOICES:
                raise DataError(f"task {task_id} is pairwise: choice must be one of {CHOICES}, got {choice!r}")
            if choice in ("A", "B") and strength not in STRENGTH_MARGIN:
                raise DataError(
                    f"task {task_id}: choice {choice} needs strength in {tuple(STRENGTH_MARGIN)}, got {strength!r}"
                )
            first, second = order
            by_choice = {"A": (1, 2), "B": (2, 1)}.get(choice, (1, 1))
            rank_map = {first: by_choice[0], second: by_choice[1]}
            strength = strength if choice in ("A", "B") else None
        else:
            valid = isinstance(ranks, (list, tuple)) and len(ranks) == len(order)
            if not valid or not all(isinstance(r, int) and 1 <= r <= len(order) for r in ranks):
                raise DataError(
                    f"task {task_id} ranks {len(order)} candidates: ranks must be {len(order)} integers in "
                    f"1..{len(order)} (one per candidate in shown order, ties allowed), got {ranks!r}"
                )
            rank_map = dict(zip(order, ranks))
            choice = strength = None
        return {"choice": choice, "strength": strength, "ranks": _str_keys(rank_map), "skipped": False}

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
        """Withdraw the rater's most recent judgement (kept in the history) and serve its task again.

        Returns the task with the withdrawn answer in ``previous``, or None when there is nothing to undo.
        """
        with self._tx() as conn:
            user_id = self._user_id(conn, rater)
            last = conn.execute(
                select(judgements).where(judgements.c.user_id == user_id).order_by(judgements.c.id.desc()).limit(1)
            ).first()
            if last is None:
                return None
            now = self._now()
            self._record_history(conn, last, "undo", now)
            conn.execute(delete(judgements).where(judgements.c.id == last.id))
            expires = self._reserve(conn, last.task_id, user_id, now)
            return self._view(conn, last.task_id, user_id, expires, last)

    def judgements(self, rater: str) -> list[dict[str, Any]]:
        """The rater's own current judgements, newest first, answers in the order the rater saw them."""
        with self._tx(write=False) as conn:
            user_id = self._user_id(conn, rater)
            rows = conn.execute(
                select(judgements, tasks.c.kind, prompts.c.text.label("prompt"))
                .join(tasks, tasks.c.id == judgements.c.task_id)
                .join(prompts, prompts.c.id == tasks.c.prompt_id)
                .where(judgements.c.user_id == user_id)
                .order_by(judgements.c.id.desc())
            ).all()
        return [
            {
                "judgement_id": r.id,
                "task_id": r.task_id,
                "kind": r.kind,
                "prompt": r.prompt,
                **self._previous(r, list(r.shown_order)),
                "seconds": r.seconds,
                "created_at": r.created_at.isoformat(),
                "updated_at": r.updated_at.isoformat(),
            }
            for r in rows
        ]

    def history(self, judgement_id: int | None = None) -> list[dict[str, Any]]:
        """Earlier versions of judgements (events "edit" and "undo"), oldest first."""
        query = select(judgement_history).order_by(judgement_history.c.id)
        if judgement_id is not None:
            query = query.where(judgement_history.c.judgement_id == judgement_id)
        with self._tx(write=False) as conn:
            return [_jsonable(r) for r in conn.execute(query)]

    # ---------------------------------------------------------------- reporting

    def progress(self, rater: str | None = None) -> dict[str, Any]:
        """A rater's ``{"done", "remaining", "total"}``; without a rater, the whole collection (admin view)."""
        with self._tx(write=False) as conn:
            now = self._now()
            if rater is not None:
                user_id = self._user_id(conn, rater)
                done = conn.scalar(select(func.count()).where(judgements.c.user_id == user_id))
                eligible = select(func.count()).select_from(_eligible_tasks().subquery())
                remaining = conn.scalar(eligible, {"user_id": user_id, "now": now})
                return {"rater": rater, "done": done, "remaining": remaining, "total": done + remaining}
            return self._overall_progress(conn)

    def _overall_progress(self, conn: Connection) -> dict[str, Any]:
        counted = (
            select(judgements.c.task_id, func.count().label("n"))
            .where(judgements.c.skipped.is_(False))
            .group_by(judgements.c.task_id)
            .subquery()
        )
        regular = (
            select(tasks.c.judgements_needed, func.coalesce(counted.c.n, 0).label("n"))
            .outerjoin(counted, counted.c.task_id == tasks.c.id)
            .where(tasks.c.is_gold.is_(False))
        )
        rows = conn.execute(regular).all()
        per_rater = conn.execute(
            select(users.c.name, users.c.role, func.count(judgements.c.id))
            .outerjoin(judgements, judgements.c.user_id == users.c.id)
            .group_by(users.c.id, users.c.name, users.c.role)
            .order_by(users.c.name)
        ).all()
        return {
            "tasks": len(rows),
            "tasks_complete": sum(n >= needed for needed, n in rows),
            "judgements": sum(min(n, needed) for needed, n in rows),
            "judgements_needed": sum(needed for needed, _ in rows),
            "gold_tasks": conn.scalar(select(func.count()).where(tasks.c.is_gold.is_(True))),
            "raters": {name: count for name, role, count in per_rater if role == "rater" or count},
        }

    def records(self) -> tuple[list[JudgementRecord], dict[int, Candidate]]:
        """Every current judgement (skips included) and every candidate, for exports and reports."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                select(
                    judgements,
                    users.c.name.label("rater"),
                    tasks.c.kind,
                    tasks.c.is_gold,
                    tasks.c.gold_ranks,
                    tasks.c.prompt_id,
                    prompts.c.text.label("prompt"),
                )
                .join(users, users.c.id == judgements.c.user_id)
                .join(tasks, tasks.c.id == judgements.c.task_id)
                .join(prompts, prompts.c.id == tasks.c.prompt_id)
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
            )
            for r in rows
        ]
        return records, candidate_map

    def export_preferences(self, mode: str = "majority", include_gold: bool = False) -> list[dict[str, Any]]:
        """Rows ``{"prompt", "chosen", "rejected", "margin"}``; see ``export.preference_rows``."""
        return export_rules.preference_rows(*self.records(), mode=mode, include_gold=include_gold)

    def export_rankings(self, mode: str = "per-rater", include_gold: bool = False) -> list[dict[str, Any]]:
        """Rows ``{"prompt", "completions", "ranks"}`` of ranking tasks; see ``export.ranking_rows``."""
        return export_rules.ranking_rows(*self.records(), mode=mode, include_gold=include_gold)

    def agreement_report(self) -> dict[str, Any]:
        """Inter-rater agreement, gold accuracy and Bradley-Terry strengths; see ``agreement.report``."""
        return agreement.report(*self.records())
