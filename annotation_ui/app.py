"""The Gradio annotation app: raters judge tasks from the store; admins watch progress and export.

Every handler resolves the logged-in user from ``gr.Request`` on the server and only ever touches
that user's queue and judgements; admin handlers refuse non-admins themselves (hiding the tab is
only cosmetic). Model outputs are untrusted: prompts and candidates are shown in read-only textboxes,
which display text and never interpret HTML.
"""

from __future__ import annotations

import functools
import html
import re
import string
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from alignment.annotations import AnnotationStore
from alignment.annotations.export import MODES
from alignment.errors import AlignmentError
from alignment.run import write_jsonl

MAX_CANDIDATES = 8
CHOICES = [("A is better", "A"), ("B is better", "B"), ("Tie", "tie"), ("Both bad", "both_bad")]
STRENGTHS = [("Slightly", "slightly"), ("Clearly", "clearly"), ("Much", "much")]
FLAG_CHOICES = [("Harmful", "harmful"), ("Off-topic", "off_topic"), ("Broken", "broken")]
SHORTCUTS = """
<script>
document.addEventListener("keydown", (event) => {
  const targets = {Enter: event.ctrlKey && "submit-btn", s: event.altKey && "skip-btn", z: event.altKey && "undo-btn"};
  const id = targets[event.key.length === 1 ? event.key.toLowerCase() : event.key];
  const button = id && document.getElementById(id);
  if (button) { event.preventDefault(); button.click(); }
});
</script>
"""
HELP = "Shortcuts: **Ctrl+Enter** submit · **Alt+S** skip · **Alt+Z** undo last."


_MARKDOWN_PUNCTUATION = re.compile("([" + re.escape(string.punctuation.replace("&", "").replace(";", "")) + "])")


def _markdown_literal(text: str) -> str:
    """``text`` for a gr.Markdown, shown as written: HTML escaped, and every Markdown character (links, images,
    emphasis, autolinks) backslash-escaped. A user name like ``[x](https://...)`` must not become a link."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))


def _user(request: gr.Request) -> str:
    if not request or not request.username:
        raise gr.Error("Log in first.")
    return request.username


def _guarded(fn: Callable) -> Callable:
    """Turn the store's user-facing errors into gr.Error (message escaped: it may quote user input)."""

    @functools.wraps(fn)  # keeps the signature and hints Gradio reads (gr.Request injection, API schema)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AlignmentError as err:
            raise gr.Error(html.escape(str(err), quote=False)) from err

    return wrapper


class AnnotationAPI:
    """What the app can do, per logged-in user: the named API endpoints and the UI both call these."""

    def __init__(self, store: AnnotationStore) -> None:
        self.store = store

    def _admin(self, request: gr.Request) -> str:
        name = _user(request)
        self.store.require_admin(name)
        return name

    # rater endpoints: always the caller's own queue and judgements
    def next_task(self, request: gr.Request) -> dict | None:
        """Reserve and return your next task (candidates in your shown order), or None when done."""
        view = self.store.next_task(_user(request))
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
    ) -> dict:
        """Submit your judgement of a served task; the same submission_id twice is stored once."""
        rater = _user(request)
        judgement_id = self.store.submit(
            rater, int(task_id), submission_id, choice=choice or None, strength=strength or None,
            ranks=[int(r) for r in ranks] if ranks else None, rationale=rationale or "", flags=flags or [],
            skip=bool(skip), seconds=float(seconds or 0),
        )  # fmt: skip
        return {"judgement_id": judgement_id, "progress": self.store.progress(rater)}

    def undo(self, request: gr.Request) -> dict | None:
        """Withdraw your last judgement; returns its task (your old answer in "previous") or None."""
        view = self.store.undo_last(_user(request))
        return view.as_dict() if view else None

    def progress(self, request: gr.Request) -> dict:
        """Your progress: done, remaining, total."""
        return self.store.progress(_user(request))

    def my_judgements(self, request: gr.Request) -> list[dict]:
        """Your own judgements, newest first."""
        return self.store.judgements(_user(request))

    def task_for_edit(self, task_id: int, request: gr.Request) -> dict:
        """A task you judged or hold, with your answer in "previous", to edit by submitting again."""
        return self.store.task_view(_user(request), int(task_id)).as_dict()

    # admin endpoints: refused for everyone else
    def overall_progress(self, request: gr.Request) -> dict:
        """(admin) Progress of the whole collection and per rater."""
        self._admin(request)
        return self.store.progress()

    def agreement(self, request: gr.Request) -> dict:
        """(admin) Agreement, Krippendorff's alpha (nominal), gold accuracy, Bradley-Terry strengths."""
        self._admin(request)
        return self.store.agreement_report()

    def export_preferences(self, mode: str, include_gold: bool, request: gr.Request) -> list[dict]:
        """(admin) Preference rows {prompt, chosen, rejected, margin}; mode majority | per-rater."""
        self._admin(request)
        return self.store.export_preferences(mode, bool(include_gold))

    def export_rankings(self, mode: str, include_gold: bool, request: gr.Request) -> list[dict]:
        """(admin) Ranking rows {prompt, completions, ranks}; mode majority | per-rater."""
        self._admin(request)
        return self.store.export_rankings(mode, bool(include_gold))

    def rater_judgements(self, rater: str, request: gr.Request) -> list[dict]:
        """(admin) Another user's judgements."""
        self._admin(request)
        return self.store.judgements(rater)

    ENDPOINTS = (
        "next_task", "submit", "undo", "progress", "my_judgements", "task_for_edit",
        "overall_progress", "agreement", "export_preferences", "export_rankings", "rater_judgements",
    )  # fmt: skip


class _AnnotateTab:
    """The components of the annotation tab and the updates that show one task in them."""

    def __init__(self) -> None:
        self.state = gr.State(None)  # {"view", "submission_id", "started"} of the task on screen
        self.header = gr.Markdown(elem_id="progress")
        self.prompt = gr.Textbox(label="Prompt", interactive=False, lines=3, max_lines=15, elem_id="prompt")
        self.columns, self.texts, self.ranks = [], [], []
        with gr.Row():
            for i in range(MAX_CANDIDATES):
                with gr.Column(visible=False, min_width=220) as column:
                    self.columns.append(column)
                    self.texts.append(gr.Textbox(interactive=False, lines=6, max_lines=30, elem_id=f"candidate-{i}"))
                    self.ranks.append(gr.Radio(label="Rank (1 = best, ties allowed)", elem_id=f"rank-{i}"))
        with gr.Group(visible=False) as self.pairwise:
            self.choice = gr.Radio(CHOICES, label="Which is better?", elem_id="choice")
            self.strength = gr.Radio(STRENGTHS, label="By how much?", elem_id="strength")
        self.rationale = gr.Textbox(label="Rationale (optional)", lines=2, elem_id="rationale")
        self.flags = gr.CheckboxGroup(FLAG_CHOICES, label="Flags", elem_id="flags")
        with gr.Row():
            self.submit_btn = gr.Button("Submit", variant="primary", elem_id="submit-btn")
            self.skip_btn = gr.Button("Skip", elem_id="skip-btn")
            self.undo_btn = gr.Button("Undo last", elem_id="undo-btn")
        self.status = gr.Markdown(elem_id="status")
        gr.Markdown(HELP)

    @property
    def outputs(self) -> list:
        return [
            self.state, self.header, self.prompt, *self.columns, *self.texts, *self.ranks, self.pairwise,
            self.choice, self.strength, self.rationale, self.flags, self.status,
        ]  # fmt: skip

    def show(self, view: dict | None, progress: dict, note: str = "") -> list:
        """Updates for ``outputs`` that put ``view`` (or the all-done message) on screen."""
        header = f"**{_markdown_literal(progress['rater'])}** · {progress['done']} / {progress['total']} done"
        if view is None:
            hidden = [gr.update(visible=False)] * MAX_CANDIDATES
            return [None, header, "No tasks left for you. Thank you!", *hidden,
                    *[gr.update(value="")] * MAX_CANDIDATES, *[gr.update(value=None)] * MAX_CANDIDATES,
                    gr.update(visible=False), None, None, "", [], note]  # fmt: skip
        shown = view["candidates"]
        previous = view.get("previous") or {}
        ranking = view["kind"] == "ranking"
        choices = [str(r) for r in range(1, len(shown) + 1)]
        old_ranks = previous.get("ranks") or [None] * len(shown)
        state = {"view": view, "submission_id": str(uuid.uuid4()), "started": time.monotonic()}
        return [
            state,
            header,
            view["prompt"],
            *[gr.update(visible=i < len(shown)) for i in range(MAX_CANDIDATES)],
            *[gr.update(value=c["text"], label=f"Candidate {c['label']}") for c in shown],
            *[gr.update(value="")] * (MAX_CANDIDATES - len(shown)),
            *[gr.update(choices=choices, value=str(r) if r else None, visible=ranking) for r in old_ranks],
            *[gr.update(value=None)] * (MAX_CANDIDATES - len(shown)),
            gr.update(visible=not ranking),
            previous.get("choice"),
            previous.get("strength"),
            previous.get("rationale", ""),
            previous.get("flags", []),
            note,
        ]


def build_app(store: AnnotationStore, title: str = "Preference annotation") -> gr.Blocks:
    """The annotation app over ``store``. Launch it with ``serve`` (adds login and shortcuts)."""
    api = AnnotationAPI(store)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        for name in AnnotationAPI.ENDPOINTS:
            gr.api(_guarded(getattr(api, name)), api_name=name)
        gr.Markdown(f"## {_markdown_literal(title)}")
        with gr.Tabs() as tabs:
            with gr.Tab("Annotate", id="annotate"):
                tab = _AnnotateTab()
            with gr.Tab("My judgements", id="mine"):
                mine = gr.JSON(label="Your judgements, newest first")
                with gr.Row():
                    refresh_mine = gr.Button("Refresh")
                    edit_id = gr.Number(label="Task id to edit", precision=0)
                    edit_btn = gr.Button("Load for editing")
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                _admin_panel(api, admin_tab)
        _wire_annotate(api, tab, demo, admin_tab)
        refresh_mine.click(_guarded(api.my_judgements), None, mine, api_visibility="private")

        def load_for_edit(task_id: float | None, request: gr.Request) -> list:
            view = api.task_for_edit(int(task_id or 0), request)
            return [gr.Tabs(selected="annotate"), *tab.show(view, api.progress(request), "Editing an earlier answer.")]

        edit_btn.click(_guarded(load_for_edit), edit_id, [tabs, *tab.outputs], api_visibility="private")
    return demo


def _answer(tab_state: dict | None, choice: str | None, strength: str | None, ranks: list, rationale: str,
            flags: list[str], skip: bool) -> dict:  # fmt: skip
    """The submit() arguments for what is on screen."""
    if not tab_state:
        raise gr.Error("No task on screen.")
    view = tab_state["view"]
    shown = len(view["candidates"])
    rank_values = [int(r) if r else None for r in ranks[:shown]]
    if view["kind"] == "ranking" and not skip and None in rank_values:
        raise gr.Error("Give every candidate a rank (ties allowed).")
    return {
        "task_id": view["task_id"],
        "submission_id": tab_state["submission_id"],
        "choice": None if skip else choice,
        "strength": None if skip else strength,
        "ranks": None if skip or view["kind"] != "ranking" else rank_values,
        "rationale": rationale,
        "flags": flags,
        "skip": skip,
        "seconds": time.monotonic() - tab_state["started"],
    }


def _wire_annotate(api: AnnotationAPI, tab: _AnnotateTab, demo: gr.Blocks, admin_tab: gr.Tab) -> None:
    inputs = [tab.state, tab.choice, tab.strength, *tab.ranks, tab.rationale, tab.flags]

    def on_load(request: gr.Request) -> list:
        is_admin = api.store.role(_user(request)) == "admin"
        return [gr.update(visible=is_admin), *tab.show(api.next_task(request), api.progress(request))]

    def send(skip: bool) -> Callable:
        def handler(
            request: gr.Request, state: dict | None, choice: str | None, strength: str | None, *rest: Any
        ) -> list:
            ranks, (rationale, flags) = list(rest[:MAX_CANDIDATES]), rest[MAX_CANDIDATES:]
            api.submit(**_answer(state, choice, strength, ranks, rationale, flags, skip), request=request)
            note = "Skipped." if skip else "Saved."
            return tab.show(api.next_task(request), api.progress(request), note)

        return handler

    def undo(request: gr.Request) -> list:
        view = api.undo(request)
        if view is None:
            return tab.show(api.next_task(request), api.progress(request), "Nothing to undo.")
        return tab.show(view, api.progress(request), "Your last answer was withdrawn; change it and submit again.")

    demo.load(_guarded(on_load), None, [admin_tab, *tab.outputs], api_visibility="private")
    tab.submit_btn.click(_guarded(send(False)), inputs, tab.outputs, api_visibility="private")
    tab.skip_btn.click(_guarded(send(True)), inputs, tab.outputs, api_visibility="private")
    tab.undo_btn.click(_guarded(undo), None, tab.outputs, api_visibility="private")


def _admin_panel(api: AnnotationAPI, admin_tab: gr.Tab) -> None:
    """Progress, agreement, exports and per-rater work; every handler checks the admin role itself."""
    with gr.Row():
        refresh = gr.Button("Refresh progress and agreement")
    progress = gr.JSON(label="Progress")
    agreement = gr.JSON(label="Agreement (Krippendorff's alpha: nominal)")
    with gr.Row():
        mode = gr.Radio(list(MODES), value="majority", label="Export mode")
        include_gold = gr.Checkbox(label="Include gold tasks")
        export_btn = gr.Button("Export JSONL")
    files = gr.File(label="Exports", file_count="multiple")
    with gr.Row():
        rater = gr.Textbox(label="Rater name")
        lookup = gr.Button("Show their judgements")
    their = gr.JSON(label="Judgements")

    def report(request: gr.Request) -> tuple[dict, dict]:
        return api.overall_progress(request), api.agreement(request)

    def export(mode_value: str, gold: bool, request: gr.Request) -> list[str]:
        out = Path(tempfile.mkdtemp(prefix="annotation-export-"))
        write_jsonl(out / "preferences.jsonl", api.export_preferences(mode_value, gold, request))
        write_jsonl(out / "rankings.jsonl", api.export_rankings(mode_value, gold, request))
        return [str(out / "preferences.jsonl"), str(out / "rankings.jsonl")]

    for trigger in (refresh.click, admin_tab.select):
        trigger(_guarded(report), None, [progress, agreement], api_visibility="private")
    export_btn.click(_guarded(export), [mode, include_gold], files, api_visibility="private")
    lookup.click(_guarded(api.rater_judgements), rater, their, api_visibility="private")


def serve(
    store: AnnotationStore, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, **launch_kwargs: Any
) -> tuple[gr.Blocks, str]:
    """Launch the app with login (store.authenticate, with its lockout) and keyboard shortcuts.

    Returns (app, local URL); with ``block=False`` the server runs in the background (``app.close()``).
    """
    demo = build_app(store)
    demo.queue(default_concurrency_limit=8)
    _, url, _ = demo.launch(
        auth=store.authenticate,
        auth_message="Log in with the account your annotation admin gave you.",
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        head=SHORTCUTS,
        footer_links=["api"],
        **launch_kwargs,
    )
    return demo, url
