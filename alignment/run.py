"""Run folders and the entry-point contract every stage shares.

A run folder holds the fully resolved recipe (``recipe.yaml``), ``environment.json`` (library versions, git commit,
device), ``log.txt``, metrics JSON files and checkpoints. :func:`stage_main` turns ``AlignmentError`` into one clear
line on stderr and exit status 2, so bad input never ends in a traceback from deep inside a library.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from alignment.errors import AlignmentError, DataError

logger = logging.getLogger("alignment")

LIBRARIES = ("alignment", "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate", "wandb", "gradio")
MIN_FREE_BYTES = 2 * 2**30


def default_output_dir(stage: str) -> str:
    return str(Path("runs") / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}")


def check_writable(run_dir: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail before training if the run folder cannot be written or its disk is nearly full."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # a probe of this process's own: ranks of one run check the same folder at the same time
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-probe-") as probe:
            probe.write(b"0" * 4096)
            probe.flush()
    except OSError as exc:
        raise AlignmentError(f"Run folder {run_dir} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(run_dir).free
    if free < min_free_bytes:
        raise AlignmentError(
            f"Only {free / 2**30:.2f} GiB free on the disk holding {run_dir}; at least "
            f"{min_free_bytes / 2**30:.1f} GiB is needed for checkpoints. Free space or choose another output_dir."
        )


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    import torch

    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "argv": sys.argv,
    }


def start_run(run_dir: str | Path, recipe: dict[str, Any], *, is_main: bool = True) -> Path:
    """Create/verify the run folder, write recipe + environment, and log to ``log.txt`` too."""
    run_dir = Path(run_dir)
    check_writable(run_dir)
    if is_main:
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=True))
        (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2))
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return run_dir


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop the rows of a run folder's step log after ``last_step`` (a resumed run logs those steps again)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(row + "\n" for row in rows))


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as UTF-8 JSON lines (non-ASCII kept as is); return how many."""
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> list[dict]:
    """One dict per non-blank line; [] when absent. A broken last line without a newline (being written) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise DataError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
        if row:
            rows.append(row)
    return rows


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a") as f:
        f.writelines(json.dumps(row, default=float) + "\n" for row in rows)


def configure_trackers(report_to: list[str] | str | None, run_dir: str | Path) -> None:
    """Prepare the trackers a run reports to; never prompt, never block.

    wandb logs offline unless an API key is configured, into ``<run>/wandb`` (``wandb sync <run>/wandb/offline-run-*``
    uploads it later), in the group of ``WANDB_RUN_GROUP`` (the pipeline sets it); a WANDB_MODE, WANDB_DIR or
    WANDB_PROJECT of the user's own wins. trackio needs nothing: its runs land in a local database (TRACKIO_DIR,
    default ~/.cache/huggingface/trackio), shown by ``trackio show --project alignment``."""
    targets = [report_to] if isinstance(report_to, str) else (report_to or [])
    if "trackio" in targets:
        logger.info("trackio: logging to project 'alignment'; dashboard: trackio show --project alignment")
    if "wandb" not in targets and "all" not in targets:
        return
    os.environ.setdefault("WANDB_PROJECT", "alignment")
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_SILENT", "true")
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has_wandb():
        os.environ.setdefault("WANDB_MODE", "offline")
    if os.environ.get("WANDB_MODE") == "offline":
        logger.info("wandb: no API key configured, logging offline to %s (upload later with `wandb sync`)", run_dir)


def _netrc_has_wandb() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


# Messages every run prints that say nothing about this run: (logger, message start). Other messages of the same
# loggers are kept.
EXPECTED_LOG_NOISE = (
    # bitsandbytes looks for the optional `kernels` package, then uses its built-in CPU 4-bit kernel
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)
# transformers' own code calls its deprecated `is_gradient_checkpointing` when a model loads; every recipe key
# `gradient_checkpointing` (trl's and PPO's spelling, which our defaults set) is transformers' deprecated alias of
# `activation_checkpointing`, and both spellings work.
EXPECTED_WARNINGS = (r"`is_gradient_checkpointing` is deprecated", r"`gradient_checkpointing` is deprecated")


class DropExpected(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def setup_logging() -> None:
    """Log lines with time, level and logger; the expected noise above silenced, real warnings kept."""
    logging.basicConfig(
        level=os.environ.get("ALIGNMENT_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    silence_expected_noise()


def silence_expected_noise() -> None:
    """Filter the expected noise (idempotent). The package runs it on import, before bitsandbytes is imported."""
    for name, prefix in EXPECTED_LOG_NOISE:
        target = logging.getLogger(name)
        if not any(isinstance(f, DropExpected) and f.prefix == prefix for f in target.filters):
            target.addFilter(DropExpected(prefix))
    for message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


def stage_main(
    fn: Callable[[list[str]], Any] | None = None, *, keys: Callable[[], tuple[tuple[type, ...], dict[str, Any]]] | None = None
):
    """Wrap a stage's ``main(argv)``: log set-up, clear one-line errors, exit status 2 on bad input. ``--help``
    prints the usage line (the docstring) and, with ``keys`` (returning the recipe classes and the stage's
    defaults), every recipe key with its type, default and help."""
    if fn is None:
        return functools.partial(stage_main, keys=keys)

    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> int:
        setup_logging()
        argv = sys.argv[1:] if argv is None else argv
        if argv and argv[0] in ("-h", "--help"):
            print(fn.__doc__ or "")
            if keys is not None:
                from alignment.config import describe_keys

                print("Recipe keys (YAML, or --key value flags, which win):\n" + describe_keys(*keys()))
            return 0
        try:
            fn(argv)
        except AlignmentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        end_process_group()
        return 0

    return wrapper


def end_process_group() -> None:
    """After a stage succeeds under torchrun, destroy its process group: a rank that exits with it alive can be
    aborted in gloo's teardown ("terminate called without an active exception", pytorch/pytorch#190489). Only on
    success: after a failure the other ranks may be inside a collective the destroy would wait on."""
    torch = sys.modules.get("torch")  # stages that never imported torch have no group to end
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
