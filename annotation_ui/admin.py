"""The Admin tab: progress per task set and rater, agreement, the flagged-items queue, any rater's judgements,
users (unlock) and downloads. Every handler goes through ``AnnotationAPI``'s admin methods, which check the role
on the server: the tab being hidden for raters is only cosmetic."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode

import gradio as gr

from alignment.annotations.export import MODES
from annotation_ui.api import AnnotationAPI, UserError
from annotation_ui.rater import MINE_COLUMNS, judgement_table, screen_handler
from annotation_ui.render import markdown_html, markdown_literal

TASK_SET_COLUMNS = ["task set", "kind", "tasks", "complete", "judgements", "needed", "gold", "flagged"]
RATER_COLUMNS = ["rater", "done", "skipped", "median s", "last hour", "gold items", "gold accuracy", "flags"]
FLAGGED_COLUMNS = ["judgement", "task", "task set", "rater", "flags", "rationale", "prompt", "updated"]
USER_COLUMNS = ["name", "role", "quota", "created", "blocked until", "failed logins"]
AGREEMENT_COLUMNS = ["measure", "value"]


def _round(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else ("–" if value is None else value)


def task_set_table(rows: list[dict]) -> list[list]:
    keys = ("task_set", "kind", "tasks", "tasks_complete", "judgements", "judgements_needed", "gold_tasks",
            "flagged_tasks")  # fmt: skip
    return [[r[k] for k in keys] for r in rows]


def rater_table(rows: list[dict]) -> list[list]:
    keys = ("rater", "done", "skipped", "median_seconds", "judgements_last_hour", "gold_items", "gold_accuracy",
            "flags")  # fmt: skip
    return [[_round(r[k]) for k in keys] for r in rows]


def agreement_table(report: dict) -> list[list]:
    low, high = report.get("pairwise_agreement_ci") or (None, None)
    ci = "–" if low is None else f"{low:.3f} – {high:.3f}"
    rows = [
        ["pairwise agreement", _round(report["pairwise_agreement"])],
        ["pairwise agreement, 95% CI (bootstrap over units)", ci],
        [f"Krippendorff's alpha ({report.get('krippendorff_alpha_level', 'nominal')})",
         _round(report["krippendorff_alpha"])],
        ["units with 2 or more raters", report.get("units_with_2_or_more_raters", "–")],
    ]  # fmt: skip
    rows += [[f"Bradley-Terry strength: {policy}", _round(v)] for policy, v in report["bradley_terry_policy"].items()]
    return rows


def flagged_table(rows: list[dict]) -> list[list]:
    return [
        [r["judgement_id"], r["task_id"], r["task_set"], r["rater"], ", ".join(r["flags"]), r["rationale"],
         r["prompt"], r["updated_at"][:19].replace("T", " ")]
        for r in rows
    ]  # fmt: skip


def user_table(rows: list[dict]) -> list[list]:
    return [
        [r["name"], r["role"], _round(r.get("quota")), (r.get("created_at") or "")[:10],
         (r.get("blocked_until") or "–")[:19].replace("T", " "), r.get("failed_logins", 0)]
        for r in rows
    ]  # fmt: skip


def flagged_item_html(view: dict, row: list) -> str:
    """A flagged task as its rater saw it (rendered safely), with their answer."""
    parts = [markdown_html(f"**Flagged by {row[3]}** ({row[4]}): {row[5] or 'no rationale'}"),
             "<h4>Prompt</h4>", markdown_html(view["prompt"])]  # fmt: skip
    for c in view["candidates"]:
        parts += [f"<h4>Candidate {html.escape(c['label'])}</h4>", markdown_html(c["text"])]
    return "".join(parts)


def download_links(mode: str, gold: bool, flagged: bool) -> str:
    """Links to the admin-only export routes (the server refuses them to anyone else)."""
    query = urlencode({"mode": mode, "gold": str(bool(gold)).lower(), "flagged": str(bool(flagged)).lower()})
    links = [f'<a href="export/{name}.jsonl?{html.escape(query)}" download>{name}.jsonl</a>'
             for name in ("preferences", "rankings", "feedback")]  # fmt: skip
    return "<p>Download: " + " · ".join(links) + "</p>"


class AdminTab:
    """The components of the Admin tab."""

    def __init__(self) -> None:
        with gr.Row():
            self.refresh = gr.Button("Refresh dashboard", size="sm", scale=0, min_width=180)
            self.message = gr.Markdown(elem_id="admin-status")
        gr.Markdown("### Progress per task set")
        self.task_sets = gr.Dataframe(headers=TASK_SET_COLUMNS, interactive=False, elem_id="task-sets")
        gr.Markdown("### Raters")
        self.raters = gr.Dataframe(headers=RATER_COLUMNS, interactive=False, elem_id="rater-stats")
        gr.Markdown("### Agreement")
        self.agreement = gr.Dataframe(headers=AGREEMENT_COLUMNS, interactive=False, elem_id="agreement")
        gr.Markdown("### Flagged items (click one to see it)")
        self.flagged = gr.Dataframe(headers=FLAGGED_COLUMNS, interactive=False, wrap=True, elem_id="flagged")
        self.flagged_item = gr.HTML(elem_id="flagged-item")
        gr.Markdown("### A rater's judgements")
        self.rater = gr.Dropdown(label="Rater", choices=[], elem_id="rater-pick")
        self.their = gr.Dataframe(headers=MINE_COLUMNS, interactive=False, wrap=True, elem_id="their")
        gr.Markdown("### Users")
        self.users = gr.Dataframe(headers=USER_COLUMNS, interactive=False, elem_id="users")
        with gr.Row():
            self.unlock_name = gr.Dropdown(label="Account to unlock", choices=[], elem_id="unlock-pick")
            self.unlock = gr.Button("Unlock", size="sm", scale=0, min_width=120, elem_id="unlock-btn")
        gr.Markdown("### Exports (JSONL)")
        with gr.Row():
            self.mode = gr.Radio(list(MODES), value="majority", label="Mode")
            self.gold = gr.Checkbox(label="Include gold tasks")
            self.include_flagged = gr.Checkbox(label="Include flagged tasks")
        self.downloads = gr.HTML(download_links("majority", False, False), elem_id="downloads")


def wire_admin(api: AnnotationAPI, tab: AdminTab, admin_tab: gr.Tab) -> None:
    dashboard = [tab.task_sets, tab.raters, tab.agreement, tab.flagged, tab.users, tab.rater, tab.unlock_name,
                 tab.message]  # fmt: skip

    @screen_handler(dashboard, tab.message)
    def refresh(request: gr.Request) -> list:
        users = api.users(request)
        names = [u["name"] for u in users]
        return [
            task_set_table(api.task_sets(request)),
            rater_table(api.rater_stats(request)),
            agreement_table(api.agreement(request)),
            flagged_table(api.flagged(request)),
            user_table(users),
            gr.update(choices=names),
            gr.update(choices=names),
            "",
        ]

    @screen_handler([tab.flagged_item, tab.message], tab.message)
    def show_flagged(event: gr.SelectData, request: gr.Request) -> list:
        row = event.row_value
        if not row or row[0] in (None, ""):
            raise UserError("Click a flagged item to see it.")
        return [flagged_item_html(api.flagged_task(row[3], int(row[1]), request), row), ""]

    @screen_handler([tab.their, tab.message], tab.message)
    def their_judgements(rater: str | None, request: gr.Request) -> list:
        if not rater:
            raise UserError("Pick a rater first.")
        return [judgement_table(api.rater_judgements(rater, request)), ""]

    @screen_handler([tab.users, tab.message], tab.message)
    def unlock(name: str | None, request: gr.Request) -> list:
        if not name:
            raise UserError("Pick the account to unlock first.")
        return [user_table(api.unlock(name, request)), f"Unlocked {markdown_literal(name)}."]

    for trigger in (tab.refresh.click, admin_tab.select):
        trigger(refresh, None, dashboard, api_visibility="private")
    tab.flagged.select(show_flagged, None, [tab.flagged_item, tab.message], api_visibility="private")
    tab.rater.change(their_judgements, tab.rater, [tab.their, tab.message], api_visibility="private")
    tab.unlock.click(unlock, tab.unlock_name, [tab.users, tab.message], api_visibility="private")
    for control in (tab.mode, tab.gold, tab.include_flagged):
        control.change(download_links, [tab.mode, tab.gold, tab.include_flagged], tab.downloads,
                       api_visibility="private")  # fmt: skip
