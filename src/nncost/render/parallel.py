"""A training step spread over GPUs, and a plan's search: the lines and tables every view shows."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from nncost.render import units

if TYPE_CHECKING:
    from nncost.records.parallel import Layout, ParallelStep, Plan, Stage

STAGE_HEADER = ("Stage", "Blocks", "Params", "Weights+grads+optimizer", "Activations × in flight", "Working",
                "Peak")
PLAN_HEADER = ("#", "TP", "PP", "DP", "Micro-batches", "SP", "Checkpointing", "Sharding", "Peak per GPU",
               "Step time", "Tokens/s", "Bubble")
# The columns a narrow terminal gives up, first to last: a stage's peak, and a layout's degrees,
# memory and speed, stay
STAGE_DROP_ORDER = ("Working", "Activations × in flight", "Weights+grads+optimizer", "Params", "Blocks")
PLAN_DROP_ORDER = ("Bubble", "Step time", "SP", "Micro-batches", "Checkpointing", "Sharding")


def _seconds(value: float | None) -> str:
    return units.seconds(value) if value is not None else units.NONE


def layout_text(layout: Layout) -> str:
    """``TP 8 × PP 8 × DP 1 = 64 GPUs, 16 micro-batches of 1 (global batch 16)``."""
    return (f"TP {layout.tensor_parallel} × PP {layout.pipeline_parallel} × DP {layout.data_parallel} = "
            f"{layout.gpus:,} GPUs, {layout.micro_batches} micro-batch{'es' if layout.micro_batches > 1 else ''} "
            f"of {layout.micro_batch_size} (global batch {layout.global_batch:,})")


def layout_options(layout: Layout) -> str:
    """What else a layout turns on: ``sequence parallel, checkpointing, zero1`` (empty: none)."""
    options = [name for name, on in (("sequence parallel", layout.sequence_parallel),
                                     ("checkpointing", layout.checkpointing)) if on]
    return ", ".join([*options, *([layout.sharding] if layout.sharding != "none" else [])])


def parallel_lines(step: ParallelStep) -> list[tuple[str, str]]:
    """The layout's figures as (label, value) pairs: the memory of its worst stage, the time."""
    layout = step.layout
    lines = [
        ("Layout", layout_text(layout)),
        *([("With", layout_options(layout))] if layout_options(layout) else []),
        ("Peak per GPU", f"{units.nbytes(step.peak_bytes)} on stage {step.peak_stage} (under 1F1B stage i holds "
                         "min(P − i, M) micro-batches' activations)"),
    ]
    if step.budget_bytes is not None:
        verdict = "fits" if step.fits else "does NOT fit"
        lines.append(("Fits", f"{verdict}: the worst stage against {units.nbytes(step.budget_bytes)}"))
    lines.append(("FLOPs a step", f"{step.flops:.3g} on all GPUs; {units.count(step.flops_per_gpu)} on the busiest"))
    if step.step_seconds is not None:
        lines.append(("Step time", f"{units.seconds(step.step_seconds)} on {step.hardware}"
                                   + (f": {units.count(step.tokens_per_second)} tokens/s"
                                      if step.tokens_per_second is not None else "")))
        parts = [("compute", step.compute_seconds, f"at {units.percent(step.efficiency or 0)} of "
                                                   f"{units.rate(step.peak_flops or 0)}"),
                 ("all-reduces", step.tensor_parallel_seconds, f"tensor parallel, {step.tensor_parallel_link}"),
                 ("sends", step.pipeline_seconds, f"between stages, {step.pipeline_link}"),
                 ("bubble", step.bubble_seconds,
                  f"(P − 1) ÷ M = {step.bubble_fraction:.3g} of the ideal time for equal stages"),
                 ("gradients", step.data_parallel_seconds, f"data-parallel reduction, {step.data_parallel_link}"),
                 ("optimizer", step.optimizer_seconds, "the larger of its FLOPs and its bytes")]
        for label, seconds, note in parts:
            if seconds:
                lines.append((f"  {label}", f"{units.seconds(seconds)}" + (f" ({note})" if note else "")))
    if step.uncounted:
        ops = ", ".join(f"{op}×{n}" for op, n in step.uncounted.items())
        lines.append(("UNCOUNTED ops in the step", f"{ops} (no cost rule: not in the FLOPs or the time)"))
    return lines


def stage_cells(stage: Stage) -> tuple[str, ...]:
    """One stage's row under :data:`STAGE_HEADER`."""
    blocks = f"{stage.blocks[0]}–{stage.blocks[1]}" if stage.blocks is not None else units.NONE
    ends = [name for name, on in (("embedding", stage.embedding), ("output", stage.output)) if on]
    static = stage.parameter_bytes + stage.gradient_bytes + stage.optimizer_state_bytes + stage.communication_bytes
    held = f"{units.nbytes(stage.activation_bytes)} × {stage.micro_batches_in_flight}"
    if stage.recompute_bytes:
        held += f" + {units.nbytes(stage.recompute_bytes)} rebuilt"
    return (str(stage.index), blocks + (f" + {', '.join(ends)}" if ends else ""), units.count(stage.params),
            units.nbytes(static), held, units.nbytes(stage.working_bytes), units.nbytes(stage.peak_bytes))


def plan_cells(rank: int, step: ParallelStep) -> tuple[str, ...]:
    """One layout's row under :data:`PLAN_HEADER`."""
    layout = step.layout
    bubble = step.bubble_seconds / step.step_seconds if step.bubble_seconds and step.step_seconds else 0.0
    return (str(rank), str(layout.tensor_parallel), str(layout.pipeline_parallel), str(layout.data_parallel),
            f"{layout.micro_batches} × {layout.micro_batch_size}", "yes" if layout.sequence_parallel else "no",
            "yes" if layout.checkpointing else "no", layout.sharding, units.nbytes(step.peak_bytes),
            _seconds(step.step_seconds),
            units.count(step.tokens_per_second) if step.tokens_per_second is not None else units.NONE,
            units.percent(bubble))


def plan_lines(plan: Plan) -> list[str]:
    """What was searched, and why the layouts left out were."""
    lines = [f"{plan.considered:,} layouts of {plan.gpus:,} × {plan.hardware} "
             f"({units.nbytes(plan.budget_bytes)} each)"
             + (f" for a global batch of {plan.global_batch:,}" if plan.global_batch is not None else "")
             + f": {plan.fitting:,} fit; fastest per token first"]
    for rejected in plan.rejected:
        text = f"{rejected.count:,} {rejected.reason}"
        if rejected.least_bytes is not None and rejected.most_bytes is not None:
            text += f", by {units.nbytes(rejected.least_bytes)} to {units.nbytes(rejected.most_bytes)}"
        lines.append(text)
    return lines


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], numeric_from: int, width: int,
           drop_order: tuple[str, ...], indent: str = "  ") -> list[str]:
    """The rows under the header, indented, in ``width`` columns: whole cells, the columns of
    ``drop_order`` left out first to last while the table is wider, and lines naming those."""
    shown = list(range(len(header)))
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def fits() -> bool:
        return len(indent) + sum(widths[i] for i in shown) + 2 * (len(shown) - 1) <= width

    dropped = []
    for name in drop_order:
        if fits():
            break
        if name in header:
            shown.remove(header.index(name))
            dropped.append(name)

    def line(cells: tuple[str, ...]) -> str:
        return indent + "  ".join(cells[i].rjust(widths[i]) if i >= numeric_from else cells[i].ljust(widths[i])
                                  for i in shown).rstrip()

    lines = [line(header), indent + "  ".join("-" * widths[i] for i in shown), *(line(row) for row in rows)]
    if dropped:
        note = f"Columns left out to fit {width}: {', '.join(dropped)} (all in --format json)"
        lines += textwrap.wrap(note, width=max(width, 20), initial_indent=indent, subsequent_indent=indent,
                               break_on_hyphens=False)
    return lines


def render_parallel(step: ParallelStep, width: int | None = None) -> str:
    """The layout's summary block, then one row per pipeline stage, in ``width`` columns (the
    terminal's when None)."""
    out = [f"training over {step.layout.gpus:,} GPUs (each figure one GPU's)"]
    out += units.aligned(parallel_lines(step), "  ")
    out.append("")
    out += _table(STAGE_HEADER, [stage_cells(s) for s in step.stages], 2, width or units.terminal_width(),
                  STAGE_DROP_ORDER)
    return "\n".join(out) + "\n"


def render_plan(plan: Plan, width: int | None = None) -> str:
    """The fastest layouts that fit, then the count of the others by reason, in ``width``
    columns (the terminal's when None)."""
    out = ["plan", *(f"  {line}" for line in plan_lines(plan)), ""]
    if plan.best:
        rows = [plan_cells(rank, step) for rank, step in enumerate(plan.best, start=1)]
        out += _table(PLAN_HEADER, rows, 8, width or units.terminal_width(), PLAN_DROP_ORDER)
    else:
        out.append("  no layout fits")
    return "\n".join(out) + "\n"


def parallel_markdown(step: ParallelStep) -> list[str]:
    """The layout's lines and the stage table as Markdown."""
    rows = [f"- **{label.strip()}**: {value}" for label, value in parallel_lines(step)]
    rows += ["", "| " + " | ".join(STAGE_HEADER) + " |", "|---|---|" + "---:|" * (len(STAGE_HEADER) - 2)]
    rows += ["| " + " | ".join(stage_cells(stage)) + " |" for stage in step.stages]
    return rows


def plan_markdown(plan: Plan) -> list[str]:
    rows = [f"- {line}" for line in plan_lines(plan)]
    if plan.best:
        rows += ["", "| " + " | ".join(PLAN_HEADER) + " |", "|" + "---|" * 8 + "---:|" * (len(PLAN_HEADER) - 8)]
        rows += ["| " + " | ".join(plan_cells(rank, step)) + " |" for rank, step in enumerate(plan.best, start=1)]
    return rows
