"""The command line: outputs, and one clear message with exit status 2 for every user error."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_runs import cli
from nncost.cli import build_compare_parser, build_parser

pytest.importorskip("torchvision")


def test_table_fits_120_columns_and_shows_totals() -> None:
    code, text = cli("resnet18", "--input", "3x224x224")
    assert code == 0
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "11,689,512" in text  # torchvision's published num_params for resnet18
    assert "Uncounted ops" in text


def test_json_follows_the_contract() -> None:
    code, text = cli("resnet18", "--format", "json", "--batch", "2")
    data = json.loads(text)
    assert code == 0
    assert data["schema"] == "nncost.report/2"
    assert data["execution"] == "meta"
    assert data["model"] == "resnet18"
    for key in ("params", "trainable_params", "buffers", "param_bytes", "macs", "flops",
                "feature_map_bytes", "peak_activation_bytes"):
        assert isinstance(data["totals"][key], int), key
    for key in ("name", "type", "depth", "input_shapes", "output_shapes", "params", "macs", "flops",
                "output_bytes", "read_bytes", "write_bytes"):
        assert key in data["layers"][0], key
    assert data["layers"][1]["output_shapes"] == [[2, 64, 112, 112]]
    assert data["uncounted"] == {}


@pytest.mark.parametrize("fmt, marker", [("csv", "index,name,type"), ("markdown", "| Layer |")])
def test_other_formats(fmt: str, marker: str) -> None:
    code, text = cli("resnet18", "--format", fmt, "--depth", "1")
    assert code == 0 and marker in text


def test_explain_plugs_the_numbers_into_the_formulas() -> None:
    code, text = cli("resnet18", "--explain", "conv1")
    assert code == 0
    assert "64 × (7·7·3/1 + 0) = 9,408" in text
    assert "118,013,952" in text  # 112·112·64·3·7·7


def test_unknown_model_suggests_close_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("resnet5")
    err = capsys.readouterr().err
    assert code == 2
    assert "resnet50" in err and "Traceback" not in err


def test_wrong_input_size_names_the_layer(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("resnet18", "--input", "1x224x224")
    err = capsys.readouterr().err
    assert code == 2
    assert "conv1 (Conv2d) expects 3 input channels, got 1" in err and "1×1×224×224" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("resnet18", "--input", "1x224x224", "--debug")
    assert code == 2 and "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet18", "--batch", "0"], "at least 1"),
        (["resnet18", "--input", "3xAx4"], "not like 3x224x224"),
    ],
)
def test_malformed_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(*argv)[0] == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet18", "--dtype", "float17"], "unknown dtype"),
        (["resnet18", "--seq", "12"], "--seq is for token models"),
        (["resnet18", "--explain", "conv9"], "did you mean 'conv1'"),
        (["nowhere/model.py:Net"], "no such file"),
        (["timm:resnet5O"], "timm:resnet50"),
        (["hf:gtp2"], "hf:gpt2"),
    ],
)
def test_impossible_requests_exit_2_with_one_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(*argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_python_file_model(tmp_path: Path) -> None:
    source = tmp_path / "mynet.py"
    source.write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))\n"
    )
    code, text = cli(f"{source}:Net", "--input", "1x28x28", "--format", "json")
    data = json.loads(text)
    assert code == 0
    assert data["totals"]["params"] == 4 * (9 + 1) + (4 * 26 * 26 + 1) * 10
    assert data["totals"]["macs"] == 26 * 26 * 4 * 9 + 4 * 26 * 26 * 10


def test_hf_model_from_default_config() -> None:
    pytest.importorskip("transformers")
    code, text = cli("hf:gpt2", "--seq", "64", "--format", "json")
    assert code == 0
    assert json.loads(text)["totals"]["params"] == 124_439_808


def test_console_script_is_installed() -> None:
    result = subprocess.run([sys.executable, "-m", "nncost.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("nncost ")


# -- start-up and help -----------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag: str) -> None:
    script = ("import sys\n"
              "from nncost.cli import run\n"
              "try:\n"
              f"    run([{flag!r}])\n"
              "except SystemExit:\n"
              "    pass\n"
              "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_the_package_imports_its_names_when_used() -> None:
    script = ("import sys\n"
              "import nncost\n"
              "before = 'torch' in sys.modules\n"
              "from nncost import profile, Report, SCHEMA\n"
              "import nncost.simulation.step\n"
              "print(before, callable(nncost.memory), nncost.memory.__module__, "
              "sorted(set(nncost.__all__) - set(dir(nncost))))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "nncost.api", "[]"]


@pytest.mark.parametrize("build", [build_parser, build_compare_parser])
def test_every_argument_has_help(build: Callable[[], argparse.ArgumentParser]) -> None:
    actions = [a for a in build()._actions if not isinstance(a, argparse._HelpAction)]
    assert actions
    for action in actions:
        assert action.help and action.help != argparse.SUPPRESS, action.dest
