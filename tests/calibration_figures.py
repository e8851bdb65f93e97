"""Fabricated ``cpu`` calibrations, shaped as ``nncost.hardware.calibration.calibrate`` returns them (no timing)."""

from __future__ import annotations

from typing import Any

from nncost.analyses.roofline import FAMILIES
from nncost.hardware.calibration import COPY_KIB

# bytes/s by working set, as an idle 2-core Xeon measured them (docs/roofline.md)
CURVE_GBS = (29, 56, 78, 44, 28, 28, 14)


def plausible_figures() -> dict[str, Any]:
    curve = [[2 * kib * 1024, gbs * 1e9] for kib, gbs in zip(COPY_KIB, CURVE_GBS, strict=True)]
    return {
        "peak_flops": {"fp32": 1.7e11, "bf16": 9e10, "fp16": 2e9},
        "bandwidth": curve[-1][1],
        "bandwidth_curve": curve,
        "memory_bytes": 8 << 30,
        "op_overhead_seconds": 2.5e-6,
        "module_call_seconds": 1.5e-6,
        "family_overhead_seconds": {name: 1e-5 for name in FAMILIES},
        "family_efficiency": {name: 0.5 for name in FAMILIES},
        "rounds": 3,
        "spread": 1.0,
    }
