"""The public entry points: each builds a :class:`~nncost.request.Request` with
:func:`~nncost.request.build_request`, the command line's builder, and runs it.

Nothing here computes a figure; :func:`nncost.pipeline.run` does, for these functions and for
the command line alike.  :func:`cost` takes the command line's options as they are.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nncost import pipeline
from nncost.capture.inputs import SizeSpec
from nncost.errors import BadRequest
from nncost.records.memory import MemoryReport
from nncost.records.report import Report
from nncost.records.result import Result
from nncost.request import DEFAULT_REPEATS, NamedSize, build_request
from nncost.stages.progress import Counts

ModelLike = str | nn.Module | Report


def profile(
    model: nn.Module,
    input_size: SizeSpec | None = None,
    *,
    inputs: Any = None,
    kwargs: dict[str, Any] | None = None,
    batch_size: int = 1,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    depth: int | None = None,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
    hardware: str | None = None,
    precision: str | None = None,
    efficiency: float = 1.0,
    measure_time: bool = False,
    repeats: int = DEFAULT_REPEATS,
    on_pass: Callable[[], None] | None = None,
    weights: str | None = None,
    group_size: int | None = None,
) -> Report:
    """Cost an inference forward of ``model``, layer by layer.

    ``input_size`` leaves out the batch dimension, as torchstat does: ``(3, 224, 224)``; a list
    of sizes gives several positional inputs.  ``inputs`` (a tensor, a tuple of positional
    inputs, or any pytree) and ``kwargs`` take example inputs instead; their shapes are used,
    not their values, unless the model must run for real.

    The forward runs in eval mode under ``no_grad``.  On ``device="meta"`` (the default) the
    parameters are swapped for meta tensors inside the call only; the user's model is left
    exactly as it was.  ``depth`` sets the rows shown by default (the report keeps every layer).

    ``hardware`` (a catalogue name such as ``"h100-sxm"``, or ``"cpu"``: calibrated on this
    machine) adds roofline time estimates per layer and for the forward pass (see
    docs/roofline.md); ``precision`` (fp32, bf16, fp16, bf16-mixed, fp16-mixed) picks the
    datasheet column, and pure bf16/fp16/fp32 also profile the model in that dtype (None, the
    default: fp32 columns, the model in the dtypes it holds, as the command line without
    ``--precision``); ``efficiency``
    scales both roofs.  ``measure_time`` runs the model for real ``repeats`` times on the
    measured device (the CPU, or CUDA for a CUDA ``hardware``) and adds each layer's median
    time, throughput, achieved FLOP/s and MFU; it needs real weights.  ``progress`` receives
    messages about slow stages, ``on_pass`` is called after each timed pass.  ``weights``
    (int8, int8-dynamic, int4, fp8, nf4; groups of ``group_size``) costs the model with the
    weights of its matrix products stored in that format (docs/llm.md, "Quantized weights").
    """
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
        raise BadRequest(f"profile() takes a torch.nn.Module; read the ONNX file {model} with nncost.profile_onnx")
    if not isinstance(model, nn.Module):
        raise BadRequest(f"profile() needs a torch.nn.Module, got {type(model).__name__}")
    request = build_request(model, input=input_size, inputs=inputs, kwargs=kwargs, batch=batch_size, dtype=dtype,
                            precision=precision, device=device, hardware=hardware, efficiency=efficiency,
                            measure_time=measure_time, repeats=repeats, depth=depth, name=name, weights=weights,
                            group_size=group_size, memory=False)
    report = pipeline.run(request, _Callbacks(progress, on_pass)).report
    assert report is not None
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
    allocator: str = "cuda",
    dtype: torch.dtype | str | None = None,
    gpus: int = 1,
    sharding: str = "none",
    fit: int | str | None = None,
    checkpointing: bool | Sequence[str] = False,
    precision: str | None = None,
    name: str | None = None,
    on_simulate: Callable[[], None] | None = None,
    hardware: str | None = None,
) -> MemoryReport:
    """Simulate the memory of one training step (``mode="train"``) or inference pass (``"infer"``).

    The step runs on meta tensors: forward in train mode, a scalar loss, backward, and the real
    ``torch.optim`` optimizer's step, with its state already in place, as in a training loop's
    steady state.  ``allocator`` picks the allocator semantics: ``"cpu"`` counts exact bytes,
    ``"cuda"`` rounds every allocation to the caching allocator's 512-byte blocks and uses the
    optimizers' CUDA implementation (``foreach``).  ``gpus`` and ``sharding`` give the per-GPU
    figures of data-parallel training; ``fit`` (bytes, or ``"24GiB"``) finds the largest batch
    whose peak fits.  ``checkpointing`` runs the model's repeated blocks (``True``) or the named
    modules under activation checkpointing.  ``precision`` is ``"fp32"``, ``"bf16-mixed"`` or
    ``"fp16-mixed"`` (``torch.autocast`` over forward and loss, fp32 master weights, gradients and
    optimizer state; fp16 with a GradScaler), or pure ``"bf16"`` / ``"fp16"`` (the whole model
    in that dtype; ``"fp32"`` given, float32); None, the default, keeps the model's own dtypes; see
    docs/memory.md.  ``on_simulate`` is called after every step a ``fit``
    search simulates (a progress bar).  ``hardware`` is the old name of ``allocator``, kept with a
    ``DeprecationWarning``.
    """
    if not isinstance(model, nn.Module):
        raise BadRequest(f"memory() needs a torch.nn.Module, got {type(model).__name__}")
    allocator = _renamed_allocator("memory", allocator, hardware)
    if mode not in ("train", "infer"):
        raise BadRequest(f"mode must be 'train' or 'infer', got {mode!r}")
    request = build_request(model, input=input_size, inputs=inputs, kwargs=kwargs, batch=batch_size, dtype=dtype,
                            precision=precision, name=name, train=mode == "train", optimizer=optimizer,
                            allocator=allocator, gpus=gpus, sharding=sharding, fit=fit,
                            checkpointing=checkpointing if isinstance(checkpointing, bool) else tuple(checkpointing),
                            memory=True, report=False)
    result = pipeline.run(request, _Callbacks(None, None, on_simulate))
    assert result.memory is not None
    return result.memory


def compare(
    models: Sequence[ModelLike] | Mapping[str, ModelLike],
    input_size: SizeSpec | None = None,
    *,
    batch_size: int = 1,
    train: bool = False,
    optimizer: str = "adam",
    allocator: str = "cuda",
    seq: int | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    stage_depth: int = 1,
    trust_pickle: bool = False,
    progress: pipeline.Progress | None = None,
    hardware: str | None = None,
    ignore_context_limit: bool = False,
) -> Result:
    """Several models side by side: totals, ratios to the first model, and the stages they share,
    as the ``comparison`` section of the result (``print(result)`` shows its tables).

    Each model is a MODEL string as the CLI takes it (``"resnet18"``, ``"timm:..."``, ``"hf:gpt2"``,
    ``"net.py:Net"``, ``"model.pt2"``), an ``nn.Module``, or an already built :class:`Report`
    (used as it is: ``input_size`` and ``batch_size`` do not apply to it, and it has no training
    peak).  A mapping gives each model its label; otherwise the label is the string, the
    module's class name or the report's model name.  ``input_size`` (without the batch
    dimension) applies to every model that is run; ``None`` takes each named model's own
    default.  ``train`` also simulates one training step (:func:`memory`, with ``optimizer`` and
    ``allocator``) and compares its peak.  ``stage_depth`` is the depth of the layers matched by
    name across models (1: the model's direct children, e.g. resnet's ``layer1`` to ``layer4``).
    ``trust_pickle`` lets a ``.pt`` file that holds a whole pickled module be unpickled, which
    runs code stored in the file (:class:`Request`).  ``ignore_context_limit`` costs a ``seq``
    past a transformers config's context (:class:`Request`).  ``hardware`` is the old name of
    ``allocator``, kept with a ``DeprecationWarning``.
    """
    allocator = _renamed_allocator("compare", allocator, hardware)
    items = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
    request = build_request(models=[model for _, model in items], labels=[label for label, _ in items],
                            input=input_size, batch=batch_size, seq=seq, dtype=dtype, device=device, train=train,
                            optimizer=optimizer, allocator=allocator if train else None, stage_depth=stage_depth,
                            trust_pickle=trust_pickle, ignore_context_limit=ignore_context_limit)
    return pipeline.run(request, progress)


def roofline(
    report: Report,
    hardware: str,
    *,
    precision: str | None = None,
    efficiency: float = 1.0,
    dtype: torch.dtype | None = None,
    memory: MemoryReport | None = None,
) -> Report:
    """``report`` with roofline estimates on ``hardware`` (a new report; ``report`` must hold
    every layer).  With ``memory`` (a simulated step of the same model), a training step is also
    estimated when it ran in train mode."""
    from nncost.analyses.roofline import with_training_step

    estimated = pipeline.run(build_request(report, hardware=hardware, precision=precision, efficiency=efficiency,
                                           dtype=dtype, memory=False)).report
    assert estimated is not None
    return with_training_step(estimated, memory) if memory is not None else estimated


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
    if isinstance(inputs, Mapping):
        sizes: list[Any] | None = [NamedSize(k, tuple(v)) for k, v in inputs.items()]
    else:
        sizes = [tuple(inputs)] if inputs is not None else None
    if batch_size is not None and batch_size < 1:
        raise BadRequest(f"batch size must be at least 1, got {batch_size}")
    model = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    report = pipeline.run(build_request(model, input=sizes, batch=batch_size or 1, name=name, depth=depth)).report
    assert report is not None
    return report


def cost(model: Any = None, *, progress: pipeline.Progress | None = None, **options: Any) -> Result:
    """Cost ``model`` as ``nncost MODEL`` does, with the command line's options as keywords (dashes
    as underscores): ``nncost.cost("hf:gpt2", prompt=128, new_tokens=32, hardware="h100-sxm")`` is
    ``nncost hf:gpt2 --prompt 128 --new-tokens 32 --hardware h100-sxm``, and its
    ``to_json()`` is that command's ``--format json``, byte for byte.  ``models=[A, B]`` compares
    them, as ``nncost compare A B``.  The options are :data:`nncost.request.OPTIONS`; besides the
    flags, ``inputs`` and ``kwargs`` take example inputs, ``name`` labels the model, ``labels`` a
    comparison's models, and ``memory`` (True or False) asks for a memory step or none whatever the
    other options say."""
    return pipeline.run(build_request(model, **options), progress)


def _renamed_allocator(function: str, allocator: str, hardware: str | None) -> str:
    """``allocator``, or the allocator semantics given by the old name ``hardware=`` (with a
    ``DeprecationWarning``: ``hardware`` now names the roofline's device, as in :func:`profile`)."""
    if hardware is None:
        return allocator
    warnings.warn(f"{function}(hardware=...) is now {function}(allocator=...): 'hardware' names the device of time "
                  "estimates, 'allocator' the memory semantics (cpu or cuda)", DeprecationWarning, stacklevel=3)
    if allocator != "cuda" and allocator != hardware:
        raise BadRequest(f"{function}() got allocator={allocator!r} and its old name hardware={hardware!r}: give "
                         "allocator only")
    return hardware


class _Callbacks(pipeline.Quiet):
    """The API's progress: messages to ``say``, timed passes to ``on_pass``, simulations to
    ``on_simulate`` (with the batch simulated)."""

    def __init__(self, say: Callable[[str], None] | None, on_pass: Callable[[], None] | None,
                 on_simulate: Callable[[], None] | None = None) -> None:
        self.say, self.on_pass, self.on_simulate = say, on_pass, on_simulate

    def __call__(self, message: str) -> None:
        if self.say is not None:
            self.say(message)

    @contextmanager
    def bar(self, message: str, total: int | None, *, counts: Counts) -> Iterator[Callable[[], None]]:
        advance = {Counts.PASSES: self.on_pass, Counts.SIMULATIONS: self.on_simulate}.get(counts)
        yield advance or (lambda: None)
