"""Fixtures for the annotation tests: a real SQLite store with a movable clock, and answer helpers."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from alignment.annotations import AnnotationStore, QueueSettings


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_store(tmp_path, clock) -> Callable[..., AnnotationStore]:
    """make_store(**QueueSettings fields) -> a store on tmp_path/annotations.db (gold_rate 0 unless given)."""
    stores = []

    def make(**settings) -> AnnotationStore:
        settings.setdefault("gold_rate", 0.0)
        store = AnnotationStore(tmp_path / "annotations.db", QueueSettings(**settings), clock=clock)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(make_store) -> Callable[..., tuple[AnnotationStore, str]]:
    """served(**settings) -> (store, url): the app launched on 127.0.0.1 (a free port) over a fresh store.

    The store holds admin "root" (password "root-pw") and raters "alice", "bob" ("<name>-pw").
    """
    from annotation_ui import serve  # Gradio: imported only by the tests that launch the app

    apps = []

    def launch(**settings) -> tuple[AnnotationStore, str]:
        store = make_store(**settings)
        store.add_user("root", "admin", "root-pw")
        for name in ("alice", "bob"):
            store.add_user(name, "rater", f"{name}-pw")
        app, url = serve(store, host="127.0.0.1", port=free_port(), block=False, quiet=True)
        apps.append(app)
        return store, url

    yield launch
    for app in apps:
        app.close()
