"""Putting a model where a capture runs it, and putting it back exactly as it was.

Parameters and buffers are swapped in each module's own ``_parameters`` / ``_buffers``
dictionaries for the duration of a capture: no copy of the model, no ``.to()`` on the user's
modules, and tied weights stay tied because each tensor is converted once.  The originals are
put back in a ``finally``, together with every module's ``training`` flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from nncost.records.trace import Named, ParamStats

Convert = Callable[[torch.Tensor], torch.Tensor]


def to_meta(dtype: torch.dtype | None) -> Convert:
    def convert(t: torch.Tensor) -> torch.Tensor:
        target = dtype if dtype is not None and t.is_floating_point() else t.dtype
        return torch.empty_like(t, device="meta", dtype=target)

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
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type != device.type:
            return True
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            return True
    return False


@contextmanager
def swapped(model: nn.Module, convert: Convert) -> Iterator[None]:
    """Replace every parameter and buffer by ``convert(tensor)`` inside the block."""
    saved: list[tuple[dict[str, Any], str, torch.Tensor]] = []
    converted: dict[int, torch.Tensor] = {}
    try:
        for module in model.modules():
            stores: tuple[tuple[dict[str, Any], bool], ...] = ((module._parameters, True), (module._buffers, False))
            for store, is_param in stores:
                for key, value in store.items():
                    if value is None:
                        continue
                    new = converted.get(id(value))
                    if new is None:
                        data = convert(value)
                        new = nn.Parameter(data, requires_grad=value.requires_grad) if is_param else data
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
    """``model.train(training)`` inside the block; each module's own flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.train(training)
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def param_stats(model: nn.Module, dtype: torch.dtype | None) -> ParamStats:
    """Counts each parameter once (``named_parameters`` removes duplicates by identity)."""
    params = trainable = 0
    by_dtype: dict[str, int] = {}
    for p in model.parameters():
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
