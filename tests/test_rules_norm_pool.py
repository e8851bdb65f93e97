"""Normalisation, pooling and interpolation against closed forms.

Normalisation: 5 FLOPs per element with computed statistics, +2 with an affine transform; inference
BatchNorm (running statistics) 2.  Pooling: one FLOP per window element per output; adaptive pooling
uses PyTorch's exact windows.  Interpolation: nearest 0, linear over d dimensions ``2·2^d − 1`` per
output, bicubic ``2·16 − 1``.  No MACs anywhere in this file.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.rules import ATEN

SETTINGS: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
DEVICES = st.sampled_from(["meta", "cpu"])
BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
ADAPTIVE = {
    ("avg", 1): nn.AdaptiveAvgPool1d, ("avg", 2): nn.AdaptiveAvgPool2d, ("avg", 3): nn.AdaptiveAvgPool3d,
    ("max", 1): nn.AdaptiveMaxPool1d, ("max", 2): nn.AdaptiveMaxPool2d, ("max", 3): nn.AdaptiveMaxPool3d,
}
SPATIAL = {1: 10, 2: 7, 3: 5}  # largest spatial extent per number of dimensions


def flops_only(report: nncost.Report) -> int:
    assert report.uncounted == []
    assert report.totals.macs == 0
    return report.totals.flops


def shape(draw: st.DrawFn, dims: int, smallest: int = 1) -> tuple[int, ...]:
    return tuple(draw(st.integers(smallest, SPATIAL[dims])) for _ in range(dims))


# -- normalisation ------------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(dims=st.integers(1, 3), data=st.data(), affine=st.booleans(), track=st.booleans(), device=DEVICES)
def test_batch_norm(dims: int, data: st.DataObject, affine: bool, track: bool, device: str) -> None:
    channels, n = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 3))
    spatial = () if dims == 1 and data.draw(st.booleans()) else shape(data.draw, dims)  # BatchNorm1d takes (N, C)
    module = BATCH_NORM[dims](channels, affine=affine, track_running_stats=track)
    report = nncost.profile(module, inputs=torch.randn(n, channels, *spatial), device=device)
    elements = n * channels * math.prod(spatial)
    # profile runs eval(): with running statistics BatchNorm folds into one scale and one shift (2 FLOPs);
    # without them it must compute the batch statistics (5) and apply the affine transform (2) if any.
    per_element = 2 if track else 5 + (2 if affine else 0)
    assert flops_only(report) == per_element * elements
    assert report.totals.params == (2 * channels if affine else 0)


@settings(max_examples=30, **SETTINGS)
@given(dims=st.integers(1, 3), data=st.data(), affine=st.booleans(), device=DEVICES)
def test_instance_norm_computes_statistics(dims: int, data: st.DataObject, affine: bool, device: str) -> None:
    channels, n = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    spatial = shape(data.draw, dims, smallest=2)
    report = nncost.profile(INSTANCE_NORM[dims](channels, affine=affine),
                            inputs=torch.randn(n, channels, *spatial), device=device)
    assert flops_only(report) == (5 + (2 if affine else 0)) * n * channels * math.prod(spatial)


@settings(max_examples=40, **SETTINGS)
@given(
    lead=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    normalized=st.lists(st.integers(1, 6), min_size=1, max_size=2),
    affine=st.booleans(),
    device=DEVICES,
)
def test_layer_norm(lead: list[int], normalized: list[int], affine: bool, device: str) -> None:
    report = nncost.profile(nn.LayerNorm(normalized, elementwise_affine=affine),
                            inputs=torch.randn(*lead, *normalized), device=device)
    elements = math.prod(lead) * math.prod(normalized)
    assert flops_only(report) == (5 + (2 if affine else 0)) * elements
    assert report.totals.params == (2 * math.prod(normalized) if affine else 0)


@settings(max_examples=40, **SETTINGS)
@given(
    groups=st.integers(1, 4),
    per_group=st.integers(1, 3),
    n=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    affine=st.booleans(),
    device=DEVICES,
)
def test_group_norm(groups: int, per_group: int, n: int, spatial: list[int], affine: bool, device: str) -> None:
    assume(per_group * math.prod(spatial) > 1)  # PyTorch needs more than one value per group
    channels = groups * per_group
    report = nncost.profile(nn.GroupNorm(groups, channels, affine=affine),
                            inputs=torch.randn(n, channels, *spatial), device=device)
    assert flops_only(report) == (5 + (2 if affine else 0)) * n * channels * math.prod(spatial)
    assert report.totals.params == (2 * channels if affine else 0)


@pytest.mark.parametrize("module", [nn.Softmax(dim=-1), nn.LogSoftmax(dim=1), nn.Softmax(dim=0)])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_softmax_five_flops_per_element(module: nn.Module, device: str) -> None:
    report = nncost.profile(module, inputs=torch.randn(3, 4, 5), device=device)
    assert flops_only(report) == 5 * 3 * 4 * 5


# -- pooling --------------------------------------------------------------------------------------


def pool_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@st.composite
def pool_configs(draw: st.DrawFn, dilated: bool) -> dict[str, Any]:
    dims = draw(st.integers(1, 3))
    kernel, stride, padding, dilation, size = [], [], [], [], []
    for _ in range(dims):
        k = draw(st.integers(1, 4))
        d = draw(st.integers(1, 2)) if dilated else 1
        p = draw(st.integers(0, k // 2))  # PyTorch: padding at most half the kernel
        kernel.append(k)
        dilation.append(d)
        padding.append(p)
        stride.append(draw(st.integers(1, 3)))
        # max pooling needs one window inside input + padding; average pooling (3-d) a kernel inside the input
        smallest = max(1, d * (k - 1) + 1 - 2 * p) if dilated else k
        size.append(smallest + draw(st.integers(0, SPATIAL[dims])))
    return {"dims": dims, "kernel": tuple(kernel), "stride": tuple(stride), "padding": tuple(padding),
            "dilation": tuple(dilation), "size": tuple(size), "n": draw(st.integers(1, 2)),
            "channels": draw(st.integers(1, 3))}


def expected_pool(c: dict[str, Any]) -> tuple[int, tuple[int, ...]]:
    out = tuple(pool_out(*args) for args in zip(c["size"], c["kernel"], c["stride"], c["padding"], c["dilation"],
                                                strict=True))
    # one FLOP (compare, or add) per window element per output
    return c["n"] * c["channels"] * math.prod(out) * math.prod(c["kernel"]), (c["n"], c["channels"], *out)


@settings(max_examples=50, **SETTINGS)
@given(pool_configs(dilated=True), DEVICES)
def test_max_pool(c: dict[str, Any], device: str) -> None:
    module = MAX_POOL[c["dims"]](c["kernel"], c["stride"], c["padding"], c["dilation"])
    report = nncost.profile(module, inputs=torch.randn(c["n"], c["channels"], *c["size"]), device=device)
    flops, out_shape = expected_pool(c)
    assert report.layers[0].output_shapes == [out_shape]
    assert flops_only(report) == flops


@settings(max_examples=50, **SETTINGS)
@given(pool_configs(dilated=False), st.booleans(), DEVICES)
def test_avg_pool(c: dict[str, Any], include_pad: bool, device: str) -> None:
    module = AVG_POOL[c["dims"]](c["kernel"], c["stride"], c["padding"], count_include_pad=include_pad)
    report = nncost.profile(module, inputs=torch.randn(c["n"], c["channels"], *c["size"]), device=device)
    flops, out_shape = expected_pool(c)
    assert report.layers[0].output_shapes == [out_shape]
    assert flops_only(report) == flops


def window_lengths(size_in: int, size_out: int) -> list[int]:
    """How many inputs each adaptive-pooling output reads, measured on PyTorch itself.

    Max-pooling the positions 0..in-1 gives each window's last index; max-pooling their negatives,
    the first.
    """
    positions = torch.arange(size_in, dtype=torch.float32).view(1, 1, size_in)
    last = F.adaptive_max_pool1d(positions, size_out)
    first = -F.adaptive_max_pool1d(-positions, size_out)
    lengths = (last - first + 1).to(torch.int64).flatten().tolist()
    # the documented windows [floor(i·in/out), ceil((i+1)·in/out)) agree
    assert lengths == [math.ceil((i + 1) * size_in / size_out) - (i * size_in) // size_out for i in range(size_out)]
    return lengths


@settings(max_examples=60, **SETTINGS)
@given(kind=st.sampled_from(["avg", "max"]), dims=st.integers(1, 3), data=st.data(), device=DEVICES)
def test_adaptive_pool_with_uneven_windows(kind: str, dims: int, data: st.DataObject, device: str) -> None:
    size_in = shape(data.draw, dims)
    size_out = tuple(data.draw(st.integers(1, 6)) for _ in range(dims))  # larger than the input too
    n, channels = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    report = nncost.profile(ADAPTIVE[kind, dims](size_out), inputs=torch.randn(n, channels, *size_in), device=device)
    # Σ over output positions of ∏_d window_d = ∏_d Σ_i window_d(i)
    reads = math.prod(sum(window_lengths(i, o)) for i, o in zip(size_in, size_out, strict=True))
    assert report.layers[0].output_shapes[0] == (n, channels, *size_out)
    assert flops_only(report) == n * channels * reads


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_global_average_pool_reads_every_element_once(device: str) -> None:
    # output size 1 takes a different ATen path (mean); the count must not change
    report = nncost.profile(nn.AdaptiveAvgPool2d(1), inputs=torch.randn(2, 3, 7, 5), device=device)
    assert flops_only(report) == 2 * 3 * 7 * 5


# -- interpolation -------------------------------------------------------------------------------

TAPS_FLOPS = {"nearest": 0, "nearest-exact": 0, "linear": 3, "bilinear": 7, "trilinear": 15, "bicubic": 31}
MODE_DIMS = {"nearest": (1, 2, 3), "nearest-exact": (1, 2, 3), "linear": (1,), "bilinear": (2,), "trilinear": (3,),
             "bicubic": (2,), "area": (1, 2, 3)}


class Interpolate(nn.Module):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, **self.options)


@settings(max_examples=60, **SETTINGS)
@given(mode=st.sampled_from(sorted(MODE_DIMS)), data=st.data(), device=DEVICES)
def test_interpolate(mode: str, data: st.DataObject, device: str) -> None:
    dims = data.draw(st.sampled_from(MODE_DIMS[mode]))
    size_in = shape(data.draw, dims)
    n, channels = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    options: dict[str, Any] = {"mode": mode}
    if data.draw(st.booleans()):
        scale = data.draw(st.sampled_from([0.5, 1.5, 2.0, 3.0]))
        size_out = tuple(math.floor(s * scale) for s in size_in)
        assume(min(size_out) >= 1)
        options["scale_factor"] = scale
    else:
        size_out = tuple(data.draw(st.integers(1, 9)) for _ in range(dims))
        options["size"] = size_out
    if mode in ("linear", "bilinear", "trilinear", "bicubic"):
        options["align_corners"] = data.draw(st.booleans())
    if mode in ("bilinear", "bicubic") and data.draw(st.booleans()):
        options["antialias"] = True
    report = nncost.profile(Interpolate(**options), inputs=torch.randn(n, channels, *size_in), device=device)
    assert report.layers[0].output_shapes == [(n, channels, *size_out)]
    if mode == "area":  # adaptive average pooling in disguise
        per_plane = math.prod(sum(window_lengths(i, o)) for i, o in zip(size_in, size_out, strict=True))
    else:
        per_plane = math.prod(size_out) * TAPS_FLOPS[mode]
    assert flops_only(report) == n * channels * per_plane


# -- the rules as pure functions of shapes ----------------------------------------------------


def rule(name: str) -> Any:
    entry = ATEN.get(name)
    assert entry is not None, name
    return entry.fn


def test_pool_rules_with_short_kernel_lists() -> None:
    # ATen accepts one kernel size for every dimension: [3] on a 2-d pool is a 3×3 window
    out = ((2, 4, 5, 6),)
    assert rule("max_pool2d_with_indices")((2, 4, 11, 13), [3], [2], [0], [1], False, out=out) == (0, 2 * 4 * 30 * 9)
    assert rule("avg_pool2d")((2, 4, 11, 13), [3, 2], [2, 2], out=out) == (0, 2 * 4 * 30 * 6)
    assert rule("max_pool3d_with_indices")((1, 2, 8, 8, 8), [2], [2], out=((1, 2, 4, 4, 4),)) == (0, 2 * 64 * 8)
    assert rule("avg_pool1d")((1, 3, 9), [4], [1], out=((1, 3, 6),)) == (0, 3 * 6 * 4)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.data())
def test_adaptive_rules(dims: int, data: st.DataObject) -> None:
    size_in = tuple(data.draw(st.integers(1, 30)) for _ in range(dims))
    size_out = tuple(data.draw(st.integers(1, 12)) for _ in range(dims))
    x, y = (2, 3, *size_in), (2, 3, *size_out)
    reads = math.prod(sum(window_lengths(i, o)) for i, o in zip(size_in, size_out, strict=True))
    name = {1: "adaptive_max_pool1d", 2: "_adaptive_avg_pool2d", 3: "_adaptive_avg_pool3d"}[dims]
    assert rule(name)(x, list(size_out), out=(y,)) == (0, 6 * reads)
    if dims > 1:
        assert rule(f"adaptive_max_pool{dims}d")(x, list(size_out), out=(y, y)) == (0, 6 * reads)


@pytest.mark.parametrize(
    ("op", "per_output"),
    [("upsample_nearest1d", 0), ("_upsample_nearest_exact3d", 0), ("upsample_linear1d", 3),
     ("upsample_bilinear2d", 7), ("_upsample_bilinear2d_aa", 7), ("upsample_trilinear3d", 15),
     ("upsample_bicubic2d", 31), ("_upsample_bicubic2d_aa", 31)],
)
def test_upsample_rules(op: str, per_output: int) -> None:
    assert rule(op)((2, 3, 4, 4), [9, 7], False, None, None, out=((2, 3, 9, 7),)) == (0, per_output * 2 * 3 * 9 * 7)


def test_normalisation_rules_read_the_training_flag_wherever_it_is() -> None:
    x, c = (4, 6, 5, 5), (6,)
    elements = 4 * 6 * 5 * 5
    out = ((4, 6, 5, 5), c, c)
    # native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps)
    assert rule("native_batch_norm")(x, c, c, c, c, False, 0.1, 1e-5, out=out).flops == 2 * elements
    assert rule("native_batch_norm")(x, c, c, c, c, True, 0.1, 1e-5, out=out).flops == 7 * elements
    assert rule("native_batch_norm")(x, None, None, None, None, True, 0.1, 1e-5, out=out).flops == 5 * elements
    # _native_batch_norm_legit.no_stats(x, weight, bias, training, momentum, eps)
    assert rule("_native_batch_norm_legit")(x, c, c, True, 0.1, 1e-5, out=out).flops == 7 * elements
    assert rule("_native_batch_norm_legit_functional")(x, c, c, c, c, False, 0.1, 1e-5, out=out).flops == 2 * elements
    assert rule("_native_batch_norm_legit_no_training")(x, c, c, c, c, 0.1, 1e-5, out=out).flops == 2 * elements
    # cudnn_batch_norm(x, weight, bias, running_mean, running_var, training, factor, eps)
    assert rule("cudnn_batch_norm")(x, c, c, c, c, False, 0.1, 1e-5, out=out).flops == 2 * elements
    assert rule("miopen_batch_norm")(x, c, c, c, c, True, 0.1, 1e-5, out=out).flops == 7 * elements
    assert rule("native_layer_norm")(x, [5], (5,), (5,), 1e-5, out=out) == (0, 7 * elements)
    assert rule("native_layer_norm")(x, [5, 5], None, None, 1e-5, out=out) == (0, 5 * elements)
    assert rule("native_group_norm")(x, c, c, 4, 6, 25, 3, 1e-5, out=out) == (0, 7 * elements)
    assert rule("native_group_norm")(x, None, None, 4, 6, 25, 3, 1e-5, out=out) == (0, 5 * elements)
    assert rule("_softmax")(x, 1, False, out=(x,)) == (0, 5 * elements)


def test_layer_norm_without_bias_costs_one_flop_less_per_element() -> None:
    x = (4, 10, 32)
    with_bias = nncost.profile(nn.LayerNorm(32), x[1:], batch_size=4).totals.flops
    without = nncost.profile(nn.LayerNorm(32, bias=False), x[1:], batch_size=4).totals.flops
    assert with_bias == 7 * 4 * 10 * 32 and without == 6 * 4 * 10 * 32
