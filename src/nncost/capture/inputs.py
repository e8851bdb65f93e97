"""Example inputs: built from sizes, or taken from the user, and placed where the model runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_map

from nncost.capture.fast_meta import meta_like
from nncost.errors import BadRequest

SizeSpec = Sequence[int] | Sequence[Sequence[int]]


def sizes_to_inputs(input_size: SizeSpec, batch_size: int, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    """``(3, 224, 224)`` or ``[(3, 224, 224), (10,)]``, without the batch dimension, as meta tensors."""
    if batch_size < 1:
        raise BadRequest(f"batch size must be at least 1, got {batch_size}")
    sizes: list[Any] = list(input_size)
    if not sizes:
        raise BadRequest("input_size is empty")
    nested: list[tuple[int, ...]] = (
        [tuple(s) for s in sizes] if isinstance(sizes[0], (list, tuple, torch.Size)) else [tuple(sizes)]
    )
    for size in nested:
        if not all(isinstance(d, int) and d > 0 for d in size):
            raise BadRequest(f"input size {size} must be positive integers")
    return tuple(torch.empty((batch_size, *s), dtype=dtype or torch.float32, device="meta") for s in nested)


def place(value: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """Every tensor leaf of ``value`` on ``device``; floating tensors cast to ``dtype`` if given.

    Meta tensors headed for a real device are filled: normal noise for floating point,
    zeros (valid token ids and indices) for integers.  Inference tensors are copied: the
    capture runs outside inference mode (capture.state), where they cannot be written.
    """

    def move(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        target = dtype if dtype is not None and t.is_floating_point() else t.dtype
        if device.type == "meta":
            return meta_like(t, target)
        if t.device.type == "meta":
            if target.is_floating_point:
                return torch.randn(t.shape, dtype=target, device=device)
            return torch.zeros(t.shape, dtype=target, device=device)
        placed = t.to(device=device, dtype=target)
        # made under torch.inference_mode(): a capture runs outside it, where such a tensor is read-only
        return placed.clone() if placed.is_inference() else placed

    return tree_map(move, value)


def batch_of(value: Any) -> int | None:
    """The leading dimension of the first tensor with one, used as the batch size."""
    leaves: list[torch.Tensor] = []
    tree_map(lambda t: leaves.append(t) if isinstance(t, torch.Tensor) else None, value)
    for t in leaves:
        if t.dim() > 0:
            return int(t.shape[0])
    return None


def nbytes(value: Any) -> int:
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()

    tree_map(add, value)
    return total


def rebatch(value: Any, batch: int) -> Any:
    """Meta copies of every tensor leaf with its leading (batch) dimension set to ``batch``."""

    def resize(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        return torch.empty((batch, *t.shape[1:]), dtype=t.dtype, device="meta")

    return tree_map(resize, value)
