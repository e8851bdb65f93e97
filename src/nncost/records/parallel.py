"""Training over many GPUs: tensor, pipeline and data parallelism, as plain data.

:class:`StepProfile` is what one traced training step says about each part of the model (the
layers before the first transformer block, each block, the layers after the last), in figures
that a layout divides; :class:`ParallelStep` is one layout's per-GPU memory of each pipeline
stage and its step time; :class:`Plan` is a search over layouts.  Bytes and plain counts
throughout; :mod:`nncost.analyses.parallel` derives them, docs/training.md says how.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Share:
    """A figure in two parts: ``split``, what tensor parallelism divides among its GPUs (attention
    heads, MLP columns, vocabulary rows), and ``whole``, what each of them holds or runs in full
    (norms, residual additions)."""

    split: int = 0
    whole: int = 0

    def __add__(self, other: Share) -> Share:
        return Share(self.split + other.split, self.whole + other.whole)

    @property
    def total(self) -> int:
        return self.split + self.whole

    def on_gpu(self, tensor_parallel: int, sequence_parallel: bool = False) -> int:
        """One GPU's part under ``tensor_parallel``: the split part divided (rounded up), the whole
        part kept, or also divided along the sequence under ``sequence_parallel``."""
        whole = -(-self.whole // tensor_parallel) if sequence_parallel else self.whole
        return -(-self.split // tensor_parallel) + whole


@dataclass(frozen=True)
class Piece:
    """One part of the model as a pipeline places it, for one micro-batch.

    ``kind`` is ``embedding`` (everything the forward runs before the first transformer block:
    the input embedding, position tables), ``block`` (one transformer block), or ``output``
    (after the last block: the final norm, the output projection, the loss).  Parameter, gradient
    and optimizer-state bytes are as the traced step held them; ``activation_bytes`` are the
    tensors autograd saved for backward that the piece's modules saved first (split or whole as the
    operator that made them); ``working`` the
    temporaries live while its forward or backward ran (each a point of the (split, whole)
    frontier: the most at any moment, for any division); ``boundary_bytes`` the tensor the piece
    hands to the next (the residual stream: what a pipeline stage sends, what a checkpointed
    block keeps); ``reduce_bytes`` the tensors tensor parallelism all-reduces in the forward and
    in the backward, at full size.  FLOPs are those the traced step ran for it, the backward's
    attributed by autograd node.
    """

    name: str
    kind: str
    params: Share
    parameter_bytes: Share
    gradient_bytes: Share
    optimizer_state_bytes: Share
    largest_module_bytes: Share  # the module with the most parameter bytes (ZeRO's gathered layer)
    activation_bytes: Share
    working: tuple[Share, ...]
    boundary_bytes: int
    forward_flops: Share
    backward_flops: Share
    reduce_bytes: tuple[int, int]  # (forward, backward)


@dataclass(frozen=True)
class StepProfile:
    """One traced training step of ``batch_size`` samples (the micro-batch), as pieces.

    ``pieces`` are in pipeline order: the embedding piece, each transformer block, the output
    piece.  ``optimizer_flops`` and ``optimizer_temporary_bytes`` (the optimizer's most
    temporaries at once) are the whole model's, over ``trainable_params`` elements of
    ``trainable_param_bytes``; ``input_bytes`` the batch's inputs; ``heads`` and ``kv_heads`` the
    config's attention heads (None when it names none); ``uncounted`` the step's operators without a
    cost rule, by name, with their calls (not in any FLOPs or time).
    """

    model: str
    batch_size: int
    seq: int | None
    precision: str
    optimizer: str
    allocator: str
    pieces: tuple[Piece, ...]
    input_bytes: int
    optimizer_flops: int
    optimizer_temporary_bytes: int
    trainable_params: int
    trainable_param_bytes: int
    heads: int | None = None
    kv_heads: int | None = None
    uncounted: dict[str, int] = field(default_factory=dict)

    @property
    def blocks(self) -> int:
        return sum(piece.kind == "block" for piece in self.pieces)


@dataclass(frozen=True)
class Layout:
    """How a training step is spread over ``gpus`` GPUs: ``tensor_parallel`` × ``pipeline_parallel``
    × ``data_parallel``, ``micro_batches`` of ``micro_batch_size`` samples per step and
    data-parallel rank, sequence parallelism, activation checkpointing of the blocks, and the
    data-parallel ``sharding`` (nncost.analyses.sharding.STRATEGIES)."""

    gpus: int
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    micro_batches: int
    micro_batch_size: int
    sequence_parallel: bool
    checkpointing: bool
    sharding: str

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.micro_batches * self.data_parallel

    @property
    def label(self) -> str:
        parts = [f"TP{self.tensor_parallel}", f"PP{self.pipeline_parallel}", f"DP{self.data_parallel}",
                 f"M{self.micro_batches}"]
        if self.sequence_parallel:
            parts.append("SP")
        if self.checkpointing:
            parts.append("ckpt")
        if self.sharding not in ("none", "ddp"):
            parts.append(self.sharding)
        return " ".join(parts)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, on each of its GPUs.

    ``blocks`` are the transformer blocks it runs (first, last; 0-based, inclusive; ``None``
    when it runs none); ``params`` its parameter elements on one GPU.  Memory: the model states
    (after tensor parallelism, then data-parallel sharding: ``communication_bytes`` is the
    sharding's buffers), ``activation_bytes`` one micro-batch's (checkpointed: the blocks' inputs
    and the other pieces' saved tensors), ``micro_batches_in_flight`` of them held under 1F1B,
    ``recompute_bytes`` one block's activations rebuilt in its backward under checkpointing,
    ``working_bytes`` the most temporaries, ``optimizer_temporary_bytes`` the optimizer's;
    ``peak_bytes`` the larger of the step's two high points (forward/backward, optimizer).
    Per micro-batch: ``forward_flops``, ``backward_flops`` (recomputation included), and the
    seconds of its compute, its tensor-parallel all-reduces and its point-to-point sends; per
    step: ``optimizer_flops`` (its share of the update), the data-parallel reduction's seconds and
    the optimizer's.
    """

    index: int
    blocks: tuple[int, int] | None
    embedding: bool
    output: bool
    params: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    communication_bytes: int
    activation_bytes: int
    micro_batches_in_flight: int
    recompute_bytes: int
    working_bytes: int
    input_bytes: int
    optimizer_temporary_bytes: int
    peak_bytes: int
    forward_flops: int
    backward_flops: int
    optimizer_flops: float
    flops_per_step: float  # the micro-batches' forward and backward, and the optimizer's share
    compute_seconds: float | None = None  # one micro-batch's forward and backward
    tensor_parallel_seconds: float | None = None
    pipeline_seconds: float | None = None  # its sends of one micro-batch, forward and backward
    data_parallel_seconds: float | None = None  # per step
    optimizer_seconds: float | None = None

    @property
    def held_activation_bytes(self) -> int:
        return self.activation_bytes * self.micro_batches_in_flight + self.recompute_bytes


@dataclass(frozen=True)
class ParallelStep:
    """One training step under ``layout``: each stage's figures on one of its GPUs, the worst
    stage's peak, and the step's time on ``hardware`` (None without a device).

    ``step_seconds`` = ``compute_seconds`` + ``tensor_parallel_seconds`` + ``pipeline_seconds``
    (sends) + ``bubble_seconds`` + ``data_parallel_seconds`` + ``optimizer_seconds``: the 1F1B
    pipeline of the slowest stage's micro-batches, its fill and drain, then the gradients'
    reduction and the optimizer.  ``flops_per_gpu`` is the most any GPU executes in a step;
    ``flops`` what all of them execute together.  ``uncounted``: the step's operators without a
    cost rule, by name, with their calls, which no figure here includes.
    """

    SECTION: ClassVar[str] = "parallel"  # its key in the document

    layout: Layout
    model: str
    stages: tuple[Stage, ...]
    peak_bytes: int
    peak_stage: int
    tokens_per_step: int | None
    flops: float
    flops_per_gpu: float
    hardware: str | None = None
    budget_bytes: int | None = None
    peak_flops: float | None = None
    efficiency: float | None = None  # the fraction of peak_flops the compute runs at
    step_seconds: float | None = None
    compute_seconds: float | None = None
    tensor_parallel_seconds: float | None = None
    pipeline_seconds: float | None = None
    bubble_seconds: float | None = None
    data_parallel_seconds: float | None = None
    optimizer_seconds: float | None = None
    tensor_parallel_link: str | None = None  # the link each kind of traffic crosses
    pipeline_link: str | None = None
    data_parallel_link: str | None = None
    uncounted: dict[str, int] = field(default_factory=dict)

    @property
    def fits(self) -> bool | None:
        if self.budget_bytes is None:
            return None
        return self.peak_bytes <= self.budget_bytes

    @property
    def bubble_fraction(self) -> float:
        """The pipeline's idle share of the ideal time, (P − 1) ÷ M for equal stages."""
        return (self.layout.pipeline_parallel - 1) / self.layout.micro_batches

    @property
    def tokens_per_second(self) -> float | None:
        if self.tokens_per_step is None or not self.step_seconds:
            return None
        return self.tokens_per_step / self.step_seconds

    def to_dict(self) -> dict[str, Any]:
        """The ``parallel`` section of the JSON document."""
        from nncost.render.formats import parallel_dict

        return parallel_dict(self)

    def __str__(self) -> str:
        from nncost.render.parallel import render_parallel

        return render_parallel(self)


@dataclass(frozen=True)
class Rejected:
    """Layouts of a search that were left out for one reason: ``count`` of them; for memory,
    ``least_bytes`` and ``most_bytes`` over the budget."""

    reason: str
    count: int
    least_bytes: int | None = None
    most_bytes: int | None = None


@dataclass(frozen=True)
class Plan:
    """A search over layouts of ``gpus`` GPUs of ``hardware``: the ``best`` that fit its
    ``budget_bytes`` (fastest per token first), out of ``considered``, and why the others
    were left out."""

    SECTION: ClassVar[str] = "plan"  # its key in the document

    gpus: int
    hardware: str
    budget_bytes: int
    considered: int
    fitting: int
    best: tuple[ParallelStep, ...]
    rejected: tuple[Rejected, ...]
    global_batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``plan`` section of the JSON document."""
        from nncost.render.formats import plan_dict

        return plan_dict(self)

    def __str__(self) -> str:
        from nncost.render.parallel import render_plan

        return render_plan(self)
