"""Hand-written SVG charts for the HTML report: no library, no network, a few kilobytes each.

Each function takes figures already in the records and returns one ``<svg>`` element; the only
arithmetic here is chart geometry (scales, ticks, downsampling to the pixel width).  Text is
escaped; no element carries an id, so two reports on one page cannot clash.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from nncost.records.memory import CATEGORIES
from nncost.render import units

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport
    from nncost.records.roofline import Roofline

# matplotlib's default cycle (C0..C5), so the timeline has the colours of ``--plot``.
CATEGORY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
ROOF_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")  # highest roof first


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
            f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _trim(text: str) -> str:
    """``'2.00 GiB'`` -> ``'2 GiB'`` for axis ticks."""
    return text.replace(".00 ", " ")


def _log_tick(value: float) -> str:
    """A power of ten as an axis label: ``0.01``, ``100``, ``10 G``."""
    return f"{value:g}" if value < 1000 else _trim(units.count(value))


def bar_chart(rows: Sequence[tuple[str, float, str]], label: str, colour: str = "#4c72b0") -> str:
    """Horizontal bars, one per ``(name, value, formatted value)``, longest first as given."""
    row_height, name_width, bar_width, value_width = 18, 180, 230, 78
    width = name_width + bar_width + value_width
    height = row_height * len(rows) + 4
    top = max((value for _, value, _ in rows), default=0.0) or 1.0
    parts = []
    for i, (name, value, text) in enumerate(rows):
        y = 2 + i * row_height
        length = max(bar_width * value / top, 0.5)
        parts.append(
            f"<g><title>{escape(name)}: {escape(text)}</title>"
            f'<text x="{name_width - 6}" y="{y + 13}" text-anchor="end">{escape(units.path(name, 28))}</text>'
            f'<rect x="{name_width}" y="{y + 3}" width="{length:.1f}" height="{row_height - 6}" fill="{colour}"/>'
            f'<text x="{name_width + length + 4:.1f}" y="{y + 13}">{escape(text)}</text></g>'
        )
    return _svg(width, height, "".join(parts), label)


def _nice_step(span: float, ticks: int) -> float:
    """A 1, 2 or 5 times a power of ten step giving about ``ticks`` ticks over ``span``."""
    raw = span / max(ticks, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _binary_step(span: float, ticks: int) -> float:
    """A power-of-two step in bytes (256 MiB, 1 GiB) giving about ``ticks`` ticks over ``span``."""
    raw = span / max(ticks, 1)
    return float(2 ** round(math.log2(raw))) if raw > 0 else 1.0


def _downsample(timeline: Sequence[tuple[int, tuple[int, ...]]], x_end: int,
                columns: int) -> list[tuple[int, tuple[int, ...]]]:
    """At most one sample per pixel column: the one with the most live bytes, so no peak is lost."""
    if len(timeline) <= columns:
        return list(timeline)
    kept: dict[int, tuple[int, tuple[int, ...]]] = {}
    for op, live in timeline:
        column = op * columns // max(x_end, 1)
        best = kept.get(column)
        if best is None or sum(live) >= sum(best[1]):
            kept[column] = (op, live)
    return [kept[c] for c in sorted(kept)]


def memory_timeline(report: MemoryReport) -> str:
    """Live bytes over the step's operators, stacked by category, phases and the peak marked."""
    if not report.timeline:
        return ""
    width, height, left, right, top, bottom = 880, 310, 72, 16, 46, 38
    plot_w, plot_h = width - left - right, height - top - bottom
    x_end = max(report.timeline[-1][0], report.phase_ends[-1], report.peak_op, 1) + 1
    highest = max([report.peak_bytes, *(sum(live) for _, live in report.timeline)]) or 1
    y_top = highest * 1.08

    def x_of(op: float) -> float:
        return left + plot_w * op / x_end

    def y_of(nbytes: float) -> float:
        return top + plot_h * (1 - nbytes / y_top)

    samples = _downsample(report.timeline, x_end, plot_w)
    parts = []
    y_step = _binary_step(y_top, 5)
    tick = 0.0
    while tick <= y_top:
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_trim(units.nbytes(tick))}</text>')
        tick += y_step
    x_step = _nice_step(x_end, 8)
    tick = 0.0
    while tick <= x_end:
        x = x_of(tick)
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 15}" text-anchor="middle">{tick:.0f}</text>')
        tick += x_step
    base = y_of(0)
    present = [k for k in range(len(CATEGORIES)) if any(live[k] for _, live in samples)]
    for k in reversed(present):  # tallest cumulative band first; lower bands paint over it
        path = [f"M{x_of(samples[0][0]):.1f} {base:.1f}"]
        for op, live in samples:
            path.append(f"H{x_of(op):.1f}V{y_of(sum(live[: k + 1])):.1f}")
        path.append(f"H{x_of(x_end):.1f}V{base:.1f}Z")
        parts.append(f'<path d="{"".join(path)}" fill="{CATEGORY_COLOURS[k]}" fill-opacity="0.85">'
                     f"<title>{CATEGORIES[k].replace('_', ' ')}</title></path>")
    phases = ("forward", "loss", "backward") if report.mode == "train" else ()
    for row, (end, name) in enumerate(zip(report.phase_ends, phases, strict=False)):
        x = x_of(end)
        anchor, dx = ("end", -3) if x > left + 0.8 * plot_w else ("start", 3)
        parts.append(f'<line class="phase" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{base:.1f}"/>'
                     f'<text class="muted" x="{x + dx:.1f}" y="{top + 12 + 12 * row}" text-anchor="{anchor}">'
                     f"{name} ends</text>")
    px, py = x_of(report.peak_op), y_of(report.peak_bytes)
    anchor = "end" if px > left + 0.6 * plot_w else "start" if px < left + 0.4 * plot_w else "middle"
    parts.append(f'<line class="peak" x1="{px:.1f}" x2="{px:.1f}" y1="{top - 4}" y2="{base:.1f}"/>'
                 f'<circle class="peak" cx="{px:.1f}" cy="{py:.1f}" r="3.5"/>'
                 f'<text class="peak" x="{px:.1f}" y="{top - 8}" text-anchor="{anchor}">peak '
                 f"{escape(units.nbytes(report.peak_bytes))} at op {report.peak_op}: {escape(report.peak_at)}</text>")
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{base:.1f}" y2="{base:.1f}"/>'
                 f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{base:.1f}"/>'
                 f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">'
                 "operator index in the step</text>")
    x = float(left)
    for k in present:
        name = CATEGORIES[k].replace("_", " ")
        parts.append(f'<rect x="{x:.1f}" y="8" width="10" height="10" fill="{CATEGORY_COLOURS[k]}"/>'
                     f'<text x="{x + 14:.1f}" y="17">{name}</text>')
        x += 30 + 6 * len(name)
    return _svg(width, height, "".join(parts), "memory timeline")


def line_chart(points: Sequence[tuple[float, float]], *, label: str, x_title: str, y_text: Callable[[float], str],
               colour: str = "#4c72b0") -> str:
    """A line through ``points`` (x ascending) on linear axes from 0, each point marked;
    ``y_text`` writes a tick's value.  Empty without two points."""
    if len(points) < 2:
        return ""
    width, height, left, right, top, bottom = 430, 240, 70, 14, 14, 38
    plot_w, plot_h = width - left - right, height - top - bottom
    x_end = max(x for x, _ in points) or 1.0
    y_top = 1.1 * max(y for _, y in points) or 1.0

    def x_of(x: float) -> float:
        return left + plot_w * x / x_end

    def y_of(y: float) -> float:
        return top + plot_h * (1 - y / y_top)

    parts = []
    for tick in (y_top * k / 4 for k in range(5)):
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(y_text(tick))}</text>')
    for tick in (x_end * k / 4 for k in range(5)):
        parts.append(f'<text x="{x_of(tick):.1f}" y="{height - bottom + 15}" text-anchor="middle">{tick:,.0f}</text>')
    path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts.extend(f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3" fill="{colour}">'
                 f"<title>{x:,.0f}: {escape(y_text(y))}</title></circle>" for x, y in points)
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{y_of(0):.1f}" y2="{y_of(0):.1f}"/>'
                 f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{y_of(0):.1f}"/>'
                 f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{escape(x_title)}</text>')
    return _svg(width, height, "".join(parts), label)


def _log_ticks(low: float, high: float) -> list[float]:
    return [10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def _decade_range(values: Sequence[float]) -> tuple[float, float]:
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values) * 1.0001))
    return low, max(high, low * 10)


@dataclass(frozen=True)
class Roof:
    """One compute roof: the datasheet column(s) its peak is read from, and that peak in FLOP/s."""

    columns: str  # "tf32", "fp32"; "bf16/fp32" when two columns share one peak
    peak_flops: float


@dataclass(frozen=True)
class Point:
    """One layer on the chart: its intensity, its FLOP/s, which roof bounds it, and on which roof it ran."""

    name: str
    intensity: float  # FLOPs per byte read or written
    flops_per_second: float
    bound: str  # "compute", "memory" or ""
    roof: Roof


def roofline_chart(roofline: Roofline, points: Sequence[Point], roofs: Sequence[Roof],
                   measured: Sequence[tuple[str, float, float]] = ()) -> str:
    """Log-log roofline: every compute roof (each with the memory roof), one point per layer,
    coloured by the roof its operators were costed against.

    ``roofs`` are drawn highest first, each at its peak and the bandwidth, times the efficiency;
    ``measured`` points (``(layer, intensity, FLOP/s achieved in the measured time)``) are drawn
    as rings beside the estimates.
    """
    width, height, left, right, top, bottom = 680, 380, 64, 20, 30, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    roofs = sorted(set(roofs), key=lambda r: -r.peak_flops)
    colour = {roof: ROOF_COLOURS[i % len(ROOF_COLOURS)] for i, roof in enumerate(roofs)}
    e, bandwidth = roofline.efficiency, roofline.bandwidth * roofline.efficiency
    ridges = [roof.peak_flops * e / bandwidth for roof in roofs]
    xs = [p.intensity for p in points] + [x for _, x, _ in measured]
    ys = [p.flops_per_second for p in points] + [y for _, _, y in measured]
    x_low, x_high = _decade_range([*xs, min(ridges) / 10, max(ridges) * 10])
    y_low, y_high = _decade_range([*ys, *(roof.peak_flops for roof in roofs), bandwidth * x_low])

    def x_of(x: float) -> float:
        return left + plot_w * math.log10(x / x_low) / math.log10(x_high / x_low)

    def y_of(y: float) -> float:
        return top + plot_h * (1 - math.log10(y / y_low) / math.log10(y_high / y_low))

    def polyline(peak: float, factor: float, memory: float = roofline.bandwidth) -> str:
        p, b = peak * factor, memory * factor
        corner = p / b
        xy = [(x_low, b * x_low), (corner, p), (x_high, p)] if x_low < corner < x_high else \
             [(x_low, min(p, b * x_low)), (x_high, min(p, b * x_high))]
        return " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in xy)

    parts = []
    for tick in _log_ticks(x_low, x_high):
        x = x_of(tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>'
                     f'<text x="{x:.1f}" y="{top + plot_h + 15}" text-anchor="middle">{_log_tick(tick)}</text>')
    for tick in _log_ticks(y_low, y_high):
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_log_tick(tick)}</text>')
    for roof in roofs if e != 1.0 else ():
        parts.append(f'<polyline class="roof datasheet" points="{polyline(roof.peak_flops, 1.0)}"><title>'
                     f"{escape(roof.columns)} datasheet roofs</title></polyline>")
    cache = roofline.cache_bandwidth
    if cache is not None and roofs:  # a calibrated cpu: its fastest cache, where small operands stay
        parts.append(f'<polyline class="roof datasheet" points="{polyline(roofs[0].peak_flops, e, cache)}"><title>'
                     f"the fastest cache's roof: {escape(units.bandwidth(cache * e))} "
                     "(operators with small working sets)</title></polyline>")
    for roof, ridge in zip(roofs, ridges, strict=True):
        parts.append(f'<polyline class="roof" data-roof="{escape(roof.columns)}" style="stroke:{colour[roof]}" '
                     f'points="{polyline(roof.peak_flops, e)}"><title>{escape(roof.columns)} roofs × {e:g}: '
                     f"{escape(units.rate(roof.peak_flops * e))}, {escape(units.bandwidth(bandwidth))}; "
                     f"ridge at {ridge:.3g} FLOPs/byte</title></polyline>")
    for roof in roofs:  # one group of points per roof, in its colour
        parts.append(f'<g class="pts" data-roof="{escape(roof.columns)}" fill="{colour[roof]}">')
        parts.extend(f'<circle class="pt" cx="{x_of(p.intensity):.1f}" cy="{y_of(p.flops_per_second):.1f}" r="3.5">'
                     f"<title>{escape(p.name)}: {p.intensity:.3g} FLOPs/byte, {escape(units.rate(p.flops_per_second))} "
                     f"estimated, {escape(p.bound or units.NONE)} bound</title></circle>"
                     for p in points if p.roof == roof)
        parts.append("</g>")
    for name, x, y in measured:
        parts.append(f'<circle class="ring" cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3.5"><title>{escape(name)}: '
                     f"{x:.3g} FLOPs/byte, {escape(units.rate(y))} measured</title></circle>")
    parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
                 f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>'
                 f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                 "arithmetic intensity (FLOPs per byte read or written)</text>"
                 f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">FLOP/s</text>')
    legend = [(f"{roof.columns} {units.rate(roof.peak_flops)}", f'fill="{colour[roof]}"') for roof in roofs]
    if measured:
        legend.append(("measured", 'class="ring"'))
    x = float(left + 6)
    for name, look in legend:
        parts.append(f'<circle cx="{x}" cy="13" r="4" {look}/><text x="{x + 8:.1f}" y="17">{escape(name)}</text>')
        x += 22 + 6.5 * len(name)
    return _svg(width, height, "".join(parts), "roofline")


def stacked_bars(rows: Sequence[tuple[str, Sequence[float], float]], parts: Sequence[tuple[str, str]],
                 text: Callable[[float], str], label: str, limit: float | None = None,
                 limit_text: str = "") -> str:
    """Horizontal stacked bars: one row per ``(name, segments, mark)``, each segment in the colour of
    its ``parts`` entry (``(name, colour)``), ``mark`` (the row's peak) drawn as a tick and written
    at the bar's end; ``limit`` (a budget) as a dashed line across every row, or only named when it
    is more than half again above the longest bar."""
    if not rows:
        return ""
    row_height, name_width, bar_width, value_width, top = 24, 150, 560, 90, 28
    width = name_width + bar_width + value_width
    height = top + row_height * len(rows) + (22 if limit is not None else 6)
    highest = max(max(sum(segments), mark) for _, segments, mark in rows) or 1.0
    drawn = limit is not None and limit <= 1.5 * highest  # a budget far above every bar is named, not drawn
    span = max(highest, limit if drawn and limit is not None else 0.0) * 1.04

    def x_of(value: float) -> float:
        return name_width + bar_width * value / span

    body = []
    x = 8.0
    for name, colour in parts:
        body.append(f'<rect x="{x:.1f}" y="6" width="10" height="10" fill="{colour}"/>'
                    f'<text x="{x + 14:.1f}" y="15">{escape(name)}</text>')
        x += 30 + 6 * len(name)
    for i, (name, segments, mark) in enumerate(rows):
        y = top + i * row_height
        start = 0.0
        pieces = []
        for (part, colour), value in zip(parts, segments, strict=True):
            if value > 0:
                length = max(x_of(start + value) - x_of(start), 0.5)
                pieces.append(f'<rect x="{x_of(start):.1f}" y="{y + 4}" width="{length:.1f}" '
                              f'height="{row_height - 8}" fill="{colour}"><title>{escape(name)}, {escape(part)}: '
                              f"{escape(text(value))}</title></rect>")
            start += value
        body.append(f'<g><text x="{name_width - 6}" y="{y + 16}" text-anchor="end">{escape(name)}</text>'
                    + "".join(pieces)
                    + f'<line class="peak" x1="{x_of(mark):.1f}" x2="{x_of(mark):.1f}" y1="{y + 2}" '
                      f'y2="{y + row_height - 2}"/>'
                    f'<text x="{x_of(max(start, mark)) + 4:.1f}" y="{y + 16}">{escape(text(mark))}</text></g>')
    bottom = top + row_height * len(rows)
    if limit is not None and drawn:
        lx = x_of(limit)
        body.append(f'<line class="phase" x1="{lx:.1f}" x2="{lx:.1f}" y1="{top - 2}" y2="{bottom + 2}"/>'
                    f'<text class="muted" x="{lx:.1f}" y="{bottom + 16}" text-anchor="end">{escape(limit_text)}</text>')
    elif limit is not None:
        body.append(f'<text class="muted" x="{name_width + bar_width}" y="{bottom + 16}" text-anchor="end">'
                    f"{escape(limit_text)}, off the scale</text>")
    return _svg(width, height, "".join(body), label)
