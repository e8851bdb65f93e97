"""Time-contract fields filled as the roofline analysis defines them, for the HTML tests.

The roofline analysis lives on another branch; these tests only need plausible values on a real
report: estimated = max(FLOPs / peak, bytes / bandwidth) with the roofs scaled by efficiency.
"""

from __future__ import annotations

import nncost
from nncost.records.roofline import Roofline

# H100 SXM5, dense BF16 and HBM3 bandwidth, from NVIDIA's H100 datasheet.
H100_SXM_BF16 = {"hardware": "h100-sxm", "dtype": "bfloat16", "peak_flops": 989.4e12, "bandwidth": 3.35e12,
                 "memory_bytes": 80 * 10**9}


def fill_roofline(report: nncost.Report, efficiency: float = 0.7, measured_factor: float | None = 1.6) -> Roofline:
    """Set ``report.roofline`` and every layer's ``estimated_seconds``/``bound`` (and, when
    ``measured_factor`` is given, ``measured_seconds`` = that factor × the estimate)."""
    roofline = Roofline(efficiency=efficiency, **H100_SXM_BF16)  # type: ignore[arg-type]
    peak, bandwidth = roofline.peak_flops * efficiency, roofline.bandwidth * efficiency
    for layer in report.layers:
        compute, memory = layer.flops / peak, (layer.read_bytes + layer.write_bytes) / bandwidth
        layer.estimated_seconds = max(compute, memory)
        layer.bound = "compute" if compute >= memory else "memory"
        if measured_factor is not None:
            layer.measured_seconds = measured_factor * layer.estimated_seconds
    root = report.layers[0]
    report.totals.estimated_seconds = root.estimated_seconds
    report.totals.measured_seconds = root.measured_seconds
    roofline.samples_per_second = report.batch_size / root.estimated_seconds if root.estimated_seconds else None
    report.roofline = roofline
    return roofline
