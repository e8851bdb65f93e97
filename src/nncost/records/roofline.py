"""The roofline of one device for one dtype, and the step-level time estimates made on it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Roofline:
    hardware: str  # catalogue key, e.g. "h100-sxm" or "cpu"
    dtype: str  # e.g. "bfloat16"
    peak_flops: float  # FLOP/s, dense, for dtype
    bandwidth: float  # bytes/s of device memory
    memory_bytes: int | None = None  # device memory size
    efficiency: float = 1.0  # factor applied to both roofs (1.0: the datasheet figures)
    train_step_seconds: float | None = None  # forward + backward + optimizer, when estimated
    samples_per_second: float | None = None  # batch / forward time (or / train step when training)
