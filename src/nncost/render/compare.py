"""Views of a Comparison: a rich table in the terminal, its Markdown and CSV tables.

Every figure and ratio is computed by :mod:`nncost.analyses.compare`; this module only formats.
The comparison is a section of a result: its JSON is the result's document
(:func:`nncost.render.formats.comparison_dict`), and the views of the result call these.
"""

from __future__ import annotations

import csv
import io
import re
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from nncost.render import units
from nncost.render.units import terminal_width

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
SEPARATORS = "/:-_. "


def stacked(name: str, width: int) -> str:
    """``name`` on lines of at most ``width`` characters, broken after its separators (``/``,
    ``:``, ``-``, ``_``, ``.``, a space), so a narrow column never splits a name mid-word; a
    piece longer than ``width`` stays whole on its line."""
    lines = [""]
    for piece in _pieces(name):
        if lines[-1] and len(lines[-1]) + len(piece.rstrip()) > width:
            lines.append(piece)
        else:
            lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)


def _pieces(name: str) -> list[str]:
    """``name`` cut after each separator, each piece keeping its separator."""
    return [p for p in re.findall(rf"[^{re.escape(SEPARATORS)}]*[{re.escape(SEPARATORS)}]?", name) if p]


def _longest_word(cells: list[str]) -> int:
    return max((len(word) for cell in cells for word in cell.split()), default=1)


def _headers(names: list[str], columns: list[list[str]], room: int) -> list[str]:
    """The columns' names as they are when the columns fit ``room`` so; else each stacked to
    the width its cells take in ``room`` shared among the columns (never below their longest
    word, which rich keeps whole)."""
    one_line = [max([len(name), *map(len, cells)]) for name, cells in zip(names, columns, strict=True)]
    if sum(one_line) + 2 * len(one_line) <= room:
        return names
    share = max(room // max(len(columns), 1) - 2, 1)
    return [stacked(name, max(_longest_word(cells), _longest_piece(name),
                              min(max(map(len, cells), default=1), share)))
            for name, cells in zip(names, columns, strict=True)]


def _longest_piece(name: str) -> int:
    return max((len(piece.rstrip()) for piece in _pieces(name)), default=1)


def totals_table(comparison: Comparison, width: int | None = None) -> Table:
    width = width or terminal_width()
    rows = totals_rows(comparison)
    labels = [row[0] for row in rows]
    columns = [[row[i + 1] for row in rows] for i in range(len(comparison.models))]
    headers = _headers([e.model for e in comparison.models], columns, width - max(map(len, labels)) - 2)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title(comparison))
    table.add_column("", style="bold")
    for header in headers:
        table.add_column(header, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _natural_width(header: list[str], rows: list[list[str]]) -> int:
    """The width of a table whose cells are each on one line and whose headers are stacked no
    wider than their cells (two spaces between columns)."""
    widths = [max([_longest_piece(name), *(len(cell) for cell in cells)])
              for name, *cells in zip(header, *rows, strict=True)]
    return sum(widths) + 2 * (len(widths) - 1)


def stage_tables(comparison: Comparison, width: int | None = None) -> list[Table]:
    """The stages' params and MACs side by side, or, when that is wider than ``width``, one table
    of params and one of MACs."""
    width = width or terminal_width()
    header, rows = stage_header(comparison), [stage_row(s) for s in comparison.stages]
    n = len(comparison.models)
    if _natural_width(header, rows) <= width:
        parts = [(stage_title(comparison), header, rows)]
    else:
        names = ["Stage", *(e.model for e in comparison.models)]
        parts = [(f"{stage_title(comparison)}: {what}", names, [[row[0], *row[1 + k * n:1 + (k + 1) * n]]
                                                                for row in rows])
                 for k, what in enumerate(("params", "MACs"))]
    tables = []
    for caption, names, cells in parts:
        stage_width = max(len(row[0]) for row in [names, *cells])
        columns = [[row[i] for row in cells] for i in range(1, len(names))]
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=caption)
        table.add_column(names[0], justify="left", no_wrap=True)
        for header_text in _headers(names[1:], columns, width - stage_width - 2):
            table.add_column(header_text, justify="right", overflow="fold")
        for row in cells:
            table.add_row(*row)
        tables.append(table)
    return tables


def renderables(comparison: Comparison, width: int | None = None) -> list[Any]:
    items: list[Any] = [totals_table(comparison, width)]
    if comparison.stages:
        items.extend(stage_tables(comparison, width))
    return items


def render_text(comparison: Comparison, width: int | None = None) -> str:
    """The comparison as plain text in ``width`` columns (the terminal's when None)."""
    width = width or terminal_width()
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    for item in renderables(comparison, width):
        console.print(item)
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    return "".join(line.rstrip() + "\n" for line in out.splitlines())


# -- CSV and Markdown ------------------------------------------------------------------------
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


def markdown_lines(comparison: Comparison) -> list[str]:
    """The totals table under its title, then the shared stages' table."""
    lines = [f"**{title(comparison)}**", ""]
    lines += _markdown_table(["", *(e.model for e in comparison.models)], totals_rows(comparison))
    if comparison.stages:
        lines += ["", f"**{stage_title(comparison)}**", ""]
        lines += _markdown_table(stage_header(comparison), [stage_row(s) for s in comparison.stages])
    return lines
