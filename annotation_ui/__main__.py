"""``python -m annotation_ui [--db annotations.db] [--host 127.0.0.1] [--port 7860]``
or ``python -m annotation_ui users add NAME --role rater|admin [--password P] [--db ...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alignment.annotations import AnnotationStore, cli
from alignment.errors import AlignmentError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["users"]:
        return cli.main(argv)
    parser = argparse.ArgumentParser(prog="python -m annotation_ui", description=__doc__)
    cli.add_db_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    try:
        store = AnnotationStore(args.db)
        if not store.users():
            print(f"note: no users yet; add one: python -m annotation_ui users add NAME --role admin --db {args.db}")
    except AlignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from annotation_ui.app import serve  # gradio is slow to import: only when serving

    serve(store, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
