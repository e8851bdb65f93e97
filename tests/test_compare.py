"""nncost.compare and `nncost compare`: totals side by side, ratios to the first model, shared stages."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from cli_runs import cli
from nncost.errors import BadRequest
from nncost.records.comparison import Comparison
from nncost.records.result import Result
from scripts import load_script

torchvision = pytest.importorskip("torchvision")
ROOT = Path(__file__).resolve().parents[1]


def published(name: str) -> dict[str, float]:
    return torchvision.models.get_model_weights(name).DEFAULT.meta  # type: ignore[no-any-return]


def compared(*args: Any, **kwargs: Any) -> Comparison:
    """The comparison ``nncost.compare`` gives (a section of its result)."""
    result = nncost.compare(*args, **kwargs)
    comparison = result.comparison if isinstance(result, Result) else result
    assert isinstance(comparison, Comparison)
    return comparison


def example() -> ModuleType:
    """docs/examples/mobilenet_separable.py, imported from its path."""
    return load_script("docs/examples/mobilenet_separable.py", "mobilenet_separable")


# -- closed forms ----------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(
    c_in=st.integers(1, 24), n=st.integers(1, 40), k=st.sampled_from([1, 3, 5, 7]),
    size=st.integers(7, 20), stride=st.integers(1, 2),
)
def test_separable_over_standard_is_one_over_n_plus_one_over_k_squared(
    c_in: int, n: int, k: int, size: int, stride: int
) -> None:
    standard = nn.Conv2d(c_in, n, k, stride, padding=k // 2, bias=False)
    separable = nn.Sequential(nn.Conv2d(c_in, c_in, k, stride, padding=k // 2, groups=c_in, bias=False),
                              nn.Conv2d(c_in, n, 1, bias=False))
    comparison = compared({"standard": standard, "separable": separable}, (c_in, size, size))
    std, sep = comparison.models
    closed = Fraction(1, n) + Fraction(1, k * k)
    assert Fraction(sep.totals.macs, std.totals.macs) == closed
    assert Fraction(sep.totals.params, std.totals.params) == closed
    assert comparison.ratios[1]["macs"] == pytest.approx(float(closed), rel=1e-12)
    assert comparison.ratios[0] == {figure: 1.0 for figure in comparison.figures}


def test_the_mobilenet_example_matches_the_closed_form_layer_by_layer() -> None:
    mobilenet = example()
    result = mobilenet.compared()
    comparison = result.comparison if isinstance(result, Result) else result
    std, sep = comparison.reports
    rows = mobilenet.closed_form_rows()
    assert [stage.name for stage in comparison.stages] == [row["layer"] for row in rows]
    for row, stage in zip(rows, comparison.stages, strict=True):
        assert std.layer(row["layer"]).macs == row["standard_macs"]  # H·W·K²·C·N
        assert sep.layer(row["layer"]).macs == row["separable_macs"]  # H·W·(C·K² + C·N)
        assert Fraction(sep.layer(row["layer"]).macs, std.layer(row["layer"]).macs) == row["closed_form"]
        assert stage.macs == (row["standard_macs"], row["separable_macs"])
    assert std.totals.macs == sum(row["standard_macs"] for row in rows)
    assert sep.totals.macs == sum(row["separable_macs"] for row in rows)


def test_the_example_reproduces_the_brief_loop() -> None:
    # The brief's own loop (valid padding, Python rounding) as a second closed form: the example's
    # copy of it must give what the brief's code prints, whose formula is restated here.
    mobilenet = example()
    size, depth, total = 160, 3, 0
    for d in mobilenet._CONV_DEFS:
        out = round((size - 2) / d.stride)
        total += out * out * 9 * depth * d.depth
        size, depth = out, d.depth
    assert mobilenet.brief_loop(False)[0] == total


def test_the_output_pasted_in_the_docs_is_the_scripts(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["mobilenet_separable.py"])
    example().main()
    printed = [line.rstrip() for line in capsys.readouterr().out.rstrip().splitlines()]
    doc = (ROOT / "docs" / "mobilenet.md").read_text()
    block = doc.split("$ python docs/examples/mobilenet_separable.py\n", 1)[1].split("\n```", 1)[0]
    assert block.splitlines() == printed, "rerun the script and paste its output into docs/mobilenet.md"


def test_stages_of_resnet18_and_resnet34_follow_the_block_counts() -> None:
    comparison = compared(["resnet18", "resnet34"], (3, 224, 224))
    names = [stage.name for stage in comparison.stages]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    layer1 = comparison.stages[names.index("layer1")]
    # BasicBlock(64): two 3×3 convs (64·64·9 weights, 56·56·64·64·9 MACs each) and two BatchNorms (2·64)
    block_params, conv_macs = 2 * (64 * 64 * 9 + 2 * 64), 56 * 56 * 64 * 64 * 9
    assert layer1.params == (2 * block_params, 3 * block_params)  # resnet18: 2 blocks, resnet34: 3
    assert layer1.macs == (2 * 2 * conv_macs, 3 * 2 * conv_macs)
    assert layer1.ratios["macs"] == (1.0, 1.5)
    fc = comparison.stages[names.index("fc")]
    assert fc.params == (512 * 1000 + 1000,) * 2 and fc.ratios["params"] == (1.0, 1.0)
    ratio = published("resnet34")["num_params"] / published("resnet18")["num_params"]
    assert comparison.ratios[1]["params"] == pytest.approx(ratio, rel=1e-12)


# -- the CLI ---------------------------------------------------------------------------------
def test_resnet18_against_mobilenet_v2_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = cli("compare", "resnet18", "mobilenet_v2", "--input", "3x224x224", "--format", "json")
    assert code == 0
    document = json.loads(text)
    assert document["schema"] == "nncost.report/2" and document["memory"] is None  # the one document
    data = document["comparison"]
    assert [m["model"] for m in data["models"]] == ["resnet18", "mobilenet_v2"]
    for entry in data["models"]:
        meta = published(entry["model"])
        totals = entry["totals"]
        assert totals["params"] == meta["num_params"]
        assert totals["macs"] == pytest.approx(meta["_ops"] * 1e9, rel=0.005)  # _ops is GMACs
        for key in ("flops", "param_bytes", "peak_activation_bytes"):
            assert isinstance(totals[key], int) and totals[key] > 0, key
        assert "train_peak_bytes" not in totals
    assert data["ratios"][0]["params"] == 1.0
    assert data["ratios"][1]["params"] == pytest.approx(3_504_872 / 11_689_512, rel=1e-12)  # published counts
    assert data["ratios"][1]["macs"] == data["models"][1]["totals"]["macs"] / data["models"][0]["totals"]["macs"]
    assert data["stages"] == []  # resnet's children and mobilenet's (features, classifier) share no name
    assert data["train"] is None


NETS = '''
import torch.nn as nn

def narrow():
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))

def wide():
    return nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
'''


@pytest.fixture
def nets(tmp_path: Path) -> str:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return str(path)


def test_train_adds_the_training_step_peak(nets: str) -> None:
    code, text = cli("compare", f"{nets}:narrow", f"{nets}:wide", "--input", "3x8x8", "--train", "--batch", "4",
                     "--allocator", "cpu", "--format", "json")
    assert code == 0
    data = json.loads(text)["comparison"]
    expected = nncost.memory(nncost.sources.models.resolve(f"{nets}:wide").build("cpu"), (3, 8, 8), batch_size=4,
                             allocator="cpu")
    assert data["models"][1]["totals"]["train_peak_bytes"] == expected.peak_bytes
    assert data["ratios"][1]["train_peak_bytes"] == (
        data["models"][1]["totals"]["train_peak_bytes"] / data["models"][0]["totals"]["train_peak_bytes"])
    assert data["train"] == {"optimizer": "adam", "allocator": "cpu"}
    # conv 3→8 vs 3→16 at 6×6: MACs 6·6·C·27, plus the head's 6·6·C·10: exactly twice
    assert data["ratios"][1]["macs"] == 2.0
    code, text = cli("compare", f"{nets}:narrow", f"{nets}:wide", "--input", "3x8x8", "--train")
    assert code == 0 and "Training step peak (adam, cuda)" in text


def test_text_markdown_and_csv(nets: str) -> None:
    args = ("compare", f"{nets}:narrow", f"{nets}:wide", "--input", "3x8x8")
    code, text = cli(*args)
    assert code == 0 and "ratios to" in text and "(2.00×)" in text and "Layers of the same name" in text
    assert max(len(line) for line in text.splitlines()) <= 120
    code, text = cli(*args, "--format", "markdown")
    assert code == 0 and text.startswith("**2 models") and "| MACs |" in text
    code, text = cli(*args, "--format", "csv")
    lines = text.splitlines()
    assert code == 0 and lines[0].startswith("model,batch_size,params,macs") and len(lines) == 3
    assert lines[2].split(",")[lines[0].split(",").index("macs_ratio")] == "2.0"


def test_the_single_model_command_still_works() -> None:
    code, text = cli("resnet18", "--depth", "1")
    assert code == 0 and "11,689,512" in text


@pytest.mark.parametrize("argv, message", [
    (("compare", "resnet18"), "at least two models, got 1"),
    (("compare",), "at least two models, got 0"),
    (("compare", "resnet18", "resnt34"), "did you mean 'resnet34'"),
])
def test_errors_are_one_line(argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(*argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


# -- the Python API --------------------------------------------------------------------------
def test_reports_modules_and_names_mix() -> None:
    resnet = torchvision.models.resnet18(weights=None)
    report = nncost.profile(resnet, (3, 224, 224))
    comparison = compared([report, resnet, "resnet18"], (3, 224, 224))
    assert [e.model for e in comparison.models] == ["ResNet", "ResNet", "resnet18"]
    assert [r["macs"] for r in comparison.ratios] == [1.0, 1.0, 1.0]
    assert comparison.stages[0].params == (64 * 3 * 49,) * 3
    document = Result.of(comparison).to_dict()
    assert document["comparison"]["models"][2]["totals"]["params"] == published("resnet18")["num_params"]


def test_api_errors() -> None:
    with pytest.raises(BadRequest, match="at least two"):
        nncost.compare(["resnet18"])
    with pytest.raises(BadRequest, match="input_size"):
        nncost.compare([nn.Linear(2, 2), nn.Linear(2, 3)])
    with pytest.raises(BadRequest, match="got int"):
        nncost.compare(["resnet18", 3])  # type: ignore[list-item]
    with pytest.raises(nncost.ModelNotFound, match="resnet34"):
        nncost.compare(["resnet18", "resnt34"])


def test_models_are_left_untouched() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nncost.compare([model, nn.Conv2d(3, 4, 3)], (3, 8, 8), train=True, allocator="cpu")
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_none_is_a_dash_as_in_the_layer_table() -> None:
    """A figure that is zero prints ``-`` in the comparison as in the layer table, with no ratio."""
    models = [nn.Sequential(nn.ReLU(), nn.Linear(4, 4)), nn.Sequential(nn.ReLU(), nn.Linear(4, 8))]
    comparison = compared(models, (4,), stage_depth=1)
    relu = next(stage for stage in comparison.stages if stage.name == "0")
    assert relu.params == (0, 0) and relu.macs == (0, 0)
    line = next(line for line in Result.of(comparison).table(width=120).splitlines() if line.split()[:1] == ["0"])
    assert line.split()[1:] == ["-", "-", "-", "-"]
    layer_table = nncost.profile(models[0], (4,)).table(width=120)
    assert next(line for line in layer_table.splitlines() if "ReLU" in line).split()[3:5] == ["-", "-"]
