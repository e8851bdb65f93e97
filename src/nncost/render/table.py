"""The terminal view: the layer tree as a table that fits the terminal, totals beneath.

The table is laid out for a width (the terminal's, or ``table(width=)``), by these rules:

* A number or a header is never cut: every column shown is as wide as its widest cell.
* A row's name is its full dotted path (what ``--explain`` and the CSV take), indented two
  spaces a level, one when two do not fit.
* When the columns do not fit, the least important go first (``DROP_ORDER``), and a line under
  the table names them.
* Names are shortened in their middle (:func:`nncost.render.units.path`) rather than a column
  given up, as long as every row keeps its own last component whole and no two layers print
  alike; a line under the table says so.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from nncost.render import units
from nncost.render.formats import header, row_cells, summary_lines
from nncost.render.units import terminal_width

if TYPE_CHECKING:
    from nncost.records.report import Layer, Report

GAP = 2  # spaces between two columns
# The columns a narrow terminal gives up, first to last.  Layer and FLOPs always stay: the first
# says which layer, the second what it costs.  Output bytes follow from the shape; the type from
# the name; MACs from FLOPs (2 per MAC) in the layers that have them.
DROP_ORDER = ("Output", "Type", "Bound", "MACs", "Output shape", "%FLOPs", "%time", "Params", "Est. time",
              "Measured")


@dataclass(frozen=True)
class Layout:
    """Which columns a table shows at a width, how wide each is, and the name each row prints."""

    shown: tuple[int, ...]  # indices into the header, in order; 0 is the layer's name
    widths: tuple[int, ...]  # of the shown columns
    indent: int  # spaces per level of depth
    labels: tuple[str, ...]  # each row's name as printed, without its indent
    dropped: tuple[str, ...]  # headers left out, in the header's order
    shortened: bool  # some name is printed shorter than it is


def _keeps_its_own_name(name: str, label: str) -> bool:
    own = name.rsplit(".", 1)[-1]
    return label == name or (label.endswith(own) and len(label) > len(own) and label[-len(own) - 1] in ".…")


def _distinct(names: Sequence[str], labels: Sequence[str]) -> bool:
    """No two different names print alike (one module called twice prints its one name twice)."""
    seen: dict[str, str] = {}
    return all(seen.setdefault(label, name) == name for name, label in zip(names, labels, strict=True))


def _shortened(names: Sequence[str], depths: Sequence[int], room: int) -> tuple[str, ...] | None:
    """Each name shortened to the room its row has at one space a level, if every row keeps its
    own name and the names stay distinct; else None."""
    labels = tuple(units.path(name, room - depth) for name, depth in zip(names, depths, strict=True))
    if all(_keeps_its_own_name(n, label) for n, label in zip(names, labels, strict=True)) and _distinct(names, labels):
        return labels
    return None


def plan(names: Sequence[str], cells: Sequence[Sequence[str]], depths: Sequence[int], headers: Sequence[str],
         width: int, drop_order: Sequence[str] = DROP_ORDER) -> Layout:
    """The layout of a table of ``cells`` (one row per name, one cell per header; the first cell
    is the name) in ``width`` columns, by the rules of this module's docstring; the columns of
    ``drop_order`` go first to last when they do not fit."""
    natural = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    droppable = [i for h in drop_order for i, name in enumerate(headers) if name == h]
    layout = None
    for n in range(len(droppable) + 1):
        shown = tuple(i for i in range(len(headers)) if i not in droppable[:n])
        dropped = tuple(headers[i] for i in range(len(headers)) if i not in shown)
        others = tuple(natural[i] for i in shown[1:])
        room = width - sum(others) - GAP * len(others)
        for indent in (2, 1):
            need = max([len(headers[0]), *(indent * d + len(name) for name, d in zip(names, depths, strict=True))])
            if need <= room:
                return Layout(shown, (need, *others), indent, tuple(names), dropped, False)
        labels = _shortened(names, depths, room) if room >= len(headers[0]) else None
        if labels is not None:
            need = max([len(headers[0]), *(d + len(label) for label, d in zip(labels, depths, strict=True))])
            return Layout(shown, (need, *others), 1, labels, dropped, True)
        layout = (shown, others, dropped, max(room, len(headers[0])))
    # Nothing fits: the fewest columns, and each name cut to what is left of its row.
    assert layout is not None
    shown, others, dropped, room = layout
    labels = tuple(units.path(name, max(room - d, 1)) for name, d in zip(names, depths, strict=True))
    return Layout(shown, (room, *others), 1, labels, dropped, True)


def notes(layout: Layout, width: int, whole_in: str = "--format csv") -> list[str]:
    """The lines under the table that say what it leaves out, and which view (``whole_in``) has it."""
    lines = []
    if layout.dropped:
        lines.append(f"Columns left out to fit {width}: {', '.join(layout.dropped)} (all in {whole_in})")
    if layout.shortened:
        lines.append(f"Names shortened in the middle (…); whole in {whole_in}")
    return lines


def layer_table(report: Report, depth: int | None = None, width: int | None = None) -> tuple[Table, list[str]]:
    """The layer tree laid out for ``width`` columns, and the notes that go under it."""
    layers = report.shown(depth)
    return tree_table(f"{report.model} · batch {report.batch_size}", layers, header(report),
                      [row_cells(layer, report) for layer in layers], width, left=3)


def tree_table(title: str, layers: Sequence[Layer], headers: Sequence[str], cells: Sequence[Sequence[str]],
               width: int | None = None, left: int = 2, drop_order: Sequence[str] = DROP_ORDER,
               whole_in: str = "--format csv") -> tuple[Table, list[str]]:
    """Rows of ``cells`` (the first cell of each is the layer's name) under ``headers``, indented
    by depth and laid out for ``width`` columns by this module's rules (``drop_order``: the
    columns given up first to last), and the notes under it, pointing to ``whole_in`` for what
    is left out; the first ``left`` columns are text, the others numbers."""
    width = width or terminal_width()
    layout = plan([layer.label for layer in layers], cells, [layer.depth for layer in layers], headers, width,
                  drop_order)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, title=title)
    for i, column_width in zip(layout.shown, layout.widths, strict=True):
        table.add_column(headers[i], width=column_width, no_wrap=True, justify="left" if i < left else "right")
    for layer, row, label in zip(layers, cells, layout.labels, strict=True):
        shown = [" " * (layout.indent * layer.depth) + label, *(row[i] for i in layout.shown[1:])]
        table.add_row(*shown, style="bold" if layer.depth == 0 else None)
    return table, notes(layout, width, whole_in)


class LayerView:
    """The layer table as a rich renderable: laid out for the width it is given."""

    def __init__(self, report: Report, depth: int | None = None) -> None:
        self.report, self.depth = report, depth

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, lines = layer_table(self.report, self.depth, options.max_width)
        yield table
        for line in lines:
            yield Text(line, style="dim")


def totals_table(report: Report) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in summary_lines(report):
        table.add_row(label, value, style="red" if label.startswith("UNCOUNTED") else None)
    return table


def renderables(report: Report, depth: int | None = None) -> Iterator[Any]:
    yield LayerView(report, depth)
    yield Text()
    yield totals_table(report)


def render_text(report: Report, depth: int | None = None, width: int | None = None) -> str:
    """The table and totals as plain text in ``width`` columns (the terminal's when None)."""
    console = Console(file=io.StringIO(), width=width or terminal_width(), color_system=None, force_terminal=False)
    for item in renderables(report, depth):
        console.print(item)
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    return "".join(line.rstrip() + "\n" for line in out.splitlines())
