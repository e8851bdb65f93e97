"""The training-run stage: the request's simulated step, or its layout's, repeated over a run's tokens."""

from __future__ import annotations

from nncost.analyses.training_run import layout_run, training_run
from nncost.records.memory import MemoryReport
from nncost.records.parallel import ParallelStep
from nncost.records.report import Report
from nncost.records.result import Result
from nncost.records.training_run import TrainingRun
from nncost.request import Request
from nncost.stages.source import Source


def wanted(request: Request) -> bool:
    return request.run is not None


def add(source: Source, result: Result) -> Result:
    """The result with the whole run, where its step has a time."""
    run = whole_run(source.request, result.report, result.memory, result.parallel)
    return result.with_section(run) if run is not None else result


def whole_run(request: Request, report: Report | None, memory: MemoryReport | None,
                  parallel: ParallelStep | None = None) -> TrainingRun | None:
    """The request's whole run: its simulated step, or its layout's, repeated over the run's tokens."""
    if request.run is None:
        return None
    wanted = request.run
    if parallel is not None:
        return layout_run(parallel, tokens=wanted.tokens, price_per_gpu_hour=wanted.price_per_gpu_hour,
                          given_mfu=wanted.mfu is not None)
    if report is None or report.roofline is None or memory is None:
        return None
    assert request.inputs.seq is not None  # the request checks it
    return training_run(memory, report.roofline, tokens=wanted.tokens, seq=request.inputs.seq,
                        price_per_gpu_hour=wanted.price_per_gpu_hour, mfu=wanted.mfu)
