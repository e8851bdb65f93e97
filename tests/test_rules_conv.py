"""Convolutions against closed forms written here from first principles.

Direct convolution: ``MACs = N·Co·∏out·(Ci/g)·∏k``; transposed convolution: ``MACs = N·Ci·∏in·(Co/g)·∏k``;
``FLOPs = 2·MACs + N·Co·∏out`` with a bias.  Output sizes come from the standard formulas, and each
test also checks them against the shape PyTorch produced, so a wrong formula here cannot hide.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.rules import ATEN

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_SIZE = {1: 12, 2: 7, 3: 4}  # spatial extent above the minimum, per number of dimensions
SETTINGS: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_t_out(size: int, kernel: int, stride: int, padding: int, dilation: int, output_padding: int) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def direct_cost(n: int, ci: int, co: int, groups: int, kernel: tuple[int, ...], out: tuple[int, ...],
                bias: bool) -> tuple[int, int]:
    outputs = n * co * math.prod(out)  # every output element ...
    macs = outputs * (ci // groups) * math.prod(kernel)  # ... reads (Ci/g)·∏k input-weight pairs
    return macs, 2 * macs + (outputs if bias else 0)


def transposed_cost(n: int, ci: int, co: int, groups: int, kernel: tuple[int, ...], size: tuple[int, ...],
                    out: tuple[int, ...], bias: bool) -> tuple[int, int]:
    inputs = n * ci * math.prod(size)  # every input element ...
    macs = inputs * (co // groups) * math.prod(kernel)  # ... is scattered through (Co/g)·∏k weights
    return macs, 2 * macs + (n * co * math.prod(out) if bias else 0)


def check(report: nncost.Report, macs: int, flops: int, params: int, out_shape: tuple[int, ...]) -> None:
    assert report.uncounted == []
    assert report.layers[0].output_shapes == [out_shape]  # our output-size formula agrees with PyTorch
    assert (report.totals.macs, report.totals.flops, report.totals.params) == (macs, flops, params)


@st.composite
def conv_configs(draw: st.DrawFn) -> dict[str, Any]:
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2, 3]))
    ci, co = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel, stride, padding, dilation, size = [], [], [], [], []
    for _ in range(dims):
        k, d, p = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 2))
        smallest = max(1, d * (k - 1) + 1 - 2 * p)  # at least one output position
        kernel.append(k)
        dilation.append(d)
        padding.append(p)
        stride.append(draw(st.integers(1, 3)))
        size.append(smallest + draw(st.integers(0, MAX_SIZE[dims])))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    if mode != "zeros":
        assume(all(p < s for p, s in zip(padding, size, strict=True)))  # reflect/circular need pad < size
    return {
        "dims": dims, "groups": groups, "ci": ci, "co": co, "kernel": tuple(kernel), "stride": tuple(stride),
        "padding": tuple(padding), "dilation": tuple(dilation), "size": tuple(size), "mode": mode,
        "bias": draw(st.booleans()), "n": draw(st.integers(1, 3)),
    }


def build_conv(c: dict[str, Any]) -> nn.Module:
    return CONV[c["dims"]](c["ci"], c["co"], c["kernel"], stride=c["stride"], padding=c["padding"],
                           dilation=c["dilation"], groups=c["groups"], bias=c["bias"], padding_mode=c["mode"])


def expected_conv(c: dict[str, Any]) -> tuple[int, int, int, tuple[int, ...]]:
    out = tuple(
        conv_out(s, k, st_, p, d)
        for s, k, st_, p, d in zip(c["size"], c["kernel"], c["stride"], c["padding"], c["dilation"], strict=True)
    )
    macs, flops = direct_cost(c["n"], c["ci"], c["co"], c["groups"], c["kernel"], out, c["bias"])
    params = c["co"] * (c["ci"] // c["groups"]) * math.prod(c["kernel"]) + (c["co"] if c["bias"] else 0)
    return macs, flops, params, (c["n"], c["co"], *out)


@settings(max_examples=80, **SETTINGS)
@given(conv_configs())
def test_conv_nd_on_meta_matches_closed_form(c: dict[str, Any]) -> None:
    macs, flops, params, out_shape = expected_conv(c)
    report = nncost.profile(build_conv(c), (c["ci"], *c["size"]), batch_size=c["n"])
    assert report.execution == "meta"
    check(report, macs, flops, params, out_shape)


@settings(max_examples=25, **SETTINGS)
@given(conv_configs())
def test_conv_nd_run_for_real_on_cpu_matches_closed_form(c: dict[str, Any]) -> None:
    macs, flops, params, out_shape = expected_conv(c)
    report = nncost.profile(build_conv(c), inputs=torch.randn(c["n"], c["ci"], *c["size"]), device="cpu")
    assert report.execution == "real"
    check(report, macs, flops, params, out_shape)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@settings(max_examples=30, **SETTINGS)
@given(
    dims=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2]),
    ci_per_group=st.integers(1, 3),
    co_per_group=st.integers(1, 3),
    data=st.data(),
    bias=st.booleans(),
    device=st.sampled_from(["meta", "cpu"]),
)
def test_conv_same_padding_keeps_the_size_and_counts_every_output(
    dims: int, groups: int, ci_per_group: int, co_per_group: int, data: st.DataObject, bias: bool, device: str
) -> None:
    # padding="same" with an even effective kernel pads asymmetrically; the output is still the input's size.
    kernel = tuple(data.draw(st.integers(1, 4)) for _ in range(dims))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(dims))
    size = tuple(data.draw(st.integers(1, MAX_SIZE[dims] + 2)) for _ in range(dims))
    ci, co = groups * ci_per_group, groups * co_per_group
    module = CONV[dims](ci, co, kernel, padding="same", dilation=dilation, groups=groups, bias=bias)
    report = nncost.profile(module, inputs=torch.randn(2, ci, *size), device=device)
    macs, flops = direct_cost(2, ci, co, groups, kernel, size, bias)
    params = co * ci_per_group * math.prod(kernel) + (co if bias else 0)
    check(report, macs, flops, params, (2, co, *size))


@st.composite
def transposed_configs(draw: st.DrawFn) -> dict[str, Any]:
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2, 3]))
    ci, co = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel, stride, padding, dilation, output_padding, size = [], [], [], [], [], []
    for _ in range(dims):
        k, s, d = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        op = draw(st.integers(0, max(s, d) - 1))  # PyTorch: output_padding < max(stride, dilation)
        kernel.append(k)
        stride.append(s)
        dilation.append(d)
        output_padding.append(op)
        padding.append(draw(st.integers(0, 2)))
        size.append(draw(st.integers(1, MAX_SIZE[dims])))
    out = [conv_t_out(*args) for args in zip(size, kernel, stride, padding, dilation, output_padding, strict=True)]
    assume(all(o >= 1 for o in out))
    return {
        "dims": dims, "groups": groups, "ci": ci, "co": co, "kernel": tuple(kernel), "stride": tuple(stride),
        "padding": tuple(padding), "dilation": tuple(dilation), "output_padding": tuple(output_padding),
        "size": tuple(size), "out": tuple(out), "bias": draw(st.booleans()), "n": draw(st.integers(1, 3)),
    }


@settings(max_examples=70, **SETTINGS)
@given(transposed_configs(), st.sampled_from(["meta", "meta", "cpu"]))
def test_conv_transpose_nd_matches_closed_form(c: dict[str, Any], device: str) -> None:
    module = CONV_T[c["dims"]](
        c["ci"], c["co"], c["kernel"], stride=c["stride"], padding=c["padding"], output_padding=c["output_padding"],
        groups=c["groups"], bias=c["bias"], dilation=c["dilation"],
    )
    report = nncost.profile(module, inputs=torch.randn(c["n"], c["ci"], *c["size"]), device=device)
    macs, flops = transposed_cost(c["n"], c["ci"], c["co"], c["groups"], c["kernel"], c["size"], c["out"], c["bias"])
    # weight (Ci, Co/g, *k), bias (Co,)
    params = c["ci"] * (c["co"] // c["groups"]) * math.prod(c["kernel"]) + (c["co"] if c["bias"] else 0)
    check(report, macs, flops, params, (c["n"], c["co"], *c["out"]))


def test_conv_transpose_with_an_output_size_argument() -> None:
    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, bias=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.up(x, output_size=[10, 9])  # output_padding (1, 0) is derived from the size

    report = nncost.profile(Up(), (4, 5, 5), batch_size=2)
    macs = 2 * 4 * 5 * 5 * 6 * 3 * 3
    check(report, macs, 2 * macs + 2 * 6 * 10 * 9, 4 * 6 * 9 + 6, (2, 6, 10, 9))


# -- the rules as pure functions of shapes ----------------------------------------------------


def test_convolution_rule_direct_grouped_strided_dilated() -> None:
    # x (2, 6, 9, 9), w (4, 3, 3, 2), groups 2, stride (2, 1), padding (1, 0), dilation (1, 2)
    out_h, out_w = conv_out(9, 3, 2, 1, 1), conv_out(9, 2, 1, 0, 2)
    assert (out_h, out_w) == (5, 7)
    rule = ATEN.get("convolution")
    assert rule is not None
    args = ((2, 6, 9, 9), (4, 3, 3, 2), (4,), [2, 1], [1, 0], [1, 2], False, [0, 0], 2)
    macs = 2 * 4 * 5 * 7 * 3 * 3 * 2
    assert rule.fn(*args, out=((2, 4, 5, 7),)) == (macs, 2 * macs + 2 * 4 * 5 * 7)
    no_bias = (args[0], args[1], None, *args[3:])
    assert rule.fn(*no_bias, out=((2, 4, 5, 7),)) == (macs, 2 * macs)
    assert ATEN.get("_convolution") is rule


def test_convolution_rule_transposed() -> None:
    # x (2, 4, 5, 5), w (Ci=4, Co/g=3, 3, 3), groups 2 so Co = 6; stride 2: out 11×11
    rule = ATEN.get("convolution")
    assert rule is not None
    out = conv_t_out(5, 3, 2, 0, 1, 0)
    assert out == 11
    args = ((2, 4, 5, 5), (4, 3, 3, 3), (6,), [2, 2], [0, 0], [1, 1], True, [0, 0], 2)
    macs = 2 * 4 * 5 * 5 * 3 * 3 * 3
    assert rule.fn(*args, out=((2, 6, out, out),)) == (macs, 2 * macs + 2 * 6 * out * out)


@settings(max_examples=200, deadline=None)
@given(
    dims=st.integers(1, 3),
    n=st.integers(1, 4),
    groups=st.integers(1, 4),
    ci_g=st.integers(1, 8),
    co_g=st.integers(1, 8),
    data=st.data(),
)
def test_backend_convolution_rules_agree_with_the_closed_form(
    dims: int, n: int, groups: int, ci_g: int, co_g: int, data: st.DataObject
) -> None:
    kernel = tuple(data.draw(st.integers(1, 5)) for _ in range(dims))
    size = tuple(data.draw(st.integers(1, 20)) for _ in range(dims))
    out = tuple(data.draw(st.integers(1, 20)) for _ in range(dims))
    ci, co = groups * ci_g, groups * co_g
    x, w, y = (n, ci, *size), (co, ci_g, *kernel), (n, co, *out)
    macs, flops = direct_cost(n, ci, co, groups, kernel, out, bias=False)
    _, flops_bias = direct_cost(n, ci, co, groups, kernel, out, bias=True)
    ones, zeros = [1] * dims, [0] * dims
    cudnn, mkldnn = ATEN.get("cudnn_convolution"), ATEN.get("mkldnn_convolution")
    assert cudnn is not None and mkldnn is not None
    assert cudnn.fn(x, w, zeros, ones, ones, groups, False, False, True, out=(y,)) == (macs, flops)
    assert mkldnn.fn(x, w, (co,), zeros, ones, ones, groups, out=(y,)) == (macs, flops_bias)
    assert mkldnn.fn(x, w, None, zeros, ones, ones, groups, out=(y,)) == (macs, flops)
    # cuDNN's transposed kernel: weight (Ci, Co/g, *k); every input element is scattered
    wt = (ci, co_g, *kernel)
    t_macs, t_flops = transposed_cost(n, ci, co, groups, kernel, size, out, bias=False)
    transpose = ATEN.get("cudnn_convolution_transpose")
    assert transpose is not None
    assert transpose.fn(x, wt, zeros, zeros, ones, ones, groups, False, False, True, out=(y,)) == (t_macs, t_flops)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_pointwise_conv_equals_a_matmul(dims: int) -> None:
    # A 1×1 convolution is a matrix product over channels: N·∏size·Ci·Co MACs.
    size = (5, 4, 3)[:dims]
    report = nncost.profile(CONV[dims](6, 7, 1, bias=False), (6, *size), batch_size=3)
    assert report.totals.macs == 3 * math.prod(size) * 6 * 7
    assert report.totals.flops == 2 * report.totals.macs
