"""Pooling and interpolation.

Pooling costs one FLOP per window element per output (a compare for max, an add or the final
divide for average).  Adaptive pooling uses PyTorch's exact windows,
``[floor(i·in/out), ceil((i+1)·in/out))``.  Nearest-neighbour interpolation is a copy
(0 FLOPs); linear interpolation over ``d`` dimensions reads ``2^d`` taps and costs
``2·2^d − 1`` FLOPs per output (multiply each tap, add them up); cubic reads ``4^d`` taps.
Grid sampling (``F.grid_sample``) interpolates at the grid's points and costs the same per
output element, by its mode: bilinear ``2·4 − 1``, trilinear ``2·8 − 1``, bicubic ``2·16 − 1``,
nearest 0; turning the grid's normalised coordinates into pixel positions is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import ZERO, Cost, Shape, numel


def _window(kernel: Sequence[int] | int, dims: int) -> int:
    sizes = [kernel] if isinstance(kernel, int) else list(kernel)
    if len(sizes) == 1:
        sizes = sizes * dims
    return math.prod(sizes)


def adaptive_window_sum(size_in: int, size_out: int) -> int:
    """Sum over the outputs of one dimension of the number of inputs each output reads."""
    return sum(
        -(-((i + 1) * size_in) // size_out) - (i * size_in) // size_out for i in range(size_out)
    )


def _pool(dims: int) -> Any:
    def rule(x: Shape, kernel: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
        return Cost(0, numel(out[0]) * _window(kernel, dims))

    return rule


# Max pooling compares across each window (the pooling unit); average pooling sums shifted inputs (elementwise).
for _dims, _max, _avg in (
    (1, ("max_pool1d", "max_pool1d_with_indices"), ("avg_pool1d",)),
    (2, ("max_pool2d", "max_pool2d_with_indices", "mkldnn_max_pool2d", "quantized_max_pool2d"), ("avg_pool2d",)),
    (3, ("max_pool3d", "max_pool3d_with_indices", "mkldnn_max_pool3d"), ("avg_pool3d",)),
):
    ATEN.add(_max, _pool(_dims), unit="pooling", formula=f"FLOPs = numel(out)·∏kernel ({_dims}-d)")
    ATEN.add(_avg, _pool(_dims), unit="elementwise", formula=f"FLOPs = numel(out)·∏kernel ({_dims}-d)")


def _adaptive(dims: int) -> Any:
    def rule(x: Shape, output_size: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
        spatial_in = x[-dims:]
        spatial_out = out[0][-dims:]
        windows = math.prod(adaptive_window_sum(i, o) for i, o in zip(spatial_in, spatial_out, strict=True))
        return Cost(0, numel(x[:-dims]) * windows)

    return rule


for _dims, _ops, _unit in (
    (1, ("adaptive_max_pool1d",), "pooling"),
    (2, ("adaptive_max_pool2d",), "pooling"),
    (2, ("_adaptive_avg_pool2d", "adaptive_avg_pool2d", "mkldnn_adaptive_avg_pool2d"), "elementwise"),
    (3, ("adaptive_max_pool3d",), "pooling"),
    (3, ("_adaptive_avg_pool3d", "adaptive_avg_pool3d"), "elementwise"),
):
    ATEN.add(_ops, _adaptive(_dims), unit=_unit,
             formula=f"FLOPs = N·C·∏_d Σ_i window_d(i) ({_dims}-d, exact adaptive windows)")


@ATEN.rule(
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
    unit="copy",
    formula="a copy: 0 FLOPs (bytes only)",
)
def upsample_nearest(x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return ZERO


def _interpolate(taps: int) -> Any:
    def rule(x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
        return Cost(0, numel(out[0]) * (2 * taps - 1))

    return rule


for _ops, _taps, _what in (
    (("upsample_linear1d",), 2, "linear, 2 taps"),
    (("upsample_bilinear2d", "_upsample_bilinear2d_aa"), 4, "bilinear, 4 taps"),
    (("upsample_trilinear3d",), 8, "trilinear, 8 taps"),
    (("upsample_bicubic2d", "_upsample_bicubic2d_aa"), 16, "bicubic, 16 taps"),
):
    ATEN.add(_ops, _interpolate(_taps), unit="elementwise", formula=f"FLOPs = numel(out)·(2·{_taps} − 1) ({_what})")


GRID_TAPS = {0: 4, 1: 0, 2: 16}  # grid_sampler_2d's interpolation_mode: bilinear, nearest, bicubic


def _grid_sample(taps: dict[int, int]) -> Any:
    def rule(x: Shape, grid: Shape, interpolation_mode: int = 0, *rest: Any, out: tuple[Shape, ...]) -> Cost:
        n = taps[interpolation_mode]
        return Cost(0, numel(out[0]) * (2 * n - 1) if n else 0)

    return rule


ATEN.add(
    ("grid_sampler_2d", "_grid_sampler_2d_cpu_fallback", "cudnn_grid_sampler"),
    _grid_sample(GRID_TAPS),
    unit="elementwise",
    formula="FLOPs = numel(out)·(2·taps − 1): bilinear 4 taps, bicubic 16, nearest 0 (cuDNN: bilinear)",
)
ATEN.add(
    ("grid_sampler_3d",),
    _grid_sample({0: 8, 1: 0}),
    unit="elementwise",
    formula="FLOPs = numel(out)·(2·8 − 1) (trilinear, 8 taps); nearest 0",
)
