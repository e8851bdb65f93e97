"""fvcore's ``tests/test_flop_count.py`` (facebookresearch/fvcore), ported: its expectations, in
nncost's conventions.

fvcore's "flop" of a convolution, linear layer, matmul, bmm or einsum is one multiply-accumulate:
those expectations are nncost's MACs as they stand (fvcore reports them in GFLOPs, ``/1e9``; the
counts here are the numerators).  fvcore counts 1 per input element for adaptive pooling, as
nncost does.  Where the conventions differ the difference is asserted:

* normalisation: fvcore counts 1 FLOP per element for inference BatchNorm without an affine
  transform, 2 with one; 4 per element with batch statistics, 5 with an affine transform; the
  same for GroupNorm.  nncost: inference BatchNorm folds into a scale and a shift, 2 per element
  either way; with batch statistics 5 per element, plus 1 each for the weight and the bias.
* bilinear upsampling: fvcore 4 FLOPs per output element, nncost ``2·2² − 1 = 7``;
* elementwise operators: fvcore skips them and lists them (``sigmoid``), nncost counts one FLOP
  per result and lists nothing.

Not ported: ``test_customized_ops`` (fvcore's handle API).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nncost
from calls import Call
from nncost.rules import ATEN


class ThreeNet(nn.Module):
    def __init__(self, input_dim: int, conv_dim: int, linear_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(input_dim, conv_dim, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear1 = nn.Linear(conv_dim, linear_dim)
        self.linear2 = nn.Linear(linear_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(torch.flatten(self.pool(self.conv(x)), 1)))


def macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    return nncost.profile(model, inputs=inputs).totals.macs


def norm_rule(op: str, *args: Any) -> int:
    rule = ATEN.get(op)
    assert rule is not None
    return rule.fn(*args, out=()).flops


def test_nn() -> None:
    report = nncost.profile(nn.Linear(8, 4), inputs=(torch.randn(5, 8),))
    assert report.totals.macs == 5 * 8 * 4
    assert report.totals.flops == 2 * 5 * 8 * 4 + 5 * 4  # nncost adds the bias


def test_skip_ops() -> None:
    # fvcore skips aten::sigmoid and lists it; nncost counts it, one FLOP per result
    report = nncost.profile(nn.Sequential(nn.Linear(5, 4), nn.Sigmoid()), inputs=(torch.rand(10, 5),))
    assert report.uncounted == []
    assert report.layer("1").flops == 10 * 4


@pytest.mark.parametrize("shape", [(5, 10), (5, 5, 10)])
def test_linear(shape: tuple[int, ...]) -> None:
    tokens = 1
    for size in shape[:-1]:
        tokens *= size
    assert macs(nn.Linear(10, 20), torch.randn(*shape)) == tokens * 10 * 20


CONV_CASES = [
    # conv_dim, batch, input_dim, output_dim, spatial, kernel, padding, stride, groups, transpose, output_padding
    (2, 5, 10, 3, 15, 3, 1, 1, 1, False, 0),
    (2, 2, 10, 6, 20, 3, 1, 2, 1, False, 0),
    (2, 5, 16, 8, 15, 5, 2, 1, 4, False, 0),
    (2, 5, 16, 8, 15, 3, 1, 1, 8, False, 0),
    (1, 5, 10, 3, 15, 3, 1, 1, 1, False, 0),
    (3, 5, 10, 3, 15, 3, 1, 1, 1, False, 0),
    (2, 5, 10, 3, 15, 3, 1, 1, 1, True, 0),
    (2, 5, 10, 3, 15, 3, 1, 2, 1, True, 0),
    (2, 5, 10, 3, 15, 3, 1, 3, 1, True, 2),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=["2d", "2d-strided", "grouped", "depthwise", "1d", "3d",
                                                  "transposed", "transposed-strided", "transposed-output-padding"])
def test_conv(case: tuple[Any, ...]) -> None:
    dim, batch, cin, cout, spatial, kernel, padding, stride, groups, transpose, output_padding = case
    if transpose:
        layer: nn.Module = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][dim - 1](
            cin, cout, kernel, stride, padding, groups=groups, output_padding=output_padding)
        size = spatial  # a transposed convolution's work follows its input
    else:
        layer = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dim - 1](cin, cout, kernel, stride, padding, groups=groups)
        size = (spatial + 2 * padding - kernel) // stride + 1
    x = torch.randn(batch, cin, *([spatial] * dim))
    assert macs(layer, x) == batch * cin * cout * kernel**dim * size**dim // groups


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [((20, 10), (10, 100), 20 * 10 * 100), ((1, 20, 10), (1, 10, 100), 20 * 10 * 100),
     ((2, 2, 20, 10), (2, 2, 10, 100), 4 * 20 * 10 * 100), ((1, 20, 10), (10, 100), 20 * 10 * 100),
     ((2, 20, 10), (10, 100), 2 * 20 * 10 * 100)],
    ids=["matmul", "broadcast-1", "broadcast-2x2", "broadcast-rhs", "broadcast-batch"],
)
def test_matmul(x: tuple[int, ...], y: tuple[int, ...], expected: int) -> None:
    assert macs(Call(torch.matmul), torch.randn(*x), torch.randn(*y)) == expected


def test_bmm() -> None:
    n, c, t, p = 2, 5, 2, 12
    assert macs(Call(torch.bmm), torch.randn(n, c, t), torch.randn(n, t, p)) == n * t * p * c


@pytest.mark.parametrize(
    ("equation", "x", "y", "expected"),
    [("nct,ncp->ntp", (1, 5, 2), (1, 5, 12), 1 * 2 * 12 * 5), ("ntg,ncg->nct", (1, 2, 6), (1, 5, 6), 1 * 2 * 6 * 5),
     ("nc,nchw->hw", (3, 4), (3, 4, 2, 3), 72)],
    ids=["einsum", "einsum-2", "complicated_einsum"],
)
def test_einsum(equation: str, x: tuple[int, ...], y: tuple[int, ...], expected: int) -> None:
    assert macs(Call(lambda a, b: torch.einsum(equation, a, b)), torch.randn(*x), torch.randn(*y)) == expected


def test_torch_mm() -> None:
    for fn in (torch.mm, torch.matmul):
        assert macs(Call(fn), torch.rand(3, 4), torch.rand(4, 5)) == 60


def test_batchnorm_inference() -> None:
    # fvcore: BatchNorm1d(affine=False).eval() costs 1 FLOP per element (batch·dim = 100);
    # nncost folds inference BatchNorm into a scale and a shift: 2, affine or not
    report = nncost.profile(nn.BatchNorm1d(10, affine=False), inputs=(torch.randn(10, 10),))
    assert report.totals.flops == 2 * 100


@pytest.mark.parametrize("spatial", [(5, 5), (5, 5, 5)], ids=["2d", "3d"])
def test_batchnorm_training(spatial: tuple[int, ...]) -> None:
    # fvcore: BatchNorm2d/3d(affine=False) in training mode, 4 FLOPs per element; nncost: 5 (mean,
    # subtract, square, accumulate, scale), no affine terms.  A layer without parameters has nothing
    # to train, so the rule is called on the shapes its training forward passes.
    x = (10, 10, *spatial)
    elements = 10 * 10 * 5 ** len(spatial)
    fvcore = 4 * elements
    assert norm_rule("native_batch_norm", x, None, None, (10,), (10,), True, 0.1, 1e-5) == fvcore + elements


def test_threeNet() -> None:  # the suite's own name
    batch, input_dim, conv_dim, spatial, linear_dim = 4, 2, 5, 10, 3
    report = nncost.profile(ThreeNet(input_dim, conv_dim, linear_dim),
                            inputs=(torch.randn(batch, input_dim, spatial, spatial),))
    conv = batch * conv_dim * input_dim * spatial * spatial
    linear = batch * conv_dim * linear_dim + batch * linear_dim * 1
    assert report.totals.macs == conv + linear
    assert report.layer("pool").flops == 2000  # fvcore's adaptive_avg_pool2d: 2e-6 GFLOPs


def test_flop_counter_class() -> None:
    batch, input_dim, conv_dim, spatial, linear_dim = 4, 2, 5, 10, 3
    report = nncost.profile(ThreeNet(input_dim, conv_dim, linear_dim),
                            inputs=(torch.randn(batch, input_dim, spatial, spatial),))
    conv = batch * conv_dim * input_dim * spatial * spatial
    # fvcore's by_module(): conv, linear1 and linear2 in MACs, the pool in FLOPs
    assert report.layer("conv").macs == conv
    assert report.layer("linear1").macs == batch * conv_dim * linear_dim
    assert report.layer("linear2").macs == batch * linear_dim
    assert report.layer("pool").flops == conv // input_dim


# -- TestFlopCountHandles ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("affine", "fvcore"), [(True, 32), (False, 16)], ids=["affine", "no-affine"]
)
def test_batch_norm_handle_inference(affine: bool, fvcore: int) -> None:
    # F.batch_norm((2, 2, 2, 2), running stats, weight and bias given or None), not training
    vec = torch.rand(2)
    weight = vec if affine else None
    report = nncost.profile(Call(lambda x: F.batch_norm(x, vec, vec, weight, weight)), inputs=(torch.rand(2, 2, 2, 2),))
    assert report.totals.flops == 32  # folded scale and shift, 2 per element, affine or not
    assert report.totals.flops - fvcore == (0 if affine else 16)


def test_batch_norm_handle_training() -> None:
    # fvcore: 80 (5 per element with an affine transform); nncost: 5 + weight + bias = 7
    x, vec = (2, 2, 2, 2), (2,)
    assert norm_rule("native_batch_norm", x, vec, vec, vec, vec, True, 0.1, 1e-5) == 80 + 2 * 16


@pytest.mark.parametrize(("affine", "fvcore"), [(True, 80), (False, 64)], ids=["affine", "no-affine"])
def test_group_norm_handle(affine: bool, fvcore: int) -> None:
    vec = torch.rand(2) if affine else None
    report = nncost.profile(Call(lambda x: F.group_norm(x, 2, vec, vec)), inputs=(torch.rand(2, 2, 2, 2),))
    # fvcore: 4 per element, +1 with an affine transform; nncost: 5, +1 for each of weight and bias
    assert report.totals.flops == fvcore + (2 if affine else 1) * 16


def test_upsample_handle() -> None:
    # bilinear ×2 of (2, 2, 2, 2): 64 outputs; fvcore 4 FLOPs each (256), nncost 2·2² − 1 = 7
    report = nncost.profile(Call(lambda x: F.interpolate(x, None, 2, "bilinear", False)),
                            inputs=(torch.rand(2, 2, 2, 2),))
    fvcore = 2**4 * 4 * 4
    assert report.totals.flops == fvcore // 4 * 7
