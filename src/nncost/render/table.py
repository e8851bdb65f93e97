"""The terminal view: a rich table of the layer tree that fits 120 columns, totals beneath."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from nncost.render.formats import MEASURED_HEADER, ROOFLINE_HEADER, header, row_cells, summary_lines
from nncost.render.memory import render_memory

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport
    from nncost.records.report import Report


def layer_table(report: Report, depth: int | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"{report.model} · batch {report.batch_size}")
    names = header(report)
    widths: dict[tuple[str, ...], tuple[int, ...]] = {
        MEASURED_HEADER: (28, 17, 15, 9, 9, 5, 9, 7), ROOFLINE_HEADER: (28, 17, 15, 9, 9, 9, 7, 7)}
    column_widths = widths.get(names, (28, 17, 15, 9, 9, 9, 10, 7))
    for i, (name, width) in enumerate(zip(names, column_widths, strict=True)):
        table.add_column(
            name,
            max_width=width,
            no_wrap=True,
            overflow="ellipsis",
            justify="left" if i < 3 else "right",
        )
    for layer in report.shown(depth):
        cells = list(row_cells(layer, report))
        cells[0] = "  " * layer.depth + cells[0]
        table.add_row(*cells, style="bold" if layer.depth == 0 else None)
    return table


def totals_table(report: Report) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in summary_lines(report):
        table.add_row(label, value, style="red" if label.startswith("UNCOUNTED") else None)
    return table


def renderables(report: Report, depth: int | None = None) -> Iterator[Any]:
    yield layer_table(report, depth)
    yield totals_table(report)


def render_text(report: Report, depth: int | None = None, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    for item in renderables(report, depth):
        console.print(item)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out)


def to_text(report: Report | None, memory: MemoryReport | None) -> str:
    """The terminal view of a result: the layer table and totals, then the memory section."""
    parts = [render_text(report)] if report is not None else []
    if memory is not None:
        parts.append(render_memory(memory))
    return "\n".join(parts)
