"""The demo's set-up installs only what the demo uses; browsers are the test command's."""

from __future__ import annotations

import subprocess

from helpers import ROOT


def make_plan(target: str) -> str:
    """The commands ``make TARGET`` would run on a fresh clone (no .venv): ``make -n -B`` prints them."""
    return subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_make_demo_installs_no_browser_and_make_test_does():
    assert "setup-test.sh" not in make_plan("demo") and "setup-test.sh" in make_plan("test")
    assert "chromium" not in (ROOT / "scripts/setup.sh").read_text()
    assert "chromium" in (ROOT / "scripts/setup-test.sh").read_text()
