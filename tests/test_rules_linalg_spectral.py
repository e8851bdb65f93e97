"""Triangular solves, pairwise distances and FFTs against their closed forms.

Triangular solve, n×n system, k right-hand sides, batch b: ``MACs = b·k·n(n−1)/2`` (about
``n²·k/2``), ``FLOPs = b·k·n²`` (``b·k·n(n−1)`` with a unit diagonal).
``_euclidean_dist`` (cdist's matmul form), x1 (b,P,M), x2 (b,R,M): ``MACs = b·P·R·(M+2)``, FLOPs as
its decomposition costs; ``_cdist_forward``: ``b·P·R·(3M + 1)``.
FFT over N points: ``5·N·log2 N`` per complex transform, ``2.5·N·log2 N`` per real one, times the
number of transforms, plus one FLOP per real output value when normalised.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nncost
from calls import Call
from nncost.rules import ATEN

SETTINGS: dict[str, Any] = {"deadline": None}


def calls(report: nncost.Report) -> list[tuple[str, int, int]]:
    """The costed calls, without the copies PyTorch makes around them (a real input made complex)."""
    return [(c.op, c.macs, c.flops) for layer in report.layers for c in layer.self_ops if c.op != "_to_copy"]


# -- triangular solves ------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(
    batch=st.lists(st.integers(1, 3), max_size=2),
    n=st.integers(1, 7),
    k=st.integers(1, 5),
    left=st.booleans(),
    upper=st.booleans(),
    unit=st.booleans(),
    device=st.sampled_from(["meta", "cpu"]),
)
def test_solve_triangular(batch: list[int], n: int, k: int, left: bool, upper: bool, unit: bool,
                          device: str) -> None:
    a = torch.randn(*batch, n, n).triu() + 4 * torch.eye(n)  # well conditioned for the CPU run
    a = a if upper else a.mT
    b = torch.randn(*batch, n, k) if left else torch.randn(*batch, k, n)
    solve = Call(lambda a, b: torch.linalg.solve_triangular(a, b, upper=upper, left=left, unitriangular=unit))
    report = nncost.profile(solve, inputs=(a, b), device=device)
    systems = math.prod(batch) * k  # one substitution per right-hand side
    # per right-hand side: n(n−1)/2 multiply-accumulates, then n divisions by the diagonal
    macs = systems * n * (n - 1) // 2
    flops = systems * (n * n if not unit else n * (n - 1))
    assert calls(report) == [("linalg_solve_triangular", macs, flops)]


def test_solve_triangular_broadcasts_a_single_matrix() -> None:
    a, b = torch.randn(6, 6), torch.randn(4, 6, 3)
    report = nncost.profile(Call(lambda a, b: torch.linalg.solve_triangular(a, b, upper=True)), inputs=(a, b))
    assert report.totals.macs == 4 * 3 * 15
    assert report.totals.flops == 4 * 3 * 36


def test_legacy_triangular_solve_matches() -> None:
    rule, legacy = ATEN.get("linalg_solve_triangular"), ATEN.get("triangular_solve")
    assert rule is not None and legacy is not None
    assert legacy.fn((2, 5, 3), (2, 5, 5), True, False, False, out=((2, 5, 3), (2, 5, 5))) == rule.fn(
        (2, 5, 5), (2, 5, 3), True, True, False, out=((2, 5, 3),))


# -- pairwise distances -----------------------------------------------------------------------


def euclidean_decomposed(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """PyTorch's ``_euclidean_dist``, written out with the same operators."""
    x1_norm, x2_norm = x1.pow(2).sum(-1, keepdim=True), x2.pow(2).sum(-1, keepdim=True)
    x1_ = torch.cat([x1.mul(-2), x1_norm, torch.ones_like(x1_norm)], -1)
    x2_ = torch.cat([x2, torch.ones_like(x2_norm), x2_norm], -1)
    return x1_.matmul(x2_.mT).clamp_min_(0).sqrt_()


@settings(max_examples=25, **SETTINGS)
@given(st.integers(1, 3), st.integers(26, 40), st.integers(1, 30), st.integers(1, 8))
def test_euclidean_dist_costs_what_its_decomposition_costs(batch: int, p: int, r: int, m: int) -> None:
    # more than 25 rows: cdist takes the matmul form
    x1, x2 = torch.randn(batch, p, m), torch.randn(batch, r, m)
    fused = nncost.profile(Call(torch.cdist), inputs=(x1, x2))
    decomposed = nncost.profile(Call(euclidean_decomposed), inputs=(x1, x2))
    macs = batch * p * r * (m + 2)
    flops = 2 * macs + 3 * batch * p * m + 2 * batch * r * m + 2 * batch * p * r
    assert calls(fused) == [("_euclidean_dist", macs, flops)]
    assert (decomposed.totals.macs, decomposed.totals.flops) == (macs, flops)


@settings(max_examples=25, **SETTINGS)
@given(st.integers(1, 3), st.integers(1, 25), st.integers(1, 25), st.integers(1, 8), st.sampled_from([1.0, 2.0, 3.0]))
def test_cdist_direct_form(batch: int, p: int, r: int, m: int, norm: float) -> None:
    report = nncost.profile(Call(lambda a, b: torch.cdist(a, b, p=norm)),
                            inputs=(torch.randn(batch, p, m), torch.randn(batch, r, m)))
    assert calls(report) == [("_cdist_forward", 0, batch * p * r * (3 * m + 1))]


# -- FFT --------------------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(st.integers(1, 4), st.integers(0, 7), st.sampled_from(["backward", "ortho", "forward"]))
def test_complex_fft_of_a_power_of_two(transforms: int, log_n: int, norm: str) -> None:
    n = 2**log_n
    x = torch.randn(transforms, n, dtype=torch.complex64)
    forward = nncost.profile(Call(lambda x: torch.fft.fft(x, norm=norm)), inputs=(x,))
    inverse = nncost.profile(Call(lambda x: torch.fft.ifft(x, norm=norm)), inputs=(x,))
    butterflies = transforms * 5 * n * log_n  # exact for N = 2^k
    scaling = 2 * transforms * n  # one multiply per real value of the complex result
    assert calls(forward) == [("_fft_c2c", 0, butterflies + (scaling if norm != "backward" else 0))]
    assert calls(inverse) == [("_fft_c2c", 0, butterflies + (scaling if norm != "forward" else 0))]


@settings(max_examples=40, **SETTINGS)
@given(st.integers(1, 4), st.integers(1, 7))
def test_real_fft_costs_half_a_complex_one(transforms: int, log_n: int) -> None:
    n = 2**log_n
    x = torch.randn(transforms, n)
    rfft = nncost.profile(Call(torch.fft.rfft), inputs=(x,))
    spectrum = torch.randn(transforms, n // 2 + 1, dtype=torch.complex64)
    irfft = nncost.profile(Call(lambda s: torch.fft.irfft(s, n=n)), inputs=(spectrum,))
    half = transforms * 5 * n * log_n // 2
    assert calls(rfft) == [("_fft_r2c", 0, half)]
    assert calls(irfft) == [("_fft_c2r", 0, half + transforms * n)]  # the inverse's 1/N on N real values


@settings(max_examples=30, **SETTINGS)
@given(st.integers(1, 3), st.integers(0, 5), st.integers(0, 5), st.sampled_from(["meta", "cpu"]))
def test_fft_over_two_dims_costs_one_dim_after_the_other(batch: int, log_a: int, log_b: int, device: str) -> None:
    a, b = 2**log_a, 2**log_b
    x = torch.randn(batch, a, b, dtype=torch.complex64)
    both = nncost.profile(Call(torch.fft.fft2), inputs=(x,), device=device)
    one_by_one = nncost.profile(Call(lambda x: torch.fft.fft(torch.fft.fft(x, dim=-1), dim=-2)), inputs=(x,),
                                device=device)
    assert both.totals.flops == one_by_one.totals.flops == batch * 5 * a * b * (log_a + log_b)


@pytest.mark.parametrize(("n", "expected"), [(1, 0), (3, round(5 * 3 * math.log2(3))), (10, round(50 * math.log2(10)))])
def test_fft_of_any_length_is_rounded_per_transform(n: int, expected: int) -> None:
    report = nncost.profile(Call(torch.fft.fft), inputs=(torch.randn(4, n, dtype=torch.complex64),))
    assert report.totals.flops == 4 * expected


def test_real_transforms_count_the_real_side() -> None:
    # rfft2 of (2, 8, 16): N = 128 real points per transform, two transforms
    report = nncost.profile(Call(torch.fft.rfft2), inputs=(torch.randn(2, 8, 16),))
    assert calls(report) == [("_fft_r2c", 0, 2 * 5 * 128 * 7 // 2)]
    # irfftn back to (8, 16) over both dims, normalised by 1/N: 256 real values scaled
    spectrum = torch.randn(2, 8, 9, dtype=torch.complex64)
    report = nncost.profile(Call(lambda s: torch.fft.irfft2(s, s=(8, 16))), inputs=(spectrum,))
    assert calls(report) == [("_fft_c2r", 0, 2 * 5 * 128 * 7 // 2 + 2 * 128)]


def test_empty_fft_costs_nothing() -> None:
    rule = ATEN.get("_fft_c2c")
    assert rule is not None
    assert rule.fn((0, 8), [1], 0, True, out=((0, 8),)) == (0, 0)
