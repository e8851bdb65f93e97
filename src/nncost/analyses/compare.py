"""Figures derived from several reports: ratios to the first model, and shared stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nncost.records.comparison import FIGURES, STAGE_FIGURES, Comparison, Entry, Stage

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport
    from nncost.records.report import Report


def ratio(value: int | None, base: int | None) -> float | None:
    """``value / base``; ``None`` when either is missing or the base is 0 (no meaningful ratio)."""
    if value is None or base is None or base == 0:
        return None
    return value / base


def entry(label: str, report: Report, memory: MemoryReport | None) -> Entry:
    return Entry(
        model=label,
        batch_size=report.batch_size,
        execution=report.execution,
        totals=report.totals,
        train_peak_bytes=memory.peak_bytes if memory is not None and memory.mode == "train" else None,
        uncounted={u.op: u.calls for u in report.uncounted},
    )


@dataclass
class _Sums:
    type: str
    params: int = 0
    macs: int = 0
    flops: int = 0


def _stage_sums(report: Report, depth: int) -> dict[str, _Sums]:
    """Layer name -> its type, params, MACs and FLOPs, for the layers at ``depth``, calls added up."""
    sums: dict[str, _Sums] = {}
    for layer in report.layers:
        if layer.depth != depth:
            continue
        total = sums.setdefault(layer.name, _Sums(layer.type))
        total.params = max(total.params, layer.params)  # the same module: the same parameters
        total.macs += layer.macs
        total.flops += layer.flops
    return sums


def stages(reports: Sequence[Report], depth: int = 1) -> tuple[Stage, ...]:
    """The layers at ``depth`` whose name occurs in at least two of the reports, in first-seen order."""
    per_model = [_stage_sums(report, depth) for report in reports]
    seen: dict[str, int] = {}
    for sums in per_model:
        for name in sums:
            seen[name] = seen.get(name, 0) + 1
    result = []
    for name in (name for name, count in seen.items() if count >= 2):
        rows = [sums.get(name) for sums in per_model]
        values: dict[str, tuple[int | None, ...]] = {
            figure: tuple(getattr(row, figure) if row is not None else None for row in rows) for figure in STAGE_FIGURES
        }
        result.append(Stage(
            name=name,
            types=tuple(row.type if row is not None else None for row in rows),
            params=values["params"],
            macs=values["macs"],
            flops=values["flops"],
            ratios={figure: tuple(ratio(v, values[figure][0]) for v in values[figure]) for figure in STAGE_FIGURES},
        ))
    return tuple(result)


def build_comparison(
    labelled: Sequence[tuple[str, Report, MemoryReport | None]],
    *,
    train: bool,
    optimizer: str | None = None,
    allocator: str | None = None,
    stage_depth: int = 1,
) -> Comparison:
    """Side-by-side totals, each model's ratios to the first, and the stages they share."""
    entries = tuple(entry(label, report, memory) for label, report, memory in labelled)
    base = entries[0]
    figures = FIGURES if train else FIGURES[:-1]
    return Comparison(
        models=entries,
        ratios=tuple({figure: ratio(e.figure(figure), base.figure(figure)) for figure in figures} for e in entries),
        stages=stages([report for _, report, _ in labelled], stage_depth),
        stage_depth=stage_depth,
        train=train,
        optimizer=optimizer if train else None,
        allocator=allocator if train else None,
        reports=tuple(report for _, report, _ in labelled),
        memory_reports=tuple(memory for _, _, memory in labelled),
    )
