"""Capturing one steady-state training step, or one inference pass, on meta tensors.

The step simulated is what a training loop repeats: the optimizer state already exists (a
warm-up step outside the capture creates it), gradients were released by ``zero_grad()``
(``set_to_none``, PyTorch's default), the input batch is on the device.  Inside the capture:
forward in train mode, a scalar loss (the sum of every floating output), backward, the
optimizer's step.  The dispatch tracer records every storage created and freed; a
``saved_tensors_hooks`` pack hook records which of them autograd saved for backward (and, for
the forward, which module saved each first), and the parameters' ``.grad`` after backward say
which are gradients.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nncost.capture import inputs as inputs_mod
from nncost.capture.limits import meta_limitation
from nncost.capture.paths import KernelPaths, backward
from nncost.capture.placement import attributes_restored, held_tensors, swapped, to_meta, training_flags
from nncost.capture.run import mismatch
from nncost.capture.scopes import Scopes, tensors_in
from nncost.capture.shadows import Shadows, entered
from nncost.capture.state import run_state
from nncost.capture.tracer import Tracer
from nncost.errors import BadRequest, NeedsWeights, NncostError
from nncost.hardware.catalogue import Allocator
from nncost.precision import PrecisionSetting, resolve_precision
from nncost.records.trace import LayerCall, OpCall
from nncost.rules import ATEN
from nncost.rules.kernel_memory import kernel_memory
from nncost.simulation.autocast import FakeTracer, MixedRun, autocast_or_nothing, mixed_run, needs_values
from nncost.simulation.graph import backward_nodes
from nncost.simulation.optimizers import OPTIMIZERS, on_device, state_bytes, state_bytes_by_param


@dataclass
class StepTrace:
    """What one captured step did, before analysis."""

    mode: str  # train or infer
    ops: list[OpCall]
    layers: list[LayerCall]
    memory_events: list[tuple[int, int, int]]
    param_tensor_bytes: list[int]  # parameters and buffers, each tensor once
    state_tensor_bytes: list[int]  # the optimizer's state on the device
    input_tensor_bytes: list[int]
    forward_end: int  # op index where each phase ends
    loss_end: int
    backward_end: int
    largest_layer_bytes: int = 0  # the most parameter bytes any one module holds directly
    # Casts of parameters to another dtype made by the forward (autocast's 16-bit copies of fp32
    # weights, which its cache keeps to the end of the forward): their allocation ids, and the most
    # bytes of such casts of the parameters one module holds directly (one FSDP unit's casts).  A
    # checkpointed block's recomputation casts again; those casts live until the block's backward
    # ends and are not listed.
    parameter_casts: set[int] = field(default_factory=set)
    largest_layer_cast_bytes: int = 0
    checkpointed: list[str] = field(default_factory=list)  # modules run under activation checkpointing
    gradients: set[int] = field(default_factory=set)  # allocation ids
    saved: set[int] = field(default_factory=set)
    # What the forward saved for backward: storage (Tracer.storage_id: an allocation, or a storage made
    # before the step such as an input) -> (the module call that saved it first, its bytes); parameters
    # and buffers are left out.  A checkpointed block saves its inputs (torch.utils.checkpoint's own
    # save_for_backward); what it recomputes is saved in the backward, not here.
    saved_in_forward: dict[int, tuple[int, int]] = field(default_factory=dict)
    parameters: list[ParamRecord] = field(default_factory=list)  # each parameter tensor once
    # (op index, forward op index): from this backward operator on, the backward runs the autograd
    # node that the forward made at that forward operator (its first operator after the last module
    # call began or ended before the node was made); the operators a node runs are its forward's
    backward_sources: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ParamRecord:
    """One parameter tensor of a captured step: the module that holds it (the first, for a tied
    one), its elements and bytes, the bytes of its optimizer state on the device, and whether it
    is trained (its gradient has its bytes)."""

    module: str
    numel: int
    nbytes: int
    state_bytes: int
    trainable: bool


def checkpoint_blocks(model: nn.Module, choice: bool | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The modules to checkpoint: those named, or (``True``) the model's repeated blocks.

    Repeated blocks are the non-leaf items of every ``nn.Sequential`` and ``nn.ModuleList``, the
    outermost ones only: ResNet's bottlenecks, a transformer's layers.
    """
    named = dict(model.named_modules())
    if not isinstance(choice, bool):
        missing = [n for n in choice if n not in named]
        if missing:
            raise BadRequest(f"no module named {', '.join(map(repr, missing))} to checkpoint")
        return [(n, named[n]) for n in choice]
    if not choice:
        return []
    items = {id(child) for m in model.modules() if isinstance(m, (nn.Sequential, nn.ModuleList))
             for child in m.children() if any(True for _ in child.children())}
    blocks: list[tuple[str, nn.Module]] = []
    for name, module in named.items():
        if id(module) in items and not any(name.startswith(outer + ".") for outer, _ in blocks):
            blocks.append((name, module))
    return blocks


# The keyword arguments by which a transformers layer is handed the KV cache, and whether it should use one.
_CACHE_KWARGS = ("cache", "layer_past", "past_key_value", "past_key_values")


def checkpointed(module: nn.Module) -> None:
    """Run ``module`` under non-reentrant activation checkpointing (an instance attribute,
    undone with the model's other attributes when the capture ends).

    A transformers layer is checkpointed as its own ``GradientCheckpointingLayer`` does it: without
    its KV cache (``use_cache=False``, the cache argument None, unless the layer only reads the
    cache).  A layer that wrote into the cache would keep its keys and values, and the graph of
    its recomputation behind them, alive to the end of the step, and the recomputation would
    write them a second time."""
    forward = module.forward
    drops_cache = (any(c.__name__ == "GradientCheckpointingLayer" for c in type(module).__mro__)
                   and not getattr(module, "_can_checkpoint_with_cache", False))

    def run(*args: Any, **kwargs: Any) -> Any:
        if drops_cache:
            kwargs.update({key: None for key in _CACHE_KWARGS if kwargs.get(key) is not None})
            if kwargs.get("use_cache"):
                kwargs["use_cache"] = False
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    module.forward = run


@torch.no_grad()
def _warm_up(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class _Phases:
    """Where each phase of a captured step ends (operator indices), and the gradients it left."""

    forward_end: int = 0
    loss_end: int = 0
    backward_end: int = 0
    gradients: set[int] = field(default_factory=set)


def capture_step(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    mode: str = "train",
    optimizer: str = "adam",
    allocator: str = "cuda",
    dtype: torch.dtype | None = None,
    checkpointing: bool | Sequence[str] = False,
    precision: str = "fp32",
) -> StepTrace:
    """Capture one steady-state step of ``model`` (see the module docstring) on meta tensors, or
    on fake tensors under autocast for a mixed ``precision``, with the kernels and the optimizer
    implementation of the devices of ``allocator`` semantics (``cpu`` or ``cuda``)."""
    if mode not in ("train", "infer"):
        raise BadRequest(f"mode must be 'train' or 'infer', got {mode!r}")
    if optimizer not in OPTIMIZERS:
        raise BadRequest(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    train = mode == "train"
    scopes = Scopes(model)
    setting = resolve_precision(precision, dtype)
    mixed = mixed_run(setting, allocator)
    tracer = _tracer(scopes, mixed, allocator)
    world = mixed.active() if mixed else nullcontext()
    convert, shadows = _conversion(mixed, setting)
    meta = torch.device("meta")
    with run_state(meta), training_flags(model, train), attributes_restored(model), world, swapped(model, convert):
        try:
            blocks = checkpoint_blocks(model, checkpointing) if train else []
            for _, block in blocks:
                checkpointed(block)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = _optimizer(optimizer, params, allocator) if train else None
            placed = _placed(args, kwargs, mixed, setting.param_dtype, shadows)
            lineage = _Lineage(tracer)
            phases, saved, saved_in_forward = _run(model, placed, tracer, scopes, params, opt, mixed, train,
                                                   allocator, lineage, shadows)
        except NncostError:
            raise
        except Exception as exc:
            if meta_limitation(exc, tracer.failed_call, torch.device("cpu")) or needs_values(exc):
                raise NeedsWeights(
                    f"the memory simulation runs on meta tensors, and this model's forward needs real values: {exc}"
                ) from exc
            raise mismatch(exc, scopes, tracer, type(model).__name__) from exc
        finally:
            tracer.close()
        scopes.finish()
        state = mixed.state_bytes(opt) if mixed else state_bytes(opt, allocator=allocator)
        weights = [t.untyped_storage().nbytes() for t in held_tensors(model)]
        input_sizes = [t.untyped_storage().nbytes() for t in tensors_in(placed)]
        held = mixed.holds if mixed else functools.partial(on_device, allocator)
        parameters = _param_records(model, state_bytes_by_param(opt, held))
        largest_layer = max((sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
                             for m in model.modules()), default=0)
        casts, largest_cast = _parameter_casts(model, tracer, phases.forward_end)
    return StepTrace(
        mode=mode,
        ops=tracer.ops,
        layers=scopes.layers,
        memory_events=tracer.memory_events,
        param_tensor_bytes=weights,
        state_tensor_bytes=state,
        input_tensor_bytes=input_sizes,
        largest_layer_bytes=largest_layer,
        parameter_casts=casts,
        largest_layer_cast_bytes=largest_cast,
        checkpointed=[name for name, _ in blocks],
        forward_end=phases.forward_end,
        loss_end=phases.loss_end,
        backward_end=phases.backward_end,
        gradients=phases.gradients,
        saved=saved,
        saved_in_forward=saved_in_forward,
        parameters=parameters,
        backward_sources=lineage.sources if train else [],
    )


def _tracer(scopes: Scopes, mixed: MixedRun | None, allocator: str) -> Tracer:
    """The step's tracer: of fake tensors under autocast, else of meta tensors, memoised."""
    kernels = kernel_memory(allocator)
    if mixed:
        return FakeTracer(ATEN, scopes.current, memoise=False, kernels=kernels)
    return Tracer(ATEN, scopes.current, memoise=True, kernels=kernels)


def _conversion(mixed: MixedRun | None, setting: PrecisionSetting
                ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Shadows | None]:
    """How the parameters become the step's tensors: fake tensors under autocast (they answer no
    value questions), else meta tensors whose values shadows keep where a forward asks for them."""
    if mixed:
        return mixed.convert, None
    shadows = Shadows()
    return shadows.seeding(to_meta(setting.param_dtype)), shadows


def _placed(args: tuple[Any, ...], kwargs: dict[str, Any], mixed: MixedRun | None, dtype: torch.dtype | None,
            shadows: Shadows | None) -> tuple[Any, Any]:
    """The inputs as the step's tensors, their values seeded into the shadows."""
    if mixed:
        mixed.warm_up()
        return mixed.place(args), mixed.place(kwargs)
    meta = torch.device("meta")
    placed = (inputs_mod.place(args, meta, dtype), inputs_mod.place(kwargs, meta, dtype))
    if shadows is not None:
        shadows.seed_tree(placed, (args, kwargs))
    return placed


def _param_records(model: nn.Module, state: dict[int, int]) -> list[ParamRecord]:
    """Each parameter tensor once, with the first module that holds it and its optimizer state."""
    records: dict[int, ParamRecord] = {}
    for name, module in model.named_modules():
        for p in module._parameters.values():
            if p is not None and id(p) not in records:
                records[id(p)] = ParamRecord(name, p.numel(), p.untyped_storage().nbytes(), state.get(id(p), 0),
                                             p.requires_grad)
    return list(records.values())


def _parameter_casts(model: nn.Module, tracer: Tracer, end: int) -> tuple[set[int], int]:
    """The allocations that are casts of a parameter (``_to_copy`` of its storage) made before op
    ``end``, and the most bytes of casts that the parameters one module holds directly have, each
    parameter's cast counted once however often it is made."""
    owner: dict[int, tuple[int, int]] = {}  # storage id -> (module, parameter)
    for m, module in enumerate(model.modules()):
        for p in module._parameters.values():
            if p is not None and p.layout == torch.strided:
                owner.setdefault(tracer.storage_id(p), (m, id(p)))
    casts: set[int] = set()
    cast_bytes: dict[int, dict[int, int]] = {}  # module -> parameter -> bytes of its cast
    for op in tracer.ops[:end]:
        if op.op != "_to_copy" or not op.reads or not op.writes:
            continue
        source = owner.get(op.reads[0][0])
        allocation = op.writes[0][0]
        if source is None or allocation < 0:
            continue
        casts.add(allocation)
        by_param = cast_bytes.setdefault(source[0], {})
        by_param[source[1]] = max(by_param.get(source[1], 0), tracer.allocation_bytes[allocation])
    return casts, max((sum(by_param.values()) for by_param in cast_bytes.values()), default=0)


def _optimizer(name: str, params: list[nn.Parameter], allocator: str) -> torch.optim.Optimizer | None:
    """The optimizer, its state already created by one warm-up step (the loop's steady state)."""
    factory = OPTIMIZERS[name]
    if factory is None or not params:
        return None
    opt = factory(params, allocator == Allocator.CUDA)
    _warm_up(opt, params)
    return opt


def _run(model: nn.Module, placed: tuple[tuple[Any, ...], dict[str, Any]], tracer: Tracer, scopes: Scopes,
         params: list[nn.Parameter], opt: torch.optim.Optimizer | None, mixed: MixedRun | None, train: bool,
         allocator: str, lineage: _Lineage,
         shadows: Shadows | None) -> tuple[_Phases, set[int], dict[int, tuple[int, int]]]:
    """Forward, loss, backward and the optimizer's step, traced; the phases' ends, the gradients,
    the allocations autograd saved for backward, what the forward saved (``StepTrace.saved_in_forward``),
    and (in ``lineage``) where each backward node came from.  ``shadows`` answers the forward's
    questions about values it knows (capture.shadows)."""
    phases = _Phases()
    saved: set[int] = set()
    in_forward: dict[int, tuple[int, int]] = {}
    weights = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    forward = True

    def pack(t: torch.Tensor) -> torch.Tensor:
        allocation = tracer.allocation_id(t)
        if allocation is not None:
            saved.add(allocation)
        if forward:
            _note_saved(t, allocation, tracer, scopes.current(), weights, in_forward)
        return t

    grad_mode = torch.enable_grad() if train else torch.no_grad()
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if train else nullcontext()
    # What CUDA's fused attention keeps for backward is still to be measured (docs/memory_cuda.md),
    # so under CUDA semantics a step keeps meta's attention.
    paths = KernelPaths(tracer, allocator, fused_attention=allocator == Allocator.CPU)
    with scopes.hooked(model), grad_mode, hooks, tracer, paths:
        # forward and loss under autocast when mixed
        with autocast_or_nothing(mixed), lineage.hooked(model) if train else nullcontext(), entered(shadows):
            output = model(*placed[0], **placed[1])
            forward = False
            phases.forward_end = phases.loss_end = phases.backward_end = len(tracer.ops)
            loss = _loss(output) if train else None
        if loss is not None:
            if mixed:
                loss = mixed.scale(loss)  # fp16-mixed: GradScaler.scale
            lineage.watch(loss)
            phases.loss_end = len(tracer.ops)
            backward(loss)
            phases.backward_end = len(tracer.ops)
            phases.gradients = {a for p in params if p.grad is not None
                                if (a := tracer.allocation_id(p.grad)) is not None}
            del loss
            if mixed:
                mixed.step(opt)  # fp16-mixed: unscale_, step, update
            elif opt is not None:
                opt.step()
        del output
    return phases, saved, in_forward


def _note_saved(t: torch.Tensor, allocation: int | None, tracer: Tracer, layer: int, weights: set[int],
                found: dict[int, tuple[int, int]]) -> None:
    """Record the storage of ``t``, saved for backward in module call ``layer``, unless it was saved
    before or is a parameter's or a buffer's."""
    if allocation is not None:
        found.setdefault(allocation, (layer, tracer.allocation_bytes[allocation]))
        return
    if t.layout != torch.strided:
        return
    storage = t.untyped_storage()
    if storage._cdata not in weights:
        found.setdefault(tracer.storage_id(t), (layer, storage.nbytes()))


class _Lineage:
    """Which forward operator each autograd node of the step came from, and so which operators of
    the backward belong to which part of the model.

    Autograd numbers its nodes in the order the forward makes them (``Node._sequence_nr``).  At
    every module call's start and end the next number and the count of traced operators are noted:
    a node made between two such marks came from the operators traced between them, all run in
    one module call.  In the backward, a pre-hook on each node notes the operator count it starts
    at and that forward operator; the nodes that accumulate gradients (numbered past every
    forward node) run with the node before them.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.marks: list[tuple[int, int]] = []  # (next sequence number, traced operators)
        self.sources: list[tuple[int, int]] = []  # (backward op index, forward op index)

    def _mark(self, *_: Any) -> None:
        self.marks.append((torch._C._autograd._get_sequence_nr(), len(self.tracer.ops)))

    @contextmanager
    def hooked(self, model: nn.Module) -> Iterator[None]:
        handles = []
        try:
            for module in model.modules():
                if isinstance(module, torch.jit.ScriptModule):
                    continue
                handles.append(module.register_forward_pre_hook(self._mark))
                handles.append(module.register_forward_hook(self._mark, always_call=True))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def watch(self, loss: torch.Tensor) -> None:
        """Note, as the backward of ``loss`` runs each node, where its operators start."""
        numbers = [number for number, _ in self.marks]
        made_after = torch._C._autograd._get_sequence_nr()
        for node in backward_nodes(loss):
            number = node._sequence_nr()
            if number >= made_after:  # AccumulateGrad: numbered past every node
                continue
            k = bisect_right(numbers, number) - 1
            source = self.marks[k][1] if k >= 0 else 0

            def starting(grad_outputs: Any, source: int = source) -> None:
                self.sources.append((len(self.tracer.ops), source))

            node.register_prehook(starting)


def _loss(output: Any) -> torch.Tensor:
    """A scalar loss: the sum of every floating output that requires grad."""
    floating = [t for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
    if not floating:
        raise BadRequest("the model's output has no floating tensor that requires grad: nothing to train")
    return torch.stack([t.float().sum() for t in floating]).sum()
