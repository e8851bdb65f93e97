"""The ONNX reader: which tensors are params, input shapes, layers, liveness, clear errors, the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

import nncost
from nncost.cli import run
from onnx_helpers import graph_model, one_node, tensor


def export(module: nn.Module, example: torch.Tensor, path: Path, dynamo: bool = False) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=dynamo)
    return path


# -- params --------------------------------------------------------------------------------


def test_params_are_the_stored_weights_and_nothing_else() -> None:
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="/conv/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "t", "mean", "var"], ["n"], name="/bn/BatchNormalization"),
        helper.make_node("Clip", ["n", "lo", "hi"], ["r"], name="/act/Clip"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="/Reshape"),
        helper.make_node("Identity", ["fc_b"], ["fc_b_alias"], name="Identity_0"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b_alias"], ["y"], name="/fc/Gemm", transB=1),
    ]
    weights = [
        tensor("w", (c, 3, 3, 3)), tensor("b", (c,)), tensor("s", (c,)), tensor("t", (c,)), tensor("mean", (c,)),
        tensor("var", (c,)), tensor("lo", ()), tensor("hi", (), value=6.0),
        tensor("shape", (2,), dtype=np.int64, value=[1, -1]), tensor("fc_w", (10, c * 5 * 5)), tensor("fc_b", (10,)),
        tensor("unused", (7,)),
    ]
    report = nncost.profile_onnx(graph_model(nodes, {"x": (1, 3, 5, 5)}, ["y"], weights))
    conv, bn, fc = c * 27 + c, 2 * c, 10 * c * 25 + 10
    assert report.totals.params == conv + bn + fc  # the aliased fc bias once
    assert report.totals.buffers == 2 * c  # running mean and variance
    assert report.file_params is not None
    assert sorted(report.file_params.counted) == sorted(["w", "b", "s", "t", "fc_w", "fc_b"])
    assert report.file_params.buffers == ["mean", "var"]
    assert report.file_params.excluded == {"lo": "scalar constant", "hi": "scalar constant",
                                           "shape": "shape/index constant", "unused": "unused"}
    assert report.layer("fc").params == fc and report.layer("conv").params == conv
    assert "6 stored tensors counted as params" in report.table()
    assert report.to_dict()["file_params"]["excluded"]["shape"] == "shape/index constant"


class Small(nn.Module):
    """No BatchNorm, so the export holds exactly the module's parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.conv(x))).sigmoid())


def test_an_export_costs_what_its_module_costs(tmp_path: Path) -> None:
    module = Small()
    path = export(module, torch.randn(2, 3, 16, 16), tmp_path / "small.onnx")
    torch_report = nncost.profile(module, (3, 16, 16), batch_size=2)
    onnx_report = nncost.profile_onnx(path)
    assert onnx_report.uncounted == []
    for figure in ("params", "macs", "flops"):
        assert getattr(onnx_report.totals, figure) == getattr(torch_report.totals, figure), figure
    assert onnx_report.layer("conv").macs == torch_report.layer("conv").macs
    assert onnx_report.layer("head.1").params == 8 * 4 * 4 * 10 + 10
    assert onnx_report.batch_size == 2 and onnx_report.execution == "onnx"


def test_layers_follow_the_module_tree_of_the_export(tmp_path: Path) -> None:
    path = export(Small(), torch.randn(1, 3, 16, 16), tmp_path / "small.onnx")
    report = nncost.profile_onnx(path)
    names = [(layer.name, layer.depth) for layer in report.layers]
    assert ("conv", 1) in names and ("head", 1) in names and ("head.1", 2) in names
    head = report.layer("head")
    assert head.input_shapes == [(1, 8, 4, 4)] and head.output_shapes == [(1, 10)]
    assert report.layers[0].macs == sum(layer.macs for layer in report.layers if layer.depth == 1)


def test_a_graph_without_scopes_gets_one_layer_per_node() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"), helper.make_node("Neg", ["a"], ["y"])]
    report = nncost.profile_onnx(graph_model(nodes, {"x": (2, 3)}, ["y"]))
    assert [(layer.name, layer.type, layer.depth) for layer in report.layers[1:]] == [
        ("first", "Relu", 1), ("Neg_1", "Neg", 1)]


def test_dynamo_metadata_gives_module_names_and_classes() -> None:
    node = helper.make_node("Relu", ["x"], ["y"], name="node_relu")
    for key, value in (("pkg.torch.onnx.name_scopes", "['', 'block', 'block.act', 'relu']"),
                       ("pkg.torch.onnx.class_hierarchy", "['m.Net', 'm.Block', 'torch.nn.ReLU', 'aten.relu']")):
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value
    report = nncost.profile_onnx(graph_model([node], {"x": (2, 3)}, ["y"]))
    assert [(layer.name, layer.type) for layer in report.layers] == [("", "Net"), ("block", "Block"),
                                                                      ("block.act", "ReLU")]


# -- liveness ------------------------------------------------------------------------------


def test_peak_and_feature_maps_of_a_chain() -> None:
    # x → Relu → a → Reshape (alias of a) → b → Relu → c → Relu → y; 4 bytes × 24 elements each
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    shape = tensor("shape", (2,), dtype=np.int64, value=[4, 6])
    report = nncost.profile_onnx(graph_model(nodes, {"x": (2, 3, 4)}, ["y"], [shape]))
    size = 24 * 4
    assert report.totals.feature_map_bytes == 3 * size // 2  # a, c, y written (b is a view); per sample
    assert report.totals.peak_activation_bytes == 2 * size  # an input and an output alive together
    assert report.totals.input_bytes == size


# -- input shapes --------------------------------------------------------------------------


def symbolic_model() -> onnx.ModelProto:
    return one_node("Relu", {"x": ("batch", 3, "height", "width")})


def test_a_missing_symbolic_size_names_the_input_and_its_dims() -> None:
    with pytest.raises(nncost.BadRequest, match=r"input 'x' has symbolic dimensions height, width"):
        nncost.profile_onnx(symbolic_model())


def test_input_sizes_with_and_without_the_batch() -> None:
    full = nncost.profile_onnx(symbolic_model(), {"x": (2, 3, 5, 7)})
    assert full.layers[0].output_shapes == [(2, 3, 5, 7)] and full.batch_size == 2
    bare = nncost.profile_onnx(symbolic_model(), (3, 5, 7), batch_size=4)
    assert bare.layers[0].output_shapes == [(4, 3, 5, 7)] and bare.totals.flops == 4 * 3 * 5 * 7


def test_wrong_input_sizes_are_clear_errors() -> None:
    with pytest.raises(nncost.BadRequest, match="no input 'y'"):
        nncost.profile_onnx(symbolic_model(), {"y": (1, 3, 5, 5)})
    with pytest.raises(nncost.BadRequest, match="fixed dimension 3 cannot be 4"):
        nncost.profile_onnx(symbolic_model(), {"x": (1, 4, 5, 5)})
    fixed = one_node("Relu", {"x": (1, 3)})
    with pytest.raises(nncost.BadRequest, match="fixed batch dimension 1"):
        nncost.profile_onnx(fixed, batch_size=8)
    with pytest.raises(nncost.BadRequest, match="fixed batch dimension 1"):
        nncost.profile_onnx(fixed, (3,), batch_size=8)  # a size without the batch does not hide it


def test_a_fixed_batch_with_input_and_batch_flags_exits_2(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fixed.onnx"
    onnx.save(one_node("Conv", {"x": (1, 3, 8, 8)}, [tensor("w", (4, 3, 3, 3))]), path)
    assert run([str(path), "--input", "3x8x8", "--batch", "8"], out=lambda text: None) == 2
    assert "fixed batch dimension 1" in capsys.readouterr().err
    two = one_node("Add", {"x": (1, 3), "z": (1, 3)})
    with pytest.raises(nncost.BadRequest, match="2 inputs"):
        nncost.profile_onnx(two, (3,))


# -- unreadable files ----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(one_node("Conv", {"x": (1, 3, 8, 8)}, [tensor("w", (4, 3, 3, 3))]), path)
    return path


def test_truncated_and_garbage_files(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    for cut in (1, len(data) // 2, len(data) - 3):
        broken = tmp_path / f"cut{cut}.onnx"
        broken.write_bytes(data[:cut])
        with pytest.raises(nncost.ModelFileError):
            nncost.profile_onnx(broken)
    (tmp_path / "text.onnx").write_text("this is not a model")
    with pytest.raises(nncost.ModelFileError):
        nncost.profile_onnx(tmp_path / "text.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(nncost.ModelFileError, match="empty"):
        nncost.profile_onnx(tmp_path / "empty.onnx")
    with pytest.raises(nncost.ModelNotFound, match="no such file"):
        nncost.profile_onnx(tmp_path / "absent.onnx")


@pytest.mark.parametrize(("opset", "message"), [(99, "opset 99"), (5, "opset 5")])
def test_unsupported_opsets(opset: int, message: str) -> None:
    model = one_node("Relu", {"x": (1, 3)})
    model.opset_import[0].version = opset
    with pytest.raises(nncost.ModelFileError, match=message):
        nncost.profile_onnx(model)


def test_missing_or_short_external_data(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    model = one_node("Conv", {"x": (1, 3, 8, 8)}, [tensor("w", (64, 3, 3, 3))])
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    assert nncost.profile_onnx(path).totals.params == 64 * 27  # complete: it works, weights never read
    data = tmp_path / "ext.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(nncost.ModelFileError, match="shorter"):
        nncost.profile_onnx(path)
    data.unlink()
    with pytest.raises(nncost.ModelFileError, match=r"external data file 'ext.data' of tensor 'w' is missing"):
        nncost.profile_onnx(path)


# -- the command line ----------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    return run(list(argv), out=lines.append), lines


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_cli_every_format(saved: Path, fmt: str) -> None:
    code, lines = cli(str(saved), "--format", fmt)
    assert code == 0 and lines
    if fmt == "json":
        data = json.loads(lines[0])
        assert data["execution"] == "onnx" and data["file_params"]["counted"] == ["w"]
        assert data["totals"]["macs"] == 4 * 6 * 6 * 27


def test_cli_named_and_bare_inputs(tmp_path: Path) -> None:
    path = tmp_path / "sym.onnx"
    onnx.save(symbolic_model(), path)
    code, lines = cli(str(path), "--input", "x=2x3x4x5", "--format", "json")
    assert code == 0 and json.loads(lines[0])["totals"]["flops"] == 2 * 3 * 4 * 5
    code, lines = cli(str(path), "--input", "3x4x5", "--batch", "3", "--format", "json")
    assert code == 0 and json.loads(lines[0])["totals"]["flops"] == 3 * 3 * 4 * 5


def test_cli_errors_are_one_line(tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sym.onnx"
    onnx.save(symbolic_model(), path)
    for argv in ([str(path)], [str(saved), "--train"], ["resnet18", "--input", "x=3x224x224"],
                 [str(tmp_path / "absent.onnx")]):
        assert cli(*argv)[0] == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("nncost: error:") and "Traceback" not in err


def test_html_and_explain(saved: Path) -> None:
    report = nncost.profile_onnx(saved)
    assert "<table" in report._repr_html_()
    assert "onnx Conv" in report.explain("conv")


def test_without_the_onnx_package_the_error_says_what_to_install(saved: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(nncost.ModelNotFound, match=r"pip install 'nncost\[onnx\]'"):
        nncost.profile_onnx(saved)


def test_the_dynamo_exporter_gives_module_classes_and_the_same_costs(tmp_path: Path) -> None:
    module = Small()
    path = export(module, torch.randn(1, 3, 16, 16), tmp_path / "dynamo.onnx", dynamo=True)
    report = nncost.profile_onnx(path)
    torch_report = nncost.profile(module, (3, 16, 16))
    assert report.uncounted == []
    assert (report.totals.macs, report.totals.flops) == (torch_report.totals.macs, torch_report.totals.flops)
    assert report.layers[0].type == "Small"
    assert {(layer.name, layer.type) for layer in report.layers} >= {("conv", "Conv2d"), ("head.1", "Linear")}


def test_profile_points_onnx_files_to_profile_onnx() -> None:
    with pytest.raises(nncost.BadRequest, match="profile_onnx"):
        nncost.profile("model.onnx", (3, 224, 224))  # type: ignore[arg-type]
