"""Headless Chromium (Debian's chromium + chromium-driver) logs in, ranks 3 candidates, submits.

Two candidates and the prompt carry XSS payloads: they must show as text and run nothing.
Screenshots go to test-artifacts/ at the repository root (git-ignored).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAYLOADS = {
    "img": '<img src=x onerror="window.__xss = 1; alert(1)">',
    "script": "<script>window.__xss = 2; alert(2)</script>",
    "plain": "A plain, helpful answer.",
}
PROMPT = 'Compare these <svg onload="window.__xss = 3">answers</svg>'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,1100",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def no_alert(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_rater_ranks_three_candidates_in_the_browser_and_payloads_stay_text(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    store, url = served()
    pid = store.add_prompt(PROMPT)
    ids = dict(zip(PAYLOADS, store.add_candidates(pid, [{"text": t, "policy": k} for k, t in PAYLOADS.items()])))
    store.create_tasks("ranking", k=3, judgements_per_task=1)
    wait = WebDriverWait(browser, 60)

    browser.get(url)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "input[type=password]")))
    browser.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("alice")
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("alice-pw")
    browser.find_element(By.XPATH, "//button[normalize-space()='Login']").click()
    wait.until(lambda d: "0 / 1 done" in d.find_element(By.ID, "progress").text)
    wait.until(lambda d: "Candidate C" in d.find_element(By.ID, "candidate-view-2").text)

    rendered = [browser.find_element(By.ID, f"candidate-view-{i}").text.split("\n", 1)[1] for i in range(3)]
    assert sorted(rendered) == sorted(PAYLOADS.values())  # Markdown with raw HTML off: tags show as text
    assert browser.find_element(By.ID, "prompt-view").text == PROMPT
    browser.save_screenshot(str(ARTIFACTS / "annotation-ranking-task.png"))
    browser.find_element(By.CSS_SELECTOR, "#show-raw input").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#candidate-0 textarea").is_displayed())
    shown = [browser.find_element(By.CSS_SELECTOR, f"#candidate-{i} textarea").get_attribute("value") for i in range(3)]
    assert shown == rendered  # the raw text boxes hold exactly the same texts
    assert browser.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value") == PROMPT

    wanted = {PAYLOADS["plain"]: "1", PAYLOADS["img"]: "2", PAYLOADS["script"]: "2"}  # a tie for last
    for i, text in enumerate(shown):
        label = browser.find_element(By.XPATH, f"//*[@id='rank-{i}']//label[normalize-space()='{wanted[text]}']")
        label.click()
    browser.find_element(By.ID, "rationale").find_element(By.TAG_NAME, "textarea").send_keys("the plain one")
    browser.find_element(By.ID, "submit-btn").click()
    wait.until(lambda d: "1 / 1 done" in d.find_element(By.ID, "progress").text)
    browser.save_screenshot(str(ARTIFACTS / "annotation-after-submit.png"))

    (judgement,) = store.judgements("alice")
    name_of = {cid: name for name, cid in ids.items()}
    view = store.task_view("alice", judgement["task_id"])  # judgement ranks are in alice's shown order
    stored = {name_of[c.id]: r for c, r in zip(view.candidates, judgement["ranks"])}
    assert stored == {"plain": 1, "img": 2, "script": 2}
    assert judgement["rationale"] == "the plain one"
    assert no_alert(browser)
    assert browser.execute_script("return window.__xss === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "img[src='x'], svg[onload]") == []


def test_pairwise_choice_with_keyboard_shortcuts_then_undo(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    store, url = served()
    pid = store.add_prompt("Pick one.")
    store.add_candidates(pid, [{"text": "short"}, {"text": "long"}])
    store.create_tasks("pairwise", judgements_per_task=1)
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    browser.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("bob")
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("bob-pw", Keys.ENTER)
    wait.until(lambda d: "Candidate B" in d.find_element(By.ID, "candidate-view-1").text)
    b_text = browser.find_element(By.ID, "candidate-view-1").text.split("\n", 1)[1]
    browser.find_element(By.XPATH, "//*[@id='choice']//label[normalize-space()='B is better']").click()
    browser.find_element(By.XPATH, "//*[@id='strength']//label[normalize-space()='Much']").click()
    rationale = browser.find_element(By.CSS_SELECTOR, "#rationale textarea")
    rationale.send_keys("more detail", Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter submits
    wait.until(lambda d: "1 / 1 done" in d.find_element(By.ID, "progress").text)
    (judgement,) = store.judgements("bob")
    assert (judgement["choice"], judgement["strength"], judgement["rationale"]) == ("B", "much", "more detail")
    assert store.export_preferences()[0]["chosen"] == b_text

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ALT, "z")  # Alt+Z undoes
    wait.until(lambda d: "withdrawn" in d.find_element(By.ID, "status").text)
    assert store.judgements("bob") == []
    assert browser.find_element(By.CSS_SELECTOR, "#rationale textarea").get_attribute("value") == "more detail"
    browser.save_screenshot(str(ARTIFACTS / "annotation-pairwise-undone.png"))


def login_in_browser(browser, url: str, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    browser.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys(name)
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(password, Keys.ENTER)
    WebDriverWait(browser, 60).until(lambda d: "done" in d.find_element(By.ID, "progress").text)


def tab_names(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [t.text for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.is_displayed()]


def test_only_admins_get_the_admin_tab_and_its_export(served, browser):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store, url = served()
    pid = store.add_prompt("Pick one.")
    store.add_candidates(pid, [{"text": "short"}, {"text": "long"}])
    store.create_tasks("pairwise", judgements_per_task=1)
    view = store.next_task("bob")
    store.submit("bob", view.task_id, "s-1", choice="A", strength="clearly")
    login_in_browser(browser, url, "alice", "alice-pw")
    assert "Admin" not in tab_names(browser) and "My judgements" in tab_names(browser)
    browser.delete_all_cookies()
    login_in_browser(browser, url, "root", "root-pw")
    WebDriverWait(browser, 30).until(lambda d: "Admin" in tab_names(d))
    next(t for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == "Admin").click()
    WebDriverWait(browser, 60).until(lambda d: "bob" in d.find_element(By.ID, "rater-stats").text)
    links = {a.text: a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")}
    assert set(links) == {"preferences.jsonl", "rankings.jsonl", "feedback.jsonl"}
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    rows = httpx.get(links["preferences.jsonl"], cookies=cookies).text.splitlines()
    assert [json.loads(r)["chosen"] for r in rows] == [view.candidates[0].text]
    browser.save_screenshot(str(ARTIFACTS / "annotation-admin-export.png"))
