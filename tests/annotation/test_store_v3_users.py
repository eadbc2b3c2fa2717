"""Logins with back-off per account+address, per address and per account; user administration; content caps."""

from __future__ import annotations

import uuid

import pytest

from alignment.annotations.store import WRONG_LOGIN, LoginResult
from alignment.errors import DataError


def sid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def accounts(make_store):
    """(store) with admin "boss" and rater "ann" (password "right"), at the default limits 5 / 20 / 50."""
    store = make_store(lockout_s=300)
    store.add_user("boss", "admin", "boss-pw")
    store.add_user("ann", "rater", "right")
    return store


def test_wrong_and_unknown_names_get_the_same_message(accounts):
    assert accounts.login("ann", "right", "10.0.0.1") == LoginResult(True, "", 0.0)
    assert accounts.login("ann", "wrong", "10.0.0.1") == LoginResult(False, WRONG_LOGIN, 0.0)
    assert accounts.login("nobody", "right", "10.0.0.1") == LoginResult(False, WRONG_LOGIN, 0.0)
    assert WRONG_LOGIN == "Wrong user name or password."
    accounts.remove_user("ann")
    assert accounts.login("ann", "right", "10.0.0.1") == LoginResult(False, WRONG_LOGIN, 0.0)


def test_failures_from_one_address_back_off_exponentially_up_to_lockout(make_store, clock):
    store = make_store(max_failed_logins=3, lockout_s=4)
    store.add_user("ann", "rater", "right")
    for _ in range(2):
        assert store.login("ann", "wrong", "x").message == WRONG_LOGIN
    third = store.login("ann", "wrong", "x")  # the 3rd failure reaches the limit: 2**0 s
    assert third.message == WRONG_LOGIN
    blocked = store.login("ann", "right", "x")  # refused without checking the password
    assert not blocked.ok and blocked.retry_after_s == 1.0
    assert blocked.message == (
        "Too many failed logins for this account from your address. Try again in 1 s, "
        "or ask an admin to unlock the account."
    )
    waits = []
    for _ in range(4):
        clock.advance(blocked.retry_after_s)
        assert store.login("ann", "wrong", "x").message == WRONG_LOGIN
        blocked = store.login("ann", "wrong", "x")
        waits.append(blocked.retry_after_s)
    assert waits == [2.0, 4.0, 4.0, 4.0]  # 2**1, 2**2, then capped at lockout_s
    clock.advance(4)
    assert store.login("ann", "right", "x").ok
    assert store.login("ann", "wrong", "x").message == WRONG_LOGIN  # a success cleared the pair count
    assert store.login("ann", "right", "x").ok


def test_a_strangers_guesses_from_one_address_do_not_lock_the_rater_out_elsewhere(accounts):
    for _ in range(100):
        assert not accounts.login("ann", "guess", "203.0.113.9").ok
    assert accounts.login("ann", "right", "203.0.113.9").message.startswith(
        "Too many failed logins for this account from your address."
    )
    assert accounts.login("ann", "right", "198.51.100.7").ok
    assert accounts.login("ann", "right", "203.0.113.9").message.startswith("Too many failed logins")


def test_an_address_guessing_many_names_is_throttled_as_a_whole(accounts):
    for i in range(20):
        assert accounts.login(f"user{i}", "guess", "203.0.113.9").message == WRONG_LOGIN
    refused = accounts.login("ann", "right", "203.0.113.9")
    assert refused.message.startswith("Too many failed logins from your address. Try again in 1 s")
    assert accounts.login("ann", "right", "198.51.100.7").ok


def test_guesses_at_one_account_from_many_addresses_throttle_the_account(accounts, clock):
    for i in range(50):
        assert accounts.login("ann", "guess", f"10.0.{i}.1").message == WRONG_LOGIN
    refused = accounts.login("ann", "right", "192.0.2.1")
    assert refused.message.startswith("Too many failed logins for this account. Try again in 1 s")
    listed = {u["name"]: u for u in accounts.users()}
    assert listed["ann"]["failed_logins"] == 50 and listed["ann"]["blocked_until"] is not None
    assert listed["boss"]["failed_logins"] == 0 and listed["boss"]["blocked_until"] is None
    accounts.unlock("ann")
    assert accounts.login("ann", "right", "192.0.2.1").ok
    listed = {u["name"]: u for u in accounts.users()}
    assert listed["ann"]["failed_logins"] == 0 and listed["ann"]["blocked_until"] is None


def test_admin_unlock_and_a_new_password_end_the_back_off(accounts):
    for _ in range(5):
        accounts.login("ann", "guess", "10.0.0.1")
    assert not accounts.login("ann", "right", "10.0.0.1").ok
    accounts.unlock("ann")
    assert accounts.login("ann", "right", "10.0.0.1").ok
    for _ in range(5):
        accounts.login("ann", "guess", "10.0.0.1")
    accounts.set_password("ann", "new-pw")
    assert accounts.login("ann", "new-pw", "10.0.0.1").ok and not accounts.authenticate("ann", "right")
    with pytest.raises(DataError, match="no user named 'zed'"):
        accounts.unlock("zed")
    with pytest.raises(DataError, match="must not be empty"):
        accounts.set_password("ann", "")


def test_unlock_leaves_look_alike_names_throttled(accounts):
    """Throttle keys of "an" are not "ann"'s, although one name starts the other (and LIKE's _ is literal)."""
    accounts.add_user("an", "rater", "an-pw")
    accounts.add_user("a_n", "rater", "a_n-pw")
    for name in ("an", "a_n"):
        for _ in range(5):
            accounts.login(name, "guess", "x")
    accounts.unlock("ann")
    assert not accounts.login("an", "an-pw", "x").ok and not accounts.login("a_n", "a_n-pw", "x").ok


def test_users_lists_roles_quotas_and_removed_users(accounts):
    accounts.add_user("cat", "rater", "pw", quota=10)
    rows = accounts.users()
    assert [(u["name"], u["role"], u["quota"], u["removed"]) for u in rows] == [
        ("ann", "rater", None, False), ("boss", "admin", None, False), ("cat", "rater", 10, False)
    ]  # fmt: skip
    assert set(rows[0]) == {"name", "role", "quota", "created_at", "removed", "blocked_until", "failed_logins"}
    accounts.remove_user("cat")
    assert [u["name"] for u in accounts.users()] == ["ann", "boss"]
    assert [(u["name"], u["removed"]) for u in accounts.users(include_removed=True)][-1] == ("cat", True)
    assert accounts.role("cat") is None
    with pytest.raises(DataError, match="already exists"):
        accounts.add_user("cat", "rater", "pw")
    with pytest.raises(DataError, match="no user named 'cat'"):
        accounts.remove_user("cat")


def test_a_removed_rater_keeps_their_judgements_and_frees_their_reservations(accounts, judge):
    pid = accounts.add_prompt("p")
    accounts.add_candidates(pid, [{"text": "a"}, {"text": "b"}, {"text": "c"}])
    accounts.create_tasks("pairwise", judgements_per_task=1, tasks_per_prompt=2)
    accounts.add_user("bob", "rater", "pw")
    judge(accounts, "ann", choice="tie")
    held = accounts.next_task("ann")
    assert accounts.next_task("bob") is None  # ann holds the last place
    accounts.remove_user("ann")
    assert accounts.next_task("bob").task_id == held.task_id
    assert [r.rater for r in accounts.records()[0]] == ["ann"]


def test_roles_and_quotas_change_and_the_last_admin_stays(accounts):
    with pytest.raises(DataError, match="'boss' is the last admin"):
        accounts.remove_user("boss")
    with pytest.raises(DataError, match="'boss' is the last admin"):
        accounts.set_role("boss", "rater")
    accounts.set_role("ann", "admin")
    accounts.set_role("boss", "rater")
    assert accounts.role("boss") == "rater"
    with pytest.raises(DataError, match="'ann' is the last admin"):
        accounts.remove_user("ann")
    with pytest.raises(DataError, match="role must be one of"):
        accounts.set_role("boss", "owner")
    accounts.set_quota("boss", 3)
    assert accounts.users()[1]["quota"] == 3
    accounts.set_quota("boss", None)
    assert accounts.users()[1]["quota"] is None
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(DataError, match="expected a whole number >= 0 or none"):
            accounts.set_quota("boss", bad)


def test_texts_over_the_caps_are_refused_with_their_length_and_limit(make_store):
    store = make_store(max_text_chars=1000)
    with pytest.raises(DataError, match=r"^the prompt is 1,001 characters long; the limit is 1,000 characters\.$"):
        store.add_prompt("x" * 1001)
    pid = store.add_prompt("p")
    with pytest.raises(DataError, match="candidate 1 for prompt .* is 2,000 characters long; the limit is 1,000"):
        store.add_candidates(pid, [{"text": "ok"}, {"text": "y" * 2000}])
    assert len(store.add_candidates(pid, [{"text": "a" * 1000}])) == 1  # at the limit is fine
    with pytest.raises(DataError, match="the guidelines is 1,001 characters long"):
        store.set_guidelines("g" * 1001)
    assert store.guidelines() == ""


def test_a_five_million_character_rationale_is_refused(prompt_with, db):
    store, _ = prompt_with(2, raters=("r1",))
    store.create_tasks("pairwise")
    view = store.next_task("r1")
    with pytest.raises(DataError, match=r"^Your rationale is 5,000,000 characters long; the limit is 5,000 characters\.$"):
        store.submit("r1", view.task_id, sid(), choice="tie", rationale="r" * 5_000_000)
    assert db.scalar("select count(*) from judgements") == 0
    store.submit("r1", view.task_id, sid(), choice="tie", rationale="r" * 5_000)
    assert len(store.judgements("r1")[0]["rationale"]) == 5_000
