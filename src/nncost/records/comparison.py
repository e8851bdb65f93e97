"""A comparison of several models: plain data, built by :mod:`nncost.analyses.compare`.

Figures are in base units (counts, bytes), as in the reports they come from; ratios are plain
floats (a model's figure over the first model's), ``None`` where the first model's figure is 0
or a figure is missing.  A comparison is one section of a :class:`~nncost.records.result.Result`;
its JSON, CSV and Markdown are the result's (:mod:`nncost.render.formats`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from nncost.records.report import Report, Totals

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport

# The figures compared side by side, in the order they are shown.
FIGURES = ("params", "macs", "flops", "param_bytes", "peak_activation_bytes", "train_peak_bytes")
STAGE_FIGURES = ("params", "macs", "flops")


@dataclass(frozen=True)
class Entry:
    """One model's column: its totals, and the peak of a training step when one was simulated."""

    model: str
    batch_size: int
    execution: str
    totals: Totals
    train_peak_bytes: int | None
    uncounted: dict[str, int]

    def figure(self, name: str) -> int | None:
        if name == "train_peak_bytes":
            return self.train_peak_bytes
        value = getattr(self.totals, name)
        return int(value)


@dataclass(frozen=True)
class Stage:
    """Layers of the same name (at the comparison's stage depth) in two or more models.

    Each tuple has one item per model, ``None`` where the model has no such layer.  A layer
    called several times adds up its calls' MACs and FLOPs; its params are counted once.
    """

    name: str
    types: tuple[str | None, ...]
    params: tuple[int | None, ...]
    macs: tuple[int | None, ...]
    flops: tuple[int | None, ...]
    ratios: dict[str, tuple[float | None, ...]]  # per figure, each model's over the first model's


@dataclass(frozen=True)
class Comparison:
    SECTION: ClassVar[str] = "comparison"  # its key in the document

    models: tuple[Entry, ...]
    ratios: tuple[dict[str, float | None], ...]  # per model, per figure in FIGURES: over the first model's
    stages: tuple[Stage, ...]
    stage_depth: int
    train: bool
    optimizer: str | None  # of the simulated training step
    allocator: str | None  # allocator semantics of the training peak
    reports: tuple[Report, ...] = field(default=(), repr=False)
    memory_reports: tuple[MemoryReport | None, ...] = field(default=(), repr=False)

    @property
    def figures(self) -> tuple[str, ...]:
        """The figures this comparison holds: the training peak only when a step was simulated."""
        return FIGURES if self.train else FIGURES[:-1]

    def __str__(self) -> str:
        from nncost.render.compare import render_text

        return render_text(self)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from nncost.render.compare import renderables

        yield from renderables(self, options.max_width)
