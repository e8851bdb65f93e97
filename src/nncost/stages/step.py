"""The step stage: the memory of one training step or inference pass on one GPU, simulated, the
largest batch that fits, and one real step when asked."""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch

from nncost.analyses.fit import largest_batch, parse_bytes
from nncost.analyses.memory import analyse_step
from nncost.analyses.roofline import with_training_step
from nncost.capture.inputs import batch_of
from nncost.capture.placement import model_device
from nncost.errors import BadRequest, NncostWarning
from nncost.hardware.calibration import resolve_device
from nncost.hardware.catalogue import Allocator
from nncost.precision import resolve_precision
from nncost.records.memory import MemoryReport
from nncost.records.report import Report
from nncost.records.result import Result
from nncost.request import FIT_DEVICE, Request
from nncost.simulation.autocast import cpu_stands_in
from nncost.simulation.step import capture_step
from nncost.stages.progress import Counts, Progress
from nncost.stages.real_run import check_memory, real_run, weights_bytes
from nncost.stages.source import Source


def wanted(request: Request) -> bool:
    return request.step is not None and not request.step.parallel


def add(source: Source, result: Result) -> Result:
    """The result with the step's memory; the forward's report, where it has a roofline, with the
    training step's time on it."""
    memory = simulate_step(source.request, source, source.say)
    report = result.get(Report)
    if report is not None:
        result = result.with_section(with_training_step(report, memory))
    return result.with_section(memory)


def simulate_step(request: Request, source: Source, say: Progress) -> MemoryReport:
    """The memory of one step: simulated, the largest batch that fits, one real step."""
    step = request.step
    assert step is not None
    model = source.on(source.built_on())
    label = source.label

    def simulate(batch: int | None) -> MemoryReport:
        args, kwargs = source.inputs(str(model_device(model)), batch)
        trace = capture_step(model, args, kwargs, mode=step.mode, optimizer=step.optimizer, allocator=step.allocator,
                             dtype=request.dtype, checkpointing=step.checkpointing, precision=request.precision)
        return analyse_step(trace, model=label, allocator=step.allocator, optimizer=step.optimizer,
                            batch_size=batch_of((args, kwargs)) or batch or request.inputs.batch_size,
                            precision=request.precision, gpus=step.gpus, sharding=step.sharding)

    warn_cpu_autocast(request)
    with say.step(f"simulating the memory of {label}", slow=False):
        report = simulate(None)
    budget = memory_budget(step.fit, request.hardware)
    if budget is not None:
        max_batch = None
        if step.fit is not None:
            with say.bar(f"searching the largest batch of {label}", None, counts=Counts.SIMULATIONS) as advance:
                def peak_at(batch: int) -> int:
                    advance()
                    return simulate(batch).peak_per_gpu_bytes

                max_batch = largest_batch(peak_at, budget)
        report = replace(report, budget_bytes=budget, max_batch=max_batch)
    if step.measure:
        report = replace(report, measured_peak_bytes=_measure_step(request, source, report, say))
    return report


def warn_cpu_autocast(request: Request) -> None:
    """A mixed-precision step of a GPU traced on a machine without one runs CPU autocast's op
    lists: say so once, naming the device the user asked about."""
    step = request.step
    assert step is not None
    if not resolve_precision(request.precision, request.dtype).mixed or not cpu_stands_in(step.allocator):
        return
    device = request.hardware if request.hardware not in (None, "cpu") else "a CUDA GPU"
    warnings.warn(f"no GPU here: the {request.precision} step of {device} is traced with CPU autocast's op lists, "
                  "which keep softmax, layer/group norm, exp, pow, sum and cumsum in 16 bits where CUDA autocast "
                  "runs them in fp32 (docs/memory.md, 'Mixed precision')", NncostWarning, stacklevel=3)


def memory_budget(fit: int | str | None, hardware: str | None) -> int | None:
    """The memory budget of a step or of generation: ``fit`` as given (bytes, ``"24GiB"``), else
    the memory of ``hardware`` (:data:`FIT_DEVICE`, or no ``fit``: is the peak inside it?)."""
    if fit is not None and fit != FIT_DEVICE:
        return parse_bytes(fit) if isinstance(fit, str) else int(fit)
    if hardware is None:
        if fit == FIT_DEVICE:
            raise BadRequest("--fit without a budget takes the memory of --hardware NAME; give one, or a budget "
                             "such as --fit 24GiB")
        return None
    size = resolve_device(hardware, calibrate=False).memory_bytes
    if size is None and fit == FIT_DEVICE:
        raise BadRequest(f"the memory size of {hardware} is not known; give a budget such as --fit 24GiB")
    return size


def _measure_step(request: Request, source: Source, report: MemoryReport, say: Progress) -> int:
    from nncost.simulation.measure import measure_cpu_peak, measure_cuda_peak

    step = request.step
    assert step is not None
    on_cuda = step.allocator == Allocator.CUDA
    if on_cuda and not torch.cuda.is_available():
        raise BadRequest("measuring a step with CUDA allocator semantics runs a real step on a GPU, and none is "
                         "available here; the cpu allocator measures on the CPU")
    if not on_cuda:  # weights already on the CPU hold memory that is no longer available
        built = source.on(source.built_on())
        held = weights_bytes(built) if model_device(built).type == "cpu" else 0
        check_memory(f"one real step of {source.label}", "cpu", report.peak_bytes - held,
                      "the simulated step's peak, less the weights built already")
    model = source.on("cpu")
    if model_device(model).type == "meta":
        raise BadRequest(f"{source.label} has meta weights: a real step needs a model with weights")
    args, kwargs = source.inputs("cpu")
    measure = measure_cuda_peak if on_cuda else measure_cpu_peak
    with say.step(f"running one real step on {'CUDA' if on_cuda else 'the CPU'}"), \
            real_run(f"one real step of {source.label}"):
        return measure(model, args, kwargs, mode=report.mode, optimizer=step.optimizer, precision=request.precision,
                       checkpointing=step.checkpointing)
