"""The rater's screens: the Annotate tab (one task at a time) and My judgements (a table; a click edits a row).

Prompts and candidates are rendered as Markdown on the server with raw HTML off (``render.markdown_html``);
"Show raw text" swaps in read-only text boxes holding the exact text. A user error (an incomplete answer, no task
on screen) never touches the task on screen: the handler returns "no change" for every output except the one
message next to the buttons.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import gradio as gr

from alignment.errors import AlignmentError
from annotation_ui.api import AnnotationAPI, UserError, log_user_error, user_of
from annotation_ui.render import markdown_html, markdown_literal

MAX_CANDIDATES = 8
LABELS = "ABCDEFGH"
CHOICES = [("A is better", "A"), ("B is better", "B"), ("Tie", "tie"), ("Both bad", "both_bad")]
STRENGTHS = [("Slightly", "slightly"), ("Clearly", "clearly"), ("Much", "much")]
FLAG_CHOICES = [("Harmful", "harmful"), ("Off-topic", "off_topic"), ("Broken", "broken")]
RATINGS = {
    "binary": [("👎 Bad", 0), ("👍 Good", 1)],
    "likert5": [("1 · very bad", 1), ("2 · bad", 2), ("3 · okay", 3), ("4 · good", 4), ("5 · very good", 5)],
}
HOTKEYS = """**Keys** (ignored while you type in a text box) ·
pairwise: **1** A better · **2** B better · **3** tie · **4** both bad, then **q** slightly · **w** clearly · **e** much ·
ranking: **a**–**h** picks a candidate, **1**–**8** gives it that rank and moves to the next (so *1 3 2* ranks A, B, C) ·
rating: **0** 👎 bad · **1** 👍 good, or **1**–**5** ·
**Ctrl+Enter** submit · **Alt+S** skip · **Alt+Z** undo last."""
MINE_COLUMNS = ["task", "task set", "kind", "answer", "prompt", "rationale", "flags", "updated"]


def screen_handler(outputs: list, message: Any) -> Callable[[Callable], Callable]:
    """Wrap a UI handler: on a user error, every output in ``outputs`` stays as it is and ``message`` (one of
    them) says what to fix."""
    where = outputs.index(message)

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)  # Gradio reads the signature (gr.Request injection)
        def wrapper(*args: Any, **kwargs: Any) -> list:
            try:
                return fn(*args, **kwargs)
            except AlignmentError as err:
                log_user_error(args, kwargs, err)
                updates = [gr.update() for _ in outputs]
                updates[where] = f"⚠️ {markdown_literal(str(err))}"
                return updates

        return wrapper

    return wrap


def progress_line(progress: dict) -> str:
    """``rater · n / N done · m skipped``: n counts answers and skips (a quota counts both), N is the quota if set."""
    handled = progress["done"] + progress["skipped"]
    return (f"**{markdown_literal(progress['rater'])}** · {handled} / {progress['total']} done · "
            f"{progress['skipped']} skipped")  # fmt: skip


def _answer_text(row: dict) -> str:
    if row.get("skip"):
        return "skipped"
    if row["kind"] == "ranking":
        return " ".join(f"{LABELS[i]}:{r}" for i, r in enumerate(row.get("ranks") or []))
    if row["kind"] == "rating":
        return str(row.get("rating"))
    return " ".join(filter(None, (row.get("choice"), row.get("strength"))))


def judgement_table(rows: list[dict]) -> list[list]:
    """Judgement rows (store.judgements) as table rows in MINE_COLUMNS order."""
    return [
        [r["task_id"], r.get("task_set", ""), r["kind"], _answer_text(r), r["prompt"][:200], r.get("rationale", ""),
         ", ".join(r.get("flags") or []), r["updated_at"][:19].replace("T", " ")]
        for r in rows
    ]  # fmt: skip


class AnnotateTab:
    """The components of the Annotate tab and the updates that put one task in them."""

    def __init__(self) -> None:
        self.state = gr.State(None)  # {"view", "submission_id", "started"} of the task on screen
        with gr.Row():
            self.header = gr.Markdown(elem_id="progress")
            self.show_raw = gr.Checkbox(label="Show raw text", value=False, elem_id="show-raw", scale=0, min_width=160)
            gr.Button("Log out", link="/logout", size="sm", scale=0, min_width=100, elem_id="logout-btn")
        with gr.Accordion("Guidelines", open=True, elem_id="guidelines-panel"):
            self.instructions = gr.HTML(elem_id="task-instructions")
            self.guidelines = gr.HTML(elem_id="guidelines")
        self.prompt_view = gr.HTML(elem_id="prompt-view", elem_classes=["rendered-text", "prompt-box"])
        self.prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, max_lines=100_000, elem_id="prompt",
                                 elem_classes=["raw-text"])  # fmt: skip
        self.columns, self.views, self.texts, self.ranks = [], [], [], []
        with gr.Row(elem_id="candidates", equal_height=False):
            for i in range(MAX_CANDIDATES):
                with gr.Column(visible=False, min_width=300, elem_classes=["candidate-column"]) as column:
                    self.columns.append(column)
                    self.views.append(gr.HTML(elem_id=f"candidate-view-{i}", elem_classes=["rendered-text"]))
                    self.texts.append(gr.Textbox(
                        label=f"Candidate {LABELS[i]}", interactive=False, lines=2, max_lines=100_000,
                        elem_id=f"candidate-{i}", elem_classes=["raw-text"],
                    ))  # fmt: skip
                    self.ranks.append(gr.Radio(label=f"Rank of {LABELS[i]} (1 = best, ties allowed)", elem_id=f"rank-{i}"))
        with gr.Group(visible=False) as self.pairwise:
            self.choice = gr.Radio(CHOICES, label="Which is better?", elem_id="choice")
            self.strength = gr.Radio(STRENGTHS, label="By how much? (for A or B)", elem_id="strength")
        self.rating = gr.Radio(RATINGS["likert5"], label="Your rating", visible=False, elem_id="rating")
        self.rationale = gr.Textbox(label="Rationale (optional)", lines=2, elem_id="rationale")
        self.flags = gr.CheckboxGroup(FLAG_CHOICES, label="Flags", elem_id="flags")
        self.message = gr.Markdown(elem_id="status")
        with gr.Row():
            self.submit_btn = gr.Button("Submit", variant="primary", elem_id="submit-btn")
            self.skip_btn = gr.Button("Skip", elem_id="skip-btn")
            self.undo_btn = gr.Button("Undo last", elem_id="undo-btn")
        gr.Markdown(HOTKEYS, elem_id="hotkeys")
        self.show_raw.change(None, self.show_raw, None, js="(raw) => { document.body.classList.toggle('show-raw', raw); }")

    @property
    def outputs(self) -> list:
        return [
            self.state, self.header, self.instructions, self.prompt_view, self.prompt, *self.columns, *self.views,
            *self.texts, *self.ranks, self.pairwise, self.choice, self.strength, self.rating, self.rationale,
            self.flags, self.message,
        ]  # fmt: skip

    @property
    def answer_inputs(self) -> list:
        return [self.state, self.choice, self.strength, self.rating, *self.ranks, self.rationale, self.flags]

    def show(self, view: dict | None, progress: dict, note: str = "") -> list:
        """Updates for ``outputs`` that put ``view`` (or the all-done message) on screen."""
        if view is None:
            done = "No tasks left for you. Thank you!"
            return [None, progress_line(progress), "", markdown_html(done), done,
                    *[gr.update(visible=False)] * MAX_CANDIDATES, *[""] * (2 * MAX_CANDIDATES),
                    *[gr.update(value=None)] * MAX_CANDIDATES, gr.update(visible=False), None, None,
                    gr.update(value=None, visible=False), "", [], note]  # fmt: skip
        shown, kind = view["candidates"], view["kind"]
        previous = view.get("previous") or {}
        rank_choices = [str(r) for r in range(1, len(shown) + 1)]
        old_ranks = (previous.get("ranks") if kind == "ranking" else None) or [None] * len(shown)
        blank = MAX_CANDIDATES - len(shown)
        instructions = view.get("instructions")
        return [
            {"view": view, "submission_id": str(uuid.uuid4()), "started": time.monotonic()},
            progress_line(progress),
            markdown_html(f"**This task:** {instructions}") if instructions else "",
            markdown_html(view["prompt"]),
            view["prompt"],
            *[gr.update(visible=i < len(shown)) for i in range(MAX_CANDIDATES)],
            *[f'<h4 class="candidate-label">Candidate {c["label"]}</h4>' + markdown_html(c["text"]) for c in shown],
            *[""] * blank,
            *[c["text"] for c in shown],
            *[""] * blank,
            *[gr.update(choices=rank_choices, value=str(r) if r else None, visible=kind == "ranking") for r in old_ranks],
            *[gr.update(value=None, visible=False)] * blank,
            gr.update(visible=kind == "pairwise"),
            previous.get("choice"),
            previous.get("strength"),
            gr.update(choices=RATINGS.get(view.get("rating_scale") or "likert5"), value=previous.get("rating"),
                      visible=kind == "rating"),  # fmt: skip
            previous.get("rationale", ""),
            previous.get("flags", []),
            note,
        ]


def _missing(view: dict, choice: str | None, strength: str | None, rating: int | None, ranks: list) -> str:
    """What the on-screen answer still lacks, in words ("" when complete); the store checks it again."""
    if view["kind"] == "ranking":
        unranked = [c["label"] for c, r in zip(view["candidates"], ranks) if not r]
        return f"Give every candidate a rank (ties allowed): {', '.join(unranked)} has none yet." if unranked else ""
    if view["kind"] == "rating":
        return "" if rating is not None else "Choose a rating first."
    if not choice:
        return "Choose A, B, tie or both bad first."
    if choice in ("A", "B") and not strength:
        return f"Choose how much better {choice} is: slightly, clearly or much."
    return ""


def answer(state: dict | None, choice: str | None, strength: str | None, rating: int | None, ranks: list,
           rationale: str, flags: list[str], skip: bool) -> dict:  # fmt: skip
    """The submit() arguments for what is on screen; UserError when it is incomplete."""
    if not state:
        raise UserError("There is no task on screen to submit: all your tasks are done.")
    view = state["view"]
    ranks = ranks[: len(view["candidates"])]
    missing = "" if skip else _missing(view, choice, strength, rating, ranks)
    if missing:
        raise UserError(missing)
    kind = view["kind"]
    return {
        "task_id": view["task_id"],
        "submission_id": state["submission_id"],
        "choice": choice if kind == "pairwise" and not skip else None,
        "strength": strength if kind == "pairwise" and choice in ("A", "B") and not skip else None,
        "ranks": [int(r) for r in ranks] if kind == "ranking" and not skip else None,
        "rating": rating if kind == "rating" and not skip else None,
        "rationale": rationale,
        "flags": flags,
        "skip": skip,
        "seconds": time.monotonic() - state["started"],
    }


def wire_annotate(api: AnnotationAPI, tab: AnnotateTab, demo: gr.Blocks, admin_tab: gr.Tab) -> None:
    """Load, submit, skip and undo for the Annotate tab."""
    on_screen = screen_handler(tab.outputs, tab.message)

    def on_load(request: gr.Request) -> list:
        name = user_of(request)
        is_admin = api.store.role(name) == "admin"
        guidelines = api.guidelines(request) or "_No guidelines yet: ask your admin._"
        screen = tab.show(api.next_task(request), api.progress(request))
        return [gr.update(visible=is_admin), markdown_html(guidelines), *screen]

    def send(skip: bool) -> Callable:
        @on_screen
        def handler(request: gr.Request, state: dict | None, choice: str | None, strength: str | None,
                    rating: int | None, *rest: Any) -> list:  # fmt: skip
            ranks, (rationale, flags) = list(rest[:MAX_CANDIDATES]), rest[MAX_CANDIDATES:]
            api.submit(**answer(state, choice, strength, rating, ranks, rationale, flags, skip), request=request)
            return tab.show(api.next_task(request), api.progress(request), "Skipped." if skip else "Saved.")

        return handler

    @on_screen
    def undo(request: gr.Request) -> list:
        view = api.undo(request)
        if view is None:
            raise UserError("Nothing to undo: you have no answer left to take back.")
        return tab.show(view, api.progress(request), "Your last answer was withdrawn; change it and submit again.")

    load_outputs = [admin_tab, tab.guidelines, *tab.outputs]
    demo.load(screen_handler(load_outputs, tab.message)(on_load), None, load_outputs, api_visibility="private")
    tab.submit_btn.click(send(False), tab.answer_inputs, tab.outputs, api_visibility="private")
    tab.skip_btn.click(send(True), tab.answer_inputs, tab.outputs, api_visibility="private")
    tab.undo_btn.click(undo, None, tab.outputs, api_visibility="private")


class MineTab:
    """My judgements: the rater's answers as a table; clicking a row loads that task for editing."""

    def __init__(self) -> None:
        gr.Markdown("Your answers, newest first. Click a row to change that answer.")
        self.refresh = gr.Button("Refresh", size="sm")
        self.table = gr.Dataframe(headers=MINE_COLUMNS, interactive=False, wrap=True, elem_id="mine")
        self.message = gr.Markdown(elem_id="mine-status")


def wire_mine(api: AnnotationAPI, mine: MineTab, tab: AnnotateTab, tabs: gr.Tabs, mine_tab: gr.Tab) -> None:
    """Refresh the table; a click on a row opens that task in the Annotate tab with the old answer filled in."""

    def refresh(request: gr.Request) -> tuple:
        return judgement_table(api.my_judgements(request)), ""

    outputs = [tabs, mine.message, *tab.outputs]

    @screen_handler(outputs, mine.message)
    def edit(table: Any, event: gr.SelectData, request: gr.Request) -> list:
        task_id = (event.row_value or [None])[0]
        if task_id in (None, ""):
            raise UserError("Click a row of the table to load that answer.")
        view = api.task_for_edit(int(task_id), request)
        return [gr.Tabs(selected="annotate"), "", *tab.show(view, api.progress(request), "Editing an earlier answer.")]

    for trigger in (mine.refresh.click, mine_tab.select):
        trigger(screen_handler([mine.table, mine.message], mine.message)(refresh), None, [mine.table, mine.message],
                api_visibility="private")  # fmt: skip
    mine.table.select(edit, mine.table, outputs, api_visibility="private")
