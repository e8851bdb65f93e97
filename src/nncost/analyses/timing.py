"""Measured times into the report: per layer, the forward, throughput, achieved FLOP/s and MFU."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from nncost.errors import BadRequest

if TYPE_CHECKING:
    from nncost.capture.timing import LayerTimes
    from nncost.records.report import Report


def with_times(report: Report, times: LayerTimes) -> Report:
    """A new report with each call's median time on its layer, matched by name and call order.

    MFU is the forward's achieved FLOP/s (the report's counted FLOPs over the median forward
    time) over the roofline's peak for the run's matrix dtype.
    """
    slots: dict[tuple[str, int], float] = {}
    seen: dict[str, int] = {}
    for name, seconds in zip(times.names, times.seconds, strict=True):
        key = name or ""
        slots[(key, seen.get(key, 0))] = seconds
        seen[key] = seen.get(key, 0) + 1
    seen.clear()
    layers = []
    for layer in report.layers:
        occurrence = seen.get(layer.name, 0)
        seen[layer.name] = occurrence + 1
        layers.append(replace(layer, measured_seconds=slots.get((layer.name, occurrence))))
    if layers and all(layer.measured_seconds is None for layer in layers):
        raise BadRequest("the measured run called none of the profiled layers; cannot set times side by side")
    total = times.total_seconds
    roofline = report.roofline
    if roofline is not None and total > 0:
        achieved = report.totals.flops / total
        roofline = replace(roofline, measured_device=times.device, measured_repeats=times.repeats,
                           measured_samples_per_second=report.batch_size / total, achieved_flops=achieved,
                           mfu=achieved / roofline.peak_flops)
    return replace(report, layers=layers, totals=replace(report.totals, measured_seconds=total), roofline=roofline)
