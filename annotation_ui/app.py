"""The Gradio annotation app: raters judge tasks from the store; admins watch progress, review flags and export.

``build_app`` makes the ``gr.Blocks`` (tabs: Annotate, My judgements, Admin) and its named API endpoints;
``serve`` runs it behind our own login page (``annotation_ui.server``). Model outputs are untrusted: they are
rendered as Markdown with raw HTML off, or shown as plain text (``annotation_ui.render``).
"""

from __future__ import annotations

import gradio as gr

from alignment.annotations import AnnotationStore
from annotation_ui import server
from annotation_ui.admin import AdminTab, wire_admin
from annotation_ui.api import AnnotationAPI, api_endpoint
from annotation_ui.rater import AnnotateTab, MineTab, wire_annotate, wire_mine
from annotation_ui.render import markdown_literal

CSS = """
body:not(.show-raw) .raw-text, body.show-raw .rendered-text { display: none !important; }
#prompt-view, .candidate-column .rendered-text {
  border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 0 .75rem;
  overflow: visible !important; max-height: none !important; }
.rendered-text pre { white-space: pre-wrap; }
.raw-text textarea { field-sizing: content; height: auto !important; max-height: none !important; }
.candidate-label { margin: .5rem 0; color: var(--body-text-color-subdued); }
.rank-target { outline: 2px solid var(--color-accent); border-radius: 6px; }
"""
HOTKEYS_JS = """
<script>
(() => {
  const typing = (el) => el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
    (el.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(el.type)));
  const shown = (id) => { const el = document.getElementById(id); return el && el.offsetParent !== null ? el : null; };
  const pick = (id, value) => {
    const input = shown(id)?.querySelector(`input[type=radio][value="${value}"]`);
    if (input) input.click();
    return Boolean(input);
  };
  const click = (id) => { const el = document.getElementById(id); if (el) el.click(); return Boolean(el); };
  const PAIRWISE = {"1": "A", "2": "B", "3": "tie", "4": "both_bad"};
  const STRENGTH = {q: "slightly", w: "clearly", e: "much"};
  let target = 0;  // the candidate the next rank digit goes to
  const aim = (index) => {
    target = index;
    document.querySelectorAll(".rank-target").forEach((el) => el.classList.remove("rank-target"));
    shown(`rank-${index}`)?.classList.add("rank-target");
  };
  const rankKey = (key) => {
    if (/^[a-h]$/.test(key) && shown(`rank-${key.charCodeAt(0) - 97}`)) { aim(key.charCodeAt(0) - 97); return true; }
    if (!/^[1-8]$/.test(key) || !pick(`rank-${target}`, key)) return false;
    aim(shown(`rank-${target + 1}`) ? target + 1 : 0);
    return true;
  };
  document.addEventListener("click", (event) => {
    if (event.target.closest?.("#submit-btn, #skip-btn, #undo-btn")) aim(0);
  });
  document.addEventListener("keydown", (event) => {
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let id = null;
    if (key === "Enter" && (event.ctrlKey || event.metaKey)) id = "submit-btn";
    else if (event.altKey && key === "s") id = "skip-btn";
    else if (event.altKey && key === "z") id = "undo-btn";
    if (id) { event.preventDefault(); click(id); return; }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    let handled = false;
    if (shown("choice")) handled = PAIRWISE[key] ? pick("choice", PAIRWISE[key]) : Boolean(STRENGTH[key]) && pick("strength", STRENGTH[key]);
    else if (shown("rank-0")) handled = rankKey(key);
    else if (shown("rating")) handled = /^[0-9]$/.test(key) && pick("rating", key);
    if (handled) event.preventDefault();
  });
})();
</script>
"""


def build_app(store: AnnotationStore, title: str = "Preference annotation") -> gr.Blocks:
    """The annotation app over ``store``. Run it with ``serve`` (login, hotkeys, styles)."""
    api = AnnotationAPI(store)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        for name in AnnotationAPI.ENDPOINTS:
            gr.api(api_endpoint(getattr(api, name)), api_name=name)
        gr.Markdown(f"## {markdown_literal(title)}")
        with gr.Tabs() as tabs:
            with gr.Tab("Annotate", id="annotate"):
                annotate = AnnotateTab()
            with gr.Tab("My judgements", id="mine") as mine_tab:
                mine = MineTab()
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                admin = AdminTab()
        wire_annotate(api, annotate, demo, admin_tab)
        wire_mine(api, mine, annotate, tabs, mine_tab)
        wire_admin(api, admin, admin_tab)
    return demo


class AnnotationServer:
    """A running app (``serve(..., block=False)``): ``blocks``, ``url``, ``close()``."""

    def __init__(self, blocks: gr.Blocks, running: server.RunningServer) -> None:
        self.blocks, self.running, self.url = blocks, running, running.url

    def close(self) -> None:
        self.running.close()
        self.blocks.close(verbose=False)


def serve(
    store: AnnotationStore, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet: bool = False,
    title: str = "Preference annotation", forwarded_allow_ips: str = "127.0.0.1",
) -> tuple[AnnotationServer | None, str]:  # fmt: skip
    """Run the app behind our login page. Returns (server, URL); with ``block=False`` it runs in a background
    thread until ``server.close()``, with ``block=True`` this returns (None, URL) once the server stops.
    ``forwarded_allow_ips``: the proxies trusted to name the client's address in X-Forwarded-For (uvicorn's)."""
    demo = build_app(store, title)
    demo.queue(default_concurrency_limit=8)
    port = port or 7860
    app = server.build_server(store, demo, title, head=HOTKEYS_JS, css=CSS, footer_links=["api"])
    running = server.run(app, host, port, block=block, quiet=quiet, forwarded_allow_ips=forwarded_allow_ips)
    url = f"http://{host}:{port}/"
    return (AnnotationServer(demo, running) if running else None), url
