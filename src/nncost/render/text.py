"""The terminal view of a whole result: the report, the memory of a step, generation."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from nncost.render import units
from nncost.render.generation import DROP_ORDER, generation_lines, rows
from nncost.render.memory import render_memory
from nncost.render.parallel import render_parallel, render_plan
from nncost.render.table import render_text, tree_table
from nncost.render.training_run import training_run_lines
from nncost.render.units import terminal_width

if TYPE_CHECKING:
    from nncost.records.generation import GenerationReport
    from nncost.records.result import Result
    from nncost.records.training_run import TrainingRun


def to_text(result: Result) -> str:
    """The layer table and totals, then the memory section (or a plan's table and the layout's
    stages) and a training run's summary; for generation, prefill and decode side by side and the
    generation's figures."""
    report, memory, generation = result.report, result.memory, result.generation
    training_run, parallel, plan = result.training_run, result.parallel, result.plan
    if generation is not None:
        return render_generation(generation)
    parts = [render_text(report)] if report is not None else []
    if memory is not None:
        parts.append(render_memory(memory))
    if plan is not None:
        parts.append(render_plan(plan))
    if parallel is not None:
        parts.append(render_parallel(parallel))
    if training_run is not None:
        parts.append(render_training_run(training_run))
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
