"""The public entry points."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nncost.analyses.build import build_report
from nncost.analyses.fit import largest_batch, parse_bytes
from nncost.analyses.memory import analyse_step
from nncost.analyses.sharding import per_gpu
from nncost.capture.inputs import SizeSpec, batch_of, rebatch, sizes_to_inputs
from nncost.capture.run import Progress, capture
from nncost.errors import BadRequest
from nncost.memory.step import capture_step
from nncost.records.memory import MemoryReport
from nncost.records.report import Report

DEVICES = ("meta", "cpu", "cuda")
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
) -> Report:
    """Cost an inference forward of ``model``, layer by layer.

    ``input_size`` leaves out the batch dimension, as torchstat does: ``(3, 224, 224)``; a list
    of sizes gives several positional inputs.  ``inputs`` (a tensor, a tuple of positional
    inputs, or any pytree) and ``kwargs`` take example inputs instead; their shapes are used,
    not their values, unless the model must run for real.

    The forward runs in eval mode under ``no_grad``.  On ``device="meta"`` (the default) the
    parameters are swapped for meta tensors inside the call only; the user's model is left
    exactly as it was.  ``depth`` keeps the rows of that depth and above.
    """
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
        raise BadRequest(f"profile() takes a torch.nn.Module; read the ONNX file {model} with nncost.profile_onnx")
    if not isinstance(model, nn.Module):
        raise BadRequest(f"profile() needs a torch.nn.Module, got {type(model).__name__}")
    if device.split(":")[0] not in DEVICES:
        raise BadRequest(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadRequest("device='cuda' was asked for, but no CUDA device is available")
    torch_dtype = resolve_dtype(dtype)
    args, kw = _example_inputs(input_size, inputs, kwargs, batch_size, torch_dtype)
    trace = capture(model, args, kw, device=device, dtype=torch_dtype, model_name=name or "", progress=progress)
    report = build_report(trace)
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
    name: str | None = None,
) -> MemoryReport:
    """Simulate the memory of one training step (``mode="train"``) or inference pass (``"infer"``).

    The step runs on meta tensors: forward in train mode, a scalar loss, backward, and the real
    ``torch.optim`` optimizer's step, with its state already in place, as in a training loop's
    steady state.  ``hardware`` picks the allocator semantics: ``"cpu"`` counts exact bytes,
    ``"cuda"`` rounds every allocation to the caching allocator's 512-byte blocks and uses the
    optimizers' CUDA implementation (``foreach``).  ``gpus`` and ``sharding`` give the per-GPU
    figures of data-parallel training; ``fit`` (bytes, or ``"24GiB"``) finds the largest batch
    whose peak fits.  ``checkpointing`` runs the model's repeated blocks (``True``) or the named
    modules under activation checkpointing.
    """
    if not isinstance(model, nn.Module):
        raise BadRequest(f"memory() needs a torch.nn.Module, got {type(model).__name__}")
    if hardware not in HARDWARE:
        raise BadRequest(f"hardware must be one of {', '.join(HARDWARE)}, got {hardware!r}")
    torch_dtype = resolve_dtype(dtype)
    args, kw = _example_inputs(input_size, inputs, kwargs, batch_size, torch_dtype)

    def simulate(batch_args: tuple[Any, ...], batch_kwargs: dict[str, Any]) -> MemoryReport:
        trace = capture_step(model, batch_args, batch_kwargs, mode=mode, optimizer=optimizer, device=hardware,
                             dtype=torch_dtype, checkpointing=checkpointing)
        report = analyse_step(trace, model=name or type(model).__name__, hardware=hardware, optimizer=optimizer,
                              batch_size=batch_of((batch_args, batch_kwargs)) or batch_size)
        if sharding != "none" or gpus > 1:
            report.gpus, report.sharding = gpus, sharding
            report.per_gpu = per_gpu(report.breakdown, gpus=gpus, strategy=sharding,
                                     largest_layer_bytes=trace.largest_layer_bytes)
        return report

    report = simulate(args, kw)
    if fit is not None:
        budget = parse_bytes(fit) if isinstance(fit, str) else int(fit)

        def peak_at(batch: int) -> int:
            result = simulate(rebatch(args, batch), rebatch(kw, batch))
            return sum(result.per_gpu.values()) if result.per_gpu else result.peak_bytes

        report.budget_bytes = budget
        report.max_batch = largest_batch(peak_at, budget)
    return report


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


