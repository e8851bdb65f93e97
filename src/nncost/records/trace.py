"""What one capture observed, before any analysis: module calls, operator calls, allocations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TorchFlags:
    """The global torch settings that change which kernels run, read once when a request is made.

    In fp32, CUDA convolutions use TF32 when ``cudnn_allow_tf32`` (PyTorch's default) and matrix
    products when ``matmul_precision`` is not ``"highest"`` (not the default).
    """

    cudnn_allow_tf32: bool
    matmul_precision: str

    @classmethod
    def defaults(cls) -> TorchFlags:
        """PyTorch's own defaults."""
        return cls(cudnn_allow_tf32=True, matmul_precision="highest")

    @classmethod
    def current(cls) -> TorchFlags:
        import torch

        return cls(cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
                   matmul_precision=torch.get_float32_matmul_precision())


@dataclass(frozen=True, slots=True)
class Routed:
    """A parameter that one operator call read one slice per row of: the experts of a mixture of
    experts, run as one grouped matrix product (``rows`` token-expert pairs over ``slices`` experts).

    ``param`` is the parameter's qualified name (the first, for a tied one); ``numel`` its size.
    """

    param: str
    numel: int
    rows: int
    slices: int

    def share(self, tokens: int) -> Fraction:
        """The fraction of the parameter one token uses: ``rows / tokens`` slices (its top-k) of
        ``slices``, at most all of it."""
        if tokens <= 0 or self.slices <= 0:
            return Fraction(1)
        return min(Fraction(1), Fraction(self.rows, tokens * self.slices))


def token_rows(input_shapes: list[Shape]) -> int | None:
    """The tokens a module call was given: the rows of its first input, every dimension but the last
    (a ``(T, H)`` batch of hidden states, or ``(B, L, H)``); None without a plain first input."""
    if not input_shapes or len(input_shapes[0]) < 2 or not all(isinstance(d, int) for d in input_shapes[0]):
        return None
    return math.prod(input_shapes[0][:-1])


def created_bytes(memory_events: list[tuple[int, int, int]]) -> list[int]:
    """The bytes of each storage a timeline's operators create (its positive events), in order."""
    return [delta for _, delta, _ in memory_events if delta > 0]


def same_storages(one: list[int], two: list[int]) -> bool:
    """Whether a forward at batch 2 created the storages it created at batch 1 (the bytes of each,
    in order): as many, each at least as big and at most twice as big, as a size ``a + b·batch``
    is.  A batch of one may skip copies every larger batch makes (a transpose over a dimension of
    size 1 is already contiguous); then it creates fewer."""
    return len(one) == len(two) and all(a <= b <= 2 * a for a, b in zip(one, two, strict=True))


@dataclass(slots=True)
class OpCall:
    """One ATen operator call, attributed to the innermost module call that ran it."""

    op: str
    layer: int
    macs: int
    flops: int
    read_bytes: int
    write_bytes: int
    counted: bool
    unit: str = "uncounted"  # what it executes as (nncost.rules.registry.UNITS): its rule's, free or uncounted
    args: tuple[Any, ...] = ()  # the rule's view of the arguments, in schema order: tensors replaced by shapes
    out_shapes: tuple[Shape, ...] = ()
    kernel_bytes: int = 0  # the kernel's own high point above the bytes live before the call, outputs included
    dtype: str = ""  # of the first tensor argument: the operands' dtype a matrix product computes in
    # (storage, bytes) of each tensor argument and each output: Tracer.storage_id, which Trace.named may name
    reads: tuple[tuple[int, int], ...] = ()
    writes: tuple[tuple[int, int], ...] = ()
    routed: Routed | None = None  # a parameter read one slice per row (a grouped matrix product's experts)


@dataclass(frozen=True, slots=True)
class Named:
    """A storage the capture knows by what it holds: a parameter of the model (``kind="param"``)
    or a tensor of the generation cache (``"cache"``), with the shape and dtype of that tensor."""

    kind: str
    name: str
    shape: Shape
    dtype: str
    element_size: int


@dataclass(slots=True)
class LayerCall:
    """One call of one module.  A module called twice gives two LayerCalls."""

    index: int
    name: str
    type: str
    depth: int
    parent: int | None
    own_params: int
    params: int
    input_shapes: list[Shape] = field(default_factory=list)
    output_shapes: list[Shape] = field(default_factory=list)
    output_bytes: int = 0
    module_config: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ParamStats:
    """Parameters and buffers of the model, each tensor counted once however often it is shared."""

    params: int
    trainable_params: int
    buffers: int
    buffer_bytes: int
    param_bytes_by_dtype: dict[str, int]


@dataclass(frozen=True)
class Trace:
    """Everything the capture hands to the analyses, as built (a what-if on it is a new trace).

    ``memory_events`` is the allocation timeline of the forward: ``(op_index, delta_bytes,
    allocation)``, positive when an operator creates a storage, negative when the last
    reference to one dies; a storage made before the capture whose death the capture watched (a
    cache replaced during a decode step) has its negative storage id as its allocation, and only
    its free is an event, so live bytes are relative to what was alive when the capture began.
    """

    model: str
    execution: str
    device: str
    batch_size: int
    layers: list[LayerCall]
    ops: list[OpCall]
    memory_events: list[tuple[int, int, int]]
    params: ParamStats
    input_bytes: int
    fallback_reason: str | None = None
    named: dict[int, Named] = field(default_factory=dict)  # by storage id (OpCall.reads, .writes, allocations)
    weight_format: str | None = None  # quantized weights: the format, as stored or as a what-if
    # by batch: the bytes of each storage the same forward creates at other batches, in order
    # (capture.run.capture's ``other_batches``); the feature maps of a sample come from them
    allocations: dict[int, list[int]] = field(default_factory=dict)

    def allocation_sizes(self) -> list[int]:
        """The bytes of each storage the forward's operators create, in the order they create them."""
        return created_bytes(self.memory_events)
