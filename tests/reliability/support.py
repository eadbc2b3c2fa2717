"""Shared by the reliability tests (imported as reliability.support): the figures file and the stages' recipe classes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from helpers import ROOT

FIGURES = ROOT / "test-artifacts" / "reliability.json"


def record(section: str, **figures: Any) -> None:
    """Merge ``figures`` into ``section`` of test-artifacts/reliability.json (written atomically) and print them."""
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    data.setdefault(section, {}).update(figures)
    tmp = FIGURES.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, FIGURES)
    print(f"reliability {section}: {figures}")


def stage_classes(stage: str) -> tuple[tuple[type, ...], dict[str, Any]]:
    """The dataclasses and defaults a stage's ``main`` hands to ``parse_stage``."""
    from trl import DPOConfig, RewardConfig, SFTConfig

    from alignment import dpo, rm, sft
    from alignment.classify import stage as classify
    from alignment.data import DataArguments
    from alignment.models import ModelArguments

    if stage == "classify":
        return classify.CLASSES, classify.DEFAULTS
    if stage == "ppo":
        from alignment.ppo.args import PPOConfig
        from alignment.ppo.trainer import STAGE_DEFAULTS
        from alignment.training import ResumeArguments

        # PPO needs exactly one reward source; a base that names one lets random recipes reach the other checks.
        return (ModelArguments, DataArguments, ResumeArguments, PPOConfig), {**STAGE_DEFAULTS["ppo"], "reward_function": "length"}
    own = {
        "sft": (sft.SFTStageArguments, SFTConfig, sft.DEFAULTS),
        "rm": (rm.RMStageArguments, RewardConfig, rm.DEFAULTS),
        "dpo": (dpo.DPOStageArguments, DPOConfig, dpo.DEFAULTS),
    }
    stage_args, config, defaults = own[stage]
    return (ModelArguments, DataArguments, stage_args, config), defaults


def error_lines(stderr: str) -> list[str]:
    """The `error: ...` messages a stage printed (a progress bar may precede one on the same line)."""
    return re.findall(r"(?:^|(?<=\]))error: .*", stderr, flags=re.MULTILINE)
