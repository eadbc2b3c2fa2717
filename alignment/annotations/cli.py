"""Admin command line of the annotation store: users, tasks, guidelines, exports and reports.

``python -m annotation_ui COMMAND ...`` (without a command it serves the app) or, the same commands,
``python -m alignment.annotations COMMAND ...``. ``COMMAND --help`` lists a command's options.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from alignment.annotations.export import MODES
from alignment.annotations.store import RATING_SCALES, ROLES, TASK_KINDS, AnnotationStore
from alignment.errors import AlignmentError, DataError
from alignment.run import write_jsonl

PROG = "python -m alignment.annotations"
PASSWORD_ENV = "ANNOTATION_PASSWORD"
DEFAULT_DB = "annotations.db"
DB_HELP = f"SQLite file or SQLAlchemy URL (default: {DEFAULT_DB})"
Run = Callable[[AnnotationStore, argparse.Namespace], None]


# ---------------------------------------------------------------- reading and printing


def read_text(path: str) -> str:
    """The UTF-8 text of ``path``; DataError naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None


def read_rows(path: str) -> list[dict[str, Any]]:
    """One JSON object per line of ``path`` (row n = line n); DataError naming file and row otherwise."""
    lines = read_text(path).rstrip().splitlines()
    if not lines:
        raise DataError(f"{path}: the file is empty; expected one JSON object per line")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{path} row {number}: a blank line; expected one JSON object per line")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} row {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} row {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` under ``headers`` in left-aligned columns (None prints as -, booleans as yes/no)."""
    cells = [list(headers), *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def locked_until(iso: str | None) -> str | None:
    """A throttle end time (ISO 8601) as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if not iso:
        return None
    moment = datetime.fromisoformat(iso)
    moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _password(args: argparse.Namespace, command: str) -> str:
    """--password, else $ANNOTATION_PASSWORD, else asked twice on the terminal."""
    password = args.password or os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if not sys.stdin.isatty():
        raise DataError(f"{command} {args.name}: give --password or set ${PASSWORD_ENV} (no terminal to ask on)")
    password = getpass.getpass(f"Password for {args.name}: ")
    if password != getpass.getpass("Repeat: "):
        raise DataError(f"{command} {args.name}: the two passwords differ")
    return password


def _quota(text: str) -> int | None:
    """A quota argument: a whole number >= 0, or "none" for no quota."""
    if text.lower() == "none":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of judgements or 'none', got {text!r}")
    return int(text)


# ---------------------------------------------------------------- users


def run_users_list(store: AnnotationStore, args: argparse.Namespace) -> None:
    users = store.users(include_removed=args.include_removed)
    if not users:
        print(f"no users in {args.db}; add one: users add NAME --role admin")
        return
    rows = [(u["name"], u["role"], u["quota"], locked_until(u["blocked_until"]), u["removed"]) for u in users]
    print(table(("name", "role", "quota", "locked until", "removed"), rows))


def run_users_add(store: AnnotationStore, args: argparse.Namespace) -> None:
    store.add_user(args.name, args.role, _password(args, "users add"), quota=args.quota)
    quota = "" if args.quota is None else f" (quota {args.quota})"
    print(f"added {args.role} {args.name!r}{quota} to {args.db}")


def run_users_remove(store: AnnotationStore, args: argparse.Namespace) -> None:
    store.remove_user(args.name)
    print(f"removed {args.name!r}: they can no longer log in; their judgements are kept")


def run_users_reset_password(store: AnnotationStore, args: argparse.Namespace) -> None:
    store.set_password(args.name, _password(args, "users reset_password"))
    print(f"set a new password for {args.name!r}")


def run_users_unlock(store: AnnotationStore, args: argparse.Namespace) -> None:
    store.unlock(args.name)
    print(f"unlocked {args.name!r}: failed logins cleared")


def run_users_role(store: AnnotationStore, args: argparse.Namespace) -> None:
    store.set_role(args.name, args.role)
    print(f"{args.name!r} is now {args.role}")


def run_users_quota(store: AnnotationStore, args: argparse.Namespace) -> None:
    store.set_quota(args.name, args.quota)
    print(f"{args.name!r} now has " + ("no quota" if args.quota is None else f"a quota of {args.quota} judgements"))


# ---------------------------------------------------------------- tasks and guidelines

TASK_OPTIONS = ("k", "judgements_per_task", "rating_scale")


def _import_gold(store: AnnotationStore, args: argparse.Namespace) -> dict[str, int]:
    given = [f"--{name}" for name in (*TASK_OPTIONS, "instructions") if getattr(args, name) is not None]
    if given:
        raise DataError(f"tasks import --gold takes no {' or '.join(given)}: gold rows carry their own answers")
    return store.import_gold(read_rows(args.file), task_set=args.task_set, kind=args.kind, source=args.file)


def _import_tasks(store: AnnotationStore, args: argparse.Namespace) -> dict[str, int]:
    if args.rating_scale is not None and args.kind != "rating":
        raise DataError(f"tasks import: --rating_scale is for --kind rating, not {args.kind}")
    options = {name: getattr(args, name) for name in TASK_OPTIONS if getattr(args, name) is not None}
    if args.instructions is not None:
        options["instructions"] = read_text(args.instructions)
    rows = read_rows(args.file)
    return store.import_tasks(rows, task_set=args.task_set, kind=args.kind, source=args.file, **options)


def run_tasks_import(store: AnnotationStore, args: argparse.Namespace) -> None:
    counts = (_import_gold if args.gold else _import_tasks)(store, args)
    what = "gold" if args.gold else args.kind
    print(
        f"{args.file}: added {counts['tasks']} {what} tasks, {counts['prompts']} prompts and "
        f"{counts['candidates']} candidates to task set {args.task_set!r}"
    )


def run_tasks_list(store: AnnotationStore, args: argparse.Namespace) -> None:
    tasks = store.tasks(args.task_set)
    if not tasks:
        where = f"task set {args.task_set!r}" if args.task_set else args.db
        print(f"no tasks in {where}; add some: tasks import FILE.jsonl --task_set NAME")
        return
    headers = ("id", "task set", "kind", "candidates", "judgements", "gold", "flagged", "prompt")
    rows = [
        (t["id"], t["task_set"], t["kind"], t["candidates"], f"{t['judgements']}/{t['judgements_needed']}",
         t["is_gold"], t["flagged"], t["prompt"][:60])
        for t in tasks
    ]
    print(table(headers, rows))


def run_guidelines_set(store: AnnotationStore, args: argparse.Namespace) -> None:
    text = read_text(args.file)
    store.set_guidelines(text)
    print(f"guidelines set from {args.file} ({len(text)} characters)")


def run_guidelines_show(store: AnnotationStore, args: argparse.Namespace) -> None:
    text = store.guidelines()
    if text:
        print(text.rstrip("\n"))
    else:
        print(f"no guidelines set in {args.db}; set them: guidelines set FILE.md", file=sys.stderr)


# ---------------------------------------------------------------- exports and reports


def run_export(store: AnnotationStore, args: argparse.Namespace) -> None:
    keep = {"include_gold": args.include_gold, "include_flagged": args.include_flagged}
    count = write_jsonl(args.out, store.export_preferences(args.mode, **keep))
    print(f"wrote {count} preference rows to {args.out}")
    if args.rankings:
        count = write_jsonl(args.rankings, store.export_rankings(args.mode, **keep))
        print(f"wrote {count} ranking rows to {args.rankings}")
    if args.feedback:
        count = write_jsonl(args.feedback, store.export_feedback(**keep))
        print(f"wrote {count} feedback rows to {args.feedback}")


def run_stats(store: AnnotationStore, args: argparse.Namespace) -> None:
    print(json.dumps(store.progress(), indent=2))


def run_agreement(store: AnnotationStore, args: argparse.Namespace) -> None:
    text = json.dumps(store.agreement_report(), indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    print(text)


# ---------------------------------------------------------------- the parser


def _command(sub: argparse._SubParsersAction, name: str, run: Run, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand that runs ``run`` and, like the top level, takes --db."""
    parser = sub.add_parser(name, help=help, description=help, **kwargs)
    parser.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)
    parser.set_defaults(run=run)
    return parser


def _add_users(sub: argparse._SubParsersAction) -> None:
    actions = sub.add_parser("users", help="list, add, remove and change users").add_subparsers(
        dest="users_action", required=True, metavar="ACTION"
    )
    listing = _command(actions, "list", run_users_list, "show users: name, role, quota, locked until, removed")
    listing.add_argument("--include_removed", action="store_true", help="also show removed users")
    password_help = f"the password (else ${PASSWORD_ENV}, else asked for on the terminal)"
    add = _command(actions, "add", run_users_add, "add a user")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="rater")
    add.add_argument("--password", help=password_help)
    add.add_argument("--quota", type=_quota, help="at most this many judgements (skips count; default: none)")
    _command(actions, "remove", run_users_remove, "remove a user (no more logins; judgements are kept)").add_argument(
        "name"
    )
    reset = _command(
        actions, "reset_password", run_users_reset_password, "set a new password", aliases=["reset-password"]
    )
    reset.add_argument("name")
    reset.add_argument("--password", help=password_help)
    _command(actions, "unlock", run_users_unlock, "clear a user's failed logins so they can log in now").add_argument(
        "name"
    )
    role = _command(actions, "role", run_users_role, "change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    quota = _command(actions, "quota", run_users_quota, "set or clear a user's quota of judgements")
    quota.add_argument("name")
    quota.add_argument("quota", type=_quota, help="a whole number, or 'none' for no quota")


def _add_tasks(sub: argparse._SubParsersAction) -> None:
    actions = sub.add_parser("tasks", help="import and list tasks").add_subparsers(
        dest="tasks_action", required=True, metavar="ACTION"
    )
    imp = _command(actions, "import", run_tasks_import, "import prompts and candidates from JSONL as tasks")
    imp.add_argument(
        "file",
        help='JSONL, one prompt a line: {"prompt", "candidates": [text | {"text", "policy", "sampling"}]} '
        'or {"prompt", "completions": [...], "ranks": [...]}',
    )
    imp.add_argument("--task_set", required=True, help="name of the task set the tasks join")
    imp.add_argument("--kind", choices=TASK_KINDS, default="ranking",
                     help="ranking (default): rank all candidates; pairwise: 2 at a time; rating: one each")
    imp.add_argument("--k", type=int,
                     help="ranking: candidates per task (default: all of the row's); pairwise: pairs sampled per row")
    imp.add_argument("--judgements_per_task", type=int, help="distinct raters each task needs (default: 3)")
    imp.add_argument("--instructions", metavar="FILE.md", help="markdown shown to raters with these tasks")
    imp.add_argument("--rating_scale", choices=tuple(RATING_SCALES), help="rating: binary or likert5 (default)")
    imp.add_argument("--gold", action="store_true",
                     help='the rows are gold tasks with known answers: "ranks" (1 = best) per row')
    listing = _command(actions, "list", run_tasks_list, "show tasks with their judgement counts")
    listing.add_argument("--task_set", help="only this task set")


def _add_guidelines(sub: argparse._SubParsersAction) -> None:
    actions = sub.add_parser("guidelines", help="project-wide guidelines shown to raters").add_subparsers(
        dest="guidelines_action", required=True, metavar="ACTION"
    )
    _command(actions, "set", run_guidelines_set, "set the guidelines from a markdown file").add_argument(
        "file", metavar="FILE.md"
    )
    _command(actions, "show", run_guidelines_show, "print the guidelines")


def _add_reports(sub: argparse._SubParsersAction) -> None:
    export = _command(sub, "export", run_export, "write preference (and ranking, feedback) JSONL for training")
    export.add_argument("--out", required=True, help="preference JSONL: prompt, chosen, rejected, margin")
    export.add_argument("--mode", choices=MODES, default="majority")
    export.add_argument("--rankings", help="also write ranking JSONL: prompt, completions, ranks")
    export.add_argument("--feedback", help="also write rating JSONL: prompt, completion, label, rating, rater")
    export.add_argument("--include_gold", action="store_true", help="include gold (quality-control) tasks")
    export.add_argument("--include-gold", dest="include_gold", action="store_true", help=argparse.SUPPRESS)
    export.add_argument("--include_flagged", action="store_true", help="include tasks a rater flagged")
    _command(sub, "stats", run_stats, "collection progress as JSON")
    agreement = _command(
        sub, "agreement", run_agreement, "agreement, Krippendorff's alpha (nominal), gold accuracy, Bradley-Terry"
    )
    agreement.add_argument("--out", help="also write the report to this JSON file")


def build_parser(prog: str = PROG, serve: Run | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """The command tree; with ``serve``, running no command serves the app (``--host``, ``--port``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description or __doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=DEFAULT_DB, help=DB_HELP)
    if serve is not None:
        parser.add_argument("--host", default="127.0.0.1",
                            help="address to bind (default 127.0.0.1: this machine only)")
        parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
        parser.add_argument("--forwarded_allow_ips", default="127.0.0.1", metavar="IPS",
                            help="reverse proxies whose X-Forwarded-For names the rater's address, which login "
                                 "back-off counts by: comma-separated IPs or networks, '*' for any, '' for none "
                                 "(default 127.0.0.1: a proxy on this machine)")
        parser.set_defaults(run=serve)
    sub = parser.add_subparsers(dest="command", required=serve is None, metavar="COMMAND")
    _add_users(sub)
    _add_tasks(sub)
    _add_guidelines(sub)
    _add_reports(sub)
    return parser


def _message(err: Exception, db: str) -> str:
    """One line for an error; database errors name the database (a URL's password hidden)."""
    if isinstance(err, SQLAlchemyError):
        where = make_url(db).render_as_string(hide_password=True) if "://" in db else db
        return f"database {where}: {str(getattr(err, 'orig', None) or err).splitlines()[0]}"
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command; errors print one line on stderr and return 2."""
    args = (parser or build_parser()).parse_args(argv)
    try:
        store = AnnotationStore(args.db)
        try:
            args.run(store, args)
        finally:
            store.close()
    except (AlignmentError, SQLAlchemyError, OSError) as err:
        print(f"error: {_message(err, str(args.db))}", file=sys.stderr)
        return 2
    return 0
