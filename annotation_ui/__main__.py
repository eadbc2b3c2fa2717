"""Serve the annotation app (no command: ``--db --host --port``) or run an admin command.

    python -m annotation_ui --db annotations.db --port 7860
    python -m annotation_ui users add NAME --role admin --db annotations.db
    python -m annotation_ui COMMAND --help
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alignment.annotations import AnnotationStore, cli


def serve_app(store: AnnotationStore, args: argparse.Namespace) -> None:
    """Serve the app over ``store`` (Gradio is imported only here: admin commands start fast)."""
    if not store.users():
        print(f"note: no users yet; add one: python -m annotation_ui users add NAME --role admin --db {args.db}")
    from annotation_ui.app import serve

    serve(store, host=args.host, port=args.port, forwarded_allow_ips=args.forwarded_allow_ips)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.build_parser("python -m annotation_ui", serve=serve_app, description=__doc__)
    return cli.main(argv, parser)


if __name__ == "__main__":
    sys.exit(main())
