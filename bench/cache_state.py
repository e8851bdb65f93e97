"""Why the cpu's families are calibrated inside a network: one module timed hot and cold.

    PYTHONPATH=src python bench/cache_state.py

Each module (shapes of layers of vit_b_16, gpt2, resnet50 and mobilenet_v3_large) runs on one thread
in a loop on one input, after a warm-up: *hot* is the median of 15 calls back to back, where the
module finds its code, parameters and operands in the caches; *cold* the median of 15 calls each
after a 16 MiB buffer is written, as in a model, where the layers before it have evicted them.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

FLUSH = torch.empty(16 << 20, dtype=torch.uint8)


def median_us(fn: Callable[[], object], cold: bool, runs: int = 15) -> float:
    fn()
    fn()
    times = []
    for _ in range(runs):
        if cold:
            FLUSH.fill_(1)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    torch.set_num_threads(1)
    cases: list[tuple[str, nn.Module, tuple[int, ...]]] = [
        ("LayerNorm(768), 197 tokens (vit_b_16)", nn.LayerNorm(768), (1, 197, 768)),
        ("LayerNorm(768), 128 tokens (gpt2)", nn.LayerNorm(768), (1, 128, 768)),
        ("GELU, 197×3072 (vit_b_16)", nn.GELU(), (1, 197, 3072)),
        ("BatchNorm2d(64), 56×56 (resnet50)", nn.BatchNorm2d(64).eval(), (1, 64, 56, 56)),
        ("BatchNorm2d(2048), 7×7 (resnet50)", nn.BatchNorm2d(2048).eval(), (1, 2048, 7, 7)),
        ("ReLU in place, 64×56×56 (resnet50)", nn.ReLU(inplace=True), (1, 64, 56, 56)),
        ("AdaptiveAvgPool2d(1), 480×14×14 (mobilenet_v3_large)", nn.AdaptiveAvgPool2d(1), (1, 480, 14, 14)),
        ("Hardsigmoid, 480×1×1 (mobilenet_v3_large)", nn.Hardsigmoid(), (1, 480, 1, 1)),
        ("ReLU, 120×1×1 (mobilenet_v3_large)", nn.ReLU(), (1, 120, 1, 1)),
    ]
    print(f"{'module':<56} {'hot µs':>8} {'cold µs':>8}")
    with torch.no_grad():
        for name, module, shape in cases:
            x = torch.randn(shape)
            call = functools.partial(module, x)
            print(f"{name:<56} {median_us(call, False):8.1f} {median_us(call, True):8.1f}")


if __name__ == "__main__":
    main()
