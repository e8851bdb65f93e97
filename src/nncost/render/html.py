"""A notebook view: the same table and totals as the terminal, as HTML."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from nncost.render.formats import MARKDOWN_HEADER, layer_cells, summary_lines, visible

if TYPE_CHECKING:
    from nncost.records.report import Report


def to_html(report: Report, depth: int | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in MARKDOWN_HEADER)
    rows = []
    for layer in visible(report, depth):
        cells = list(layer_cells(layer))
        first = f'<td style="padding-left:{0.3 + 1.2 * layer.depth:.1f}em;text-align:left">{escape(cells[0])}</td>'
        rest = "".join(
            f'<td style="text-align:{"left" if i < 2 else "right"}">{escape(c)}</td>' for i, c in enumerate(cells[1:])
        )
        rows.append(f"<tr>{first}{rest}</tr>")
    totals = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td>{escape(v)}</td></tr>"
                     for k, v in summary_lines(report))
    return (
        f"<div class='nncost'><b>{escape(report.model)}</b> · batch {report.batch_size}"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<table>{totals}</table></div>"
    )
