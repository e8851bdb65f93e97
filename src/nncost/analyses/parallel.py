"""Training over many GPUs: one traced step, then each layout's memory and time by arithmetic.

**The profile.**  One training step is traced on meta at the micro-batch (forward, loss,
backward, optimizer; no checkpointing), and cut into pieces: the layers before the first
transformer block, each block (:func:`~nncost.analyses.split.pipeline_blocks`), the
layers after the last.  Every operator belongs to one piece: a forward operator to the block it
ran in (or, outside the blocks, to the piece its position falls in), a backward operator to the
piece of the forward operator whose autograd node runs it (``StepTrace.backward_sources``), the
loss to the output piece.  Each figure is kept in two parts (:class:`~nncost.records.parallel.Share`):
what Megatron's tensor parallelism splits (the layers :func:`~nncost.analyses.split.split_layers`
finds: attention, MLP, vocabulary) and what every GPU of the group keeps whole (norms, residual
additions).

**A layout** (:func:`layout_step`): ``T`` GPUs of tensor parallelism, ``P`` pipeline stages,
``D = G ÷ (T·P)`` data-parallel replicas, ``M`` micro-batches.  Stage ``i`` runs an equal share
of the blocks (the first stages one more when they do not divide), the first also the embedding
piece, the last the output piece.  On each of its GPUs:

* parameters, gradients and optimizer state: the split part ÷ T, the whole part in full, then
  sharded over ``D`` as :func:`nncost.analyses.sharding.per_gpu` does (ZeRO/FSDP);
* activations: one micro-batch's saved tensors (split ÷ T; the whole part also ÷ T under
  sequence parallelism), held for ``min(P − i, M)`` micro-batches, as 1F1B keeps them in flight;
  under checkpointing, each block keeps only its input (the boundary tensor) and one block's
  activations are rebuilt at a time;
* the working set: the most temporaries live while one of its pieces ran, counting those its
  own operators and its neighbours' made (the gradient it receives; not a tensor that another
  part of the model made and the traced step kept alive, such as the logits);
* the optimizer's temporaries, in proportion to the parameter bytes it updates.

The peak is the larger of the forward/backward high point and the optimizer's.

**Time**, on a :class:`Cluster`: compute is FLOPs ÷ (efficiency × the dense matrix peak), as
the training run counts it; each block all-reduces two tensors in its forward and two in its
backward (reduce-scatter and all-gather under sequence parallelism: the same bytes), ring
``2(T−1)/T`` of them per GPU on NVLink; stages send the boundary tensor (÷ T, Megatron's
scatter/gather) forward and its gradient back; 1F1B takes ``Σ tᵢ + (M − 1)·max tᵢ`` (the
bubble, ``(P − 1)/M`` of the ideal time for equal stages, Narayanan et al. 2021); then the
data-parallel reduction of the gradients (all-reduce; ZeRO: reduce-scatter and all-gather; ZeRO-3
gathers the parameters in every micro-batch's forward and backward) and the optimizer on the
memory roof.  No communication overlaps compute: an upper bound on its cost.
docs/training.md states each figure and what stays approximate.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from nncost.analyses.build import build_report
from nncost.analyses.memory import allocation_size, uncounted_calls
from nncost.analyses.sharding import Sharding, per_gpu, sharding_named
from nncost.analyses.split import (
    LayoutRejected,
    Rejection,
    check_tensor_parallel,
    link_seconds,
    pipeline_blocks,
    split_layers,
)
from nncost.errors import BadRequest
from nncost.records.parallel import Layout, ParallelStep, Piece, Plan, Rejected, Share, Stage, StepProfile
from nncost.records.report import Report
from nncost.records.trace import ParamStats, Trace
from nncost.simulation.step import StepTrace

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)  # what a plan tries, without a global batch
ZERO_STAGES = (Sharding.DDP, Sharding.ZERO1, Sharding.ZERO2, Sharding.ZERO3)  # the data-parallel shardings a plan tries


# -- the profile ---------------------------------------------------------------------------
def profile_step(trace: StepTrace, *, model: str, allocator: str, optimizer: str, batch_size: int,
                 seq: int | None, precision: str, heads: int | None = None,
                 kv_heads: int | None = None) -> StepProfile:
    """The pieces of one traced training step (module docstring), under ``allocator`` semantics."""
    if trace.mode != "train":
        raise BadRequest("a parallel layout divides a training step: simulate one (mode='train')")
    if trace.checkpointed:
        raise BadRequest("the profile is traced without checkpointing; checkpointing is derived from it")
    report = _forward_report(trace, model, batch_size)
    blocks = pipeline_blocks(report)
    if not blocks:
        raise BadRequest(f"{model} has no repeated blocks: tensor and pipeline parallelism place a model's "
                         "transformer blocks (hf: language models)")
    places = _Places(trace, report, [block.index for block in blocks], split_layers(report))
    size = allocation_size(allocator)
    sums = _Sums(len(blocks) + 2)
    for i, op in enumerate(trace.ops[: trace.backward_end]):
        if trace.forward_end <= i < trace.loss_end:
            continue  # nncost's loss (the sum of the outputs) stands in for the real one: left out, as a step's are
        piece, split = places.of_op(i)
        target = sums.forward if i < trace.loss_end else sums.backward
        target[piece][split] += op.flops
    optimizer_flops = sum(op.flops for op in trace.ops[trace.backward_end:])
    optimizer_temporaries = _memory(trace, places, size, sums)
    _params(trace, places, size, sums)
    pieces = _pieces(report, blocks, places, sums)
    in_blocks = sum(piece.params.total for piece in pieces if piece.kind == "block")
    if in_blocks * 2 < sum(piece.params.total for piece in pieces):
        raise BadRequest(f"{model}'s repeated blocks ({blocks[0].name}, …) hold {in_blocks:,} of its parameters, "
                         "less than half: tensor and pipeline parallelism place a transformer's blocks "
                         "(hf: language models)")
    trainable = [p for p in trace.parameters if p.trainable]
    return StepProfile(
        model=model, batch_size=batch_size, seq=seq, precision=precision, optimizer=optimizer, allocator=allocator,
        pieces=pieces, input_bytes=sum(size(n) for n in trace.input_tensor_bytes), optimizer_flops=optimizer_flops,
        optimizer_temporary_bytes=optimizer_temporaries, trainable_params=sum(p.numel for p in trainable),
        trainable_param_bytes=sum(size(p.nbytes) for p in trainable), heads=heads, kv_heads=kv_heads,
        uncounted=uncounted_calls(trace))


def _forward_report(trace: StepTrace, model: str, batch_size: int) -> Report:
    """The report of the step's forward: the layer tree the Megatron split is found in."""
    params = sum(p.numel for p in trace.parameters)
    stats = ParamStats(params=params, trainable_params=sum(p.numel for p in trace.parameters if p.trainable),
                       buffers=0, buffer_bytes=0, param_bytes_by_dtype={})
    forward = Trace(model=model, execution="meta", device="meta", batch_size=batch_size, layers=trace.layers,
                    ops=trace.ops[: trace.forward_end], memory_events=[], params=stats, input_bytes=0)
    return build_report(forward)


class _Places:
    """Which piece (0: before the blocks, 1…L: the blocks, L+1: after them) and which part
    (split or whole) each operator and each layer of the step belongs to."""

    def __init__(self, trace: StepTrace, report: Report, blocks: list[int], split: set[int]) -> None:
        self.trace, self.split, self.output = trace, split, len(blocks) + 1
        block_number = {index: k + 1 for k, index in enumerate(blocks)}
        self.piece_of_layer = [0] * len(trace.layers)
        for call in trace.layers:  # parents come before their children
            if call.index in block_number:
                self.piece_of_layer[call.index] = block_number[call.index]
            elif call.parent is not None:
                self.piece_of_layer[call.index] = self.piece_of_layer[call.parent]
        forward = trace.ops[: trace.forward_end]
        in_blocks = [i for i, op in enumerate(forward) if op.layer >= 0 and self.piece_of_layer[op.layer]]
        last_block_op = in_blocks[-1] if in_blocks else -1
        self.forward: list[tuple[int, bool]] = []
        current = 0
        for i, op in enumerate(forward):
            piece = self.piece_of_layer[op.layer] if op.layer >= 0 else 0
            if piece:
                current = piece
            else:  # outside the blocks: the piece its position falls in (between blocks: the one before)
                piece = self.output if i > last_block_op else current
            self.forward.append((piece, op.layer in split))
        called = [op.layer for op in forward if op.layer >= 0]
        # the loss works on what the output projection returns: split by vocabulary when it is
        self.loss = (self.output, bool(called) and called[-1] in split)
        self.first_op: dict[int, int] = {}
        for i, op in enumerate(forward):
            self.first_op.setdefault(op.layer, i)
        self.starts = [start for start, _ in trace.backward_sources]
        self.reduced = self._reduced(report, blocks, split)
        last_op: dict[int, int] = {}
        for i, op in enumerate(forward):
            layer = op.layer
            while layer >= 0:
                last_op[layer] = i
                parent = trace.layers[layer].parent
                layer = parent if parent is not None else -1
        # what an all-reduced module returns is whole on every GPU, though a split layer made it
        self.whole_allocations = {storage for index in self.reduced if index in last_op
                                  for storage, _ in forward[last_op[index]].writes if storage >= 0}

    def _reduced(self, report: Report, blocks: list[int], split: set[int]) -> list[int]:
        """The layer calls whose outputs tensor parallelism all-reduces: each block's split
        children (the attention, the MLP), and the split lookups outside the blocks (the embedding)."""
        block_set = set(blocks)
        return [la.index for la in report.layers if la.index in split and (
            la.parent in block_set or (la.is_leaf and not self.piece_of_layer[la.index]
                                      and any(op.unit == "gather" for op in la.self_ops)))]

    def of_op(self, i: int) -> tuple[int, bool]:
        """The piece and part of operator ``i`` (forward, loss or backward)."""
        trace = self.trace
        if i < 0:
            return 0, False
        if i < trace.forward_end:
            return self.forward[i]
        if i < trace.loss_end:
            return self.loss
        k = bisect_right(self.starts, i) - 1
        source = trace.backward_sources[k][1] if k >= 0 else trace.forward_end
        return self.forward[source] if source < trace.forward_end else self.loss

    def of_layer(self, index: int) -> tuple[int, bool]:
        """The piece and part of a layer call: its block, else where its first operator ran."""
        if index < 0:
            return 0, False
        piece = self.piece_of_layer[index]
        if not piece:
            first = self.first_op.get(index)
            piece = self.forward[first][0] if first is not None else 0
        return piece, index in self.split


@dataclass
class _Sums:
    """Running (whole, split) sums per piece, indexed ``[piece][split]``."""

    n: int
    forward: list[list[int]] = field(init=False)
    backward: list[list[int]] = field(init=False)
    activations: list[list[int]] = field(init=False)
    params: list[list[int]] = field(init=False)
    weights: list[list[int]] = field(init=False)
    gradients: list[list[int]] = field(init=False)
    states: list[list[int]] = field(init=False)
    largest: list[list[int]] = field(init=False)
    working: list[list[tuple[int, int]]] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("forward", "backward", "activations", "params", "weights", "gradients", "states", "largest"):
            setattr(self, name, [[0, 0] for _ in range(self.n)])
        self.working = [[] for _ in range(self.n)]


def _memory(trace: StepTrace, places: _Places, size: Callable[[int], int], sums: _Sums) -> int:
    """Each piece's saved activations and working-set frontier; the optimizer's most temporaries."""
    born: dict[int, tuple[int, bool, str, int]] = {}  # allocation -> piece, split, category, bytes
    live: dict[int, list[int]] = {}  # piece that made them -> live temporaries [whole, split]
    optimizer_live = optimizer_most = 0
    # a kernel holding more than its outputs peaks at what was live before it, plus its own bytes
    kernels = [(i, op.kernel_bytes) for i, op in enumerate(trace.ops[: trace.backward_end]) if op.kernel_bytes]
    next_kernel = 0

    def moment(op_index: int, held: int = 0) -> None:
        piece, split = places.of_op(op_index)
        near = [live.get(p, (0, 0)) for p in (piece - 1, piece, piece + 1)]
        whole, split_bytes = sum(pair[0] for pair in near), sum(pair[1] for pair in near)
        sums.working[piece].append((split_bytes + held, whole) if split else (split_bytes, whole + held))

    def kernels_before(op_index: int, delta: int) -> None:
        nonlocal next_kernel
        while next_kernel < len(kernels) and (kernels[next_kernel][0] < op_index
                                               or (kernels[next_kernel][0] == op_index and delta > 0)):
            index, held = kernels[next_kernel]
            next_kernel += 1
            moment(index, size(held))

    for op_index, delta, allocation in trace.memory_events:
        in_step = op_index < trace.backward_end
        kernels_before(op_index, delta)
        if delta > 0:
            if allocation in trace.gradients:
                category = "gradients"
            elif allocation in trace.saved:
                category = "activations"
            else:
                category = "temporaries"
            piece, split = places.of_op(op_index) if in_step else (-1, False)
            split = split and allocation not in places.whole_allocations
            nbytes = size(delta)
            born[allocation] = (piece, split, category, nbytes)
            if category == "activations" and op_index < trace.loss_end:
                # held where it is used: by the piece whose module saved it first (a block's input,
                # which the block before it made, is the block's: a pipeline stage receives it)
                saver = trace.saved_in_forward.get(allocation, (-1, 0))[0]
                sums.activations[places.of_layer(saver)[0] if saver >= 0 else piece][split] += nbytes
        else:
            piece, split, category, nbytes = born.pop(allocation, (-1, False, "", 0))
        if category != "temporaries":
            continue
        sign = 1 if delta > 0 else -1
        if piece < 0:
            optimizer_live += sign * nbytes
            optimizer_most = max(optimizer_most, optimizer_live)
            continue
        live.setdefault(piece, [0, 0])[split] += sign * nbytes
        if delta > 0 and in_step:
            moment(op_index)
    kernels_before(trace.backward_end, 0)
    return optimizer_most


def _params(trace: StepTrace, places: _Places, size: Callable[[int], int], sums: _Sums) -> None:
    """Each piece's parameters, gradients, optimizer state, and largest module, split or whole."""
    layer_of: dict[str, int] = {}
    for call in trace.layers:
        layer_of.setdefault(call.name, call.index)
    by_module: dict[tuple[int, bool, str], int] = {}
    for p in trace.parameters:
        piece, split = places.of_layer(layer_of.get(p.module, -1))
        sums.params[piece][split] += p.numel
        sums.weights[piece][split] += size(p.nbytes)
        sums.gradients[piece][split] += size(p.nbytes) if p.trainable else 0
        sums.states[piece][split] += p.state_bytes
        key = (piece, split, p.module)
        by_module[key] = by_module.get(key, 0) + p.nbytes
    for (piece, split, _), nbytes in by_module.items():
        sums.largest[piece][split] = max(sums.largest[piece][split], nbytes)
    buffers = sum(size(n) for n in trace.param_tensor_bytes) - sum(size(p.nbytes) for p in trace.parameters)
    sums.weights[0][False] += max(buffers, 0)


def _pieces(report: Report, blocks: list, places: _Places, sums: _Sums) -> tuple[Piece, ...]:
    """The pieces, with each block's all-reduced tensors (the outputs of its split children: the
    attention's and the MLP's) and the boundary tensor (the block's output)."""
    layers = report.layers
    boundary = [blocks[0].output_bytes, *(block.output_bytes for block in blocks), 0]
    reduce = [[0, 0] for _ in boundary]
    for index in places.reduced:
        piece = places.of_layer(index)[0]
        reduce[piece][0] += layers[index].output_bytes
        if layers[index].parent is not None and places.piece_of_layer[index]:  # a block's: also in the backward
            reduce[piece][1] += layers[index].output_bytes
    outside = [la for la in layers if la.index in places.split and la.is_leaf and not places.piece_of_layer[la.index]]
    projected = sum(1 for la in outside if any(op.unit == "matmul" for op in la.self_ops)
                    and places.of_layer(la.index)[0] == places.output)
    reduce[-1][1] += projected * blocks[-1].output_bytes  # the gradient of the output projection's input

    def share(pair: list[int]) -> Share:
        return Share(split=pair[True], whole=pair[False])

    pieces = []
    for k in range(len(boundary)):
        kind = "embedding" if k == 0 else "output" if k == len(boundary) - 1 else "block"
        name = blocks[k - 1].name if kind == "block" else kind
        pieces.append(Piece(
            name=name, kind=kind, params=share(sums.params[k]), parameter_bytes=share(sums.weights[k]),
            gradient_bytes=share(sums.gradients[k]), optimizer_state_bytes=share(sums.states[k]),
            largest_module_bytes=share(sums.largest[k]), activation_bytes=share(sums.activations[k]),
            working=_frontier(sums.working[k]), boundary_bytes=boundary[k], forward_flops=share(sums.forward[k]),
            backward_flops=share(sums.backward[k]), reduce_bytes=(reduce[k][0], reduce[k][1])))
    return tuple(pieces)


def _frontier(points: Iterable[tuple[int, int]]) -> tuple[Share, ...]:
    """The (split, whole) points no other point exceeds in both: the most any division can hold."""
    kept: list[Share] = []
    best_whole = -1
    for split, whole in sorted(set(points), key=lambda p: (-p[0], -p[1])):
        if whole > best_whole:
            kept.append(Share(split, whole))
            best_whole = whole
    return tuple(kept) or (Share(),)


# -- a layout --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cluster:
    """The GPUs a layout runs on: ``hardware``, computing at ``efficiency`` × ``peak_flops`` (its
    dense matrix peak at the run's precision), ``bandwidth`` of device memory, ``gpus_per_node``
    joined by ``interconnect`` (NVLink) and nodes by ``network``, each link's bandwidth one GPU's,
    both directions together as the catalogue quotes them (None: not in the catalogue)."""

    hardware: str
    peak_flops: float
    efficiency: float
    bandwidth: float
    interconnect: str
    interconnect_bandwidth: float | None
    gpus_per_node: int | None = None
    network: str = ""
    network_bandwidth: float | None = None

    def link(self, gpus_spanned: int) -> tuple[str, float]:
        """The link a group of ``gpus_spanned`` consecutive GPUs talks over, and its bandwidth; a
        device with no node size in the catalogue is one node of any size."""
        if self.gpus_per_node is None or gpus_spanned <= self.gpus_per_node:
            if self.interconnect_bandwidth is None:
                raise LayoutRejected(Rejection.NO_INTERCONNECT,
                                     f"the catalogue gives no GPU-to-GPU bandwidth for {self.hardware}")
            return self.interconnect, self.interconnect_bandwidth
        if self.network_bandwidth is None:
            raise LayoutRejected(Rejection.NO_NETWORK, f"{gpus_spanned} GPUs span nodes of {self.gpus_per_node} "
                                 f"{self.hardware}, and the catalogue gives no network bandwidth between its nodes")
        return self.network, self.network_bandwidth


def stage_pieces(profile: StepProfile, stages: int) -> list[list[int]]:
    """The pieces each of ``stages`` pipeline stages runs: an equal share of the blocks in order
    (the first ``L mod P`` stages one more), the first stage also the embedding piece, the last the
    output piece."""
    blocks = profile.blocks
    if not 1 <= stages <= blocks:
        raise LayoutRejected(Rejection.STAGES, f"{stages} pipeline stages cannot share {blocks} transformer blocks: "
                             f"at most {blocks}")
    base, extra = divmod(blocks, stages)
    placed, first = [], 1
    for i in range(stages):
        count = base + (i < extra)
        placed.append(list(range(first, first + count)))
        first += count
    placed[0].insert(0, 0)
    placed[-1].append(blocks + 1)
    return placed


@dataclass(frozen=True)
class _StageSums:
    """One stage's pieces added up, before any layout divides them."""

    index: int
    blocks: tuple[int, int] | None
    embedding: bool
    output: bool
    params: Share
    parameter_bytes: Share
    gradient_bytes: Share
    optimizer_state_bytes: Share
    largest: tuple[Share, ...]
    activation_bytes: Share  # every piece's
    unchecked_activation_bytes: Share  # the pieces checkpointing leaves alone (embedding, output)
    block_inputs: int  # the tensors its blocks are called with: what checkpointed blocks keep
    block_activations: tuple[Share, ...]  # each distinct block's, one of which is rebuilt at a time
    working: tuple[Share, ...]
    forward_flops: Share
    backward_flops: Share
    block_forward_flops: Share  # what checkpointing runs again
    reduce_forward: int
    reduce_backward: int
    block_reduce_forward: int
    send_bytes: int  # the boundary tensor it sends forward (and receives the gradient of)
    receive_bytes: int  # the tensor it receives (and sends the gradient of)


def _add(shares: Iterable[Share]) -> Share:
    total = Share()
    for share in shares:
        total = total + share
    return total


def _stage_sums(profile: StepProfile, stages: int) -> list[_StageSums]:
    placed = stage_pieces(profile, stages)
    sums = []
    for i, members in enumerate(placed):
        pieces = [profile.pieces[k] for k in members]
        blocks = [p for p in pieces if p.kind == "block"]
        others = [p for p in pieces if p.kind != "block"]
        numbers = [k - 1 for k in members if profile.pieces[k].kind == "block"]
        sums.append(_StageSums(
            index=i, blocks=(numbers[0], numbers[-1]) if numbers else None, embedding=0 in members,
            output=len(profile.pieces) - 1 in members, params=_add(p.params for p in pieces),
            parameter_bytes=_add(p.parameter_bytes for p in pieces),
            gradient_bytes=_add(p.gradient_bytes for p in pieces),
            optimizer_state_bytes=_add(p.optimizer_state_bytes for p in pieces),
            largest=tuple({p.largest_module_bytes for p in pieces}),
            activation_bytes=_add(p.activation_bytes for p in pieces),
            unchecked_activation_bytes=_add(p.activation_bytes for p in others),
            block_inputs=sum(profile.pieces[k - 1].boundary_bytes for k in members
                             if profile.pieces[k].kind == "block"),
            block_activations=tuple({p.activation_bytes for p in blocks}),
            working=_frontier((w.split, w.whole) for p in pieces for w in p.working),
            forward_flops=_add(p.forward_flops for p in pieces), backward_flops=_add(p.backward_flops for p in pieces),
            block_forward_flops=_add(p.forward_flops for p in blocks),
            reduce_forward=sum(p.reduce_bytes[0] for p in pieces),
            reduce_backward=sum(p.reduce_bytes[1] for p in pieces),
            block_reduce_forward=sum(p.reduce_bytes[0] for p in blocks),
            send_bytes=pieces[-1].boundary_bytes if i < stages - 1 else 0,
            receive_bytes=profile.pieces[members[0] - 1].boundary_bytes if i > 0 else 0))
    return sums


class Layouts:
    """Layouts of one profile: :meth:`step` is the one function both a given layout and a plan's
    search use; the stages' sums are made once per pipeline depth."""

    def __init__(self, profile: StepProfile) -> None:
        self.profile = profile
        self._sums: dict[int, list[_StageSums]] = {}

    def check(self, layout: Layout, cluster: Cluster | None = None) -> None:
        """A clear error for a layout this model or cluster cannot take."""
        profile, t = self.profile, layout.tensor_parallel
        if layout.gpus != t * layout.pipeline_parallel * layout.data_parallel:
            raise LayoutRejected(Rejection.GPUS, f"{layout.gpus} GPUs are not {t} × {layout.pipeline_parallel} × "
                                 f"{layout.data_parallel}")
        if t > 1:
            check_tensor_parallel(profile.heads, t, gpus_per_node=cluster.gpus_per_node if cluster else None,
                                  hardware=cluster.hardware if cluster else "", kv_heads=profile.kv_heads)
        if layout.pipeline_parallel > profile.blocks:
            raise LayoutRejected(Rejection.STAGES, f"{layout.pipeline_parallel} pipeline stages cannot share "
                                 f"{profile.blocks} transformer blocks: at most {profile.blocks}")

    def step(self, layout: Layout, cluster: Cluster | None = None, budget: int | None = None) -> ParallelStep:
        """One training step under ``layout``: each stage's memory on one GPU and, on ``cluster``,
        the step's time (module docstring)."""
        self.check(layout, cluster)
        p = layout.pipeline_parallel
        if p not in self._sums:
            self._sums[p] = _stage_sums(self.profile, p)
        stages = [self._stage(sums, layout, cluster) for sums in self._sums[p]]
        worst = max(stages, key=lambda s: s.peak_bytes)
        t, d = layout.tensor_parallel, layout.data_parallel
        seq = self.profile.seq
        figures = ParallelStep(
            layout=layout, model=self.profile.model, stages=tuple(stages), peak_bytes=worst.peak_bytes,
            peak_stage=worst.index, tokens_per_step=layout.global_batch * seq if seq is not None else None,
            flops=t * d * sum(s.flops_per_step for s in stages), flops_per_gpu=max(s.flops_per_step for s in stages),
            budget_bytes=budget, uncounted=self.profile.uncounted)
        return _timed(figures, cluster) if cluster is not None else figures

    def _stage(self, sums: _StageSums, layout: Layout, cluster: Cluster | None) -> Stage:
        profile = self.profile
        t, d, m, sp = layout.tensor_parallel, layout.data_parallel, layout.micro_batches, layout.sequence_parallel
        weights, grads = sums.parameter_bytes.on_gpu(t), sums.gradient_bytes.on_gpu(t)
        states = sums.optimizer_state_bytes.on_gpu(t)
        largest = max(max(-(-share.split // t), share.whole) for share in sums.largest)
        if layout.checkpointing:
            activations = sums.unchecked_activation_bytes.on_gpu(t, sp) + Share(0, sums.block_inputs).on_gpu(t, sp)
            rebuilt = max((share.on_gpu(t, sp) for share in sums.block_activations), default=0)
        else:
            activations, rebuilt = sums.activation_bytes.on_gpu(t, sp), 0
        in_flight = min(layout.pipeline_parallel - sums.index, m)
        working = max(share.on_gpu(t, sp) for share in sums.working)
        inputs = profile.input_bytes if sums.embedding else 0
        held = per_gpu({"parameters": weights, "gradients": grads, "optimizer_state": states,
                        "activations": activations * in_flight + rebuilt, "temporaries": working, "inputs": inputs},
                       gpus=d, sharding=layout.sharding, largest_layer_bytes=largest)
        sharded = sharding_named(layout.sharding).shards_optimizer and d > 1
        updated = grads / d if sharded else grads  # the trainable parameter bytes this GPU updates
        share_updated = updated / profile.trainable_param_bytes if profile.trainable_param_bytes else 0.0
        optimizer_temporaries = round(profile.optimizer_temporary_bytes * share_updated)
        static = held["parameters"] + held["gradients"] + held["optimizer_state"] + held.get("communication", 0)
        training = sum(held.values())
        if m == 1:  # one micro-batch: the backward frees activations as it makes gradients, no earlier ones kept
            training -= min(held["gradients"], held["activations"])
        peak = max(training, static + inputs + optimizer_temporaries)
        forward, backward = sums.forward_flops.on_gpu(t), sums.backward_flops.on_gpu(t)
        if layout.checkpointing:
            backward += sums.block_forward_flops.on_gpu(t)
        optimizer_flops = profile.optimizer_flops * share_updated
        return Stage(
            index=sums.index, blocks=sums.blocks, embedding=sums.embedding, output=sums.output,
            params=sums.params.on_gpu(t), parameter_bytes=held["parameters"], gradient_bytes=held["gradients"],
            optimizer_state_bytes=held["optimizer_state"], communication_bytes=held.get("communication", 0),
            activation_bytes=activations, micro_batches_in_flight=in_flight, recompute_bytes=rebuilt,
            working_bytes=working, input_bytes=inputs, optimizer_temporary_bytes=optimizer_temporaries,
            peak_bytes=peak, forward_flops=forward, backward_flops=backward, optimizer_flops=optimizer_flops,
            flops_per_step=m * (forward + backward) + optimizer_flops,
            **(_stage_seconds(sums, layout, cluster, forward + backward, held, updated, optimizer_flops)
               if cluster is not None else {}))


def _ring(nbytes: float, gpus: int) -> float:
    """Bytes each GPU sends in a ring all-reduce of ``nbytes`` over ``gpus``."""
    return 2 * (gpus - 1) / gpus * nbytes


def _stage_seconds(sums: _StageSums, layout: Layout, cluster: Cluster, flops: int, held: dict[str, int],
                   updated: float, optimizer_flops: float) -> dict[str, float]:
    """One stage's seconds: per micro-batch its compute, all-reduces and sends; per step its
    data-parallel reduction and its optimizer."""
    t, p, d, m = layout.tensor_parallel, layout.pipeline_parallel, layout.data_parallel, layout.micro_batches
    rate = cluster.peak_flops * cluster.efficiency
    tensor = pipeline = data = 0.0
    if t > 1:
        again = sums.block_reduce_forward if layout.checkpointing else 0  # the recomputed forward's
        reduced = sums.reduce_forward + sums.reduce_backward + again
        tensor = link_seconds(_ring(reduced, t), cluster.link(t)[1])
    if p > 1:
        pipeline = link_seconds((sums.send_bytes + sums.receive_bytes) / t, cluster.link(layout.gpus)[1])
    if d > 1:
        weights = sums.parameter_bytes.on_gpu(t)
        grads = sums.gradient_bytes.on_gpu(t)
        part = (d - 1) / d
        moved = {Sharding.NONE: 2 * part * grads, Sharding.DDP: 2 * part * grads,
                 Sharding.ZERO1: part * (grads + weights), Sharding.ZERO2: part * (m * grads + weights),
                 }.get(sharding_named(layout.sharding), part * m * (2 * weights + grads))
        data = link_seconds(moved, cluster.link(t * d)[1])
    sharded = sharding_named(layout.sharding).shards_optimizer and d > 1
    touched = (2 * held["parameters"] if not sharded else 2 * sums.parameter_bytes.on_gpu(t) / d) + updated + \
        2 * held["optimizer_state"]  # parameters read and written, gradients read, state read and written
    optimizer = max(optimizer_flops / rate, touched / cluster.bandwidth)
    return {"compute_seconds": flops / rate, "tensor_parallel_seconds": tensor, "pipeline_seconds": pipeline,
            "data_parallel_seconds": data, "optimizer_seconds": optimizer}


def _timed(figures: ParallelStep, cluster: Cluster) -> ParallelStep:
    """The step's time: the 1F1B pipeline, then the slowest stage's reduction and optimizer."""
    stages, m = figures.stages, figures.layout.micro_batches
    per_micro = [(s.compute_seconds or 0) + (s.tensor_parallel_seconds or 0) + (s.pipeline_seconds or 0)
                 for s in stages]
    slowest = max(range(len(stages)), key=lambda i: per_micro[i])
    pipeline = sum(per_micro) + (m - 1) * per_micro[slowest]
    tail = max(stages, key=lambda s: (s.data_parallel_seconds or 0) + (s.optimizer_seconds or 0))
    bottleneck = stages[slowest]
    layout = figures.layout
    return replace(
        figures, hardware=cluster.hardware, peak_flops=cluster.peak_flops, efficiency=cluster.efficiency,
        step_seconds=pipeline + (tail.data_parallel_seconds or 0) + (tail.optimizer_seconds or 0),
        compute_seconds=m * (bottleneck.compute_seconds or 0),
        tensor_parallel_seconds=m * (bottleneck.tensor_parallel_seconds or 0),
        pipeline_seconds=m * (bottleneck.pipeline_seconds or 0), bubble_seconds=pipeline - m * per_micro[slowest],
        data_parallel_seconds=tail.data_parallel_seconds, optimizer_seconds=tail.optimizer_seconds,
        tensor_parallel_link=cluster.link(layout.tensor_parallel)[0] if layout.tensor_parallel > 1 else None,
        pipeline_link=cluster.link(layout.gpus)[0] if layout.pipeline_parallel > 1 else None,
        data_parallel_link=cluster.link(layout.tensor_parallel * layout.data_parallel)[0]
        if layout.data_parallel > 1 else None)


def layout_step(profile: StepProfile, layout: Layout, cluster: Cluster | None = None,
                budget: int | None = None) -> ParallelStep:
    """One layout's step (:meth:`Layouts.step`)."""
    return Layouts(profile).step(layout, cluster, budget)


# -- a plan ----------------------------------------------------------------------------------
def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def plan(profile: StepProfile, cluster: Cluster, *, gpus: int, budget: int, global_batch: int | None = None,
         sequence_parallel: bool = False, keep: int = 5,
         advance: Callable[[], None] | None = None) -> Plan:
    """Every layout of ``gpus`` GPUs: T and P each a divisor, D the rest, M from
    :data:`MICRO_BATCHES` (or the one that makes ``global_batch``), checkpointing off and on, and
    ZeRO none to 3 where D > 1; the ``keep`` fastest per token that fit ``budget``, and why the
    others do not."""
    layouts = Layouts(profile)
    b = profile.batch_size
    fitting: list[ParallelStep] = []
    reasons: dict[Rejection, list[int]] = {}
    considered = 0

    def reject(reason: Rejection, over: int | None = None, count: int = 1) -> None:
        entry = reasons.setdefault(reason, [0, -1, -1])
        entry[0] += count
        if over is not None:
            entry[1] = over if entry[1] < 0 else min(entry[1], over)
            entry[2] = max(entry[2], over)

    for t in divisors(gpus):
        for p in divisors(gpus // t):
            d = gpus // (t * p)
            shardings = [Sharding.NONE] if d == 1 else list(ZERO_STAGES)
            if global_batch is not None:
                counts = [global_batch // (b * d)] if global_batch % (b * d) == 0 else []
                if not counts:
                    considered += 2 * len(shardings)
                    reject(Rejection.GLOBAL_BATCH, count=2 * len(shardings))
                    continue
            else:
                counts = list(MICRO_BATCHES)
            for m in counts:
                for checkpointing in (False, True):
                    for sharding in shardings:
                        considered += 1
                        if advance is not None:
                            advance()
                        layout = Layout(gpus, t, p, d, m, b, sequence_parallel and t > 1, checkpointing, sharding)
                        try:
                            figures = layouts.step(layout, cluster, budget)
                        except LayoutRejected as exc:
                            reject(exc.reason)
                            continue
                        if figures.peak_bytes > budget:
                            reject(Rejection.OVER_MEMORY, figures.peak_bytes - budget)
                        else:
                            fitting.append(figures)
    fitting.sort(key=lambda f: ((f.step_seconds or 0) / (f.tokens_per_step or f.layout.global_batch), f.peak_bytes))
    rejected = tuple(Rejected(_shown(reason, global_batch), n, least if least >= 0 else None,
                              most if most >= 0 else None)
                     for reason, (n, least, most) in sorted(reasons.items(), key=lambda item: -item[1][0]))
    return Plan(gpus=gpus, hardware=cluster.hardware, budget_bytes=budget, considered=considered,
                fitting=len(fitting), best=tuple(fitting[:keep]), rejected=rejected, global_batch=global_batch)


def _shown(reason: Rejection, global_batch: int | None) -> str:
    """The text a plan shows for ``reason``: the global batch's own names its size."""
    if reason is Rejection.GLOBAL_BATCH:
        return f"global batch {global_batch} is not a multiple of micro-batch × data-parallel GPUs"
    return str(reason)
