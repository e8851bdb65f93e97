"""The HTML report: one self-contained page (or notebook cell) that needs no network.

The page shows every section of a result, in its order, through one table from a section's
name to its view (:mod:`nncost.render.sections`): the forward report's totals (the very lines of
the terminal view, :func:`summary_lines`) and its roofline, a generation's figures and charts,
the memory timeline of a simulated step, each pipeline stage's memory for a training step spread
over GPUs, a plan's table of layouts, a training run, a comparison's tables; a section with no
view is named.  At the top the command that produced it; at the bottom charts of the forward's
leaf layers and its whole layer tree, foldable and sortable.  Every figure is one the records hold,
formatted by :mod:`nncost.render.units`; the charts are hand-written SVG and the behaviour a few
lines of inline script, so the page is complete, if static, where scripts do not run.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nncost.render import compare, units
from nncost.render.files import writable, write_failed
from nncost.render.formats import MARKDOWN_HEADER, layer_cells, summary_lines
from nncost.render.generation import generation_lines
from nncost.render.html_assets import SCRIPT, STYLE
from nncost.render.memory import memory_lines
from nncost.render.parallel import PLAN_HEADER, STAGE_HEADER, parallel_lines, plan_cells, plan_lines, stage_cells
from nncost.render.sections import Sections, name, not_shown, sections
from nncost.render.svg import (
    CATEGORY_COLOURS,
    Point,
    Roof,
    bar_chart,
    line_chart,
    memory_timeline,
    roofline_chart,
    stacked_bars,
)
from nncost.render.training_run import training_run_lines

if TYPE_CHECKING:
    from nncost.records.comparison import Comparison
    from nncost.records.generation import GenerationReport
    from nncost.records.memory import MemoryReport
    from nncost.records.parallel import ParallelStep, Plan
    from nncost.records.report import Layer, Report
    from nncost.records.result import Result
    from nncost.records.roofline import Roofline
    from nncost.records.training_run import TrainingRun

TOP_LAYERS = 15  # bars per chart
OPEN_ALL_UP_TO = 150  # layers; bigger trees open folded below depth 2 (the script unfolds on click)


def _optional_seconds(value: float | None) -> str:
    return units.NONE if value is None else units.seconds(value)


@dataclass(frozen=True)
class Column:
    header: str
    numeric: bool
    text: Callable[[Layer], str]
    sort_value: Callable[[Layer], float] | None  # None: sorted by the cell's text


def columns(report: Report) -> list[Column]:
    """The table's columns: call order, the terminal table's cells, then time when it is known."""

    def cell(i: int) -> Callable[[Layer], str]:
        return lambda layer: layer_cells(layer)[i]

    sort_values: dict[str, Callable[[Layer], float] | None] = {
        "Layer": None, "Type": None, "Output shape": None, "Params": lambda la: la.params,
        "MACs": lambda la: la.macs, "FLOPs": lambda la: la.flops, "Output": lambda la: la.output_bytes,
        "%FLOPs": lambda la: la.flops_share,
    }
    result = [Column("#", True, lambda la: str(la.index), lambda la: la.index)]
    for i, header in enumerate(MARKDOWN_HEADER):
        result.append(Column(header, i >= 3, cell(i), sort_values[header]))
    if any(layer.estimated_seconds is not None for layer in report.layers):
        result.append(Column("Est. time", True, lambda la: _optional_seconds(la.estimated_seconds),
                             lambda la: la.estimated_seconds or 0.0))
        result.append(Column("Bound", False, lambda la: la.bound or units.NONE, None))
    if any(layer.measured_seconds is not None for layer in report.layers):
        result.append(Column("Measured", True, lambda la: _optional_seconds(la.measured_seconds),
                             lambda la: la.measured_seconds or 0.0))
    return result


def _kv_table(lines: Sequence[tuple[str, str]]) -> str:
    rows = "".join(
        f'<tr{" class=warn" if label.startswith("UNCOUNTED") else ""}><th>{escape(label.strip())}</th>'
        f"<td>{escape(value)}</td></tr>"
        for label, value in lines
    )
    return f'<table class="kv">{rows}</table>'


def _layer_rows(report: Report, cols: Sequence[Column]) -> str:
    known = {layer.index for layer in report.layers}
    parents = {layer.parent for layer in report.layers}
    rows = []
    for layer in report.layers:
        parent = layer.parent if layer.parent in known else ""
        toggle = ('<button type="button" class="tg" aria-expanded="true">▾</button>' if layer.index in parents
                  else '<span class="sp"></span>')
        cells = []
        for col in cols:
            text = escape(col.text(layer))
            if col.header == "Layer":
                cells.append(f'<td class="nm" title="{escape(layer.label)}">{toggle}{text}</td>')
                continue
            value = "" if col.sort_value is None else f' data-v="{col.sort_value(layer):.6g}"'
            cells.append(f'<td{" class=n" if col.numeric else ""}{value}>{text}</td>')
        rows.append(f'<tr class="d{layer.depth}" style="--d:{layer.depth}" data-i="{layer.index}" '
                    f'data-p="{parent}" data-d="{layer.depth}">{"".join(cells)}</tr>')
    return "".join(rows)


def _leaves(report: Report) -> list[Layer]:
    """The layers with no child row in this report (the leaves, or the fold of a depth-cut report)."""
    parents = {layer.parent for layer in report.layers}
    return [layer for layer in report.layers if layer.index not in parents]


def _top_chart(leaves: Sequence[Layer], title: str, value: Callable[[Layer], float | None],
               text: Callable[[float], str], colour: str) -> str:
    ranked = sorted(((layer, v) for layer in leaves if (v := value(layer))), key=lambda item: -item[1])
    if not ranked:
        return ""
    shown = ranked[:TOP_LAYERS]
    rows = [(layer.label, v, text(v)) for layer, v in shown]
    caption = f"{title}: top {len(shown)} of {len(ranked)} leaf layers"
    return f"<figure><figcaption>{escape(caption)}</figcaption>{bar_chart(rows, caption, colour)}</figure>"


def _charts(report: Report) -> str:
    leaves = _leaves(report)
    charts = [
        _top_chart(leaves, "Parameters", lambda la: la.params, units.count, "#4c72b0"),
        _top_chart(leaves, "MACs", lambda la: la.macs, units.count, "#dd8452"),
        _top_chart(leaves, "FLOPs", lambda la: la.flops, units.count, "#c44e52"),
        _top_chart(leaves, "Output memory", lambda la: la.output_bytes, units.nbytes, "#55a868"),
        _top_chart(leaves, "Estimated time", lambda la: la.estimated_seconds, units.seconds, "#8172b3"),
        _top_chart(leaves, "Measured time", lambda la: la.measured_seconds, units.seconds, "#937860"),
    ]
    return f'<h3>Layers at a glance</h3><div class="charts">{"".join(charts)}</div>'


def _memory(memory: MemoryReport) -> str:
    what = "a training step" if memory.mode == "train" else "an inference pass"
    return (f"<h3>Memory of {what}</h3><div class='side'>{_kv_table(memory_lines(memory))}</div>"
            f"<figure>{memory_timeline(memory)}</figure>")


STAGE_PARTS = (("parameters", CATEGORY_COLOURS[0]), ("gradients", CATEGORY_COLOURS[1]),
               ("optimizer state", CATEGORY_COLOURS[2]), ("sharding buffers", "#7f7f7f"),
               ("activations in flight", CATEGORY_COLOURS[3]), ("working set", CATEGORY_COLOURS[4]))


def _parallel(step: ParallelStep) -> str:
    """A layout's figures, each pipeline stage's memory on one GPU as a stacked bar (the tick is
    its peak, the larger of the forward/backward and the optimizer's high points), and the stages' table."""
    rows = [(f"stage {stage.index}", (stage.parameter_bytes, stage.gradient_bytes, stage.optimizer_state_bytes,
                                      stage.communication_bytes, stage.held_activation_bytes, stage.working_bytes),
             float(stage.peak_bytes)) for stage in step.stages]
    budget = f"{step.hardware or 'budget'} {units.nbytes(step.budget_bytes)}" if step.budget_bytes else ""
    chart = stacked_bars(rows, STAGE_PARTS, units.nbytes, "memory of each pipeline stage",
                         limit=float(step.budget_bytes) if step.budget_bytes else None, limit_text=budget)
    head = "".join(f"<th{' class=n' if i >= 2 else ''}>{escape(h)}</th>" for i, h in enumerate(STAGE_HEADER))
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i >= 2 else ''}>{escape(c)}</td>"
                                    for i, c in enumerate(stage_cells(stage))) + "</tr>" for stage in step.stages)
    caption = f"Memory of each pipeline stage on one GPU ({step.layout.label})"
    return (f"<h3>Training over {step.layout.gpus:,} GPUs</h3><div class='side'>{_kv_table(parallel_lines(step))}</div>"
            f"<figure><figcaption>{escape(caption)}</figcaption>{chart}</figure>"
            f'<div class="scroll"><table class="layers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            "</div>")


def _descendants(report: Report) -> dict[int, list[Layer]]:
    """Each layer's calls in this report: itself, then every layer below it."""
    below: dict[int, list[Layer]] = {layer.index: [layer] for layer in report.layers}
    by_index = {layer.index: layer for layer in report.layers}
    for layer in reversed(report.layers):  # children follow their parent
        parent = by_index.get(layer.parent) if layer.parent is not None else None
        if parent is not None:
            below[parent.index].extend(below[layer.index])
    return below


def layer_roofs(report: Report, roofline: Roofline) -> dict[int, Roof]:
    """The compute roof each layer was costed against, by layer index.

    An operator runs under its family's peak (``Roofline.family_peak_flops``, from the datasheet
    column ``family_dtype`` names).  A layer whose operators ran under several peaks is put
    under the highest, the only roof its FLOPs / time cannot exceed.  Roofs of equal peak are one
    roof, named by all their columns.
    """
    from nncost.analyses.roofline import TORCH_KEYS, roof_family

    peaks, columns = roofline.family_peak_flops, roofline.family_dtype
    main = Roof(columns.get("matmul", TORCH_KEYS.get(roofline.dtype, roofline.dtype)), roofline.peak_flops)
    if not peaks:
        return {layer.index: main for layer in report.layers}
    below = _descendants(report)
    used = {roof_family(op.unit) for layer in report.layers for op in layer.self_ops if op.flops > 0}
    names = {peak: "/".join(sorted({columns.get(f, f) for f in used if peaks.get(f) == peak}))
             for peak in {peaks[f] for f in used if f in peaks}}
    roofs: dict[int, Roof] = {}
    for layer in report.layers:
        ran = [f for la in below[layer.index] for op in la.self_ops
               if op.flops > 0 and (f := roof_family(op.unit)) in peaks]
        peak = max((peaks[f] for f in ran), default=None)
        roofs[layer.index] = main if peak is None else Roof(names[peak], peak)
    return roofs


def _roofline(report: Report) -> str:
    roofline = report.roofline
    if roofline is None:
        return ""
    leaves = [la for la in _leaves(report) if la.flops > 0 and la.intensity > 0]
    roof_of = layer_roofs(report, roofline)
    points = [Point(la.label, la.intensity, la.flops / la.estimated_seconds, la.bound or "", roof_of[la.index])
              for la in leaves if la.estimated_seconds]
    roofs = sorted({p.roof for p in points} or {roof_of[report.layers[0].index]}, key=lambda r: -r.peak_flops)
    peaks = ", ".join(f"{units.rate(r.peak_flops)} {r.columns}" for r in roofs)
    lines = [
        ("Hardware", f"{roofline.hardware}, {roofline.dtype}"),
        ("Peak", f"{peaks} dense, {units.bandwidth(roofline.bandwidth)} memory"
                 + (f", {units.nbytes(roofline.memory_bytes)}" if roofline.memory_bytes else "")),
        ("Efficiency", f"{roofline.efficiency:g} × both roofs"),
        ("Forward, estimated", _optional_seconds(report.totals.estimated_seconds)),
    ]
    if report.totals.measured_seconds is not None:
        lines.append(("Forward, measured", units.seconds(report.totals.measured_seconds)))
    if roofline.train_step_seconds is not None:
        lines.append(("Training step, estimated", units.seconds(roofline.train_step_seconds)))
    if roofline.forward_samples_per_second is not None:
        lines.append(("Forward throughput", units.samples_per_second(roofline.forward_samples_per_second)))
    if roofline.train_samples_per_second is not None:
        lines.append(("Training throughput", units.samples_per_second(roofline.train_samples_per_second)))
    measured = [(la.label, la.intensity, la.flops / la.measured_seconds) for la in leaves if la.measured_seconds]
    caption = (f"Roofline: {len(points)} leaf layers at FLOPs / estimated time"
               + (f", {len(measured)} at FLOPs / measured time" if measured else ""))
    drawable = min(roofline.bandwidth, roofline.efficiency, *(r.peak_flops for r in roofs)) > 0  # else no log axes
    chart = (f"<figure><figcaption>{escape(caption)}</figcaption>{roofline_chart(roofline, points, roofs, measured)}"
             "</figure>") if drawable else ""
    return f"<h3>Time on {escape(roofline.hardware)}</h3><div class='side'>{_kv_table(lines)}</div>{chart}"


def _generation(generation: GenerationReport) -> str:
    """The generation's figures, and the decode step's time and the cache against the context."""
    steps = generation.steps
    timed = [(float(context), seconds) for context, _, seconds, _ in steps if seconds is not None]
    charts = [line_chart(timed, label="decode step time", x_title="context length (tokens in the cache)",
                         y_text=units.seconds),
              line_chart([(float(context), float(cache)) for context, *_, cache in steps], label="kv cache",
                         x_title="context length (tokens in the cache)", y_text=units.nbytes, colour="#dd8452")]
    figures = "".join(f"<figure><figcaption>{caption}</figcaption>{chart}</figure>" for caption, chart in
                      zip(("Decode step time against the context", "KV cache after the step"), charts, strict=True)
                      if chart)
    return (f'<h3>Generation</h3><div class="side">{_kv_table(generation_lines(generation))}</div>'
            f'<div class="charts">{figures}</div>')


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int, caption: str = "") -> str:
    """A plain table: text columns first, then numbers from ``numeric_from`` on."""
    def cell(tag: str, i: int, text: str) -> str:
        return f"<{tag}{' class=n' if i >= numeric_from else ''}>{escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table class="layers">{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _plan(plan: Plan) -> str:
    """What was searched and why layouts were left out, the best layouts' table, the best one's stages."""
    lines = "".join(f"<li>{escape(line)}</li>" for line in plan_lines(plan))
    best = (_table(PLAN_HEADER, [plan_cells(rank, step) for rank, step in enumerate(plan.best, start=1)], 8)
            if plan.best else "<p>no layout fits</p>")
    return f"<h3>Plan</h3><ul>{lines}</ul>{best}" + (_parallel(plan.best[0]) if plan.best else "")


def _training_run(run: TrainingRun) -> str:
    return f'<h3>Training run</h3><div class="side">{_kv_table(training_run_lines(run))}</div>'


def _comparison(comparison: Comparison) -> str:
    """The totals side by side with their ratios to the first model, then the shared stages."""
    names = [e.model for e in comparison.models]
    parts = [f"<h3>{escape(compare.title(comparison))}</h3>",
             _table(["", *names], compare.totals_rows(comparison), 1)]
    if comparison.stages:
        parts.append(_table(compare.stage_header(comparison), [compare.stage_row(s) for s in comparison.stages], 1,
                            caption=compare.stage_title(comparison)))
    return "".join(parts)


def _report(report: Report) -> str:
    return f'<h3>Totals</h3><div class="totals">{_kv_table(summary_lines(report))}</div>{_roofline(report)}'


def _generation_section(generation: GenerationReport) -> str:
    prefill = generation.prefill
    return (f'<h3>Totals</h3><div class="totals">{_kv_table(summary_lines(prefill))}</div>'
            f"{_generation(generation)}{_roofline(prefill)}")


# Section name -> its part of the page.  The forward report's charts and layer tree close the page.
_HTML: dict[str, Callable[[Any], str]] = {
    "report": _report,
    "generation": _generation_section,
    "memory": _memory,
    "parallel": _parallel,
    "plan": _plan,
    "training_run": _training_run,
    "comparison": _comparison,
}


def _forward(held: Sequence[Any]) -> Report | None:
    """The forward report whose layers the page charts: the report's, or a generation's prefill."""
    for section in held:
        if name(section) == "report":
            return section
        if name(section) == "generation":
            return section.prefill
    return None


def _heading(held: Sequence[Any], forward: Report | None) -> str:
    if forward is not None:
        return f"{forward.model or 'model'} · batch {forward.batch_size}"
    comparison = next((s for s in held if name(s) == "comparison"), None)
    if comparison is not None:
        return " vs ".join(e.model for e in comparison.models)
    return " · ".join(name(s) for s in held) or "nncost"


def _layers(report: Report) -> str:
    """The forward's charts and its whole layer tree."""
    cols = columns(report)
    head = "".join(f'<th{" class=n" if col.numeric else ""} title="sort by {escape(col.header)}">'
                   f"{escape(col.header)}</th>" for col in cols)
    return "".join([
        _charts(report),
        f"<h3>Layer tree ({len(report.layers)} module calls)</h3>",
        '<div class="tools"><button type="button" class="expand-all">Expand all</button>'
        '<button type="button" class="collapse-all">Collapse all</button>'
        '<label><input type="checkbox" class="flat-list"> flat list of leaf layers</label>'
        '<span class="muted">click a column header to sort (siblings sort within their parent)</span></div>',
        f'<div class="scroll"><table class="layers"><thead><tr>{head}</tr></thead>'
        f"<tbody>{_layer_rows(report, cols)}</tbody></table></div>",
    ])


def to_html(result: Result | Report | Sections, command: str | None = None, open_depth: int | None = None,
            uid: str | None = None, style: bool = True) -> str:
    """Every section of ``result`` (or a report alone) as one ``<div>``: scoped style, content,
    and a script bound to this div's id.

    Each call gets a fresh id unless ``uid`` is given, so several reports can share a notebook.
    ``open_depth``: tree nodes at this depth and deeper start folded (default: all open up to
    150 layers, else folded below depth 2).
    """
    from nncost import __version__

    held = sections(result)
    forward = _forward(held)
    uid = uid or f"nncost-{secrets.token_hex(6)}"
    if open_depth is None and forward is not None and len(forward.layers) > OPEN_ALL_UP_TO:
        open_depth = 2
    shown = [(_HTML[name(s)](s) if name(s) in _HTML else f"<h3>{escape(name(s))}</h3>"
              f'<p class="muted">{escape(not_shown(s, "in HTML"))}</p>') for s in held]
    parts = [
        f'<div class="nncost-report" id="{escape(uid)}"'
        + (f' data-open="{open_depth}"' if open_depth is not None else "") + ">",
        f"<style>{STYLE}</style>" if style else "",
        f"<h2>{escape(_heading(held, forward))}</h2>",
        f'<div class="cmd">$ {escape(command)}</div>' if command else "",
        *shown,
        _layers(forward) if forward is not None else "",
        f"<footer>nncost {escape(__version__)} · conventions: MACs, FLOPs and bytes as in nncost's "
        "docs/conventions.md</footer>",
        f'<script>{SCRIPT}(document.getElementById("{escape(uid)}"));</script>',
        "</div>",
    ]
    return "".join(parts)


def html_page(result: Result | Report | Sections, command: str | None = None, open_depth: int | None = None) -> str:
    """A whole HTML document around :func:`to_html`, for ``--html report.html``."""
    body = to_html(result, command=command, open_depth=open_depth, uid="nncost-report", style=False)
    title = _heading(sections(result), _forward(sections(result)))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>nncost: {escape(title)}</title><style>{STYLE}"
            "body{margin:0;background:#fff}</style></head>"
            f"<body>{body}</body></html>\n")


def report_page(report: Report, memory: MemoryReport | None = None, command: str | None = None) -> str:
    """:func:`html_page` of a report and the memory of its step (``Report.to_html``)."""
    return html_page(Sections((report,) if memory is None else (report, memory)), command=command)


def write_html(path: str | Path, result: Result | Report, command: str | None = None,
               open_depth: int | None = None) -> None:
    """Write :func:`html_page` to ``path``; a clear error when its folder does not exist."""
    target = writable(path, "the HTML report")
    try:
        target.write_text(html_page(result, command=command, open_depth=open_depth), encoding="utf-8")
    except OSError as exc:
        raise write_failed(path, "the HTML report", exc) from exc
