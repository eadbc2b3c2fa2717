"""The served app's HTTP surface (real server on 127.0.0.1, real SQLite store): our login page and session,
logout, admin-only downloads, refused uploads, and logins that never stall the raters' calls."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = pytest.mark.timeout(180)
HTML = {"Accept": "text/html"}


def client(url: str, name: str, password: str | None = None):
    return gradio_client.Client(url, auth=(name, password or f"{name}-pw"), verbose=False)


def session(url: str, name: str, password: str | None = None) -> httpx.Client:
    """An httpx client logged in through POST /login (what gradio_client sends)."""
    http = httpx.Client(base_url=url, timeout=30)
    response = http.post("login", data={"username": name, "password": password or f"{name}-pw"})
    assert response.status_code == 200 and response.json() == {"success": True}
    return http


@pytest.fixture
def app(served):
    store, url = served()
    pid = store.add_prompt("Name a colour.")
    store.add_candidates(pid, [{"text": t} for t in ("red", "blue", "green")])
    store.create_tasks("ranking", k=3, judgements_per_task=2)
    view = store.next_task("bob")
    store.submit("bob", view.task_id, "s-1", ranks=[1, 2, 3], rationale="red first")
    return store, url


def test_exports_download_for_admins_only(app):
    _, url = app
    path = "export/preferences.jsonl?mode=per-rater"
    assert httpx.get(url + path).status_code == 403  # anonymous
    assert session(url, "alice").get(path).status_code == 403  # a rater who knows the URL
    root = session(url, "root", "root-pw")
    response = root.get(path)
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert len(rows) == 3 and {r["rater"] for r in rows} == {"bob"}
    assert root.get("export/rankings.jsonl?mode=majority").text.count("\n") == 1
    assert root.get("export/feedback.jsonl?flagged=true").text == ""  # no rating tasks here
    assert root.get("export/secrets.jsonl").status_code == 404
    assert root.get("export/preferences.jsonl?mode=everything").status_code == 404


def test_uploads_are_refused(app):
    _, url = app
    for http in (httpx.Client(base_url=url), session(url, "alice"), session(url, "root", "root-pw")):
        response = http.post("gradio_api/upload", files={"files": ("notes.txt", b"hello")})
        assert response.status_code == 403, response.text


def test_the_app_page_is_the_login_page_for_strangers_and_logout_ends_the_session(app):
    _, url = app
    response = httpx.get(url)
    assert response.status_code == 200 and 'type="password"' in response.text and "gradio_config" not in response.text
    assert httpx.get(url + "config").status_code == 401
    alice = client(url, "alice")
    assert alice.predict(api_name="/progress")["rater"] == "alice"
    cookies = dict(alice.cookies)
    assert httpx.get(url + "config", cookies=cookies).status_code == 200
    response = httpx.get(url + "logout", cookies=cookies)
    assert response.status_code == 303 and response.headers["location"] == "./"
    assert httpx.get(url + "config", cookies=cookies).status_code == 401  # the old cookie is dead
    assert 'type="password"' in httpx.get(url, cookies=cookies).text
    with pytest.raises(Exception):
        alice.predict(api_name="/progress")


def test_a_refused_login_says_why_on_the_login_page(served):
    store, url = served(max_failed_logins=2)
    page = httpx.post(url + "login", data={"username": "alice", "password": "wrong"}, headers=HTML)
    assert page.status_code == 401 and "Wrong user name or password." in page.text
    assert 'type="password"' in page.text and 'value="alice"' in page.text  # the form again, name kept
    httpx.post(url + "login", data={"username": "alice", "password": "wrong"})
    for headers in (HTML, {}):
        refused = httpx.post(url + "login", data={"username": "alice", "password": "alice-pw"}, headers=headers)
        assert refused.status_code == 429
        assert "Too many failed logins for this account from your address. Try again in" in refused.text
    assert httpx.post(url + "login", data={"username": "<b>x</b>", "password": "p"}, headers=HTML).text.count(
        "&lt;b&gt;x&lt;/b&gt;"
    ) == 1  # the typed name comes back escaped
    store.unlock("alice")
    ok = httpx.post(url + "login", data={"username": "alice", "password": "alice-pw"}, headers=HTML)
    assert ok.status_code == 303 and ok.headers["location"] == "./" and "annotation-session" in ok.cookies


@pytest.mark.parametrize("trusted", ["127.0.0.1", ""])
def test_behind_a_trusted_proxy_back_off_counts_the_forwarded_address(served, trusted):
    """Behind a reverse proxy every rater comes from the proxy's address: its X-Forwarded-For names theirs, so one
    guesser does not lock a rater out everywhere. From an untrusted peer the header is ignored (a guesser cannot
    dodge the back-off by naming new addresses)."""
    store, url = served(forwarded_allow_ips=trusted, max_failed_logins=2)

    def login(password: str, address: str) -> int:
        return httpx.post(url + "login", data={"username": "alice", "password": password},
                          headers={"X-Forwarded-For": address}).status_code

    assert [login("wrong", "10.0.0.66") for _ in range(2)] == [401, 401]
    assert login("alice-pw", "10.0.0.66") == 429  # the guesser's address backs off
    assert login("alice-pw", "10.0.0.7") == (200 if trusted else 429)  # alice's own: free only if the header counts


def test_a_burst_of_wrong_logins_does_not_stall_a_logged_in_rater(served):
    store, url = served(max_failed_logins_per_address=10_000)  # every attempt hashes a password
    pid = store.add_prompt("Pick one.")
    store.add_candidates(pid, [{"text": "short"}, {"text": "long"}])
    store.create_tasks("pairwise", judgements_per_task=1)
    alice = client(url, "alice")
    alice.predict(api_name="/progress")  # the client's first call sets up its connection: not what is measured
    stop, attempts = threading.Event(), []

    def guess(n: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                response = http.post("login", data={"username": f"mallory-{n}", "password": "guess"})
                attempts.append(response.status_code)

    guessers = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
    for thread in guessers:
        thread.start()
    try:
        while len(attempts) < 5:  # the burst is under way
            time.sleep(0.01)
        before, start = len(attempts), time.monotonic()
        view = alice.submit(api_name="/next_task").result(timeout=10)
        took, during = time.monotonic() - start, len(attempts) - before
    finally:
        stop.set()
        for thread in guessers:
            thread.join()
    assert view is not None and view["kind"] == "pairwise"
    print(f"next_task took {took:.2f} s while {during} wrong logins were answered")
    assert took < 2.0, f"next_task took {took:.2f} s during the burst ({during} logins answered meanwhile)"
    assert set(attempts) == {401}


def test_a_user_error_is_one_log_line_without_traceback(app, caplog, capfd):
    _, url = app
    alice = client(url, "alice")
    with caplog.at_level(logging.WARNING, logger="annotation_ui"):
        with pytest.raises(AppError, match="'alice' is not an admin"):
            alice.predict("majority", False, api_name="/export_preferences")
    records = [r for r in caplog.records if r.name == "annotation_ui"]
    assert [r.getMessage() for r in records] == ["alice: user 'alice' is not an admin"]
    assert records[0].exc_info is None and "Traceback" not in capfd.readouterr().err
