"""The rater and admin screens in headless Chromium (Debian's chromium + chromium-driver) over a real server and
SQLite store: answers that are incomplete, hotkeys, guidelines, the login page, My judgements, the dashboard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from annotation import test_annotation_browser as base
from annotation.test_annotation_browser import ARTIFACTS, CHROMEDRIVER, CHROMIUM, login_in_browser, no_alert

browser = base.browser  # the headless Chromium fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]
ERROR_BADGES = "[data-testid=status-tracker] .error, .toast-body, .error-container"


def wait_for(browser, condition, timeout: float = 60):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout).until(condition)
    except TimeoutException:
        browser.save_screenshot(str(ARTIFACTS / "annotation-timeout.png"))
        raise


def text_of(browser, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id).text


def shown(browser, element_id: str) -> bool:
    """Whether ``element_id`` is on the page and visible (Gradio leaves hidden components out of the DOM)."""
    from selenium.webdriver.common.by import By

    return any(e.is_displayed() for e in browser.find_elements(By.ID, element_id))


def press(browser, *keys: str) -> None:
    """Keys sent to the page itself (nothing focused), as a rater's hotkeys are."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(browser).send_keys(*keys).perform()


def submit_by_keyboard(browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()


def click_cell(browser, table_id: str, text: str) -> None:
    """Click the cell of table ``table_id`` (a gr.Dataframe) that shows ``text``."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.XPATH, f"//*[@id='{table_id}']//span[contains(text(), '{text}')]").click()


def checked(browser, element_id: str) -> str | None:
    """The value of the checked radio input inside ``element_id``."""
    from selenium.webdriver.common.by import By

    found = [i.get_attribute("value") for i in browser.find_elements(By.CSS_SELECTOR, f"#{element_id} input") if i.is_selected()]
    return found[0] if found else None


def error_badges(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, ERROR_BADGES) if e.is_displayed()]


def candidate_views(browser, n: int) -> list[str]:
    """The rendered candidates' visible text (label line first), for ``n`` candidates."""
    from selenium.webdriver.common.by import By

    views = [browser.find_element(By.ID, f"candidate-view-{i}") for i in range(n)]
    assert all(v.is_displayed() for v in views), "a candidate is hidden"
    return [v.text for v in views]


def test_an_incomplete_answer_keeps_every_field_and_says_what_is_missing(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    store, url = served()
    pid = store.add_prompt("Rank these colours.")
    store.add_candidates(pid, [{"text": f"The colour {c}."} for c in ("red", "blue", "green")])
    store.create_tasks("ranking", k=3, judgements_per_task=1)
    login_in_browser(browser, url, "alice", "alice-pw")
    wait_for(browser, lambda d: "The colour" in text_of(d, "candidate-view-2"))
    before = candidate_views(browser, 3)
    for i in (0, 1):
        browser.find_element(By.XPATH, f"//*[@id='rank-{i}']//label[normalize-space()='{i + 1}']").click()
    browser.find_element(By.CSS_SELECTOR, "#rationale textarea").send_keys("a draft")
    browser.find_element(By.ID, "submit-btn").click()
    wait_for(browser, lambda d: "C has none yet" in text_of(d, "status"))
    browser.save_screenshot(str(ARTIFACTS / "annotation-incomplete-ranking.png"))
    assert candidate_views(browser, 3) == before
    assert [checked(browser, f"rank-{i}") for i in range(3)] == ["1", "2", None]
    assert browser.find_element(By.CSS_SELECTOR, "#rationale textarea").get_attribute("value") == "a draft"
    assert error_badges(browser) == [] and "0 / 1 done" in text_of(browser, "progress")
    assert store.judgements("alice") == []

    browser.find_element(By.XPATH, "//*[@id='rank-2']//label[normalize-space()='3']").click()
    browser.find_element(By.CSS_SELECTOR, "#rationale textarea").send_keys(Keys.CONTROL, Keys.ENTER)
    wait_for(browser, lambda d: "1 / 1 done" in text_of(d, "progress"))
    assert [j["ranks"] for j in store.judgements("alice")] == [[1, 2, 3]]
    browser.find_element(By.ID, "submit-btn").click()  # nothing left on screen
    wait_for(browser, lambda d: "no task on screen" in text_of(d, "status"))
    assert "No tasks left" in text_of(browser, "prompt-view") and error_badges(browser) == []


def test_pairwise_by_hotkeys_asks_for_the_strength_and_ignores_keys_typed_in_the_rationale(served, browser):
    from selenium.webdriver.common.by import By

    store, url = served()
    pid = store.add_prompt("Pick one.")
    store.add_candidates(pid, [{"text": "short"}, {"text": "long"}])
    store.create_tasks("pairwise", judgements_per_task=1)
    login_in_browser(browser, url, "bob", "bob-pw")
    wait_for(browser, lambda d: shown(d, "choice"))
    before = candidate_views(browser, 2)
    press(browser, "2")  # B is better
    wait_for(browser, lambda d: checked(d, "choice") == "B")
    browser.find_element(By.ID, "submit-btn").click()
    wait_for(browser, lambda d: "Choose how much better B is" in text_of(d, "status"))
    assert candidate_views(browser, 2) == before and error_badges(browser) == []
    rationale = browser.find_element(By.CSS_SELECTOR, "#rationale textarea")
    rationale.send_keys("1 4 q e: typed, not hotkeys")
    assert (checked(browser, "choice"), checked(browser, "strength")) == ("B", None)
    press(browser, "e")  # much
    wait_for(browser, lambda d: checked(d, "strength") == "much")
    browser.find_element(By.ID, "submit-btn").click()
    wait_for(browser, lambda d: "1 / 1 done" in text_of(d, "progress"))
    (judgement,) = store.judgements("bob")
    assert (judgement["choice"], judgement["strength"]) == ("B", "much")
    assert judgement["rationale"] == "1 4 q e: typed, not hotkeys"


def test_ranking_and_rating_by_keyboard_with_a_quota(served, browser):
    from selenium.webdriver.common.by import By

    store, url = served()
    store.import_tasks([{"prompt": "Order these.", "candidates": ["one", "two", "three"]}], task_set="order", kind="ranking")
    store.import_tasks([{"prompt": "Is this good?", "candidates": ["a fine answer"]}], task_set="thumbs", kind="rating",
                       rating_scale="binary")  # fmt: skip
    store.import_tasks([{"prompt": "Rate it.", "candidates": ["an answer", "another"]}], task_set="stars", kind="rating",
                       rating_scale="likert5")  # fmt: skip
    store.set_quota("alice", 3)
    login_in_browser(browser, url, "alice", "alice-pw")
    seen = {}
    for step in range(3):
        wait_for(browser, lambda d, n=step: f"{n} / 3 done" in text_of(d, "progress"))
        wait_for(browser, lambda d: shown(d, "rating") or shown(d, "rank-0"))
        if shown(browser, "rank-0"):
            press(browser, "2", "3", "1")  # A=2, B=3, C=1: each digit ranks the next candidate
            wait_for(browser, lambda d: [checked(d, f"rank-{i}") for i in range(3)] == ["2", "3", "1"])
            seen["ranking"] = True
        else:
            labels = browser.find_element(By.ID, "rating").text
            key = "1" if "👍" in labels else "4"
            seen["👍" if "👍" in labels else "likert"] = True
            press(browser, key)
            wait_for(browser, lambda d, k=key: checked(d, "rating") == k)
        submit_by_keyboard(browser)
    wait_for(browser, lambda d: "3 / 3 done · 0 skipped" in text_of(d, "progress"))
    assert seen == {"ranking": True, "👍": True, "likert": True}
    rows = {j["task_set"]: j for j in store.judgements("alice")}
    assert rows["order"]["ranks"] == [2, 3, 1]
    assert rows["thumbs"]["rating"] == 1 and rows["stars"]["rating"] == 4
    assert store.next_task("alice") is None  # the quota is reached, though a likert task is left


def test_guidelines_instructions_and_answers_render_as_markdown_without_html(served, browser):
    from selenium.webdriver.common.by import By

    store, url = served()
    store.set_guidelines("# House rules\n\n- Prefer **correct** answers\n- Then shorter ones\n\n<img src=x onerror=\"window.__xss=1\">")
    code = "```python\nprint('<b>hi</b>')\n```\n\n1. first\n2. second"
    store.import_tasks([{"prompt": "Write *code*.", "candidates": [code, "<script>window.__xss=2</script>"]}],
                       task_set="code", kind="pairwise", instructions="Run the `snippet` in your head.")  # fmt: skip
    login_in_browser(browser, url, "alice", "alice-pw")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#guidelines h1"))
    assert browser.find_element(By.CSS_SELECTOR, "#guidelines h1").text == "House rules"
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#guidelines li")] == ["Prefer correct answers", "Then shorter ones"]
    assert browser.find_element(By.CSS_SELECTOR, "#guidelines strong").text == "correct"
    assert "<img src=x" in text_of(browser, "guidelines")  # raw HTML shows as text
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#task-instructions code"))
    assert browser.find_element(By.CSS_SELECTOR, "#task-instructions code").text == "snippet"
    assert browser.find_element(By.CSS_SELECTOR, "#prompt-view em").text == "code"
    views = {i: browser.find_element(By.ID, f"candidate-view-{i}") for i in (0, 1)}
    code_view = next(v for v in views.values() if v.find_elements(By.CSS_SELECTOR, "pre code"))
    assert code_view.find_element(By.CSS_SELECTOR, "pre code").text == "print('<b>hi</b>')"
    assert [li.text for li in code_view.find_elements(By.CSS_SELECTOR, "li")] == ["first", "second"]
    assert any("<script>window.__xss=2</script>" in v.text for v in views.values())
    browser.save_screenshot(str(ARTIFACTS / "annotation-markdown.png"))
    assert browser.execute_script("return window.__xss === undefined") and no_alert(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "#guidelines img, .rendered-text script, .rendered-text b") == []

    browser.find_element(By.CSS_SELECTOR, "#show-raw input").click()
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#candidate-0 textarea").is_displayed())
    raw = {browser.find_element(By.CSS_SELECTOR, f"#candidate-{i} textarea").get_attribute("value") for i in (0, 1)}
    assert raw == {code, "<script>window.__xss=2</script>"}
    assert not views[0].is_displayed() and error_badges(browser) == []


def test_a_locked_user_sees_why_on_the_login_page(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    store, url = served(max_failed_logins=2)
    for _ in range(2):
        assert not store.login("alice", "wrong", address="127.0.0.1").ok  # the browser's address
    browser.get(url)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    browser.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("alice")
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("alice-pw", Keys.ENTER)
    wait_for(browser, lambda d: "Too many failed logins" in text_of(d, "login-message"))
    message = text_of(browser, "login-message")
    browser.save_screenshot(str(ARTIFACTS / "annotation-login-throttled.png"))
    assert "for this account from your address" in message and "Try again in" in message and "admin" in message
    store.unlock("alice")
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("alice-pw", Keys.ENTER)
    wait_for(browser, lambda d: d.find_elements(By.ID, "progress") and "done" in text_of(d, "progress"))


def test_my_judgements_row_click_loads_it_for_editing_then_logout(served, browser):
    from selenium.webdriver.common.by import By

    store, url = served()
    store.import_tasks([{"prompt": "Rate the tone.", "candidates": ["Hello there, friend."]}], task_set="tone",
                       kind="rating", rating_scale="likert5")  # fmt: skip
    login_in_browser(browser, url, "alice", "alice-pw")
    wait_for(browser, lambda d: shown(d, "rating"))
    press(browser, "5")
    wait_for(browser, lambda d: checked(d, "rating") == "5")
    browser.find_element(By.ID, "submit-btn").click()
    wait_for(browser, lambda d: "1 / 1 done" in text_of(d, "progress"))
    next(t for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == "My judgements").click()
    wait_for(browser, lambda d: "Rate the tone." in text_of(d, "mine"))
    click_cell(browser, "mine", "Rate the tone.")
    wait_for(browser, lambda d: "Editing an earlier answer" in text_of(d, "status"))
    assert checked(browser, "rating") == "5" and "Hello there, friend." in text_of(browser, "candidate-view-0")
    press(browser, "2")
    wait_for(browser, lambda d: checked(d, "rating") == "2")
    browser.find_element(By.ID, "submit-btn").click()
    wait_for(browser, lambda d: "Saved" in text_of(d, "status"))
    assert [j["rating"] for j in store.judgements("alice")] == [2]

    browser.find_element(By.ID, "logout-btn").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#login-message"))
    browser.get(url)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#login-message"))  # back to the login page


def test_an_admin_imports_tasks_with_the_cli_and_sees_them_flags_and_raters_in_the_dashboard(served, browser, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    store, url = served()
    tasks = tmp_path / "support.jsonl"
    tasks.write_text("".join(json.dumps({"prompt": f"Question {n}?", "candidates": [f"answer {n}a", f"answer {n}b"]}) + "\n"
                             for n in range(3)))
    # the admin's command, in its own process, against the store the running app serves
    subprocess.run([sys.executable, "-m", "annotation_ui", "tasks", "import", str(tasks), "--task_set", "support-v1",
                    "--kind", "pairwise", "--judgements_per_task", "2", "--db", str(tmp_path / "annotations.db")],
                   check=True, capture_output=True, text=True, timeout=120)
    view = store.next_task("bob")
    store.submit("bob", view.task_id, "s-1", choice="A", strength="clearly", flags=["harmful"], rationale="unsafe advice")
    login_in_browser(browser, url, "root", "root-pw")
    next(t for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == "Admin").click()
    wait_for(browser, lambda d: "support-v1" in text_of(d, "task-sets"))
    task_sets = text_of(browser, "task-sets")
    assert "pairwise" in task_sets and "3" in task_sets
    wait_for(browser, lambda d: "bob" in text_of(d, "rater-stats") and "alice" in text_of(d, "users"))
    assert "pairwise agreement" in text_of(browser, "agreement")
    browser.save_screenshot(str(ARTIFACTS / "annotation-admin-dashboard.png"))

    click_cell(browser, "flagged", "unsafe advice")
    wait_for(browser, lambda d: "Question" in text_of(d, "flagged-item") and "answer" in text_of(d, "flagged-item"))

    pick = browser.find_element(By.CSS_SELECTOR, "#rater-pick input")
    pick.click()
    pick.send_keys("bob", Keys.ENTER)
    wait_for(browser, lambda d: "unsafe advice" in text_of(d, "their"))

    link = browser.find_element(By.XPATH, "//*[@id='downloads']//a[normalize-space()='preferences.jsonl']")
    href = link.get_attribute("href")
    root_cookie = {c["name"]: c["value"] for c in browser.get_cookies()}
    assert httpx.get(href, cookies=root_cookie).status_code == 200
    alice = httpx.post(url + "login", data={"username": "alice", "password": "alice-pw"}).cookies
    assert httpx.get(href, cookies=alice).status_code == 403
    assert error_badges(browser) == []
