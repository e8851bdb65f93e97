"""The roofline of one device for one dtype, and the step-level time estimates made on it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Roofline:
    """The roofs of one device for one run, and the time estimates made on them.

    ``forward_samples_per_second`` is the batch over the estimated forward;
    ``train_samples_per_second`` the batch over the estimated training step, when a step was
    simulated.  Built whole by :mod:`nncost.analyses.roofline`; never changed afterwards.
    """

    hardware: str  # catalogue key, e.g. "h100-sxm" or "cpu"
    dtype: str  # e.g. "bfloat16"
    peak_flops: float  # FLOP/s, dense, for dtype
    bandwidth: float  # bytes/s of device memory
    memory_bytes: int | None = None  # device memory size
    efficiency: float = 1.0  # factor applied to both roofs (1.0: the datasheet figures)
    train_step_seconds: float | None = None  # forward + backward + optimizer, when estimated
    forward_samples_per_second: float | None = None  # batch / estimated forward
    train_samples_per_second: float | None = None  # batch / estimated training step
    precision: str = "fp32"  # fp32, bf16, fp16, bf16-mixed, fp16-mixed
    family_peak_flops: dict[str, float] = field(default_factory=dict)  # matmul, conv, depthwise, elementwise
    family_dtype: dict[str, str] = field(default_factory=dict)  # the datasheet column each family's peak is from
    family_efficiency: dict[str, float] = field(default_factory=dict)  # calibrated (cpu) or 1.0 (datasheet)
    # the matrix peaks of narrow operands the device lists (int8, fp8): where a product of int8 or fp8 operands runs
    narrow_peak_flops: dict[str, float] = field(default_factory=dict)
    # (working-set bytes, bytes/s), ascending: the memory roof by working set (cpu); empty: bandwidth alone
    bandwidth_curve: list[tuple[int, float]] = field(default_factory=list)
    op_overhead_seconds: float = 0.0  # added once per operator call (cpu: calibrated; datasheet devices: 0)
    family_overhead_seconds: dict[str, float] = field(default_factory=dict)  # per family, when calibrated
    module_call_seconds: float = 0.0  # added once per layer call (cpu: calibrated; datasheet devices: 0)
    forward_seconds: float | None = None  # the estimated forward pass (also Totals.estimated_seconds)
    backward_seconds: float | None = None  # estimated, when the memory simulator ran a training step
    optimizer_seconds: float | None = None
    # --measure-time: the real run
    measured_device: str | None = None
    measured_repeats: int | None = None
    measured_samples_per_second: float | None = None  # batch / median forward time
    achieved_flops: float | None = None  # forward FLOPs / median forward time
    mfu: float | None = None  # achieved_flops / peak_flops

    @property
    def cache_bandwidth(self) -> float | None:
        """The fastest point of the bandwidth curve where it beats ``bandwidth`` (a calibrated cpu's
        caches), else None."""
        fastest = max((b for _, b in self.bandwidth_curve), default=0.0)
        return fastest if fastest > self.bandwidth else None
