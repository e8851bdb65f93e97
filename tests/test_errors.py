"""Errors as a user needs them: a mistake in the user's input or code is one sentence and exit
status 2, never a traceback, an argparse usage block or an "internal error"."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from cli_runs import cli

pytest.importorskip("torchvision")

USER_CODE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        raise ValueError("the config has no layers")


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        raise RuntimeError("this branch is not written yet")


def needs_depth(depth):
    return nn.Linear(depth, depth)
'''


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_net.py"
    path.write_text(USER_CODE)
    return path


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed command printed on stderr."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nncost: error: ") and "Traceback" not in err and "internal error" not in err
    return lines[0].removeprefix("nncost: error: ")


# -- the user's code ------------------------------------------------------------------------
def test_a_constructor_that_raises_is_named(user_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(f"{user_file}:Broken", "--input", "1x6x6")[0] == 2
    assert one_error(capsys) == "Broken() raised ValueError: the config has no layers"


def test_a_factory_that_needs_arguments_is_named(user_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(f"{user_file}:needs_depth", "--input", "4")[0] == 2
    assert one_error(capsys).startswith("needs_depth() raised TypeError: ")


def test_a_file_that_raises_on_import_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "half_written.py"
    path.write_text("import torch\nraise ImportError('no module named flash_attn')\n")
    assert cli(f"{path}:Net")[0] == 2
    assert one_error(capsys) == f"importing {path} raised ImportError: no module named flash_attn"


def test_a_forward_that_raises_is_named(user_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(f"{user_file}:Raises", "--input", "4")[0] == 2
    assert one_error(capsys) == "the model's forward raised RuntimeError: this branch is not written yet (input 1×4)"


def test_a_forward_that_raises_in_a_training_step_is_named(user_file: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(f"{user_file}:Raises", "--input", "4", "--train")[0] == 2
    assert "forward raised RuntimeError: this branch is not written yet" in one_error(capsys)


def test_a_non_floating_dtype_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("resnet18", "--input", "3x32x32", "--dtype", "int8")[0] == 2
    assert "not a floating dtype" in one_error(capsys)


# -- flags ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["resnet18", "--batch", "0"], "argument --batch: must be at least 1, got 0 (nncost --help)"),
    (["resnet18", "--depth", "-1"], "argument --depth: must be 0 or more, got -1 (nncost --help)"),
    (["resnet18", "--depth", "two"], "argument --depth: 'two' is not a whole number (nncost --help)"),
    (["resnet18", "--depth", "1.5"], "argument --depth: '1.5' is not a whole number (nncost --help)"),
    (["resnet18", "--efficiency", "2"], "argument --efficiency: must be in (0, 1], got 2.0 (nncost --help)"),
    (["resnet18", "--repeats", "x"], "argument --repeats: 'x' is not a whole number (nncost --help)"),
    (["resnet18", "--gpus", "0"], "argument --gpus: must be at least 1, got 0 (nncost --help)"),
    (["resnet18", "--format", "yaml"], "argument --format: invalid choice: 'yaml'"),
    ([], "the following arguments are required: MODEL (nncost --help)"),
    (["compare", "resnet18", "alexnet", "--batch", "-3"],
     "argument --batch: must be at least 1, got -3 (nncost compare --help)"),
    (["compare", "a", "b", "--stage-depth", "0"], "argument --stage-depth: must be at least 1, got 0"),
])
def test_a_bad_flag_is_one_line_and_a_hint(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(*argv)[0] == 2
    line = one_error(capsys)
    assert line.startswith(message), line
    assert "usage:" not in line


# -- inputs the model rejects --------------------------------------------------------------
def test_resnet18_names_the_layer_and_what_it_expects(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("resnet18", "--input", "1x28x28")[0] == 2
    assert one_error(capsys) == "conv1 (Conv2d) expects 3 input channels, got 1 (input 1×1×28×28)"


class Stem(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.stem = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


@pytest.mark.parametrize("layer, size, message", [
    (nn.Conv1d(3, 8, 3), (5, 16), "stem (Conv1d) expects 3 input channels, got 5 (input 1×5×16)"),
    (nn.Conv2d(3, 8, 3), (1, 16, 16), "stem (Conv2d) expects 3 input channels, got 1 (input 1×1×16×16)"),
    (nn.Conv3d(2, 8, 3), (4, 4, 8, 8), "stem (Conv3d) expects 2 input channels, got 4 (input 1×4×4×8×8)"),
    (nn.Conv2d(3, 8, 3), (16,), "stem (Conv2d) expects a 4-dimensional input"),
    (nn.Linear(10, 4), (7,), "stem (Linear) expects 10 input features (the last dimension), got 7 (input 1×7)"),
    (nn.Linear(10, 4), (3, 9), "stem (Linear) expects 10 input features (the last dimension), got 9 (input 1×3×9)"),
    (nn.LayerNorm(64), (5, 32),
     "stem (LayerNorm) expects its input to end in 64 (normalized_shape), got 1×5×32 (input 1×5×32)"),
    (nn.LayerNorm((4, 8)), (3, 8, 4),
     "stem (LayerNorm) expects its input to end in 4×8 (normalized_shape), got 1×3×8×4 (input 1×3×8×4)"),
])
def test_a_rejected_input_says_what_the_layer_expects(layer: nn.Module, size: tuple[int, ...], message: str) -> None:
    with pytest.raises(nncost.InputMismatch) as info:
        nncost.profile(Stem(layer), size)
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.layer == "stem"


# -- any combination of flags --------------------------------------------------------------
VALUES = {
    "--batch": st.sampled_from(["1", "2", "0", "-1", "x", "1.5", "99999999999999999999"]),
    "--depth": st.sampled_from(["0", "1", "3", "-1", "x", "2.0"]),
    "--dtype": st.sampled_from(["float32", "float16", "bfloat16", "torch.float64", "int8", "bool", "float17", ""]),
    "--precision": st.sampled_from(["fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed", "fp8", "FP32"]),
    "--hardware": st.sampled_from(["h100-sxm", "a100-80gb", "t4", "H100-SXM", "cuda", "h100", "tpu", " ", "cpu"]),
    "--allocator": st.sampled_from(["cpu", "cuda", "tpu"]),
    "--efficiency": st.sampled_from(["1", "0.5", "0", "2", "-0.1", "nan", "inf", "x"]),
    "--fit": st.sampled_from(["24GiB", "1MiB", "10", "0", "-5GiB", "lots", "1.5GB", "1e3", "24 GiB"]),
    "--input": st.sampled_from(["3x32x32", "1x28x28", "1x6x6", "3x8x8", "0x3", "3xAx4", "x=3x8x8", "=3", "3,32,32",
                                "", "3x2x2", "1x1x1x1x1"]),
    "--optimizer": st.sampled_from(["adam", "sgd", "none", "lion"]),
    "--sharding": st.sampled_from(["none", "ddp", "zero3", "fsdp", "zero4"]),
    "--gpus": st.sampled_from(["1", "4", "0"]),
    "--seq": st.sampled_from(["8", "0"]),
    "--format": st.sampled_from(["table", "json", "csv", "markdown", "yaml"]),
    "--explain": st.sampled_from(["conv", "fc", "conv1", "layer9"]),
    "--device": st.sampled_from(["meta", "cpu", "cuda", "tpu"]),
}
SWITCHES = ["--train", "--checkpointing", "--debug"]


@st.composite
def command_lines(draw: st.DrawFn, user_file: str) -> list[str]:
    model = draw(st.sampled_from([f"{user_file}:Net", f"{user_file}:Broken", f"{user_file}:Raises",
                                  f"{user_file}:Nett", f"{user_file}", "nowhere.py:Net", "resnet18", "resnet1",
                                  "resnet18.onnx", "weights.pt", "timm:", "hf:", ":", "torchvision:resnet18"]))
    argv = [model]
    if model.startswith(("resnet18", "torchvision:")):
        argv += ["--input", "3x32x32"]
    for flag in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=4, unique=True)):
        argv += [flag, draw(VALUES[flag])]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    return argv


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_command_line_is_an_internal_error(data: st.DataObject, user_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = data.draw(command_lines(str(user_file)))
    code, _ = cli(*argv)
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    assert "internal error" not in err, (argv, err)
    if "--debug" not in argv:
        assert "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("argv", [
    ["resnet18", "--input", "3x32x32", "--batch", "99999999999999999999"],
    ["resnet18", "--input", "99999999999999999999"],
    ["resnet18", "--input", "3x32x32", "--batch", "999999999999999"],
])
def test_an_input_too_large_for_a_tensor_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(*argv)[0] == 2
    assert "more than a tensor can hold" in one_error(capsys)
