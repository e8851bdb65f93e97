"""Roofline estimates: the closed form per operator, sums over the layer tree, the physical bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from cli_runs import cli
from nncost.analyses.roofline import bandwidth_at, make_roofline, op_seconds, roof_family
from nncost.errors import BadRequest
from nncost.hardware import catalogue_device
from nncost.hardware.catalogue import Device
from nncost.records.roofline import Roofline
from nncost.records.trace import OpCall

DATASHEET = ("h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l4", "l40s", "t4", "v100",
             "rtx-4090", "rtx-3090")


class MatMul(nn.Module):
    """``x @ w``: one aten.mm, 2·M·K·N FLOPs, 4·(MK + KN + MN) bytes in fp32."""

    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


class Block(nn.Module):
    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.mm = MatMul(k, n)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.mm(x)) * 2  # the multiply runs in Block's own forward


@pytest.mark.parametrize("m, k, n, bound", [(2048, 2048, 2048, "compute"), (1, 4096, 4096, "memory")])
def test_one_matrix_product_follows_the_closed_form(m: int, k: int, n: int, bound: str) -> None:
    with torch.device("meta"):
        model = MatMul(k, n)
    report = nncost.profile(model, (k,), batch_size=m, hardware="h100-sxm")
    h100 = catalogue_device("h100-sxm")  # fp32 matrix product: the fp32 column (TF32 is off by default)
    expected = max(2 * m * k * n / h100.peak("fp32"), 4 * (m * k + k * n + m * n) / h100.bandwidth)
    assert report.totals.estimated_seconds == pytest.approx(expected, rel=1e-9)
    assert report.layers[0].bound == bound
    assert report.roofline is not None and report.roofline.forward_samples_per_second == pytest.approx(m / expected)


def test_parents_sum_their_children_and_their_own_operators() -> None:
    model = nn.Sequential(Block(64, 64), Block(64, 32))
    report = nncost.profile(model, (64,), batch_size=8, hardware="a100-80gb")
    assert report.roofline is not None
    for layer in report.layers:
        children = [c.estimated_seconds or 0.0 for c in report.layers if c.parent == layer.index]
        own = sum(max(op_seconds(op, report.roofline)) for op in layer.self_ops)
        assert layer.estimated_seconds == pytest.approx(sum(children) + own, rel=1e-12)
    blocks = [layer for layer in report.layers if layer.type == "Block"]
    assert all(b.self_ops for b in blocks)  # the multiply runs outside every leaf, and is still counted
    assert report.totals.estimated_seconds == pytest.approx(report.layers[0].estimated_seconds, rel=1e-12)
    every_op = sum(max(op_seconds(op, report.roofline)) for layer in report.layers for op in layer.self_ops)
    assert report.totals.estimated_seconds == pytest.approx(every_op, rel=1e-12)  # each operator once


def test_efficiency_scales_the_estimate_and_is_checked() -> None:
    model = MatMul(256, 256)
    full = nncost.profile(model, (256,), batch_size=32, hardware="l4")
    half = nncost.profile(model, (256,), batch_size=32, hardware="l4", efficiency=0.5)
    assert half.totals.estimated_seconds == pytest.approx(2 * full.totals.estimated_seconds, rel=1e-9)
    with pytest.raises(BadRequest, match="efficiency"):
        nncost.profile(model, (256,), hardware="l4", efficiency=1.5)


def test_precisions_pick_the_datasheet_column_and_the_dtype() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())
    fp32 = nncost.profile(model, (3, 32, 32), hardware="a100-80gb")
    assert fp32.roofline is not None and fp32.roofline.family_dtype["conv"] == "tf32"  # cudnn.allow_tf32
    assert fp32.roofline.family_dtype["elementwise"] == "fp32"
    bf16 = nncost.profile(model, (3, 32, 32), hardware="a100-80gb", precision="bf16")
    assert bf16.roofline is not None and bf16.roofline.family_dtype["conv"] == "bf16"
    assert bf16.totals.param_bytes * 2 == fp32.totals.param_bytes  # profiled in bfloat16, like --dtype
    mixed = nncost.profile(model, (3, 32, 32), hardware="a100-80gb", precision="bf16-mixed")
    assert mixed.roofline is not None and mixed.roofline.family_peak_flops["conv"] == 312e12
    assert mixed.totals.param_bytes == fp32.totals.param_bytes  # fp32 weights, 16-bit matrix work
    with pytest.raises(BadRequest, match="no bf16 peak"):
        nncost.profile(model, (3, 32, 32), hardware="v100", precision="bf16")
    with pytest.raises(BadRequest, match="precision"):
        nncost.profile(model, (3, 32, 32), hardware="v100", precision="int4")


def test_depthwise_and_pooling_are_their_own_families() -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 1), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 7 * 7, 4))
    report = nncost.profile(model, (8, 16, 16), hardware="h200")
    kinds = {layer.type + (str(i) if layer.type == "Conv2d" else ""): {roof_family(op.unit) for op in layer.self_ops}
             for i, layer in enumerate(report.layers)}
    assert kinds["Conv2d1"] == {"depthwise"} and kinds["Conv2d2"] == {"conv"}
    assert kinds["MaxPool2d"] == {"pooling"} and kinds["Linear"] == {"matmul"}


def test_norms_split_into_batch_and_row_families() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4 * 8 * 8),
                          nn.GELU()).eval()
    report = nncost.profile(model, (4, 8, 8), hardware="h200")
    kinds = {layer.type: {roof_family(op.unit) for op in layer.self_ops} for layer in report.layers}
    assert kinds["BatchNorm2d"] == {"norm"} and kinds["LayerNorm"] == {"row-norm"}
    assert kinds["GELU"] == {"transcendental"}


CURVE = ((1 << 15, 80e9), (1 << 20, 40e9), (1 << 25, 10e9))  # a cache-like memory roof: (working set, bytes/s)


def curve_roofline(**efficiency: float) -> Roofline:
    cpu = Device(name="cpu", title="test", kind="cpu", peak_flops={"fp32": 1e11, "bf16": 1e11, "fp16": 1e11},
                 bandwidth=CURVE[-1][1], memory_bytes=None, bandwidth_curve=CURVE, family_efficiency=efficiency)
    return make_roofline(cpu)


@pytest.mark.parametrize("working_set, expected", [
    (1 << 10, 80e9), (1 << 15, 80e9), (1 << 20, 40e9), (1 << 30, 10e9),  # the points, clamped at the ends
    (1 << 22, 40e9 * (10 / 40) ** (2 / 5)),  # log-log between 1 MiB and 32 MiB: 2 of 5 doublings
])
def test_the_memory_roof_follows_the_curve_by_working_set(working_set: int, expected: float) -> None:
    assert bandwidth_at(curve_roofline(), working_set) == pytest.approx(expected, rel=1e-12)
    assert bandwidth_at(make_roofline(catalogue_device("h200")), working_set) == catalogue_device("h200").bandwidth


def test_in_place_operators_work_on_one_storage() -> None:
    n = 1 << 17  # 512 KiB of fp32: out of place the working set is 1 MiB, in place 512 KiB
    out_of_place = OpCall("relu", 0, 0, n, 4 * n, 4 * n, True, unit="elementwise")
    in_place = OpCall("relu_", 0, 0, n, 4 * n, 4 * n, True, unit="elementwise")
    roofline = curve_roofline()
    assert op_seconds(out_of_place, roofline)[1] == pytest.approx(8 * n / bandwidth_at(roofline, 8 * n))
    assert op_seconds(in_place, roofline)[1] == pytest.approx(8 * n / bandwidth_at(roofline, 4 * n))
    assert op_seconds(in_place, roofline)[1] < op_seconds(out_of_place, roofline)[1]


def test_a_transcendental_efficiency_scales_its_compute_roof_only() -> None:
    n = 1 << 20
    gelu = OpCall("gelu", 0, 0, n, 4 * n, 4 * n, True, unit="transcendental")
    plain, slow = curve_roofline(), curve_roofline(transcendental=0.01)
    assert op_seconds(gelu, slow)[0] == pytest.approx(100 * op_seconds(gelu, plain)[0])
    assert op_seconds(gelu, slow)[1] == op_seconds(gelu, plain)[1]
    relu = OpCall("relu", 0, 0, n, 4 * n, 4 * n, True, unit="elementwise")
    halved = curve_roofline(elementwise=0.5)
    assert op_seconds(relu, halved) == pytest.approx(tuple(2 * t for t in op_seconds(relu, plain)))


def test_a_training_step_adds_backward_and_optimizer() -> None:
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    report = nncost.profile(model, (512,), batch_size=64)
    memory = nncost.memory(model, (512,), batch_size=64, optimizer="adam", allocator="cuda")
    estimated = nncost.roofline(report, "h100-sxm", memory=memory)
    assert report.roofline is None  # a new report; the one given is not changed
    r = estimated.roofline
    assert r is not None and r.forward_seconds and r.backward_seconds and r.optimizer_seconds
    assert r.backward_seconds == pytest.approx(r.forward_seconds * memory.backward_flops / memory.forward_flops)
    params = sum(p.numel() for p in model.parameters())
    assert r.optimizer_seconds >= 7 * 4 * params / catalogue_device("h100-sxm").bandwidth  # Adam: 7 fp32 tensors
    assert r.train_step_seconds == pytest.approx(r.forward_seconds + r.backward_seconds + r.optimizer_seconds)
    assert r.train_samples_per_second == pytest.approx(64 / r.train_step_seconds)
    assert r.forward_samples_per_second == pytest.approx(64 / r.forward_seconds)


@st.composite
def networks(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...], int]:
    """A random stack of linear/conv/activation layers."""
    if draw(st.booleans()):
        width = draw(st.integers(1, 96))
        layers: list[nn.Module] = []
        for _ in range(draw(st.integers(1, 4))):
            out = draw(st.integers(1, 96))
            layers.append(nn.Linear(width, out, bias=draw(st.booleans())))
            layers.append(draw(st.sampled_from([nn.ReLU(), nn.GELU(), nn.LayerNorm(out), nn.Identity()])))
            width = out
        return nn.Sequential(*layers), (width if False else layers[0].in_features,), draw(st.integers(1, 64))
    channels, size = draw(st.integers(1, 16)), draw(st.integers(4, 24))
    layers = []
    c = channels
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, 16))
        groups = c if draw(st.booleans()) and out % c == 0 else 1
        layers += [nn.Conv2d(c, out, draw(st.sampled_from([1, 3])), padding=1, groups=groups), nn.BatchNorm2d(out),
                   draw(st.sampled_from([nn.ReLU(), nn.Hardswish(), nn.MaxPool2d(2, ceil_mode=True)]))]
        c = out
    return nn.Sequential(*layers), (channels, size, size), draw(st.integers(1, 8))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), hardware=st.sampled_from(DATASHEET),
       precision=st.sampled_from(["fp32", "fp16", "fp16-mixed"]), efficiency=st.floats(0.05, 1.0))
def test_no_estimate_beats_the_physical_bound(net: tuple[nn.Module, tuple[int, ...], int], hardware: str,
                                              precision: str, efficiency: float) -> None:
    model, size, batch = net
    device = catalogue_device(hardware)
    report = nncost.profile(model, size, batch_size=batch, hardware=hardware, precision=precision,
                            efficiency=efficiency)
    fastest = max(device.peak_flops.values())
    weight_bytes = report.totals.param_bytes
    estimate = report.totals.estimated_seconds
    assert estimate is not None
    assert estimate >= report.totals.flops / fastest * (1 - 1e-9)
    assert estimate >= weight_bytes / device.bandwidth * (1 - 1e-9)
    for layer in report.layers:
        assert layer.estimated_seconds is not None
        assert layer.estimated_seconds >= layer.flops / fastest * (1 - 1e-9)
        assert layer.estimated_seconds >= (layer.read_bytes + layer.write_bytes) / device.bandwidth * (1 - 1e-9)


def test_done_when_resnet50_on_h100_in_bf16_prints_times_and_bounds() -> None:
    pytest.importorskip("torchvision")
    code, text = cli("resnet50", "--input", "3x224x224", "--batch", "64", "--hardware", "h100-sxm",
                     "--precision", "bf16")
    assert code == 0
    assert max(len(line) for line in text.splitlines()) <= 120
    header = next(line for line in text.splitlines() if "Layer" in line)
    assert "Est. time" in header and "Bound" in header
    conv1 = next(line for line in text.splitlines() if line.strip().startswith("conv1 "))
    assert " µs" in conv1 and ("memory" in conv1 or "compute" in conv1)
    assert "Estimated forward" in text and "samples/s" in text
    assert "fits: the peak against a budget of 80.00 GiB" in text  # the H100's memory, from the catalogue
    assert catalogue_device("h100-sxm").memory_bytes == 80 * 2**30
    assert "Fits in device memory" not in text and "no budget given" not in text  # one fits line


def test_json_carries_the_roofline(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    code, text = cli("resnet18", "--hardware", "l40s", "--format", "json", "--train", "--batch", "4")
    data = json.loads(text)
    assert code == 0
    assert data["totals"]["estimated_seconds"] > 0
    assert all(layer["estimated_seconds"] is not None and layer["bound"] in ("compute", "memory")
               for layer in data["layers"] if layer["flops"])
    roofline = data["roofline"]
    assert roofline["hardware"] == "l40s" and roofline["peak_flops"] == 91.6e12  # fp32 matmul: the fp32 column
    assert roofline["family_peak_flops"]["conv"] == 183e12  # fp32 convolution: cuDNN's TF32 by default
    assert roofline["train_step_seconds"] > data["totals"]["estimated_seconds"]
    assert data["memory"]["allocator"] == "cuda"  # a CUDA device: CUDA allocator semantics


def test_fit_alone_takes_the_device_memory(tmp_path: Path) -> None:
    source = tmp_path / "tiny.py"
    source.write_text("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(64, 64))\n")
    code, text = cli(f"{source}:build", "--input", "64", "--hardware", "t4", "--fit")
    assert code == 0
    assert "Largest batch that fits" in text and "16.00 GiB" in text
    assert cli(f"{source}:build", "--input", "64", "--fit")[0] == 2  # no device, no budget
    assert cli(f"{source}:build", "--input", "64", "--hardware", "h100")[0] == 2


# -- a run of calls growing by a line, summed without one array entry a call -------------------
def brute_force_sum(op: OpCall, slope: tuple[int, int, int, int], count: int,
                    roofline: Roofline) -> tuple[float, float]:
    """Every call on its own through op_seconds: (compute-bound seconds, memory-bound seconds)."""
    from dataclasses import replace

    from nncost.analyses.roofline import op_overhead

    sums = [0.0, 0.0]
    for k in range(count):
        call = replace(op, flops=op.flops + k * slope[1], read_bytes=op.read_bytes + k * slope[2],
                       write_bytes=op.write_bytes + k * slope[3])
        compute, memory = op_seconds(call, roofline)
        sums[compute < memory] += max(compute, memory) + op_overhead(call, roofline)
    return sums[0], sums[1]


@pytest.mark.parametrize(("unit", "flops", "read", "write", "slope"), [
    ("matmul", 10**9, 10**6, 10**5, (0, 0, 0, 0)),  # compute-bound throughout
    ("matmul", 10**6, 10**8, 10**5, (0, 10**3, 10**5, 0)),  # memory-bound throughout
    ("attention", 10**5, 10**4, 10**3, (0, 10**8, 10**3, 0)),  # memory-bound, then compute-bound
    ("attention", 10**10, 10**4, 10**3, (0, -10**7, 10**6, 10)),  # compute-bound, then memory-bound
    ("gather", 0, 10**9, 10**4, (0, 0, 0, 10)),  # a lookup moves its rows twice
])
@pytest.mark.parametrize("count", [1, 2, 37, 300])
def test_a_run_of_calls_is_summed_in_closed_form(unit: str, flops: int, read: int, write: int,
                                                slope: tuple[int, int, int, int], count: int) -> None:
    from nncost.analyses.roofline import op_seconds_sum

    op = OpCall(op="op", layer=0, macs=0, flops=flops, read_bytes=read, write_bytes=write, counted=True, unit=unit,
                dtype="float32")
    h100 = make_roofline(catalogue_device("h100-sxm"))
    assert op_seconds_sum(op, slope, count, h100) == pytest.approx(brute_force_sum(op, slope, count, h100),
                                                                   rel=1e-9, abs=1e-18)
    curve = curve_roofline()  # call by call up to SUMMED_CALLS
    assert op_seconds_sum(op, slope, count, curve) == pytest.approx(brute_force_sum(op, slope, count, curve),
                                                                    rel=1e-9, abs=1e-18)


def test_a_long_run_under_a_bandwidth_curve_is_summed_from_a_bounded_sample() -> None:
    from nncost.analyses.roofline import SUMMED_CALLS, op_seconds_sum

    op = OpCall(op="op", layer=0, macs=0, flops=10**6, read_bytes=1 << 14, write_bytes=1 << 10, counted=True,
                unit="attention", dtype="float32")
    slope, count = (0, 10**3, 1 << 6, 0), 5 * SUMMED_CALLS + 123
    sampled = sum(op_seconds_sum(op, slope, count, curve_roofline()))
    assert sampled == pytest.approx(sum(brute_force_sum(op, slope, count, curve_roofline())), rel=1e-3)
