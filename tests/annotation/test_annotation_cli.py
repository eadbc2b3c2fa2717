"""The admin command line (``python -m annotation_ui`` / ``python -m alignment.annotations``) on real SQLite files."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alignment.annotations import AnnotationStore, QueueSettings
from alignment.annotations.cli import main
from annotation.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
RANKINGS = REPO / "data" / "preferences" / "rankings.jsonl"


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "annotations.db"


@pytest.fixture
def cli(db, capsys):
    """cli(*args) -> (exit code, stdout, stderr) of ``main([*args, "--db", db])`` in this process."""

    def run(*args) -> tuple[int, str, str]:
        code = main([*map(str, args), "--db", str(db)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def open_store(db):
    """open_store(**QueueSettings fields, clock=None) -> a store on the CLI's file, closed after the test."""
    stores = []

    def make(clock=None, **settings) -> AnnotationStore:
        stores.append(AnnotationStore(db, QueueSettings(**settings), clock=clock))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def table_rows(out: str) -> list[list[str]]:
    """The cells of a printed table (columns are two or more spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]


def one_line_error(code: int, err: str) -> str:
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- tasks


def test_the_ranking_file_imports_as_is_lists_and_a_second_import_adds_nothing(cli, open_store):
    code, out, _ = cli("tasks", "import", RANKINGS, "--task_set", "demo")
    assert code == 0 and "added 30 ranking tasks, 30 prompts and 120 candidates to task set 'demo'" in out
    code, out, _ = cli("tasks", "list", "--task_set", "demo")
    rows = table_rows(out)
    assert code == 0 and rows[0] == ["id", "task set", "kind", "candidates", "judgements", "gold", "flagged", "prompt"]
    assert len(rows) == 31 and rows[1][1:7] == ["demo", "ranking", "4", "0/3", "no", "0"]
    assert "What is the capital of France?" in out

    code, out, _ = cli("tasks", "import", RANKINGS, "--task_set", "demo")
    assert code == 0 and "added 0 ranking tasks, 0 prompts and 0 candidates" in out
    assert len(open_store().tasks("demo")) == 30
    assert cli("tasks", "list", "--task_set", "other")[1].startswith("no tasks in task set 'other'")


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ('{"prompt": "q", "candidates": "one string"}', "row 2"),
        ('{"prompt": "q", "candidates": ["a"', "row 2: not valid JSON"),
        ("[1, 2]", "row 2: expected a JSON object, got list"),
        ("", "row 2: a blank line"),
    ],
)
def test_a_bad_row_names_file_and_row_and_stores_nothing(cli, db, tmp_path, second_line, message):
    bad = tmp_path / "bad.jsonl"
    good = ('{"prompt": "p", "candidates": ["a", "b"]}', '{"prompt": "r", "candidates": ["c", "d"]}')
    bad.write_text(f"{good[0]}\n{second_line}\n{good[1]}\n")
    err = one_line_error(*cli("tasks", "import", bad, "--task_set", "s")[::2])
    assert f"{bad} {message}" in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM prompts").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone() == (0,)


def test_missing_and_empty_files_are_one_line_errors(cli, tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert f"{missing}: no such file" in one_line_error(*cli("tasks", "import", missing, "--task_set", "s")[::2])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert "the file is empty" in one_line_error(*cli("tasks", "import", empty, "--task_set", "s")[::2])


def test_a_database_that_cannot_be_opened_is_a_one_line_error(tmp_path, capsys):
    db = tmp_path / "no" / "such" / "folder" / "annotations.db"
    assert main(["users", "list", "--db", str(db)]) == 2
    assert f"error: database {db}: unable to open database file" in one_line_error(2, capsys.readouterr().err)


def test_gold_rows_import_as_gold_tasks_with_their_expected_ranks(cli, tmp_path, open_store):
    row = {"prompt": "2 + 2?", "completions": ["4", "5", "22"], "ranks": [1, 3, 2]}
    gold = write_rows(tmp_path / "gold.jsonl", [row])
    code, out, _ = cli("tasks", "import", gold, "--task_set", "qc", "--gold")
    assert code == 0 and "added 1 gold tasks, 1 prompts and 3 candidates to task set 'qc'" in out
    (listed,) = table_rows(cli("tasks", "list")[1])[1:]
    assert listed[1:4] + listed[5:6] == ["qc", "ranking", "3", "yes"]
    store = open_store(gold_rate=1.0)
    store.add_user("gil", "rater", "pw")
    view = store.next_task("gil")
    expected = {"4": 1, "22": 2, "5": 3}
    store.submit("gil", view.task_id, str(uuid.uuid4()), ranks=[expected[c.text] for c in view.candidates])
    assert store.agreement_report()["gold_accuracy"]["gil"]["accuracy"] == 1.0  # the file's ranks are the gold answer

    err = one_line_error(*cli("tasks", "import", gold, "--task_set", "qc", "--gold", "--k", "2")[::2])
    assert "tasks import --gold takes no --k: gold rows carry their own answers" in err
    unranked = write_rows(tmp_path / "unranked.jsonl", [{"prompt": "3 + 3?", "completions": ["6", "7"]}])
    assert f"{unranked} row 1" in one_line_error(*cli("tasks", "import", unranked, "--task_set", "qc", "--gold")[::2])
    assert len(open_store().tasks()) == 1


def test_rating_tasks_carry_their_instructions_and_scale(cli, tmp_path, open_store):
    rows = write_rows(tmp_path / "rate.jsonl", [{"prompt": "Say hi.", "candidates": ["Hi!", {"text": "Go away."}]}])
    notes = tmp_path / "rate.md"
    notes.write_text("Thumbs up if the reply is **polite**.")
    args = ("tasks", "import", rows, "--task_set", "tone", "--kind", "rating", "--rating_scale", "binary",
            "--judgements_per_task", "1")
    missing = tmp_path / "missing.md"
    assert f"{missing}: no such file" in one_line_error(*cli(*args, "--instructions", missing)[::2])
    err = one_line_error(*cli(*args[:5], "--rating_scale", "binary")[::2])
    assert "--rating_scale is for --kind rating, not ranking" in err
    code, out, _ = cli(*args, "--instructions", notes)
    assert code == 0 and "added 2 rating tasks, 1 prompts and 2 candidates" in out
    store = open_store()
    assert [(t["kind"], t["candidates"], t["judgements_needed"]) for t in store.tasks("tone")] == [("rating", 1, 1)] * 2
    store.add_user("rae", "rater", "pw")
    view = store.next_task("rae")
    assert (view.task_set, view.rating_scale, view.instructions) == ("tone", "binary", notes.read_text())


# ---------------------------------------------------------------- users


def test_users_add_list_role_quota_and_remove(cli, open_store, monkeypatch):
    assert cli("users", "list")[1].startswith("no users in")
    code, out, _ = cli("users", "add", "root", "--role", "admin", "--password", "root-pw")
    assert code == 0 and out.startswith("added admin 'root' to ")
    monkeypatch.setenv("ANNOTATION_PASSWORD", "rita-pw")
    assert cli("users", "add", "rita", "--quota", "5")[1].startswith("added rater 'rita' (quota 5)")
    assert table_rows(cli("users", "list")[1]) == [
        ["name", "role", "quota", "locked until", "removed"],
        ["rita", "rater", "5", "-", "no"],
        ["root", "admin", "-", "-", "no"],
    ]
    assert "already exists" in one_line_error(*cli("users", "add", "rita")[::2])

    assert cli("users", "quota", "rita", "none")[:2] == (0, "'rita' now has no quota\n")
    with pytest.raises(SystemExit) as exit_info:
        cli("users", "quota", "rita", "-1")
    assert exit_info.value.code == 2
    assert cli("users", "role", "rita", "admin")[:2] == (0, "'rita' is now admin\n")
    assert cli("users", "role", "root", "rater")[0] == 0
    assert "admin" in one_line_error(*cli("users", "role", "rita", "rater")[::2])  # the last admin stays
    assert "admin" in one_line_error(*cli("users", "remove", "rita")[::2])
    assert "'ghost'" in one_line_error(*cli("users", "role", "ghost", "admin")[::2])

    assert cli("users", "remove", "root")[0] == 0
    assert [row[0] for row in table_rows(cli("users", "list")[1])] == ["name", "rita"]
    assert table_rows(cli("users", "list", "--include_removed")[1])[2] == ["root", "rater", "-", "-", "yes"]
    assert not open_store().login("root", "root-pw").ok
    assert "'ghost'" in one_line_error(*cli("users", "remove", "ghost")[::2])


def test_reset_password_by_either_spelling_and_unlock(cli, open_store):
    assert cli("users", "add", "rita", "--password", "old-pw")[0] == 0
    assert cli("users", "reset_password", "rita", "--password", "new-pw")[:2] == (0, "set a new password for 'rita'\n")
    assert cli("users", "reset-password", "rita", "--password", "newer-pw")[0] == 0
    store = open_store()
    assert store.login("rita", "newer-pw").ok and not store.login("rita", "new-pw").ok
    assert "'ghost'" in one_line_error(*cli("users", "reset_password", "ghost", "--password", "x")[::2])

    later = open_store(clock=lambda: datetime.now(timezone.utc) + timedelta(hours=1))  # lockouts end in the future
    for _ in range(8):
        later.login("rita", "wrong")
    assert table_rows(cli("users", "list")[1])[1][3].endswith(" UTC")
    assert cli("users", "unlock", "rita")[:2] == (0, "unlocked 'rita': failed logins cleared\n")
    assert table_rows(cli("users", "list")[1])[1][3] == "-"
    assert later.login("rita", "newer-pw").ok
    assert "'ghost'" in one_line_error(*cli("users", "unlock", "ghost")[::2])


# ---------------------------------------------------------------- guidelines and exports


def test_guidelines_set_and_show(cli, tmp_path):
    assert cli("guidelines", "show") == (0, "", f"no guidelines set in {tmp_path / 'annotations.db'}; "
                                               "set them: guidelines set FILE.md\n")
    guide = tmp_path / "guide.md"
    text = "# Guidelines\n\nPrefer **correct** over long.\n"
    guide.write_text(text)
    assert cli("guidelines", "set", guide)[:2] == (0, f"guidelines set from {guide} ({len(text)} characters)\n")
    assert cli("guidelines", "show")[1] == text
    assert "no such file" in one_line_error(*cli("guidelines", "set", tmp_path / "none.md")[::2])


@pytest.fixture
def judged(cli, tmp_path, open_store):
    """Two ranking tasks (the first flagged), a gold task and two rating tasks, each judged once by "r1"."""
    ranked = [{"prompt": f"p{i}", "candidates": [f"good {i}", f"bad {i}"]} for i in (1, 2)]
    gold = [{"prompt": "g", "completions": ["good g", "bad g"], "ranks": [1, 2]}]
    rated = [{"prompt": "r", "candidates": ["good r", "bad r"]}]
    for name, rows, *options in (
        ("ranked", ranked, "--judgements_per_task", "1"),
        ("gold", gold, "--gold"),
        ("rated", rated, "--kind", "rating", "--rating_scale", "binary", "--judgements_per_task", "1"),
    ):
        path = write_rows(tmp_path / f"{name}.jsonl", rows)
        assert cli("tasks", "import", path, "--task_set", name, *options)[0] == 0
    store = open_store(gold_rate=1.0)
    store.add_user("r1", "rater", "pw")
    kinds = []
    while (view := store.next_task("r1")) is not None:
        kinds.append(view.kind)
        answer = {"rating": int(view.candidates[0].text.startswith("good"))} if view.kind == "rating" else {
            "ranks": [1 if c.text.startswith("good") else 2 for c in view.candidates]}
        flags = ["harmful"] if view.prompt == "p1" else []
        store.submit("r1", view.task_id, str(uuid.uuid4()), flags=flags, **answer)
    assert sorted(kinds) == ["ranking", "ranking", "ranking", "rating", "rating"]
    return store


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("flags", "prompts"),
    [
        ((), ["p2"]),
        (("--include_flagged",), ["p1", "p2"]),
        (("--include_gold",), ["g", "p2"]),
        (("--include-gold",), ["g", "p2"]),  # the old spelling still works
        (("--include_gold", "--include_flagged"), ["g", "p1", "p2"]),
    ],
)
def test_export_leaves_out_gold_and_flagged_tasks_unless_asked(cli, judged, tmp_path, flags, prompts):
    out, rankings, feedback = tmp_path / "prefs.jsonl", tmp_path / "ranks.jsonl", tmp_path / "feedback.jsonl"
    code, printed, _ = cli("export", "--out", out, "--rankings", rankings, "--feedback", feedback, *flags)
    assert code == 0 and f"wrote {len(prompts)} preference rows to {out}" in printed
    assert sorted(row["prompt"] for row in read_jsonl(out)) == prompts
    assert all(row["chosen"].startswith("good") for row in read_jsonl(out))
    assert sorted(row["prompt"] for row in read_jsonl(rankings)) == prompts
    labels = sorted((row["completion"], row["label"], row["rater"]) for row in read_jsonl(feedback))
    assert labels == [("bad r", False, "r1"), ("good r", True, "r1")]


def test_export_to_a_missing_folder_is_a_one_line_error(cli, judged, tmp_path):
    target = tmp_path / "no" / "such" / "prefs.jsonl"
    assert f"{target}: No such file or directory" in one_line_error(*cli("export", "--out", target)[::2])


# ---------------------------------------------------------------- the entry points


def test_help_names_each_entry_point(capsys):
    from annotation_ui.__main__ import main as app_main

    for entry, args, usage in (
        (main, ["--help"], "usage: python -m alignment.annotations [-h] [--db DB] COMMAND"),
        (app_main, ["--help"], "usage: python -m annotation_ui [-h] [--db DB] [--host HOST] [--port PORT]"),
        (app_main, ["users", "reset-password", "--help"], "usage: python -m annotation_ui users reset_password"),
        (main, ["tasks", "import", "--help"], "usage: python -m alignment.annotations tasks import"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            entry(args)
        assert exit_info.value.code == 0 and capsys.readouterr().out.startswith(usage)


def python_m(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANNOTATION_PASSWORD"}
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_the_module_commands_run_as_processes(db, tmp_path):
    done = python_m("annotation_ui", "tasks", "import", RANKINGS, "--task_set", "demo", "--db", db)
    assert done.returncode == 0 and "added 30 ranking tasks" in done.stdout, done.stderr
    done = python_m("annotation_ui", "--db", db, "tasks", "list")  # --db before the command works too
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 31
    missing = tmp_path / "missing.jsonl"
    done = python_m("alignment.annotations", "tasks", "import", missing, "--task_set", "s", "--db", db)
    assert (done.returncode, done.stderr) == (2, f"error: {missing}: no such file\n")
    done = python_m("annotation_ui", "users", "add", "nora", "--db", db)  # no password, no terminal
    assert done.returncode == 2 and "give --password or set $ANNOTATION_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(180)
def test_without_a_command_the_app_is_served(db):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "annotation_ui", "--db", str(db), "--port", str(port)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 150
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200 and b"password" in page.read().lower()  # the login page
                    break
            except OSError:
                assert time.monotonic() < deadline, "the app did not answer"
                time.sleep(0.5)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "note: no users yet; add one: python -m annotation_ui users add NAME --role admin" in output
