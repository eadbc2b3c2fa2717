"""``python -m alignment.annotations``: export, stats, agreement and user management."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence

from alignment.annotations.export import MODES
from alignment.annotations.store import ROLES, AnnotationStore
from alignment.errors import AlignmentError, DataError
from alignment.run import write_jsonl

PASSWORD_ENV = "ANNOTATION_PASSWORD"


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default="annotations.db", help="SQLite file or SQLAlchemy URL (default: annotations.db)"
    )


def add_users_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``users add NAME --role rater|admin [--password P]`` subcommand (shared with annotation_ui)."""
    users = subparsers.add_parser("users", help="manage annotation users")
    actions = users.add_subparsers(dest="users_action", required=True)
    add = actions.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="rater")
    add.add_argument("--password", help=f"the password (else ${PASSWORD_ENV}, else asked for on the terminal)")
    add_db_argument(add)
    add.set_defaults(run=run_users_add)


def _password(args: argparse.Namespace) -> str:
    password = args.password or os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if not sys.stdin.isatty():
        raise DataError(f"users add {args.name}: give --password or set ${PASSWORD_ENV} (no terminal to ask on)")
    password = getpass.getpass(f"Password for {args.name}: ")
    if password != getpass.getpass("Repeat: "):
        raise DataError(f"users add {args.name}: the two passwords differ")
    return password


def run_users_add(args: argparse.Namespace) -> None:
    AnnotationStore(args.db).add_user(args.name, args.role, _password(args))
    print(f"added {args.role} {args.name!r} to {args.db}")


def run_export(args: argparse.Namespace) -> None:
    store = AnnotationStore(args.db)
    count = write_jsonl(args.out, store.export_preferences(args.mode, args.include_gold))
    print(f"wrote {count} preference rows to {args.out}")
    if args.rankings:
        count = write_jsonl(args.rankings, store.export_rankings(args.mode, args.include_gold))
        print(f"wrote {count} ranking rows to {args.rankings}")


def run_stats(args: argparse.Namespace) -> None:
    print(json.dumps(AnnotationStore(args.db).progress(), indent=2))


def run_agreement(args: argparse.Namespace) -> None:
    text = json.dumps(AnnotationStore(args.db).agreement_report(), indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    print(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignment.annotations", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write preference (and ranking) JSONL for training")
    add_db_argument(export)
    export.add_argument("--out", required=True, help="preference JSONL: prompt, chosen, rejected, margin")
    export.add_argument("--mode", choices=MODES, default="majority")
    export.add_argument("--rankings", help="also write ranking JSONL: prompt, completions, ranks")
    export.add_argument("--include-gold", action="store_true", help="include gold (quality-control) tasks")
    export.set_defaults(run=run_export)
    stats = sub.add_parser("stats", help="collection progress as JSON")
    add_db_argument(stats)
    stats.set_defaults(run=run_stats)
    agreement = sub.add_parser(
        "agreement", help="agreement, Krippendorff's alpha (nominal), gold accuracy, Bradley-Terry"
    )
    add_db_argument(agreement)
    agreement.add_argument("--out", help="also write the report to this JSON file")
    agreement.set_defaults(run=run_agreement)
    add_users_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except AlignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
