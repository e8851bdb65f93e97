"""torchvision's own operators, costed from the boxes actually given."""

from __future__ import annotations

import pytest
import torch

import nncost

torchvision = pytest.importorskip("torchvision")
ops = torchvision.ops


class RoIHead(torch.nn.Module):
    def forward(self, features: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        keep = ops.nms(boxes[:, 1:], scores, 0.5)
        return ops.roi_align(features, boxes, output_size=(7, 7), sampling_ratio=2).sum() + keep.numel()


def test_roi_align_and_nms_are_counted_on_a_real_run() -> None:
    n, c = 6, 8
    xy = torch.rand(n, 2) * 10
    boxes = torch.cat([torch.zeros(n, 1), xy, xy + 5], dim=1)
    report = nncost.profile(RoIHead(), inputs=(torch.randn(1, c, 16, 16), boxes, torch.rand(n)), device="cpu")
    by_op = {op.op: op for layer in report.layers for op in layer.self_ops}
    assert by_op["torchvision::roi_align"].flops == n * c * 7 * 7 * 2 * 2 * 8
    assert by_op["torchvision::nms"].flops == 12 * n * (n - 1) // 2
    assert report.uncounted == []


def test_deform_conv_macs_match_a_convolution() -> None:
    conv = ops.DeformConv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 8, 8)
    offset = torch.zeros(2, 2 * 9, 8, 8)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
            return self.conv(x, offset)

    report = nncost.profile(Wrap(), inputs=(x, offset), device="cpu")
    assert report.totals.macs == 2 * 6 * 8 * 8 * 4 * 9
