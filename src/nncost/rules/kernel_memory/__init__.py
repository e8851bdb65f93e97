"""Kernel memory rules: the bytes a device's kernel holds inside one operator call.

A cost rule says what an operator computes; a kernel memory rule says how much memory its kernel
holds at its high point: workspaces, operands copied into blocked layouts, scratchpads.  On meta
tensors no kernel runs, so the tracer sees only an operator's outputs; these rules add what a
real kernel of that kind of device (its :class:`~nncost.hardware.catalogue.Allocator`) allocates
and frees within the call.

A rule receives the call's arguments in schema order (tensors are the meta tensors themselves:
shape, strides and dtype, no data) and its output tensors, and returns the bytes held at the
kernel's high point *above the bytes live before the call, outputs included*, or 0 when the
outputs tell it all.  The step analysis takes ``live before + high point`` as a peak candidate.

A *resizer* fixes an output whose size the meta kernel gets wrong (oneDNN's LSTM workspace is
empty on meta); it returns the outputs to use instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nncost.hardware.catalogue import Allocator

KernelRule = Callable[[tuple[Any, ...], Sequence[torch.Tensor]], int]
Resizer = Callable[[tuple[Any, ...], Any], Any]


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def produced(outputs: Sequence[torch.Tensor]) -> int:
    """The bytes of a call's outputs."""
    return sum(nbytes(t) for t in outputs)


@dataclass
class KernelMemory:
    """The kernel memory rules of one kind of device, named by its allocator semantics."""

    allocator: Allocator
    rules: dict[str, KernelRule] = field(default_factory=dict)
    resizers: dict[str, Resizer] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # op -> what the kernel allocates, for the docs

    def rule(self, *ops: str, note: str) -> Callable[[KernelRule], KernelRule]:
        def register(fn: KernelRule) -> KernelRule:
            for op in ops:
                if op in self.rules:
                    raise ValueError(f"kernel memory rule for {op!r} registered twice")
                self.rules[op] = fn
                self.notes[op] = note
            return fn

        return register

    def resizer(self, *ops: str) -> Callable[[Resizer], Resizer]:
        def register(fn: Resizer) -> Resizer:
            for op in ops:
                self.resizers[op] = fn
            return fn

        return register


def kernel_memory(allocator: str) -> KernelMemory | None:
    """The kernel memory rules of the devices of ``allocator`` semantics ("cpu", "cuda"), or None
    where nncost has none."""
    if allocator == Allocator.CPU:
        from nncost.rules.kernel_memory.cpu import CPU

        return CPU
    if allocator == Allocator.CUDA:
        from nncost.rules.kernel_memory.cuda import CUDA

        return CUDA
    return None


__all__ = ["KernelMemory", "KernelRule", "Resizer", "kernel_memory"]
