"""The memory report of one training step or inference pass: plain data, bytes throughout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "temporaries", "inputs")


@dataclass(frozen=True)
class MemoryReport:
    """Live bytes at the peak of the step, by category.

    ``parameters`` includes buffers; ``activations`` are the tensors autograd saved for backward
    (in ``infer`` mode: every forward tensor alive at the peak); ``temporaries`` are all other
    tensors the step created and still held at the peak.
    """

    SECTION: ClassVar[str] = "memory"  # its key in the document

    model: str
    mode: str
    allocator: str  # the allocator semantics followed: cpu (exact bytes) or cuda (512-byte blocks, replayed)
    optimizer: str
    batch_size: int
    peak_bytes: int
    peak_phase: str  # forward, loss, backward, optimizer
    peak_at: str  # the operator (and layer) running when the peak was reached
    breakdown: dict[str, int]
    forward_macs: int
    forward_flops: int
    backward_macs: int  # recomputation under checkpointing included
    backward_flops: int
    optimizer_flops: int
    checkpointed: list[str] = field(default_factory=list)  # modules run under activation checkpointing
    recompute_macs: int = 0  # the part of the backward that re-runs checkpointed forwards
    recompute_flops: int = 0
    uncounted: dict[str, int] = field(default_factory=dict)
    precision: str = "fp32"  # fp32, bf16-mixed, fp16-mixed, bf16, fp16 (nncost.simulation.autocast)
    measured_peak_bytes: int | None = None  # from a real CPU step, when asked for
    # CUDA only: PyTorch's caching allocator replayed over the step (analyses/cuda_allocator.py):
    # the blocks it hands out (max_memory_allocated) and the segments it reserves (max_memory_reserved)
    allocator_allocated_bytes: int | None = None
    allocator_reserved_bytes: int | None = None
    gpus: int = 1
    sharding: str = "none"
    per_gpu: dict[str, int] | None = None  # the breakdown on each GPU under ``sharding``
    # Bytes each module's forward saved for backward, by qualified name ("" is the whole model), its
    # submodules included: the storages (unrounded) of the tensors autograd saved, each counted once,
    # for the module that saved it first; inputs saved are counted, parameters and buffers are not.
    # A checkpointed block counts the inputs it keeps for its recomputation. Empty in ``infer`` mode.
    saved_for_backward: dict[str, int] = field(default_factory=dict)
    budget_bytes: int | None = None
    max_batch: int | None = None  # the largest batch whose peak fits ``budget_bytes``
    # Live bytes per category (in CATEGORIES order) after each allocation or free, keyed by the
    # operator index it happened at; for plots, left out of ``to_dict``.
    timeline: list[tuple[int, tuple[int, ...]]] = field(default_factory=list, repr=False)
    peak_op: int = -1
    phase_ends: tuple[int, int, int, int] = (0, 0, 0, 0)  # forward, loss, backward, optimizer

    @property
    def fits(self) -> bool | None:
        """Does the peak (on each GPU, when sharded) fit ``budget_bytes``?  None without a budget."""
        if self.budget_bytes is None:
            return None
        return self.peak_per_gpu_bytes <= self.budget_bytes

    @property
    def peak_per_gpu_bytes(self) -> int:
        return sum(self.per_gpu.values()) if self.per_gpu is not None else self.peak_bytes

    def to_dict(self) -> dict[str, Any]:
        """The memory section of the JSON document (:func:`nncost.render.formats.memory_dict`)."""
        from nncost.render.formats import memory_dict

        return memory_dict(self)

    def __str__(self) -> str:
        from nncost.render.memory import render_memory

        return render_memory(self)
