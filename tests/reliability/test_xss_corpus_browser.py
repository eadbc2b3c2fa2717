"""A corpus of XSS and markdown-injection payloads, shown as prompts and candidates in real headless Chromium.

The app is launched on 127.0.0.1 over a real SQLite store (tests/annotation's ``served`` and ``browser`` fixtures).
Every payload is a candidate of several tasks and part of one prompt; the rater's own name is a payload too. Before
any page script runs, a hook in every frame records dialogs (alert, confirm, prompt, print) and console messages
that mention "xss:"; each payload's code would set ``window.__xss_<name>``, log "xss:<name>" and alert it. For every
task the rater sees, the prompt and candidate boxes must hold the payloads literally; after each task and at the end
(My judgements tab, which lists the prompts again as JSON) nothing may have run: no dialog, no console line, no flag,
no element or stylesheet made from a payload.
"""

from __future__ import annotations

import time

import pytest

from annotation.conftest import clock, make_store, served  # noqa: F401 - fixtures
from annotation.test_annotation_browser import ARTIFACTS, CHROMEDRIVER, CHROMIUM, browser, no_alert  # noqa: F401
from reliability.support import record

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]


def js(name: str) -> str:
    """What a payload runs if it ever executes."""
    return f"window.__xss_{name}=1;console.log('xss:{name}');alert('xss:{name}')"


PAYLOADS = {
    "script": f"<script>{js('script')}</script>",
    "img_onerror": f'<img src=x onerror="{js("img_onerror")}">',
    "svg_onload": f'<svg onload="{js("svg_onload")}"><circle r="5"/></svg>',
    "svg_script": f"<svg><script>{js('svg_script')}</script></svg>",
    "svg_animate": f'<svg><animate onbegin="{js("svg_animate")}" attributeName="x" dur="1s"/></svg>',
    "iframe_srcdoc": f"<iframe srcdoc=\"<script>{js('iframe_srcdoc')}</script>\"></iframe>",
    "iframe_javascript": f'<iframe src="javascript:{js("iframe_javascript")}"></iframe>',
    "object_data": f"<object data=\"data:text/html,<script>{js('object_data')}</script>\"></object>",
    "details_ontoggle": f'<details open ontoggle="{js("details_ontoggle")}"><summary>more</summary></details>',
    "input_autofocus": f'<input autofocus onfocus="{js("input_autofocus")}">',
    "body_onload": f'<body onload="{js("body_onload")}">',
    "video_onerror": f'<video><source onerror="{js("video_onerror")}"></video>',
    "meta_refresh": f'<meta http-equiv="refresh" content="0;url=javascript:{js("meta_refresh")}">',
    "a_javascript": f'<a href="javascript:{js("a_javascript")}">click here</a>',
    "markdown_link": f"[click here](javascript:{js('markdown_link')})",
    "markdown_image": f"![chart](x \"a\" onerror=\"{js('markdown_image')}\")",
    "markdown_autolink": f"<javascript:{js('markdown_autolink')}>",
    "html_entities": f"&lt;script&gt;{js('html_entities')}&lt;/script&gt; &#60;img src=x onerror={js('html_entities')}&#62;",
    "style_tag": "<style>body { background: rgb(1, 2, 3) !important; } /* xss:style_tag */</style>",
    "style_attribute": f"<div style=\"background:url('javascript:{js('style_attribute')}')\">styled</div>",
    "template": "{{7*7}} ${7*7} <%= 7*7 %> {{constructor.constructor('" + js("template") + "')()}}",
    "textarea_breakout": f"</textarea><script>{js('textarea_breakout')}</script>",
    "attribute_breakout": f"\"><img src=x onerror=\"{js('attribute_breakout')}\">",
    "js_string_breakout": f"';{js('js_string_breakout')};//\\';{js('js_string_breakout')};//",
    "mutation_xss": f"<math><mtext><table><mglyph><style><img src=x onerror=\"{js('mutation_xss')}\">",
    "fenced_code": f"```html\n<script>{js('fenced_code')}</script>\n```",
}
NAMES = list(PAYLOADS)
RATER = (  # the header (Markdown) shows the rater's name
    f"<b>rita</b> [home](javascript:{js('rater_link')}) [docs](https://example.org/login) *not_bold* "
    f"www.example.org ![pixel](x.png) <img src=x onerror=\"{js('rater_name')}\">"
)
CANDIDATES_PER_TASK = 4

HOOKS = """
(() => {
  let root = window;
  try { if (window.top.document) root = window.top; } catch (e) {}
  root.__xss_hits = root.__xss_hits || [];
  const text = (args) => Array.from(args).map(String).join(' ');
  for (const name of ['alert', 'confirm', 'prompt', 'print']) {
    window[name] = function () { root.__xss_hits.push(name + ': ' + text(arguments)); return null; };
  }
  for (const name of ['log', 'info', 'warn', 'error', 'debug']) {
    const original = console[name].bind(console);
    console[name] = function () {
      if (text(arguments).includes('xss:')) root.__xss_hits.push('console.' + name + ': ' + text(arguments));
      return original(...arguments);
    };
  }
})();
"""

# What payload markup would leave in the DOM if it were parsed as HTML: an attribute or a script/style text
# mentioning "xss:" (text inside text boxes and JSON views is fine: that is the payload shown as text). Gradio's
# own config script holds the user name as JSON data (with "<" written as \\u003c): data, not markup.
TRACES = """
const hits = window.__xss_hits || [];
const flags = Object.keys(window).filter(k => k.startsWith('__xss_') && k !== '__xss_hits');
const nodes = [];
const visit = (doc) => {
  for (const el of doc.querySelectorAll('*')) {
    const attrs = Array.from(el.attributes).filter(a => a.value.includes('xss:') || /^on/i.test(a.name) && a.value.includes('__xss_'));
    const config = el.tagName === 'SCRIPT' && el.textContent.trimStart().startsWith('window.gradio_config =');
    const code = ['SCRIPT', 'STYLE'].includes(el.tagName) && !config && el.textContent.includes('xss:');
    if (attrs.length || code) nodes.push(el.outerHTML.slice(0, 200));
    if (el.shadowRoot) visit(el.shadowRoot);
  }
};
visit(document);
const background = getComputedStyle(document.body).backgroundColor;
return {hits, flags, nodes, background};
"""


def assert_nothing_ran(browser, where: str) -> None:
    traces = browser.execute_script(TRACES)
    assert no_alert(browser), f"{where}: a native dialog is open"
    assert traces["hits"] == [], f"{where}: payload code ran: {traces['hits']}"
    assert traces["flags"] == [], f"{where}: payload flags set: {traces['flags']}"
    assert traces["nodes"] == [], f"{where}: payload markup became elements: {traces['nodes']}"
    assert traces["background"] != "rgb(1, 2, 3)", f"{where}: the injected stylesheet applies"


def boxes(browser) -> tuple[str, list[str]]:
    """The prompt and the visible candidate boxes' values (what the rater reads)."""
    from selenium.webdriver.common.by import By

    prompt = browser.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value")
    shown = []
    for i in range(CANDIDATES_PER_TASK):
        box = browser.find_element(By.CSS_SELECTOR, f"#candidate-{i} textarea")
        assert box.is_displayed(), f"candidate {i} is hidden"
        shown.append(box.get_attribute("value"))
    return prompt, shown


def test_xss_corpus_shows_as_text_and_never_runs(served, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    store, url = served()
    store.add_user(RATER, "rater", "rita-pw")
    expected = {}  # prompt text -> its candidates' texts
    for t in range(0, len(NAMES), 2):  # each prompt carries two payloads; each payload is a candidate 4 times
        prompt = f"{PAYLOADS[NAMES[t]]}\n{PAYLOADS[NAMES[(t + 1) % len(NAMES)]]}"
        texts = [PAYLOADS[NAMES[(t + j) % len(NAMES)]] for j in range(2, 2 + CANDIDATES_PER_TASK)]
        pid = store.add_prompt(prompt)
        store.add_candidates(pid, [{"text": text, "policy": "payload"} for text in texts])
        expected[prompt] = sorted(texts)
    store.create_tasks("ranking", k=CANDIDATES_PER_TASK, judgements_per_task=1)
    wait = WebDriverWait(browser, 60)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOKS})

    browser.get(url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    browser.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys(RATER)
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("rita-pw", Keys.ENTER)
    wait.until(lambda d: f"0 / {len(expected)} done" in d.find_element(By.ID, "progress").text)
    header = browser.find_element(By.ID, "progress").text
    assert header.startswith(RATER), f"the rater's name is not shown literally: {header!r}"
    assert browser.find_elements(By.CSS_SELECTOR, "#progress a, #progress img, #progress em") == []
    browser.find_element(By.CSS_SELECTOR, "#show-raw input").click()  # the exact texts; the Markdown views stay in the DOM

    seen = []
    for done in range(len(expected)):
        wait.until(lambda d: boxes(d)[0] in expected and boxes(d)[0] not in seen)
        prompt, shown = boxes(browser)
        assert sorted(shown) == expected[prompt], f"task {done}: candidates not shown verbatim"
        seen.append(prompt)
        if done == 0:
            browser.save_screenshot(str(ARTIFACTS / "xss-corpus-task.png"))
        time.sleep(0.3)  # let anything the page might have parsed fire (onload, onerror, autofocus, animations)
        assert_nothing_ran(browser, f"task {done}")
        browser.find_element(By.ID, "skip-btn").click()
        wait.until(lambda d, n=done + 1: f"{n} / {len(expected)} done" in d.find_element(By.ID, "progress").text)
    wait.until(lambda d: "No tasks left" in d.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value"))
    assert sorted(seen) == sorted(expected)

    next(t for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == "My judgements").click()
    browser.find_element(By.XPATH, "//button[normalize-space()='Refresh']").click()
    wait.until(lambda d: "click here" in d.find_element(By.TAG_NAME, "body").text)  # the JSON view lists the prompts
    time.sleep(0.5)
    browser.save_screenshot(str(ARTIFACTS / "xss-corpus-my-judgements.png"))
    assert_nothing_ran(browser, "My judgements")
    assert len(store.judgements(RATER)) == len(expected)
    record("xss_corpus", payloads=len(PAYLOADS) + 1, tasks=len(expected), executed=0)
