"""Views of a Comparison: a rich table in the terminal, Markdown, CSV and JSON.

Every figure and ratio is computed by :mod:`nncost.analyses.compare`; this module only formats.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from nncost.render import units
from nncost.render.table import terminal_width

if TYPE_CHECKING:
    from nncost.records.comparison import Comparison, Entry, Stage

BYTE_FIGURES = frozenset({"param_bytes", "peak_activation_bytes", "train_peak_bytes"})


def figure_label(comparison: Comparison, figure: str) -> str:
    labels = {
        "params": "Params",
        "macs": "MACs",
        "flops": "FLOPs",
        "param_bytes": "Param memory",
        "peak_activation_bytes": "Peak activations",
        "train_peak_bytes": f"Training step peak ({comparison.optimizer}, {comparison.allocator})",
    }
    return labels[figure]


def value(figure: str, amount: int | None) -> str:
    """The figure as the layer table shows it: ``-`` when there is none (no layer of that name, or zero)."""
    if not amount:
        return units.NONE
    return units.nbytes(amount) if figure in BYTE_FIGURES else units.count(amount)


def with_ratio(figure: str, amount: int | None, ratio: float | None, first: bool) -> str:
    text = value(figure, amount)
    return text if first or ratio is None or text == units.NONE else f"{text} ({units.ratio(ratio)})"


def title(comparison: Comparison) -> str:
    batches = {e.batch_size for e in comparison.models}
    batch = f"batch {batches.pop()}" if len(batches) == 1 else "batches " + ", ".join(
        f"{e.model} {e.batch_size}" for e in comparison.models)
    return f"{len(comparison.models)} models · {batch} · ratios to {comparison.models[0].model}"


def totals_rows(comparison: Comparison) -> list[list[str]]:
    rows = []
    for figure in comparison.figures:
        rows.append([figure_label(comparison, figure)] + [
            with_ratio(figure, e.figure(figure), comparison.ratios[i][figure], i == 0)
            for i, e in enumerate(comparison.models)
        ])
    rows.append(["Uncounted ops"] + [_uncounted(e) for e in comparison.models])
    return rows


def _uncounted(entry: Entry) -> str:
    return ", ".join(f"{op}×{calls}" for op, calls in entry.uncounted.items()) or "none"


def stage_header(comparison: Comparison) -> list[str]:
    names = [e.model for e in comparison.models]
    return ["Stage"] + [f"{name} params" for name in names] + [f"{name} MACs" for name in names]


def stage_row(stage: Stage) -> list[str]:
    cells = [stage.name]
    for figure, values in (("params", stage.params), ("macs", stage.macs)):
        ratios = stage.ratios[figure]
        cells += [with_ratio(figure, v, ratios[i], i == 0) for i, v in enumerate(values)]
    return cells


def stage_title(comparison: Comparison) -> str:
    return f"Layers of the same name at depth {comparison.stage_depth} (ratios to {comparison.models[0].model})"


# -- terminal ------------------------------------------------------------------------------
def totals_table(comparison: Comparison) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title(comparison))
    table.add_column("", no_wrap=True, style="bold")
    for e in comparison.models:
        table.add_column(e.model, justify="right", overflow="fold")
    for row in totals_rows(comparison):
        table.add_row(*row)
    return table


def stage_table(comparison: Comparison) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=stage_title(comparison))
    for i, header in enumerate(stage_header(comparison)):
        table.add_column(header, justify="left" if i == 0 else "right", overflow="fold")
    for stage in comparison.stages:
        table.add_row(*stage_row(stage))
    return table


def renderables(comparison: Comparison) -> list[Any]:
    items: list[Any] = [totals_table(comparison)]
    if comparison.stages:
        items.append(stage_table(comparison))
    return items


def render_text(comparison: Comparison, width: int | None = None) -> str:
    """The comparison as plain text in ``width`` columns (the terminal's when None)."""
    console = Console(file=io.StringIO(), width=width or terminal_width(), color_system=None, force_terminal=False)
    for item in renderables(comparison):
        console.print(item)
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    return "".join(line.rstrip() + "\n" for line in out.splitlines())


# -- machine-readable ----------------------------------------------------------------------
def to_dict(comparison: Comparison) -> dict[str, Any]:
    models = []
    for e in comparison.models:
        totals = asdict(e.totals)
        if comparison.train:
            totals["train_peak_bytes"] = e.train_peak_bytes
        models.append({"model": e.model, "batch_size": e.batch_size, "execution": e.execution,
                       "totals": totals, "uncounted": e.uncounted})
    return {
        "schema": comparison.schema,
        "models": models,
        "ratios": [{"model": e.model, **r} for e, r in zip(comparison.models, comparison.ratios, strict=True)],
        "stage_depth": comparison.stage_depth,
        "stages": [asdict(stage) for stage in comparison.stages],
        "train": {"optimizer": comparison.optimizer, "allocator": comparison.allocator} if comparison.train else None,
    }


def to_json(comparison: Comparison, indent: int | None = 2) -> str:
    return json.dumps(to_dict(comparison), indent=indent)


def to_csv(comparison: Comparison) -> str:
    """One row per model: its figures, then its ratios to the first model."""
    figures = comparison.figures
    header = ["model", "batch_size", *figures, *(f"{f}_ratio" for f in figures)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for e, ratios in zip(comparison.models, comparison.ratios, strict=True):
        writer.writerow([e.model, e.batch_size, *(e.figure(f) for f in figures), *(ratios[f] for f in figures)])
    return buffer.getvalue()


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|---|" + "---:|" * (len(header) - 1), *(line(r) for r in rows)]


def to_markdown(comparison: Comparison) -> str:
    lines = [f"**{title(comparison)}**", ""]
    lines += _markdown_table(["", *(e.model for e in comparison.models)], totals_rows(comparison))
    if comparison.stages:
        lines += ["", f"**{stage_title(comparison)}**", ""]
        lines += _markdown_table(stage_header(comparison), [stage_row(s) for s in comparison.stages])
    return "\n".join(lines) + "\n"
