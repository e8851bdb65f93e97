"""The terminal view of a whole result: each section in turn, through one table from a section's
name to its view (:mod:`nncost.render.sections`); a section with no view is named by one line."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from nncost.render import compare, units
from nncost.render.generation import DROP_ORDER, generation_lines, rows
from nncost.render.memory import render_memory
from nncost.render.parallel import render_parallel, render_plan
from nncost.render.sections import name, not_shown, sections
from nncost.render.table import render_text, tree_table
from nncost.render.training_run import training_run_lines
from nncost.render.units import terminal_width

if TYPE_CHECKING:
    from nncost.records.generation import GenerationReport
    from nncost.records.parallel import Plan
    from nncost.records.report import Report
    from nncost.records.result import Result
    from nncost.records.training_run import TrainingRun


def _plan(plan: Plan, width: int | None) -> str:
    """The plan's table of layouts, then the best one's stages."""
    parts = [render_plan(plan, width=width)]
    if plan.best:
        parts.append(render_parallel(plan.best[0], width=width))
    return "\n".join(parts)


# Section name -> its view in ``width`` columns (None: the terminal's).
_TEXT: dict[str, Callable[[Any, int | None], str]] = {
    "report": lambda report, width: render_text(report, width=width),
    "memory": lambda memory, width: render_memory(memory),
    "generation": lambda generation, width: render_generation(generation, width=width),
    "plan": _plan,
    "parallel": lambda step, width: render_parallel(step, width=width),
    "training_run": lambda run, width: render_training_run(run),
    "comparison": lambda comparison, width: compare.render_text(comparison, width=width),
}


def to_text(result: Result | Report, width: int | None = None) -> str:
    """Each section's view, in the result's order: the layer table and totals, the memory of a
    step, a plan's table of layouts and a layout's stages, a training run's summary, a
    comparison's tables; for generation, prefill and decode side by side and the generation's
    figures.  A section with no view here is one line that names it."""
    parts = []
    for section in sections(result):
        known = _TEXT.get(name(section))
        parts.append(known(section, width) if known else not_shown(section, "as text") + "\n")
    return "\n".join(parts)


def render_training_run(run: TrainingRun) -> str:
    """The run's summary block: a title, then its labelled figures."""
    return "training run\n" + "".join(line + "\n" for line in units.aligned(training_run_lines(run), "  "))


def render_generation(generation: GenerationReport, width: int | None = None) -> str:
    """Prefill and decode side by side, layer by layer, then the generation's figures."""
    width = width or terminal_width()
    header, shown, cells = rows(generation, generation.prefill.depth)
    title = (f"{generation.prefill.model} · {generation.batch_size} × ({generation.prompt_tokens:,} prompt + "
             f"{generation.new_tokens:,} new tokens)")
    # the CSV holds the prefill's layers only; the JSON both phases'
    table, notes = tree_table(title, shown, header, cells, width, drop_order=DROP_ORDER, whole_in="--format json")
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(table)
    for line in notes:
        console.print(Text(line))
    console.print()
    for line in units.aligned(generation_lines(generation)):
        console.print(Text(line))
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    return "".join(line.rstrip() + "\n" for line in out.splitlines())
