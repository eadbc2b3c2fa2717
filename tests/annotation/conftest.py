"""Fixtures for the annotation tests: real stores with a movable clock, answer helpers, and the app over a store.

``make_store`` (and everything built on it) runs each test twice: on a SQLite file and on a fresh database of a
PostgreSQL server that the test session starts itself (``PostgresServer``: initdb + pg_ctl in a temp dir, on
127.0.0.1 and a free port). Without PostgreSQL's binaries or the psycopg driver the PostgreSQL runs are skipped,
unless ALIGNMENT_REQUIRE_POSTGRES is set (CI sets it): then they fail.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Executable, Row, create_engine, text

from alignment.annotations import AnnotationStore, QueueSettings

BACKENDS = ("sqlite", "postgresql")
REQUIRE_POSTGRES = "ALIGNMENT_REQUIRE_POSTGRES"


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ PostgreSQL


def postgres_bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl: the newest /usr/lib/postgresql/<version>/bin (Debian), else the PATH's."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: float(p.parts[-3]))
    if debian:
        return debian[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


def postgres_missing() -> str | None:
    """Why this machine cannot start a PostgreSQL server for the tests, or None when it can."""
    if postgres_bin_dir() is None:
        return "PostgreSQL is not installed: no pg_ctl under /usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401 - the driver SQLAlchemy's postgresql+psycopg:// URLs load
    except ImportError:
        return "the PostgreSQL driver is not installed (pip install 'psycopg[binary]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, but there is no unprivileged 'postgres' user to run the server as"
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb in a temp dir, started with pg_ctl on 127.0.0.1 and a free port.

    The server runs as the current user, or as ``postgres`` when that is root (PostgreSQL refuses to run as root).
    Logins are trusted (local and throwaway). ``durable=False`` turns fsync and synchronous commit off: faster, and
    only a crash of the server itself could lose data, which the tests never cause (they kill the app). Stores get a
    database each (``database()``), owned by the non-superuser role ``ROLE``, as a team's would be.
    """

    ROLE = "annotator"

    def __init__(self, durable: bool = False) -> None:
        self.bin_dir = postgres_bin_dir()
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="alignment-postgres-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self._run_as = "postgres" if os.geteuid() == 0 else None
        self._names = itertools.count()
        self.running = False
        self.version = 0

    def _run(self, program: str, *args: str) -> None:
        cmd = [str(self.bin_dir / program), *args]
        done = subprocess.run(cmd, user=self._run_as, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}{log}")

    def start(self) -> PostgresServer:
        if self._run_as:
            shutil.chown(self.root, self._run_as)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C",
                  "--no-sync")  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            **({} if self.durable else {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}),
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.version = self.execute(f"CREATE ROLE {self.ROLE} LOGIN")
        self.running = True
        return self

    def stop(self) -> None:
        """Stop the server and delete its files."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def execute(self, statement: str) -> int:
        """Run one statement as the superuser, outside a transaction (CREATE/DROP DATABASE need that); returns the
        server's version number (150004 for 15.4)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(statement)
            return conn.info.server_version

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (what ``--db`` takes) of one of this server's databases, as ``ROLE``."""
        return f"postgresql+psycopg://{self.ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database owned by ``ROLE``; returns its name."""
        name = f"store_{next(self._names)}"
        faster = " STRATEGY FILE_COPY" if self.version >= 150000 else ""  # than 15's default WAL_LOG, for a tiny template
        self.execute(f"CREATE DATABASE {name} OWNER {self.ROLE}{faster}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @contextmanager
    def database(self) -> Iterator[str]:
        """The URL of a new database, dropped afterwards (connections still open are ended)."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


_SERVER = pytest.StashKey[PostgresServer]()


@pytest.fixture(scope="session")
def postgres_server(request) -> PostgresServer:
    """The session's PostgreSQL server, started on first use (one per run, whichever module asks), stopped at the end.

    Missing PostgreSQL skips the test, or fails it when ALIGNMENT_REQUIRE_POSTGRES is set. An installed server that
    does not start fails every test that needs it (the first one shows why).
    """
    missing = postgres_missing()
    if missing:
        if os.environ.get(REQUIRE_POSTGRES):
            pytest.fail(f"{REQUIRE_POSTGRES} is set but {missing}")
        pytest.skip(f"{missing}; set {REQUIRE_POSTGRES}=1 to make this a failure")
    config = request.config
    if _SERVER not in config.stash:
        config.stash[_SERVER] = server = PostgresServer()
        config.add_cleanup(server.stop)
        server.start()
    if not config.stash[_SERVER].running:
        pytest.fail("the test PostgreSQL server did not start; the first test that asked for it shows why")
    return config.stash[_SERVER]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> Iterator[str]:
    """Where the test's store lives: the SQLite file tmp_path/annotations.db, or a new PostgreSQL database's URL."""
    if request.param == "sqlite":
        yield str(tmp_path / "annotations.db")
        return
    with request.getfixturevalue("postgres_server").database() as url:
        yield url


def backend_of(url: str) -> str:
    """ "sqlite" for a file path or sqlite:// URL, else the URL's dialect ("postgresql" for postgresql+psycopg://...)."""
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else "sqlite"


class Database:
    """Plain SQL on a store's database, behind the store's back (to check what it really wrote), on either backend.

    Give SQLAlchemy Core statements over ``alignment.annotations.schema`` tables where a JSON column is read: they
    decode it on both backends (a text query returns SQLite's JSON as a string, PostgreSQL's as a list or dict).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = create_engine(url if "://" in url else f"sqlite:///{Path(url).resolve()}")
        self.dialect = self._engine.dialect.name  # "sqlite" | "postgresql"

    def rows(self, query: str | Executable) -> list[Row]:
        with self._engine.connect() as conn:
            return conn.execute(text(query) if isinstance(query, str) else query).all()

    def scalar(self, query: str | Executable) -> Any:
        return self.rows(query)[0][0]

    def close(self) -> None:
        self._engine.dispose()


@pytest.fixture
def db(store_url) -> Iterator[Database]:
    """The test's store database (the one ``make_store`` opens) for direct SQL."""
    database = Database(store_url)
    yield database
    database.close()


# ------------------------------------------------------------------------------------------------ stores


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def _store_maker(where: str | Path, clock: Clock) -> Iterator[Callable[..., AnnotationStore]]:
    """make(**QueueSettings fields) -> a store at ``where`` (gold_rate 0 unless given); all closed at the end."""
    stores = []

    def make(**settings) -> AnnotationStore:
        settings.setdefault("gold_rate", 0.0)
        stores.append(AnnotationStore(where, QueueSettings(**settings), clock=clock))
        return stores[-1]

    try:
        yield make
    finally:
        for store in stores:
            store.close()


@pytest.fixture
def make_store(store_url, clock) -> Iterator[Callable[..., AnnotationStore]]:
    """make_store(**QueueSettings fields) -> a store at ``store_url`` (SQLite, then PostgreSQL), gold_rate 0 unless given."""
    with _store_maker(store_url, clock) as make:
        yield make


@pytest.fixture
def judge() -> Callable[..., int]:
    """judge(store, rater, rank_of=None, winner=None, **submit_kwargs) -> judgement id of the next task.

    rank_of: {candidate id: rank} for ranking tasks; winner: candidate id for pairwise A/B.
    """

    def run(store: AnnotationStore, rater: str, rank_of=None, winner=None, **kwargs) -> int:
        view = store.next_task(rater)
        assert view is not None, f"no task left for {rater}"
        if rank_of is not None:
            kwargs["ranks"] = view.shown_ranks(rank_of)
        if winner is not None:
            kwargs["choice"] = view.label_of(winner)
            kwargs.setdefault("strength", "clearly")
        return store.submit(rater, view.task_id, str(uuid.uuid4()), **kwargs)

    return run


@pytest.fixture
def prompt_with(make_store) -> Callable[..., tuple[AnnotationStore, list[int]]]:
    """prompt_with(n, raters=("r1", "r2", "r3"), **settings) -> (store, candidate ids) for one prompt."""

    def build(n: int, raters=("r1", "r2", "r3"), **settings) -> tuple[AnnotationStore, list[int]]:
        store = make_store(**settings)
        pid = store.add_prompt("Which answer is best?")
        ids = store.add_candidates(pid, [{"text": f"answer {i}", "policy": f"policy{i % 2}"} for i in range(n)])
        for name in raters:
            store.add_user(name, "rater", f"pw-{name}")
        return store, ids

    return build


@pytest.fixture
def served(tmp_path, clock) -> Callable[..., tuple[AnnotationStore, str]]:
    """served(**settings) -> (store, url): the app launched on 127.0.0.1 (a free port) over tmp_path/annotations.db.

    SQLite only: these tests drive the app, whose store the store suite covers on both backends. The store holds
    admin "root" (password "root-pw") and raters "alice", "bob" ("<name>-pw").
    """
    from annotation_ui import serve  # Gradio: imported only by the tests that launch the app

    apps = []
    with _store_maker(tmp_path / "annotations.db", clock) as make:

        def launch(forwarded_allow_ips: str = "127.0.0.1", **settings) -> tuple[AnnotationStore, str]:
            store = make(**settings)
            store.add_user("root", "admin", "root-pw")
            for name in ("alice", "bob"):
                store.add_user(name, "rater", f"{name}-pw")
            app, url = serve(store, host="127.0.0.1", port=free_port(), block=False, quiet=True,
                             forwarded_allow_ips=forwarded_allow_ips)
            apps.append(app)
            return store, url

        yield launch
        for app in apps:
            app.close()
