"""What the app can do, per logged-in user: the named API endpoints (for gradio_client) and the UI call these.

Every method resolves the user from ``gr.Request`` on the server; rater methods only ever touch the caller's own
queue and judgements, admin methods check the admin role themselves (hiding a tab is only cosmetic).
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from alignment.annotations import AnnotationStore
from alignment.errors import AlignmentError

log = logging.getLogger("annotation_ui")


class UserError(AlignmentError):
    """Something the user can fix (an incomplete answer, no task on screen): shown, logged as one line."""


def user_of(request: gr.Request | None) -> str:
    if not request or not request.username:
        raise UserError("Log in first.")
    return request.username


def log_user_error(call_args: tuple, call_kwargs: dict, err: Exception) -> None:
    """One log line (no traceback) for a user error in a handler called with these arguments."""
    request = next((a for a in (*call_args, *call_kwargs.values()) if isinstance(a, gr.Request)), None)
    log.warning("%s: %s", getattr(request, "username", None) or "anonymous", err)


def api_endpoint(fn: Callable) -> Callable:
    """A store error becomes a gr.Error for the client (escaped: it may quote user input), one log line, no
    traceback."""

    @functools.wraps(fn)  # keeps the signature and hints Gradio reads (gr.Request injection, API schema)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AlignmentError as err:
            log_user_error(args, kwargs, err)
            raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None

    return wrapper


class AnnotationAPI:
    """The operations of the app; each takes the caller's ``gr.Request``."""

    def __init__(self, store: AnnotationStore) -> None:
        self.store = store

    def admin(self, request: gr.Request) -> str:
        name = user_of(request)
        self.store.require_admin(name)
        return name

    # rater endpoints: always the caller's own queue and judgements
    def next_task(self, request: gr.Request) -> dict | None:
        """Reserve and return your next task (candidates in your shown order), or None when done."""
        view = self.store.next_task(user_of(request))
        return view.as_dict() if view else None

    def submit(
        self,
        task_id: int,
        submission_id: str,
        choice: str | None,
        strength: str | None,
        ranks: list[int] | None,
        rationale: str,
        flags: list[str],
        skip: bool,
        seconds: float,
        request: gr.Request,
        rating: int | None = None,
    ) -> dict:
        """Submit your judgement of a served task; the same submission_id twice is stored once."""
        rater = user_of(request)
        judgement_id = self.store.submit(
            rater, int(task_id), submission_id, choice=choice or None, strength=strength or None,
            ranks=[int(r) for r in ranks] if ranks else None, rationale=rationale or "", flags=flags or [],
            skip=bool(skip), seconds=float(seconds or 0), rating=None if rating is None else int(rating),
        )  # fmt: skip
        return {"judgement_id": judgement_id, "progress": self.store.progress(rater)}

    def undo(self, request: gr.Request) -> dict | None:
        """Withdraw your last judgement; returns its task (your old answer in "previous") or None."""
        view = self.store.undo_last(user_of(request))
        return view.as_dict() if view else None

    def progress(self, request: gr.Request) -> dict:
        """Your progress: done, skipped, remaining, quota, total."""
        return self.store.progress(user_of(request))

    def my_judgements(self, request: gr.Request) -> list[dict]:
        """Your own judgements, newest first."""
        return self.store.judgements(user_of(request))

    def task_for_edit(self, task_id: int, request: gr.Request) -> dict:
        """A task you judged or hold, with your answer in "previous", to edit by submitting again."""
        return self.store.task_view(user_of(request), int(task_id)).as_dict()

    def guidelines(self, request: gr.Request) -> str:
        """The project's annotation guidelines (Markdown)."""
        user_of(request)
        return self.store.guidelines()

    # admin endpoints: refused for everyone else
    def overall_progress(self, request: gr.Request) -> dict:
        """(admin) Progress of the whole collection, per rater and per task set."""
        self.admin(request)
        return self.store.progress()

    def task_sets(self, request: gr.Request) -> list[dict]:
        """(admin) Per task set: tasks, complete, judgements, gold and flagged tasks."""
        self.admin(request)
        return self.store.task_sets()

    def rater_stats(self, request: gr.Request) -> list[dict]:
        """(admin) Per rater: done, skipped, median seconds, last hour, gold accuracy, flags."""
        self.admin(request)
        return self.store.rater_stats()

    def agreement(self, request: gr.Request) -> dict:
        """(admin) Agreement with its 95% CI, Krippendorff's alpha (nominal), gold accuracy, Bradley-Terry."""
        self.admin(request)
        return self.store.agreement_report()

    def flagged(self, request: gr.Request) -> list[dict]:
        """(admin) Current judgements with a flag, for review."""
        self.admin(request)
        return self.store.flagged()

    def users(self, request: gr.Request) -> list[dict]:
        """(admin) Accounts with their role, quota and login throttling."""
        self.admin(request)
        return self.store.users()

    def unlock(self, name: str, request: gr.Request) -> list[dict]:
        """(admin) Clear an account's failed-login throttling; returns the user list."""
        self.admin(request)
        self.store.unlock(name)
        return self.store.users()

    def export_preferences(self, mode: str, include_gold: bool, request: gr.Request) -> list[dict]:
        """(admin) Preference rows {prompt, chosen, rejected, margin, ...}; mode majority | per-rater."""
        self.admin(request)
        return self.store.export_preferences(mode, bool(include_gold))

    def export_rankings(self, mode: str, include_gold: bool, request: gr.Request) -> list[dict]:
        """(admin) Ranking rows {prompt, completions, ranks, ...}; mode majority | per-rater."""
        self.admin(request)
        return self.store.export_rankings(mode, bool(include_gold))

    def rater_judgements(self, rater: str, request: gr.Request) -> list[dict]:
        """(admin) Another user's judgements."""
        self.admin(request)
        return self.store.judgements(rater)

    def flagged_task(self, rater: str, task_id: int, request: gr.Request) -> dict:
        """(admin) A task as ``rater`` saw it, with their answer in "previous"."""
        self.admin(request)
        return self.store.task_view(rater, int(task_id)).as_dict()

    ENDPOINTS = (
        "next_task", "submit", "undo", "progress", "my_judgements", "task_for_edit", "guidelines",
        "overall_progress", "task_sets", "rater_stats", "agreement", "flagged", "users", "unlock",
        "export_preferences", "export_rankings", "rater_judgements",
    )  # fmt: skip
