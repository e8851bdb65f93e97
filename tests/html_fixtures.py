"""Time-contract fields filled as the roofline analysis defines them, for the HTML tests.

The roofline analysis lives on another branch; these tests only need plausible values on a real
report: estimated = max(FLOPs / peak, bytes / bandwidth) with the roofs scaled by efficiency.
"""

from __future__ import annotations

from dataclasses import replace

import nncost
from nncost.records.roofline import Roofline

# H100 SXM5, dense BF16 and HBM3 bandwidth, from NVIDIA's H100 datasheet.
H100_SXM_BF16 = {"hardware": "h100-sxm", "dtype": "bfloat16", "peak_flops": 989.4e12, "bandwidth": 3.35e12,
                 "memory_bytes": 80 * 10**9}


def fill_roofline(report: nncost.Report, efficiency: float = 0.7, measured_factor: float | None = 1.6
                  ) -> nncost.Report:
    """``report`` with a roofline and every layer's ``estimated_seconds``/``bound`` (and, when
    ``measured_factor`` is given, ``measured_seconds`` = that factor × the estimate)."""
    roofline = Roofline(efficiency=efficiency, **H100_SXM_BF16)  # type: ignore[arg-type]
    peak, bandwidth = roofline.peak_flops * efficiency, roofline.bandwidth * efficiency
    layers = []
    for layer in report.layers:
        compute, memory = layer.flops / peak, (layer.read_bytes + layer.write_bytes) / bandwidth
        estimated = max(compute, memory)
        layers.append(replace(layer, estimated_seconds=estimated, bound="compute" if compute >= memory else "memory",
                              measured_seconds=measured_factor * estimated if measured_factor is not None else None))
    root = layers[0]
    roofline = replace(roofline, forward_samples_per_second=report.batch_size / root.estimated_seconds
                       if root.estimated_seconds else None)
    totals = replace(report.totals, estimated_seconds=root.estimated_seconds, measured_seconds=root.measured_seconds)
    return replace(report, layers=layers, totals=totals, roofline=roofline)
