"""Fast Fourier transforms.

Convention: FFTW's (benchFFT's) nominal count.  A complex transform of N points costs
``5·N·log2(N)`` real FLOPs, the count of a radix-2 Cooley–Tukey FFT; a real-input (``r2c``) or
real-output (``c2r``) transform of N real points costs half, ``2.5·N·log2(N)``, since it does
the work of a complex transform of N/2 points plus a post-processing pass.  Over several
dimensions N is the product of their sizes, which is also what transforming one dimension after
the other costs (``N·log2 N = Σ_d (N/n_d)·n_d·log2 n_d``).  The figure is rounded to an integer
per transform and multiplied by the number of transforms (the other dimensions).  Neither
PyTorch's ``FlopCounterMode`` nor fvcore counts FFTs, so there is no peer figure to follow.

Normalisation (``norm="ortho"``, or the default ``1/N`` of the inverse) scales every real output
value once: 1 FLOP per real output element, 2 per complex one.  None of this is MACs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, first_shape, numel

COMPLEX_FFT_FLOPS = 5.0  # × N·log2 N
REAL_FFT_FLOPS = 2.5


def transform_flops(points: int, per_point_log: float) -> int:
    """One transform of ``points`` points: ``c·N·log2 N``, rounded."""
    return round(per_point_log * points * math.log2(points)) if points > 1 else 0


def fft_cost(signal: Shape, dims: Sequence[int], per_point_log: float, scaled_values: int) -> Cost:
    """``signal`` is the shape over which the points are counted (the real side of r2c and c2r)."""
    points = math.prod(signal[d % len(signal)] for d in dims) if signal else 1
    if points == 0:
        return Cost(0, 0)
    transforms = numel(signal) // points
    return Cost(0, transforms * transform_flops(points, per_point_log) + scaled_values)


@ATEN.rule(
    "_fft_c2c",
    unit="spectral",
    formula="N = ∏ sizes over dim, T = numel/N transforms: FLOPs = T·5·N·log2 N (+ 2·numel(out) if normalised)",
)
def fft_c2c(x: Shape, dim: Sequence[int], normalization: int, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return fft_cost(x, dim, COMPLEX_FFT_FLOPS, 2 * numel(first_shape(out)) if normalization else 0)


@ATEN.rule(
    "_fft_r2c",
    unit="spectral",
    formula="real input, N = ∏ its sizes over dim, T = numel/N: FLOPs = T·2.5·N·log2 N "
    "(+ 2·numel(out) if normalised)",
)
def fft_r2c(x: Shape, dim: Sequence[int], normalization: int, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return fft_cost(x, dim, REAL_FFT_FLOPS, 2 * numel(first_shape(out)) if normalization else 0)


@ATEN.rule(
    "_fft_c2r",
    unit="spectral",
    formula="real output, N = ∏ its sizes over dim, T = numel/N: FLOPs = T·2.5·N·log2 N "
    "(+ numel(out) if normalised)",
)
def fft_c2r(x: Shape, dim: Sequence[int], normalization: int, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    signal = first_shape(out)
    return fft_cost(signal, dim, REAL_FFT_FLOPS, numel(signal) if normalization else 0)
