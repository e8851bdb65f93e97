"""The result of one request: the forward's report and the memory of a step, where asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nncost.records.generation import GenerationReport
from nncost.records.memory import MemoryReport
from nncost.records.parallel import ParallelStep, Plan
from nncost.records.report import Report
from nncost.records.training_run import TrainingRun


@dataclass(frozen=True)
class Result:
    """What :func:`nncost.pipeline.run` returns: ``report`` (the layer table, totals, roofline
    and measured times; for generation, the prefill's), ``memory`` (the simulated step) and
    ``generation`` (prefill and decode) and ``training_run`` (the simulated step repeated over
    a run's tokens), ``parallel`` (a training step spread over GPUs: each pipeline stage's memory
    and the step's time) and ``plan`` (a search of such layouts, whose best is ``parallel``),
    each ``None`` when not asked for.

    The document (JSON, CSV, Markdown) of a result is the report's with the memory section
    added: the command line prints exactly these.
    """

    report: Report | None
    memory: MemoryReport | None
    generation: GenerationReport | None = None
    training_run: TrainingRun | None = None
    parallel: ParallelStep | None = None
    plan: Plan | None = None

    # -- renderers: each method calls exactly the render function of its name --------------
    def to_dict(self) -> dict[str, Any]:
        from nncost.render.formats import to_dict

        return to_dict(self.report, self.memory, self.generation, self.training_run, self.parallel, self.plan)

    def to_json(self, indent: int | None = 2) -> str:
        from nncost.render.formats import to_json

        return to_json(self.report, self.memory, self.generation, self.training_run, self.parallel, self.plan,
                       indent=indent)

    def to_csv(self) -> str:
        from nncost.render.formats import to_csv

        return to_csv(self.report, self.memory, self.generation, self.training_run, self.parallel, self.plan)

    def to_markdown(self) -> str:
        from nncost.render.formats import to_markdown

        return to_markdown(self.report, self.memory, self.generation, self.training_run, self.parallel, self.plan)

    def __str__(self) -> str:
        from nncost.render.text import to_text

        return to_text(self.report, self.memory, self.generation, self.training_run, self.parallel, self.plan)
