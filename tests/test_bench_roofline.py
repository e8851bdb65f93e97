"""bench/roofline.py --cli: each trial is the command line a user runs, read from its JSON."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest

from nncost.cli import run
from scripts import load_script

bench = load_script("bench/roofline.py", "nncost_bench_roofline")

NET = """
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Dropout(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
"""


def test_a_trial_runs_the_users_command() -> None:
    assert bench.cli_command("resnet50", 1, 128, 10) == [
        "resnet50", "--input", "3x224x224", "--hardware", "cpu", "--measure-time", "--format", "json"]
    assert bench.cli_command("gpt2", 2, 128, 5)[:5] == ["hf:gpt2", "--seq", "128", "--batch", "2"]


@pytest.fixture
def trial(tmp_path: Path) -> dict[str, object]:
    """One trial's figures, read from a real document of the command line (the session's
    fabricated cpu calibration: no measuring of this machine)."""
    (tmp_path / "net.py").write_text(NET)
    chunks: list[str] = []
    assert run([f"{tmp_path / 'net.py'}:build", "--input", "3x16x16", "--hardware", "cpu", "--measure-time",
                "--repeats", "1", "--format", "json"], out=chunks.append) == 0
    result: dict[str, object] = bench.from_document("net", json.loads("".join(chunks)), 1, 128, (0.5,), (0.6,))
    return result


def test_a_trials_figures_come_from_the_document(trial: dict[str, object]) -> None:
    leaves = trial["leaves"]
    assert isinstance(leaves, list) and [leaf["type"] for leaf in leaves] == ["Conv2d", "ReLU", "Linear"]
    assert trial["silent_leaves"] == ["Dropout", "Flatten"]  # no operator: left out of the count
    assert all(leaf["estimated"] > 0 and leaf["measured"] > 0 for leaf in leaves)
    assert trial["measured"] > 0 and trial["estimated"] > 0  # type: ignore[operator]


def test_the_table_gives_every_trial_and_names_the_misses(trial: dict[str, object]) -> None:
    good = copy.deepcopy(trial)
    good["estimated"] = good["measured"]
    for leaf in good["leaves"]:  # type: ignore[attr-defined]
        leaf["estimated"] = leaf["measured"]
    slow = copy.deepcopy(good)
    slow["measured"] = 2 * slow["measured"]  # type: ignore[operator]
    args = argparse.Namespace(held_out=False, threads=1, batch=1, seq=128, repeats=10)
    text = bench.cli_table([[good, slow, good]], args, "PYTHONPATH=src python bench/roofline.py --cli")
    start, end = bench.markers(False, cli=True)
    assert text.startswith(start) and text.endswith(end) and start == "<!-- bench/roofline.py --cli: start -->"
    assert bench.cpu_model() in text and "3 calibrations" in text
    row = next(line for line in text.splitlines() if line.startswith("| net |"))
    assert "+0% ✓, -50% ✗, +0% ✓" in row and "-50% / +0%" in row and "100% ✓, 100% ✓, 100% ✓" in row
    assert "no; 2 of 3 trials met both. Misses: net trial 2: total -50%." in text
    assert "met in every trial: yes." in bench.cli_table([[good]], args, "x")
