"""The result of one request: an ordered tuple of typed, frozen sections.

Each stage of the pipeline adds one section (:mod:`nncost.pipeline`); each renderer takes the
whole result and shows the sections it knows, naming any it cannot show.  The sections:

- :class:`~nncost.records.report.Report`: the forward's layer report, its roofline and measured
  times (absent for generation, whose prefill is a phase of the generation section);
- :class:`~nncost.records.memory.MemoryReport`: the memory of one simulated step;
- :class:`~nncost.records.generation.GenerationReport`: prefill and decode as ``generate`` runs them;
- :class:`~nncost.records.parallel.ParallelStep`: a training step laid out over GPUs;
- :class:`~nncost.records.parallel.Plan`: a search of such layouts;
- :class:`~nncost.records.training_run.TrainingRun`: a whole run of simulated steps;
- :class:`~nncost.records.comparison.Comparison`: several models side by side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from nncost.records.comparison import Comparison
from nncost.records.generation import GenerationReport
from nncost.records.memory import MemoryReport
from nncost.records.parallel import ParallelStep, Plan
from nncost.records.report import Report
from nncost.records.training_run import TrainingRun

if TYPE_CHECKING:
    from collections.abc import Iterator

S = TypeVar("S")

# What ``nncost.compare`` returned before it returned a result: the comparison's attributes, read
# through the result for one release, each with a DeprecationWarning.
_COMPARISON_ATTRIBUTES = frozenset({"models", "ratios", "stages", "stage_depth", "train", "optimizer", "allocator",
                                    "reports", "memory_reports", "figures"})

@dataclass(frozen=True)
class Result:
    """What :func:`nncost.pipeline.run` returns: the sections the request asked for, at most one
    of each type.  ``result.memory`` and the other properties read one section (None where the
    request did not ask for it); :meth:`get` reads any, by its type."""

    sections: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        kinds = [type(section) for section in self.sections]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"a result holds one section of each type, got {[k.__name__ for k in kinds]}")

    @classmethod
    def of(cls, *sections: Any) -> Result:
        """A result of the ``sections`` that are not None."""
        return cls(tuple(section for section in sections if section is not None))

    def get(self, kind: type[S]) -> S | None:
        """The section of type ``kind``, or None."""
        return next((section for section in self.sections if type(section) is kind), None)

    def with_section(self, section: Any) -> Result:
        """A result with ``section`` in place of the one of its type, or added after the others."""
        if self.get(type(section)) is None:
            return Result((*self.sections, section))
        return Result(tuple(section if type(held) is type(section) else held for held in self.sections))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.sections)

    @property
    def report(self) -> Report | None:
        """The forward's layer report (None for generation: its prefill is ``generation.prefill``)."""
        return self.get(Report)

    @property
    def memory(self) -> MemoryReport | None:
        return self.get(MemoryReport)

    @property
    def generation(self) -> GenerationReport | None:
        return self.get(GenerationReport)

    @property
    def training_run(self) -> TrainingRun | None:
        return self.get(TrainingRun)

    @property
    def plan(self) -> Plan | None:
        return self.get(Plan)

    @property
    def parallel(self) -> ParallelStep | None:
        """The layout asked for, or the best a plan found."""
        step = self.get(ParallelStep)
        if step is None and self.plan is not None and self.plan.best:
            return self.plan.best[0]
        return step

    @property
    def comparison(self) -> Comparison | None:
        return self.get(Comparison)

    def __getattr__(self, name: str) -> Any:
        """The old spelling of a comparison's attributes (``result.models``), kept for one release."""
        comparison = self.get(Comparison) if name in _COMPARISON_ATTRIBUTES else None
        if comparison is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        warnings.warn(f"result.{name} is now result.comparison.{name}: nncost.compare returns a Result",
                      DeprecationWarning, stacklevel=2)
        return getattr(comparison, name)

    # -- renderers: each method calls exactly the render function of its name --------------
    def to_dict(self) -> dict[str, Any]:
        from nncost.render.formats import to_dict

        return to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        from nncost.render.formats import to_json

        return to_json(self, indent=indent)

    def to_csv(self) -> str:
        from nncost.render.formats import to_csv

        return to_csv(self)

    def to_markdown(self) -> str:
        from nncost.render.formats import to_markdown

        return to_markdown(self)

    def to_html(self, command: str | None = None) -> str:
        from nncost.render.html import html_page

        return html_page(self, command=command)

    def table(self, width: int | None = None) -> str:
        """The terminal view in ``width`` columns (the terminal's when None)."""
        from nncost.render.text import to_text

        return to_text(self, width=width)

    def __str__(self) -> str:
        from nncost.render.text import to_text

        return to_text(self)

    def _repr_html_(self) -> str:
        from nncost.render.html import to_html

        return to_html(self)
