"""Putting a model where a capture runs it, and putting it back exactly as it was.

Parameters and buffers are swapped in each module's own ``_parameters`` / ``_buffers``
dictionaries for the duration of a capture: no copy of the model, no ``.to()`` on the user's
modules, and tied weights stay tied because each tensor is converted once.  The originals are
put back in a ``finally``, together with every module's ``training`` flag.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from nncost.capture.fast_meta import meta_like
from nncost.quantization import NF4
from nncost.records.trace import Named, ParamStats

Convert = Callable[[torch.Tensor], torch.Tensor]


def to_meta(dtype: torch.dtype | None) -> Convert:
    def convert(t: torch.Tensor) -> torch.Tensor:
        target = dtype if dtype is not None and t.is_floating_point() else t.dtype
        return meta_like(t, target)

    return convert


def to_device(device: torch.device, dtype: torch.dtype | None) -> Convert:
    def convert(t: torch.Tensor) -> torch.Tensor:
        target = dtype if dtype is not None and t.is_floating_point() else t.dtype
        return t.detach().to(device=device, dtype=target, copy=True)

    return convert


def model_device(model: nn.Module) -> torch.device:
    """The device of the first parameter or buffer; CPU for a model that has neither."""
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def needs_swap(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether a parameter or buffer is not on ``device`` or not in ``dtype`` (the first one found
    answers)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.device.type != device.type:
            return True
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            return True
    return False


@contextmanager
def swapped(model: nn.Module, convert: Convert) -> Iterator[None]:
    """Replace every parameter and buffer by ``convert(tensor)`` inside the block, and the
    quantization constants of bitsandbytes' 4-bit layers (their ``quant_state``) as well."""
    saved: list[tuple[dict[str, Any], str, Any]] = []
    converted: dict[int, torch.Tensor] = {}
    states: dict[int, Any] = {}  # each QuantState converted once, for its module and its weight
    try:
        for module in model.modules():
            state = module.__dict__.get("quant_state")
            if _is_quant_state(state):
                states.setdefault(id(state), _converted_state(state, convert))
                saved.append((module.__dict__, "quant_state", state))
                module.__dict__["quant_state"] = states[id(state)]
            stores: tuple[tuple[dict[str, Any], bool], ...] = ((module._parameters, True), (module._buffers, False))
            for store, is_param in stores:
                for key, value in store.items():
                    if value is None:
                        continue
                    new = converted.get(id(value))
                    if new is None:
                        data = convert(value)
                        new = nn.Parameter(data, requires_grad=value.requires_grad) if is_param else data
                        own = value.__dict__.get("quant_state")
                        if _is_quant_state(own):  # a 4-bit weight reads its constants from itself
                            new.quant_state = states.setdefault(  # type: ignore[attr-defined]
                                id(own), _converted_state(own, convert))
                        converted[id(value)] = new
                    saved.append((store, key, value))
                    store[key] = new
        yield
    finally:
        for store, key, value in reversed(saved):
            store[key] = value


@contextmanager
def attributes_restored(model: nn.Module) -> Iterator[None]:
    """Put back every module attribute that the forward rebinds or adds.

    Some models cache tensors in plain attributes during their forward (torchvision's
    ``AnchorGenerator`` moves its ``cell_anchors`` to the input's device), which would leave meta
    tensors in the user's model.  Rebound and new attributes are undone; the ``_parameters``,
    ``_buffers`` and ``_modules`` dictionaries are the same objects throughout.
    """
    saved = [(m, dict(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        for module, attributes in saved:
            current = vars(module)
            if current.keys() != attributes.keys() or any(current[k] is not v for k, v in attributes.items()):
                current.clear()
                current.update(attributes)


@contextmanager
def training_flags(model: nn.Module, training: bool) -> Iterator[None]:
    """``model.train(training)`` inside the block (not called where every module is in that mode
    already); each module's own flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        if any(flag != training for _, flag in flags):
            model.train(training)
        yield
    finally:
        for module, flag in flags:
            if module.training != flag:
                module.training = flag


def _is_quant_state(state: Any) -> bool:
    """A bitsandbytes ``QuantState``: the constants that turn a 4-bit weight's codes back into numbers."""
    return state is not None and hasattr(state, "absmax") and hasattr(state, "blocksize")


def _converted_state(state: Any, convert: Convert) -> Any:
    """A copy of a ``QuantState`` whose tensors are ``convert``ed to where the parameters go, each
    in its own dtype (its nested state too)."""
    import copy

    new = copy.copy(state)
    for key, value in vars(state).items():
        if isinstance(value, torch.Tensor):  # moved as the parameters are, in their own dtype
            moved = convert(value)
            setattr(new, key, moved if moved.dtype == value.dtype else moved.to(value.dtype))
        elif _is_quant_state(value):
            setattr(new, key, _converted_state(value, convert))
    return new


def quant_state_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The tensors a bitsandbytes 4-bit layer keeps beside its codes (its ``quant_state``: the
    8-bit absmax of each block, the second level's float32 absmax per 256 blocks and its code
    table, the offset, the NF4 code table); none for any other module."""
    found: list[torch.Tensor] = []
    state = module.__dict__.get("quant_state")
    while _is_quant_state(state):
        found += [t for t in vars(state).values() if isinstance(t, torch.Tensor)]
        state = getattr(state, "state2", None)
    return found


def four_bit_weights(model: nn.Module) -> dict[int, tuple[int, int]]:
    """The model's bitsandbytes 4-bit weights by ``id``: the elements each stands for (its
    ``quant_state.shape``) and the bytes it holds, codes and quantization constants."""
    found: dict[int, tuple[int, int]] = {}
    for module in model.modules():
        state: Any = module.__dict__.get("quant_state")
        weight = module._parameters.get("weight") if _is_quant_state(state) else None
        if weight is not None:
            stored = weight.numel() * weight.element_size()
            found[id(weight)] = (math.prod(state.shape), stored + sum(t.numel() * t.element_size()
                                                                     for t in quant_state_tensors(module)))
    return found


def four_bit_format(model: nn.Module) -> str | None:
    """How the model's bitsandbytes 4-bit weights are stored (``nf4 (bitsandbytes Linear4bit,
    blocks of 64, double-quantized)``), or None when it has none."""
    for module in model.modules():
        state: Any = module.__dict__.get("quant_state")
        if _is_quant_state(state) and "weight" in module._parameters:
            nested = ", double-quantized" if getattr(state, "nested", False) else ""
            return f"{state.quant_type} (bitsandbytes {type(module).__name__}, blocks of {state.blocksize}{nested})"
    return None


def held_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every tensor the model holds in memory, each storage once: parameters, buffers, and the
    quantization constants of 4-bit layers."""
    held = [*model.parameters(), *model.buffers(), *(t for m in model.modules() for t in quant_state_tensors(m))]
    return list({id(t.untyped_storage()): t for t in held}.values())


def param_stats(model: nn.Module, dtype: torch.dtype | None) -> ParamStats:
    """Counts each parameter once (``named_parameters`` removes duplicates by identity); a
    bitsandbytes 4-bit weight counts the elements it stands for, and its bytes (codes and
    quantization constants) go under ``nf4``."""
    params = trainable = 0
    by_dtype: dict[str, int] = {}
    four_bit = four_bit_weights(model)
    for p in model.parameters():
        if id(p) in four_bit:
            n, stored = four_bit[id(p)]
            params += n
            by_dtype[NF4] = by_dtype.get(NF4, 0) + stored
            continue
        n = p.numel()
        params += n
        trainable += n if p.requires_grad else 0
        if is_traceable_wrapper_subclass(p):  # a quantized weight: the tensors it stores, at their width
            for inner in stored_tensors(p):
                key = str(inner.dtype).removeprefix("torch.")
                by_dtype[key] = by_dtype.get(key, 0) + inner.numel() * inner.element_size()
            continue
        target = dtype if dtype is not None and p.is_floating_point() else p.dtype
        size = target.itemsize
        key = str(target).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + n * size
    buffers = buffer_bytes = 0
    for b in model.buffers():
        buffers += b.numel()
        buffer_bytes += b.numel() * b.element_size()
    return ParamStats(params, trainable, buffers, buffer_bytes, by_dtype)


def stored_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that hold ``t``'s data: ``t`` itself, or those a wrapper subclass (a
    torchao quantized weight: codes, scales, zero points) holds, at every level."""
    if not is_traceable_wrapper_subclass(t):
        return [t]
    names, _ = t.__tensor_flatten__()
    return [inner for name in names for inner in stored_tensors(getattr(t, name))]


def quantized_weights(model: nn.Module) -> list[str]:
    """The parameters held by tensor subclasses (quantized weights), by type: they pick their
    kernels by the device they are on, so they run where they are, not on meta."""
    return sorted({type(p).__name__ for p in model.parameters() if is_traceable_wrapper_subclass(p)})


def named_parameters(model: nn.Module, storage_id: Callable[[torch.Tensor], int]) -> dict[int, Named]:
    """The model's plain parameters by the storage id the tracer gives them (``storage_id``)."""
    named = {}
    for name, p in model.named_parameters():
        if is_traceable_wrapper_subclass(p) or p.layout != torch.strided:
            continue
        named[storage_id(p)] = Named("param", name, tuple(p.shape), str(p.dtype).removeprefix("torch."),
                                     p.element_size())
    return named
