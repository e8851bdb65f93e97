"""The forward stage: the report of one forward pass, its roofline time on the request's hardware,
and the measured latency of real passes."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from nncost.analyses.build import build_report
from nncost.analyses.quantize import quantized
from nncost.analyses.reads import bytes_read
from nncost.analyses.roofline import estimate, make_roofline, run_dtype
from nncost.analyses.timing import with_times
from nncost.capture.placement import model_device, quantized_weights
from nncost.capture.run import capture
from nncost.errors import BadRequest, CalibrationError, NeedsWeights
from nncost.hardware.calibration import resolve_device
from nncost.hardware.catalogue import Allocator, Device, match_cuda_name
from nncost.precision import resolve_precision
from nncost.records.report import Report
from nncost.records.result import Result
from nncost.records.trace import TorchFlags
from nncost.request import WARMUP, Request
from nncost.stages.progress import Counts, Progress
from nncost.stages.real_run import real_run
from nncost.stages.source import Source, asked_weights, param_dtype, weights_dtype


def wanted(request: Request) -> bool:
    return request.report and request.generation is None


def add(source: Source, result: Result) -> Result:
    """The result with the forward's report."""
    request = source.request
    report = forward(request, source, source.say)
    if source.dtype_source is not None:
        report = replace(report, dtype=source.dtype_name, dtype_source=source.dtype_source)
    return result.with_section(replace(report, depth=request.depth) if request.depth is not None else report)


def timed(report: Report, request: Request, say: Progress) -> Report:
    """A report built already, timed on the request's hardware (in its dtype, or that of most of
    its parameters)."""
    if request.hardware is None:
        raise BadRequest("timing a report needs a device: give hardware (e.g. h100-sxm)")
    return estimated(report, request, request.hardware, request.dtype, say)


def forward(request: Request, source: Source, say: Progress) -> Report:
    """The report of one forward pass, with its time estimates and measurements."""
    report = _capture_forward(request, source, say)
    measure_on = _measure_device(request) if request.measure_time else None
    hardware = request.hardware
    if measure_on is not None and hardware is None:
        hardware = _local_hardware(measure_on)
    if hardware is not None:
        dtype = param_dtype(request)
        model = source.on(source.built_on())
        if dtype is None and quantized_weights(model):  # the dtype a quantized weight computes in, not its codes'
            dtype = getattr(torch, weights_dtype(model, None))
        report = estimated(report, request, hardware, dtype, say)
    if measure_on is not None:
        report = _measured(request, source, report, measure_on, say)
    return report


def estimated(report: Report, request: Request, hardware: str, dtype: torch.dtype | None, say: Progress) -> Report:
    """``report`` with its roofline on ``hardware``, or, where that device's time cannot be had,
    with why (``time_unavailable``)."""
    device, unavailable = time_device(hardware, say)
    if device is None:
        return replace(report, time_unavailable=unavailable)
    return with_roofline(report, device, request.flags, dtype=dtype, precision=request.precision,
                         efficiency=request.efficiency)


def time_device(hardware: str, say: Progress) -> tuple[Device | None, str | None]:
    """The device of the time estimates, or None and why: a ``cpu`` that cannot be calibrated
    plausibly costs the estimates, said here, never the rest of the run."""
    try:
        return resolve_device(hardware, say=say), None
    except CalibrationError as exc:
        say(f"no time estimates: {exc}")
        return None, str(exc)


def _capture_forward(request: Request, source: Source, say: Progress) -> Report:
    dtype = param_dtype(request)
    if source.given is not None:
        return _captured(request, source, source.given, str(model_device(source.given)), dtype, say)
    build_on = request.device if request.device != "meta" else ("cpu" if request.measure_time else "meta")
    try:
        return _captured(request, source, source.on(build_on), build_on, dtype, say)
    except NeedsWeights as exc:
        if build_on != "meta":
            raise
        say(f"{exc}".split(". ")[0] + "; building the model with weights on CPU")
        return _captured(request, source, source.on("cpu"), "cpu", dtype, say)


def _captured(request: Request, source: Source, model: nn.Module, inputs_on: str, dtype: torch.dtype | None,
              say: Progress) -> Report:
    """The report of the forward at the request's batch, with the request's weight format, and the
    storages it creates at the next batch, which give the bytes a sample adds
    (``feature_map_bytes``, docs/conventions.md), unless a layout search is asked for."""
    weights = asked_weights(request, model)
    run_on = request.device
    # a forward a layout search shows beside its plan is not run at other batches (its feature maps
    # are then the sum over the batch); other batches' inputs carry no values: where they are
    # needed, the sum over the batch is shown too
    planning = request.step is not None and request.step.plan
    with say.step(f"profiling {source.label}", slow=run_on != "meta"), \
            real_run(f"profiling {source.label} on {run_on}", run_on != "meta"):
        args, kwargs = source.inputs(inputs_on)
        trace = capture(model, args, kwargs, device=run_on, dtype=dtype, model_name=source.label, progress=say,
                        other_batches=None if planning else lambda batch: source.inputs(inputs_on, batch))
    return build_report(bytes_read(quantized(trace, weights)))


def with_roofline(report: Report, device: Device, flags: TorchFlags, *, dtype: torch.dtype | None,
                  precision: str, efficiency: float) -> Report:
    """``report`` with every layer's roofline time on ``device``."""
    roofline = make_roofline(device, flags, dtype=run_dtype(report, dtype), precision=precision,
                             efficiency=efficiency)
    return estimate(report, roofline)


def _measure_device(request: Request) -> str:
    """Where measured time runs: CUDA for a CUDA device or run, else the CPU."""
    if request.device.startswith("cuda"):
        return "cuda"
    if request.hardware is not None and resolve_device(request.hardware, calibrate=False).kind is Allocator.CUDA:
        if not torch.cuda.is_available():
            raise BadRequest(f"measuring time on {request.hardware} needs that CUDA device, and none is available")
        return "cuda"
    return "cpu"


def _local_hardware(measure_on: str) -> str:
    """The catalogue name of the device time is measured on."""
    if measure_on == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise BadRequest("measuring time on CUDA was asked for, but no CUDA device is available")
    gpu = torch.cuda.get_device_name()
    found = match_cuda_name(gpu)
    if found is None:
        raise BadRequest(f"{gpu} is not in the hardware catalogue; give --hardware NAME for its roofs")
    return found


def _measured(request: Request, source: Source, report: Report, device: str, say: Progress) -> Report:
    from nncost.capture.timing import measure_times

    model = source.on("cpu")
    args, kwargs = source.inputs(str(model_device(model)))
    precision = resolve_precision(request.precision, request.dtype)
    passes = WARMUP + request.repeats
    with say.bar(f"timing {source.label} ({passes} passes)", passes, counts=Counts.PASSES) as advance, \
            real_run(f"timing {source.label}"):
        times = measure_times(model, args, kwargs, device=device, dtype=precision.param_dtype,
                              repeats=request.repeats, warmup=WARMUP, autocast=precision.autocast_dtype,
                              on_pass=advance)
    return with_times(report, times)
