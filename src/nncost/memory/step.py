"""Capturing one steady-state training step, or one inference pass, on meta tensors.

The step simulated is what a training loop repeats: the optimizer state already exists (a
warm-up step outside the capture creates it), gradients were released by ``zero_grad()``
(``set_to_none``, PyTorch's default), the input batch is on the device.  Inside the capture:
forward in train mode, a scalar loss (the sum of every floating output), backward, the
optimizer's step.  The dispatch tracer records every storage created and freed; a
``saved_tensors_hooks`` pack hook records which of them autograd saved for backward, and the
parameters' ``.grad`` after backward say which are gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nncost.capture import inputs as inputs_mod
from nncost.capture.limits import meta_limitation
from nncost.capture.paths import KernelPaths
from nncost.capture.placement import attributes_restored, held_tensors, swapped, to_meta, training_flags
from nncost.capture.run import mismatch
from nncost.capture.scopes import Scopes, tensors_in
from nncost.capture.state import run_state
from nncost.capture.tracer import Tracer
from nncost.errors import BadRequest, NeedsWeights, NncostError
from nncost.memory.optimizers import OPTIMIZERS, state_bytes
from nncost.memory.precision import FakeTracer, MixedRun, autocast_or_nothing, mixed_run, needs_values
from nncost.precision import resolve_precision
from nncost.records.trace import LayerCall, OpCall
from nncost.rules import ATEN
from nncost.rules.kernel_memory import kernel_memory


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
    checkpointed: list[str] = field(default_factory=list)  # modules run under activation checkpointing
    gradients: set[int] = field(default_factory=set)  # allocation ids
    saved: set[int] = field(default_factory=set)


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


def _checkpointed(module: nn.Module) -> None:
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
    device: str = "cuda",
    dtype: torch.dtype | None = None,
    checkpointing: bool | Sequence[str] = False,
    precision: str = "fp32",
) -> StepTrace:
    """Capture one steady-state step of ``model`` (see the module docstring) on meta tensors, or
    on fake tensors under autocast for a mixed ``precision``, with ``device``'s kernels and
    optimizer implementation."""
    if mode not in ("train", "infer"):
        raise BadRequest(f"mode must be 'train' or 'infer', got {mode!r}")
    if optimizer not in OPTIMIZERS:
        raise BadRequest(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    train = mode == "train"
    scopes = Scopes(model)
    setting = resolve_precision(precision, dtype)
    mixed = mixed_run(setting, device)
    kernels = kernel_memory(device)
    tracer = (FakeTracer(ATEN, scopes.current, memoise=False, kernels=kernels) if mixed
              else Tracer(ATEN, scopes.current, memoise=True, kernels=kernels))
    world = mixed.active() if mixed else nullcontext()
    convert = mixed.convert if mixed else to_meta(setting.param_dtype)
    meta = torch.device("meta")
    with run_state(meta), training_flags(model, train), attributes_restored(model), world, swapped(model, convert):
        try:
            blocks = checkpoint_blocks(model, checkpointing) if train else []
            for _, block in blocks:
                _checkpointed(block)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = _optimizer(optimizer, params, device) if train else None
            if mixed:
                mixed.warm_up()
                placed = (mixed.place(args), mixed.place(kwargs))
            else:
                placed = (inputs_mod.place(args, meta, setting.param_dtype),
                          inputs_mod.place(kwargs, meta, setting.param_dtype))
            phases, saved = _run(model, placed, tracer, scopes, params, opt, mixed, train, device)
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
        state = mixed.state_bytes(opt) if mixed else state_bytes(opt, device=device)
        weights = [t.untyped_storage().nbytes() for t in held_tensors(model)]
        input_sizes = [t.untyped_storage().nbytes() for t in tensors_in(placed)]
        largest_layer = max((sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
                             for m in model.modules()), default=0)
    return StepTrace(
        mode=mode,
        ops=tracer.ops,
        layers=scopes.layers,
        memory_events=tracer.memory_events,
        param_tensor_bytes=weights,
        state_tensor_bytes=state,
        input_tensor_bytes=input_sizes,
        largest_layer_bytes=largest_layer,
        checkpointed=[name for name, _ in blocks],
        forward_end=phases.forward_end,
        loss_end=phases.loss_end,
        backward_end=phases.backward_end,
        gradients=phases.gradients,
        saved=saved,
    )


def _optimizer(name: str, params: list[nn.Parameter], device: str) -> torch.optim.Optimizer | None:
    """The optimizer, its state already created by one warm-up step (the loop's steady state)."""
    factory = OPTIMIZERS[name]
    if factory is None or not params:
        return None
    opt = factory(params, device == "cuda")
    _warm_up(opt, params)
    return opt


def _run(model: nn.Module, placed: tuple[tuple[Any, ...], dict[str, Any]], tracer: Tracer, scopes: Scopes,
         params: list[nn.Parameter], opt: torch.optim.Optimizer | None, mixed: MixedRun | None, train: bool,
         device: str) -> tuple[_Phases, set[int]]:
    """Forward, loss, backward and the optimizer's step, traced; the phases' ends, the gradients,
    and the allocations autograd saved for backward."""
    phases = _Phases()
    saved: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        allocation = tracer.allocation_id(t)
        if allocation is not None:
            saved.add(allocation)
        return t

    grad_mode = torch.enable_grad() if train else torch.no_grad()
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if train else nullcontext()
    with scopes.hooked(model), grad_mode, hooks, tracer, KernelPaths(tracer, device):
        with autocast_or_nothing(mixed):  # forward and loss under autocast when mixed
            output = model(*placed[0], **placed[1])
            phases.forward_end = phases.loss_end = phases.backward_end = len(tracer.ops)
            loss = _loss(output) if train else None
        if loss is not None:
            if mixed:
                loss = mixed.scale(loss)  # fp16-mixed: GradScaler.scale
            phases.loss_end = len(tracer.ops)
            loss.backward()
            phases.backward_end = len(tracer.ops)
            phases.gradients = {a for p in params if p.grad is not None
                                if (a := tracer.allocation_id(p.grad)) is not None}
            del loss
            if mixed:
                mixed.step(opt)  # fp16-mixed: unscale_, step, update
            elif opt is not None:
                opt.step()
        del output
    return phases, saved


def _loss(output: Any) -> torch.Tensor:
    """A scalar loss: the sum of every floating output that requires grad."""
    floating = [t for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
    if not floating:
        raise BadRequest("the model's output has no floating tensor that requires grad: nothing to train")
    return torch.stack([t.float().sum() for t in floating]).sum()
