"""The compare stage: several models side by side, each run as a request of its own through the
single-model stages, then their totals, ratios and shared stages (:mod:`nncost.analyses.compare`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from nncost.analyses.compare import build_comparison
from nncost.errors import BadRequest
from nncost.records.comparison import Comparison
from nncost.records.memory import MemoryReport
from nncost.records.report import Report
from nncost.records.result import Result
from nncost.request import Request
from nncost.stages.progress import Progress


def comparison(request: Request, say: Progress, run_one: Callable[[Request, Progress], Result]) -> Comparison:
    """The comparison ``request.compare`` asks for; ``run_one`` runs each model's own request (the
    request without its comparison, naming that model), a built :class:`Report` is used as it is."""
    wanted = request.compare
    assert wanted is not None
    labelled: list[tuple[str, Report, MemoryReport | None]] = []
    for label, item in zip(wanted.labels, wanted.models, strict=True):
        if isinstance(item, Report):
            labelled.append((label or item.model, item, None))
            continue
        if isinstance(item, nn.Module) and request.inputs.sizes is None:
            raise BadRequest(f"{label or type(item).__name__} is a module: give input_size=(C, H, W)")
        if not isinstance(item, (str, nn.Module)):
            raise BadRequest(f"compare takes model names, nn.Modules or Reports, got {type(item).__name__}")
        result = run_one(replace(request, model=item, name=label, compare=None), say)
        assert result.report is not None
        labelled.append((label or result.report.model, result.report, result.memory))
    step = request.step
    return build_comparison(labelled, train=step is not None, optimizer=step.optimizer if step else None,
                            allocator=step.allocator if step else None, stage_depth=wanted.stage_depth)
