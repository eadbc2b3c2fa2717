"""Shared fixtures. Real embedded weights are resolved once per session (the GGUF conversion is cached)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm_path() -> str:
    from alignment.models.builtin import resolve

    return resolve("builtin:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from alignment.models.builtin import resolve

    return resolve("builtin:minilm-l6")
