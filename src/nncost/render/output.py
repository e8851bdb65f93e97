"""What a command prints and writes, for every command: one :class:`Output` and :func:`render`.

The front ends (``nncost MODEL``, ``nncost compare``, the API) parse what the user asked into an
:class:`Output`, call :func:`check` before the run (so a typo in a path or a combination no view
takes costs nothing), then :func:`render` the result: it writes the HTML page and the PNG when
asked, and returns the text to print, in one format for every kind of request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nncost.errors import BadRequest
from nncost.render.files import writable
from nncost.request import PLOT_NEEDS_A_STEP

if TYPE_CHECKING:
    from nncost.records.report import Report
    from nncost.records.result import Result

FORMATS = ("table", "text", "json", "csv", "markdown")  # table and text are the same view
EXPLAIN_FORMATS = ("table", "text", "json")


@dataclass(frozen=True)
class Output:
    """How a result is shown: the printed ``format``; ``explain``, one layer's formulas instead of
    the whole document (text or JSON); ``html``, a page of every section written to that path;
    ``plot``, the memory timeline of a simulated step drawn into that PNG; ``command``, the
    command line the HTML page quotes; ``depth``, the layer rows shown and the tree's folding."""

    format: str = "table"
    explain: str | None = None
    html: str | Path | None = None
    plot: str | Path | None = None
    command: str | None = None
    depth: int | None = None


def check(output: Output) -> None:
    """Refuse, in one sentence, what no result could satisfy, before the run: an unknown format,
    ``--explain`` with CSV or Markdown, a path the page or the plot cannot be written to."""
    if output.format not in FORMATS:
        raise BadRequest(f"unknown format {output.format!r}: one of {', '.join(FORMATS)}")
    if output.explain is not None and output.format not in EXPLAIN_FORMATS:
        raise BadRequest(f"--explain shows one layer's formulas as text (the default) or JSON, not {output.format}")
    if output.html is not None:
        writable(output.html, "the HTML report")
    if output.plot is not None:
        writable(output.plot, "the memory plot")


def render(result: Result, output: Output) -> str:
    """Write the files ``output`` asks for and return the text to print."""
    check(output)
    if output.plot is not None:
        _plot(result, output.plot)
    if output.html is not None:
        from nncost.render.html import write_html

        write_html(output.html, result, command=output.command, open_depth=output.depth)
    if output.explain is not None:
        return _explain(result, output.explain, output.format)
    if output.format == "json":
        from nncost.render.formats import to_json

        return to_json(result)
    if output.format == "csv":
        from nncost.render.formats import to_csv

        return to_csv(result)
    if output.format == "markdown":
        from nncost.render.formats import to_markdown

        return to_markdown(result, depth=output.depth)
    from nncost.render.text import to_text

    return to_text(result)


def _plot(result: Result, path: str | Path) -> None:
    """The memory timeline of the one step simulated on one GPU: none for generation or a layout."""
    if result.memory is None or result.generation is not None or result.parallel is not None:
        raise BadRequest(PLOT_NEEDS_A_STEP)
    from nncost.render.plot import plot_memory

    plot_memory(result.memory, str(path))


def _explain(result: Result, layer: str, format: str) -> str:
    """One layer of the forward report explained, as text or as JSON."""
    from nncost.render.explain import explain, explanation

    report = forward_report(result)
    if report is None:
        raise BadRequest("--explain shows a layer of a forward's report; this request has none")
    if format == "json":
        return json.dumps(explanation(report.layer(layer)), indent=2, ensure_ascii=False)
    return explain(report.layer(layer))


def forward_report(result: Result) -> Report | None:
    """The forward's layer report: the report, or for generation its prefill."""
    if result.report is not None:
        return result.report
    return result.generation.prefill if result.generation is not None else None
