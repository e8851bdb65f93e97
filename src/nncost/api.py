"""The public entry points."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nncost.analyses.build import build_report
from nncost.analyses.compare import build_comparison
from nncost.analyses.fit import largest_batch, parse_bytes
from nncost.analyses.memory import analyse_step
from nncost.analyses.sharding import per_gpu
from nncost.capture.inputs import SizeSpec, batch_of, rebatch, sizes_to_inputs
from nncost.capture.run import Progress, capture
from nncost.errors import BadRequest
from nncost.memory.precision import resolve_precision
from nncost.memory.step import capture_step
from nncost.records.comparison import Comparison
from nncost.records.memory import MemoryReport
from nncost.records.report import Report
from nncost.records.roofline import Roofline

DEVICES = ("meta", "cpu", "cuda")
ModelLike = str | nn.Module | Report
HARDWARE = ("cpu", "cuda")


def profile(
    model: nn.Module,
    input_size: SizeSpec | None = None,
    *,
    inputs: Any = None,
    kwargs: dict[str, Any] | None = None,
    batch_size: int = 1,
    dtype: torch.dtype | str | None = None,
    device: str = "meta",
    depth: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    hardware: str | None = None,
    precision: str = "fp32",
    efficiency: float = 1.0,
    measure_time: bool = False,
    repeats: int = 10,
    on_pass: Callable[[], None] | None = None,
) -> Report:
    """Cost an inference forward of ``model``, layer by layer.

    ``input_size`` leaves out the batch dimension, as torchstat does: ``(3, 224, 224)``; a list
    of sizes gives several positional inputs.  ``inputs`` (a tensor, a tuple of positional
    inputs, or any pytree) and ``kwargs`` take example inputs instead; their shapes are used,
    not their values, unless the model must run for real.

    The forward runs in eval mode under ``no_grad``.  On ``device="meta"`` (the default) the
    parameters are swapped for meta tensors inside the call only; the user's model is left
    exactly as it was.  ``depth`` keeps the rows of that depth and above.

    ``hardware`` (a catalogue name such as ``"h100-sxm"``, or ``"cpu"``: calibrated on this
    machine) adds roofline time estimates per layer and for the forward pass (see
    :mod:`nncost.analyses.roofline`); ``precision`` (fp32, bf16, fp16, bf16-mixed, fp16-mixed)
    picks the datasheet column, and pure bf16/fp16 also profile the model in that dtype;
    ``efficiency`` scales both roofs.  ``measure_time`` runs the model for real ``repeats``
    times on the measured device (the CPU, or CUDA for a CUDA ``hardware``) and adds each
    layer's median time, throughput, achieved FLOP/s and MFU; it needs real weights.
    ``on_pass`` is called after each timed pass (progress bars).
    """
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
        raise BadRequest(f"profile() takes a torch.nn.Module; read the ONNX file {model} with nncost.profile_onnx")
    if not isinstance(model, nn.Module):
        raise BadRequest(f"profile() needs a torch.nn.Module, got {type(model).__name__}")
    if device.split(":")[0] not in DEVICES:
        raise BadRequest(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadRequest("device='cuda' was asked for, but no CUDA device is available")
    torch_dtype = _precision_dtype(resolve_dtype(dtype), precision)
    args, kw = _example_inputs(input_size, inputs, kwargs, batch_size, torch_dtype)
    trace = capture(model, args, kw, device=device, dtype=torch_dtype, model_name=name or "", progress=progress)
    report = build_report(trace)
    if measure_time:
        from nncost.capture.timing import measure_times

        measure_on = _measure_device(device, hardware)
        hardware = hardware if hardware not in (None, "cuda") else _local_hardware(measure_on)
    if hardware is not None:
        roofline(report, hardware, precision=precision, efficiency=efficiency, dtype=torch_dtype, say=progress)
    if measure_time:
        from nncost.analyses.timing import attach_times

        mixed = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(precision)
        attach_times(report, measure_times(model, args, kw, device=measure_on, dtype=torch_dtype, repeats=repeats,
                                           autocast=mixed, on_pass=on_pass))
    if depth is not None:
        report.layers = [layer for layer in report.layers if layer.depth <= depth]
    return report


def memory(
    model: nn.Module,
    input_size: SizeSpec | None = None,
    *,
    inputs: Any = None,
    kwargs: dict[str, Any] | None = None,
    batch_size: int = 1,
    mode: str = "train",
    optimizer: str = "adam",
    hardware: str = "cuda",
    dtype: torch.dtype | str | None = None,
    gpus: int = 1,
    sharding: str = "none",
    fit: int | str | None = None,
    checkpointing: bool | Sequence[str] = False,
    precision: str = "fp32",
    name: str | None = None,
    on_simulate: Callable[[int], None] | None = None,
) -> MemoryReport:
    """Simulate the memory of one training step (``mode="train"``) or inference pass (``"infer"``).

    The step runs on meta tensors: forward in train mode, a scalar loss, backward, and the real
    ``torch.optim`` optimizer's step, with its state already in place, as in a training loop's
    steady state.  ``hardware`` picks the allocator semantics: ``"cpu"`` counts exact bytes,
    ``"cuda"`` rounds every allocation to the caching allocator's 512-byte blocks and uses the
    optimizers' CUDA implementation (``foreach``).  ``gpus`` and ``sharding`` give the per-GPU
    figures of data-parallel training; ``fit`` (bytes, or ``"24GiB"``) finds the largest batch
    whose peak fits.  ``checkpointing`` runs the model's repeated blocks (``True``) or the named
    modules under activation checkpointing.  ``precision`` is ``"fp32"``, ``"bf16-mixed"`` or
    ``"fp16-mixed"`` (``torch.autocast`` over forward and loss, fp32 master weights, gradients and
    optimizer state; fp16 with a GradScaler), or pure ``"bf16"`` / ``"fp16"`` (the whole model
    in that dtype); see ``nncost.memory.precision``.  ``on_simulate`` is called with the batch size of
    every step simulated (progress bars for ``fit`` searches).
    """
    if not isinstance(model, nn.Module):
        raise BadRequest(f"memory() needs a torch.nn.Module, got {type(model).__name__}")
    if hardware not in HARDWARE:
        raise BadRequest(f"hardware must be one of {', '.join(HARDWARE)}, got {hardware!r}")
    torch_dtype = resolve_precision(precision, resolve_dtype(dtype)).param_dtype  # precision hook
    args, kw = _example_inputs(input_size, inputs, kwargs, batch_size, torch_dtype)

    def simulate(batch_args: tuple[Any, ...], batch_kwargs: dict[str, Any]) -> MemoryReport:
        if on_simulate is not None:
            on_simulate(batch_of((batch_args, batch_kwargs)) or batch_size)
        trace = capture_step(model, batch_args, batch_kwargs, mode=mode, optimizer=optimizer, device=hardware,
                             dtype=torch_dtype, checkpointing=checkpointing, precision=precision)
        report = analyse_step(trace, model=name or type(model).__name__, hardware=hardware, optimizer=optimizer,
                              batch_size=batch_of((batch_args, batch_kwargs)) or batch_size)
        report.precision = precision  # precision hook
        if sharding != "none" or gpus > 1:
            report.gpus, report.sharding = gpus, sharding
            report.per_gpu = per_gpu(report.breakdown, gpus=gpus, strategy=sharding,
                                     largest_layer_bytes=trace.largest_layer_bytes)
        return report

    report = simulate(args, kw)
    if fit is not None:
        budget = parse_bytes(fit) if isinstance(fit, str) else int(fit)

        def peak_at(batch: int) -> int:
            return simulate(rebatch(args, batch), rebatch(kw, batch)).peak_per_gpu_bytes

        report.budget_bytes = budget
        report.max_batch = largest_batch(peak_at, budget)
    return report


def compare(
    models: Sequence[ModelLike] | Mapping[str, ModelLike],
    input_size: SizeSpec | None = None,
    *,
    batch_size: int = 1,
    train: bool = False,
    optimizer: str = "adam",
    hardware: str = "cuda",
    seq: int | None = None,
    dtype: torch.dtype | str | None = None,
    device: str = "meta",
    stage_depth: int = 1,
    progress: Any = None,
) -> Comparison:
    """Several models side by side: totals, ratios to the first model, and the stages they share.

    Each model is a MODEL string as the CLI takes it (``"resnet18"``, ``"timm:..."``, ``"hf:gpt2"``,
    ``"net.py:Net"``, ``"model.pt2"``), an ``nn.Module``, or an already built :class:`Report`
    (used as it is: ``input_size`` and ``batch_size`` do not apply to it, and it has no training
    peak).  A mapping gives each model its label; otherwise the label is the string, the
    module's class name or the report's model name.  ``input_size`` (without the batch
    dimension) applies to every model that is run; ``None`` takes each named model's own
    default.  ``train`` also simulates one training step (:func:`memory`, with ``optimizer`` and
    ``hardware``) and compares its peak.  ``stage_depth`` is the depth of the layers matched by
    name across models (1: the model's direct children, e.g. resnet's ``layer1`` to ``layer4``).
    """
    from nncost.runner import RunOptions, profile_named

    items = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
    if len(items) < 2:
        raise BadRequest(f"compare needs at least two models, got {len(items)}")
    if hardware not in HARDWARE:
        raise BadRequest(f"hardware must be one of {', '.join(HARDWARE)}, got {hardware!r}")
    torch_dtype = resolve_dtype(dtype)
    sizes = _size_list(input_size)
    labelled: list[tuple[str, Report, MemoryReport | None]] = []
    for label, item in items:
        memory_report: MemoryReport | None = None
        if isinstance(item, Report):
            report = item
        elif isinstance(item, str):
            options = RunOptions(input_sizes=sizes, batch_size=batch_size, seq=seq, dtype=torch_dtype,
                                 device=device, memory=train, train=train, optimizer=optimizer, hardware=hardware)
            report, memory_report = profile_named(item, options, progress)
        elif isinstance(item, nn.Module):
            if input_size is None:
                raise BadRequest(f"{label or type(item).__name__} is a module: give input_size=(C, H, W)")
            report = profile(item, input_size, batch_size=batch_size, dtype=torch_dtype, device=device, name=label)
            if train:
                memory_report = memory(item, input_size, batch_size=batch_size, optimizer=optimizer,
                                       hardware=hardware, dtype=torch_dtype, name=label)
        else:
            raise BadRequest(f"compare() takes model names, nn.Modules or Reports, got {type(item).__name__}")
        labelled.append((label or report.model, report, memory_report))
    return build_comparison(labelled, train=train, optimizer=optimizer, hardware=hardware, stage_depth=stage_depth)


def _size_list(input_size: SizeSpec | None) -> list[tuple[int, ...]] | None:
    """``(3, 224, 224)`` or ``[(3, 224, 224), (10,)]`` -> a list of sizes."""
    if input_size is None:
        return None
    sizes: list[Any] = list(input_size)
    if sizes and isinstance(sizes[0], (list, tuple, torch.Size)):
        return [tuple(s) for s in sizes]
    return [tuple(sizes)]


def roofline(
    report: Report,
    hardware: str,
    *,
    precision: str = "fp32",
    efficiency: float = 1.0,
    dtype: torch.dtype | None = None,
    memory: MemoryReport | None = None,
    say: Callable[[str], None] | None = None,
) -> Roofline:
    """Add roofline estimates on ``hardware`` to ``report`` (which must hold every layer).

    With ``memory`` (a simulated step of the same model), a training step is also estimated
    when it ran in train mode, and the simulated peak is set against the device's memory.
    ``say`` hears when the ``cpu`` is calibrated, and its warnings.
    """
    from nncost.analyses.roofline import add_memory_fit, add_training_step, apply_roofline, make_roofline
    from nncost.calibration import device as find_device

    if hardware == "cuda":
        raise BadRequest("'cuda' names allocator semantics, not a device; give a catalogue name such as h100-sxm")
    found = find_device(hardware, say=say)
    by_dtype = report.totals.param_bytes_by_dtype
    run_dtype = str(dtype).removeprefix("torch.") if dtype is not None else (
        max(by_dtype, key=lambda k: by_dtype[k]) if by_dtype else "float32")
    result = apply_roofline(report, make_roofline(found, dtype=run_dtype, precision=precision, efficiency=efficiency))
    if memory is not None:
        add_training_step(report, memory)
        add_memory_fit(report, memory)
    return result


def _precision_dtype(dtype: torch.dtype | None, precision: str) -> torch.dtype | None:
    from nncost.analyses.roofline import precision_dtype

    wanted = precision_dtype(precision)
    if wanted is not None and dtype is not None and dtype != wanted:
        raise BadRequest(f"precision {precision} runs in {wanted}, but dtype {dtype} was also given")
    return dtype or wanted


def _measure_device(device: str, hardware: str | None) -> str:
    """Where --measure-time runs: CUDA for a CUDA device or run, else the CPU."""
    if device.startswith("cuda") or hardware == "cuda":
        return "cuda"
    if hardware is not None and hardware != "cpu":
        from nncost.hardware import catalogue_device

        if catalogue_device(hardware).kind == "cuda":
            if not torch.cuda.is_available():
                raise BadRequest(f"measuring time on {hardware} needs that CUDA device, and none is available")
            return "cuda"
    return "cpu"


def _local_hardware(measure_on: str) -> str:
    """The catalogue name of the device time is measured on."""
    if measure_on == "cpu":
        return "cpu"
    from nncost.hardware.catalogue import match_cuda_name

    if not torch.cuda.is_available():
        raise BadRequest("measuring time on CUDA was asked for, but no CUDA device is available")
    gpu = torch.cuda.get_device_name()
    found = match_cuda_name(gpu)
    if found is None:
        raise BadRequest(f"{gpu} is not in the hardware catalogue; give --hardware NAME for its roofs")
    return found


def profile_onnx(
    path: str | os.PathLike[str] | Any,
    inputs: Mapping[str, tuple[int, ...]] | tuple[int, ...] | None = None,
    batch_size: int | None = None,
    *,
    depth: int | None = None,
    name: str | None = None,
) -> Report:
    """Cost one inference of the ONNX model stored in ``path`` (or an ``onnx.ModelProto``), layer by layer.

    ``inputs`` maps input names to sizes, with or without the batch dimension (a bare size for a
    model with one input); ``batch_size`` fixes a symbolic batch dimension (1 when not given).
    Other symbolic dimensions must be given.  Shapes come from ONNX shape inference, costs from
    the ONNX rules, which follow the ATen rules' conventions; parameters are the tensors the file
    stores (``report.file_params`` says which counted).  Layers follow the exporter's module
    scopes.  Needs the ``onnx`` package (``pip install 'nncost[onnx]'``).
    """
    from nncost.capture.onnx import read_onnx

    if batch_size is not None and batch_size < 1:
        raise BadRequest(f"batch size must be at least 1, got {batch_size}")
    trace, file_params = read_onnx(path, inputs, batch_size, name=name)
    report = build_report(trace)
    report.file_params = file_params
    if depth is not None:
        report.layers = [layer for layer in report.layers if layer.depth <= depth]
    return report


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise BadRequest(f"unknown dtype {dtype!r}; try float32, float16 or bfloat16")
    return value


def _example_inputs(
    input_size: SizeSpec | None,
    inputs: Any,
    kwargs: dict[str, Any] | None,
    batch_size: int,
    dtype: torch.dtype | None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if batch_size < 1:
        raise BadRequest(f"batch size must be at least 1, got {batch_size}")
    if input_size is not None and inputs is not None:
        raise BadRequest("give input_size or inputs, not both")
    if input_size is not None:
        args: tuple[Any, ...] = sizes_to_inputs(input_size, batch_size, dtype)
    elif inputs is None:
        args = ()
    elif isinstance(inputs, tuple):
        args = inputs
    elif isinstance(inputs, list) and all(isinstance(t, torch.Tensor) for t in inputs):
        args = tuple(inputs)
    else:
        args = (inputs,)
    kw = dict(kwargs or {})
    if not args and not kw:
        raise BadRequest("no inputs: give input_size=(C, H, W), inputs=... or kwargs=...")
    return args, kw


