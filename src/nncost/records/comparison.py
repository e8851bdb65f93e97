"""A comparison of several models: plain data, built by :mod:`nncost.analyses.compare`.

Figures are in base units (counts, bytes), as in the reports they come from; ratios are plain
floats (a model's figure over the first model's), ``None`` where the first model's figure is 0
or a figure is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nncost.records.report import Report, Totals

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport

COMPARISON_SCHEMA = "nncost.comparison/1"

# The figures compared side by side, in the order they are shown.
FIGURES = ("params", "macs", "flops", "param_bytes", "peak_activation_bytes", "train_peak_bytes")
STAGE_FIGURES = ("params", "macs", "flops")


@dataclass
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


@dataclass
class Stage:
    """Layers of the same name (at the comparison's stage depth) in two or more models.

    Each list has one item per model, ``None`` where the model has no such layer.  A layer
    called several times adds up its calls' MACs and FLOPs; its params are counted once.
    """

    name: str
    types: list[str | None]
    params: list[int | None]
    macs: list[int | None]
    flops: list[int | None]
    ratios: dict[str, list[float | None]]  # per figure, each model's over the first model's


@dataclass
class Comparison:
    models: list[Entry]
    ratios: list[dict[str, float | None]]  # per model, per figure in FIGURES: over the first model's
    stages: list[Stage]
    stage_depth: int
    train: bool
    optimizer: str | None  # of the simulated training step
    allocator: str | None  # allocator semantics of the training peak
    reports: list[Report] = field(default_factory=list, repr=False)
    memory_reports: list[MemoryReport | None] = field(default_factory=list, repr=False)
    schema: str = COMPARISON_SCHEMA

    @property
    def figures(self) -> tuple[str, ...]:
        """The figures this comparison holds: the training peak only when a step was simulated."""
        return FIGURES if self.train else FIGURES[:-1]

    # -- renderers: each a thin function of this data --------------------------------------
    def to_dict(self) -> dict[str, Any]:
        from nncost.render.compare import to_dict

        return to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        from nncost.render.compare import to_json

        return to_json(self, indent=indent)

    def to_csv(self) -> str:
        from nncost.render.compare import to_csv

        return to_csv(self)

    def to_markdown(self) -> str:
        from nncost.render.compare import to_markdown

        return to_markdown(self)

    def table(self, width: int | None = None) -> str:
        from nncost.render.compare import render_text

        return render_text(self, width=width)

    def __str__(self) -> str:
        return self.table()

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from nncost.render.compare import renderables

        yield from renderables(self, options.max_width)
