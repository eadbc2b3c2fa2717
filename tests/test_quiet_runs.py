"""Runs print only what says something about them: the expected noise of bitsandbytes and transformers is
silenced, other warnings of the same sources are kept."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

SCRIPT = """
import logging, warnings
from alignment.run import setup_logging
setup_logging()
bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
bnb.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure", "No module named 'kernels'")
bnb.warning("a real bitsandbytes warning")
warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing` instead.", FutureWarning)
warnings.warn("another deprecation", FutureWarning)
"""


def test_expected_noise_is_silenced_and_real_warnings_kept():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    assert "kernels-community" not in run.stderr and "gradient_checkpointing" not in run.stderr
    assert "a real bitsandbytes warning" in run.stderr and "another deprecation" in run.stderr



def test_checkpointing_is_off_by_default_and_either_spelling_turns_it_on():
    """trl turns gradient checkpointing on by default (~30% slower); ours is off, and a recipe turns it on with trl's
    spelling or transformers' new one."""
    from alignment.sft import CLASSES, DEFAULTS
    from alignment.training import parse_stage

    def checkpointing(*flags: str) -> bool:
        *_, config = parse_stage(["recipes/sft/demo.yaml", *flags], "sft", CLASSES, DEFAULTS)
        return config.activation_checkpointing

    assert checkpointing() is False
    assert checkpointing("--gradient_checkpointing", "true") is True
    assert checkpointing("--activation_checkpointing", "true") is True
