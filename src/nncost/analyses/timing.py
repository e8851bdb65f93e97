"""Measured times into the report: per layer, the forward, throughput, achieved FLOP/s and MFU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncost.errors import BadRequest

if TYPE_CHECKING:
    from nncost.capture.timing import LayerTimes
    from nncost.records.report import Report


def attach_times(report: Report, times: LayerTimes) -> None:
    """Put each call's median time on its layer, matched by name and call order.

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
    matched = 0
    for layer in report.layers:
        key = layer.name
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        layer.measured_seconds = slots.get((key, occurrence))
        matched += layer.measured_seconds is not None
    if report.layers and not matched:
        raise BadRequest("the measured run called none of the profiled layers; cannot set times side by side")
    total = times.total_seconds
    report.totals.measured_seconds = total
    roofline = report.roofline
    if roofline is not None and total > 0:
        roofline.measured_device = times.device
        roofline.measured_repeats = times.repeats
        roofline.measured_samples_per_second = report.batch_size / total
        roofline.achieved_flops = report.totals.flops / total
        roofline.mfu = roofline.achieved_flops / roofline.peak_flops
