"""A training run's figures as labelled lines, shared by the terminal and Markdown views."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncost.render import units

if TYPE_CHECKING:
    from nncost.records.training_run import TrainingRun


def training_run_lines(run: TrainingRun) -> list[tuple[str, str]]:
    """(label, value) pairs: tokens and steps, the work, the time on the run's GPUs, the cost."""
    lines = [
        ("tokens", f"{units.count(run.tokens)} in {run.steps:,} steps of {run.tokens_per_step:,} tokens"),
        ("FLOPs", f"{run.flops:.3g}, {units.count(run.flops_per_token)} a token (forward, backward, optimizer)"),
        ("rate", f"{units.percent(run.efficiency)} of {units.rate(run.peak_flops)} a GPU: {run.efficiency_source}"),
        ("time", f"{units.seconds(run.seconds)} on {run.gpus:,} × {run.hardware}"
                 + (f", {run.layout}" if run.layout else "")),
        *([("step", f"{units.seconds(run.step_seconds)}: {units.seconds(run.bubble_seconds or 0)} of it the "
                    f"pipeline's bubble, {units.seconds(run.communication_seconds or 0)} communication")]
          if run.layout and run.step_seconds is not None else []),
        ("GPU-hours", _amount(run.gpu_hours)),
    ]
    if run.cost is not None:
        lines.append(("cost", f"{_amount(run.cost)} at {run.price_per_gpu_hour:g} a GPU-hour"))
    if run.fits is False and run.step_peak_bytes is not None and run.budget_bytes is not None:
        lines.insert(0, ("warning", f"the step does not fit: {units.nbytes(run.step_peak_bytes)} a GPU against "
                                    f"{units.nbytes(run.budget_bytes)} of {run.hardware}; this run could not run "
                                    "as laid out"))
    return lines


def _amount(x: float) -> str:
    """GPU-hours and money: whole units from 100 up, three significant figures below."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
