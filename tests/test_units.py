"""Every cost rule names the unit it executes as; the roofline reads the unit, never the name.

So one layer costs the same time whether it was captured from PyTorch or read from its ONNX
export: an ONNX ``Conv`` and an ``aten.convolution`` are both ``conv`` (or ``depthwise``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.analyses.roofline import FAMILIES, RUNS_AS, make_roofline, op_overhead, op_seconds
from nncost.hardware import catalogue_device
from nncost.hardware.catalogue import Device
from nncost.records.report import Report
from nncost.records.trace import OpCall
from nncost.rules.aten import ATEN
from nncost.rules.onnx import ONNX
from nncost.rules.registry import UNITS, ByShape, Cost, Registry
from onnx_helpers import tensor

RESNET50_CONVS = ("conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0",
                  "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2", "layer4.2.conv3")


@pytest.fixture(scope="module")
def resnet50_both_ways(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Report]:
    """resnet50 at batch 1 in fp32 on the h100-sxm: profiled from PyTorch, and read from its ONNX export."""
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    pytorch = nncost.profile(model, (3, 224, 224), hardware="h100-sxm")
    path = tmp_path_factory.mktemp("onnx") / "resnet50.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False)
    exported = nncost.roofline(nncost.profile_onnx(path), "h100-sxm")
    return pytorch, exported


@pytest.mark.parametrize("name", RESNET50_CONVS)
def test_a_conv_layer_costs_the_same_from_pytorch_and_from_onnx(name: str,
                                                                 resnet50_both_ways: tuple[Report, Report]) -> None:
    pytorch, exported = (report.layer(name) for report in resnet50_both_ways)
    # the export folds each BatchNorm into its conv's bias: a bias read, one add per output element
    assert exported.estimated_seconds == pytest.approx(pytorch.estimated_seconds, rel=0.05)
    assert exported.bound == pytorch.bound
    assert {op.unit for op in exported.self_ops} == {op.unit for op in pytorch.self_ops} == {"conv"}


def test_every_rule_runs_as_a_unit_of_the_closed_set() -> None:
    for registry in (ATEN, ONNX):
        for rule in registry.entries():
            assert rule.units and set(rule.units) <= set(UNITS), (rule.ops, rule.units)
    # and the roofline has roofs for every unit: its own, or those of the family it runs as
    assert set(UNITS) == set(FAMILIES) | set(RUNS_AS)
    assert set(RUNS_AS.values()) <= set(FAMILIES)


def test_registering_a_unit_outside_the_set_fails() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="unit must be one of"):
        registry.rule("op", unit="vector", formula="")
    with pytest.raises(ValueError, match="unit must be one of"):
        registry.rule("op", unit=ByShape(("conv", "systolic"), lambda *a, out: "conv"), formula="")
    registry.add(("op",), lambda *a, out: Cost(0, 0), unit=ByShape(("conv",), lambda *a, out: "matmul"), formula="")
    rule = registry.get("op")
    assert rule is not None
    with pytest.raises(ValueError, match="not one of"):
        rule.unit_of(out=())


ONNX_AND_ATEN = [
    ("MatMul", "mm"), ("Gemm", "addmm"), ("Relu", "relu"), ("Add", "add"), ("Softmax", "_softmax"),
    ("LogSoftmax", "_log_softmax"), ("Gelu", "gelu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("Exp", "exp"),
    ("HardSwish", "hardswish"), ("LayerNormalization", "native_layer_norm"),
    ("GroupNormalization", "native_group_norm"), ("RMSNormalization", "_fused_rms_norm"),
    ("BatchNormalization", "_native_batch_norm_legit_no_training"), ("InstanceNormalization", "native_batch_norm"),
    ("MaxPool", "max_pool2d_with_indices"), ("AveragePool", "avg_pool2d"), ("GlobalAveragePool", "mean"),
    ("GlobalMaxPool", "adaptive_max_pool2d"), ("ReduceMean", "mean"), ("ReduceMax", "amax"), ("Gather", "embedding"),
    ("Concat", "cat"), ("Pad", "constant_pad_nd"),
    ("Attention", "_scaled_dot_product_flash_attention_for_cpu"), ("LSTM", "mkldnn_rnn_layer"),
    ("Reshape", "_unsafe_view"), ("Identity", "alias"),
]


@pytest.mark.parametrize(("onnx_op", "aten_op"), ONNX_AND_ATEN, ids=[pair[0] for pair in ONNX_AND_ATEN])
def test_an_onnx_operator_runs_as_its_aten_counterpart(onnx_op: str, aten_op: str) -> None:
    assert ONNX.unit(onnx_op) == ATEN.unit(aten_op)


@given(channels=st.integers(1, 16), per_group=st.integers(1, 4), outputs_per_group=st.integers(1, 3),
       kernel=st.integers(1, 5), groups=st.integers(1, 8))
def test_a_convolution_is_depthwise_alike_from_aten_and_onnx(channels: int, per_group: int, outputs_per_group: int,
                                                              kernel: int, groups: int) -> None:
    x, w = (1, groups * per_group, 8, 8), (groups * outputs_per_group, per_group, kernel, kernel)
    out = ((1, w[0], 8 - kernel + 1, 8 - kernel + 1),)
    aten = ATEN.get("convolution")
    onnx = ONNX.get("Conv")
    assert aten is not None and onnx is not None
    aten_unit = aten.unit_of(x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups, out=out)
    onnx_unit = onnx.unit_of((x, w), {"group": groups, "kernel_shape": [kernel, kernel]}, out=out)
    assert aten_unit == onnx_unit == ("depthwise" if per_group == 1 and groups > 1 else "conv")


def ops_of(report: Report) -> list[OpCall]:
    return [op for layer in report.layers for op in layer.self_ops]


def units_of(report: Report) -> dict[str, set[str]]:
    return {layer.name: {op.unit for op in layer.self_ops} for layer in report.layers if layer.self_ops}


def test_capture_records_the_unit_of_every_call(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8), nn.GELU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4), nn.Softmax(-1)).eval()
    expected = {"0": {"depthwise"}, "1": {"norm"}, "2": {"transcendental"}, "3": {"reduction"}, "5": {"matmul"},
                "6": {"transcendental"}}
    assert units_of(nncost.profile(model, (8, 16, 16))) == expected
    pytest.importorskip("onnx")
    path = tmp_path / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 8, 16, 16),), str(path), dynamo=False, do_constant_folding=False)
    exported = units_of(nncost.profile_onnx(path))
    for name in ("0", "1", "2", "3", "5", "6"):
        assert expected[name] <= exported[name], (name, exported[name])


class WithBessel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)


def test_an_operator_without_a_rule_is_uncounted_and_memory_bound() -> None:
    report = nncost.profile(WithBessel(), (1 << 16,))
    fft = next(op for op in ops_of(report) if op.op == "special_bessel_j0")
    assert fft.unit == "uncounted" and not fft.counted and fft.flops == 0
    h100 = catalogue_device("h100-sxm")
    compute, memory = op_seconds(fft, make_roofline(h100))
    assert compute == 0 and memory == pytest.approx((fft.read_bytes + fft.write_bytes) / h100.bandwidth)


def test_a_view_takes_no_time_and_a_lookup_moves_its_rows() -> None:
    cpu = Device(name="cpu", title="test", kind="cpu", peak_flops={"fp32": 1e11}, bandwidth=1e10, memory_bytes=None,
                 op_overhead_seconds=2e-6, family_overhead_seconds={"elementwise": 3e-6})
    roofline = make_roofline(cpu)
    reshape = OpCall("Reshape", 0, 0, 0, 0, 0, True, unit="free")
    assert op_seconds(reshape, roofline) == (0.0, 0.0) and op_overhead(reshape, roofline) == 0.0
    table, rows = 4 * 50_000 * 64, 4 * 8 * 64
    for unit in ("gather", "copy"):
        lookup = OpCall("Gather", 0, 0, 0, table + 8 * 8, rows, True, unit=unit)
        moved = 2 * rows if unit == "gather" else table + 8 * 8 + rows
        assert op_seconds(lookup, roofline)[1] == pytest.approx(moved / 1e10)
        assert op_overhead(lookup, roofline) == 3e-6  # elementwise's fixed cost


def test_the_onnx_gather_of_an_embedding_reads_only_its_rows() -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["rows"], name="/embed/Gather")], "embed",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [8])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [8, 64])],
                              [tensor("table", (50_000, 64))])
    report = nncost.profile_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10))
    (gather,) = (op for op in ops_of(report) if op.op == "Gather")
    assert gather.unit == "gather"
    h100 = catalogue_device("h100-sxm")
    report = nncost.roofline(report, "h100-sxm")
    assert report.totals.estimated_seconds == pytest.approx(2 * 8 * 64 * 4 / h100.bandwidth)

