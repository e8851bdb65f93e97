"""From a Trace to a Report: inclusive per-layer sums, totals, the memory figures."""

from __future__ import annotations

from fractions import Fraction

from nncost.records.report import FileParams, Layer, Report, Totals, Uncounted
from nncost.records.trace import OpCall, Trace, same_storages, token_rows


def build_report(trace: Trace, *, file_params: FileParams | None = None) -> Report:
    """The report of one captured forward; ``file_params`` says which stored tensors of a model
    file counted as parameters."""
    totals = _totals(trace)
    return Report(
        model=trace.model,
        execution=trace.execution,
        device=trace.device,
        batch_size=trace.batch_size,
        layers=_layers(trace, totals.macs, totals.flops),
        totals=totals,
        uncounted=uncounted(trace),
        fallback_reason=trace.fallback_reason,
        file_params=file_params,
        weight_format=trace.weight_format,
    )


def _layers(trace: Trace, total_macs: int, total_flops: int) -> list[Layer]:
    """One Layer per module call, its figures inclusive: its own operators' plus its submodules'.

    ``self_ops`` lists only the operators the call ran itself.  An operator that ran before the
    model's own pre-hook is in no layer; the totals count it."""
    n = len(trace.layers)
    macs = [0] * n
    flops = [0] * n
    read = [0] * n
    write = [0] * n
    self_ops: list[list[OpCall]] = [[] for _ in range(n)]
    for op in trace.ops:
        if op.layer < 0:  # ran before the model's own pre-hook
            continue
        macs[op.layer] += op.macs
        flops[op.layer] += op.flops
        read[op.layer] += op.read_bytes
        write[op.layer] += op.write_bytes
        self_ops[op.layer].append(op)

    has_children = [False] * n
    for call in reversed(trace.layers):  # children follow their parent: fold upwards
        if call.parent is not None:
            has_children[call.parent] = True
            macs[call.parent] += macs[call.index]
            flops[call.parent] += flops[call.index]
            read[call.parent] += read[call.index]
            write[call.parent] += write[call.index]

    return [
        Layer(
            index=c.index,
            name=c.name,
            type=c.type,
            depth=c.depth,
            parent=c.parent,
            input_shapes=c.input_shapes,
            output_shapes=c.output_shapes,
            own_params=c.own_params,
            params=c.params,
            macs=macs[c.index],
            flops=flops[c.index],
            output_bytes=c.output_bytes,
            read_bytes=read[c.index],
            write_bytes=write[c.index],
            intensity=_ratio(flops[c.index], read[c.index] + write[c.index]),
            flops_share=_ratio(flops[c.index], total_flops),
            macs_share=_ratio(macs[c.index], total_macs),
            is_leaf=not has_children[c.index],
            module_config=c.module_config,
            self_ops=self_ops[c.index],
        )
        for c in trace.layers
    ]


def _totals(trace: Trace) -> Totals:
    """The whole forward's figures: every operator counts, those outside any layer included."""
    peak, peak_op = peak_live_bytes(trace.memory_events)
    stats = trace.params
    return Totals(
        params=stats.params,
        active_params=active_params(trace),
        trainable_params=stats.trainable_params,
        frozen_params=stats.params - stats.trainable_params,
        buffers=stats.buffers,
        buffer_bytes=stats.buffer_bytes,
        param_bytes=sum(stats.param_bytes_by_dtype.values()),
        param_bytes_by_dtype=stats.param_bytes_by_dtype,
        macs=sum(op.macs for op in trace.ops),
        flops=sum(op.flops for op in trace.ops),
        read_bytes=sum(op.read_bytes for op in trace.ops),
        write_bytes=sum(op.write_bytes for op in trace.ops),
        input_bytes=trace.input_bytes,
        feature_map_bytes=feature_map_bytes(trace),
        peak_activation_bytes=peak,
        peak_at=_layer_at(trace, peak_op),
    )


def written_bytes(trace: Trace) -> int:
    """The bytes of every storage the forward's operators create, as if none were reused."""
    return sum(trace.allocation_sizes())


def feature_map_bytes(trace: Trace) -> int:
    """The feature maps of one sample: the bytes one more sample adds to what the forward writes.

    Of the trace's own batch and the others it holds (``Trace.allocations``), two consecutive
    ones give the figure: what the larger writes minus what the smaller does.  A tensor that does
    not grow with the batch (BatchNorm's saved statistics, a causal mask) is in both and cancels.
    A batch of one counts only where batch 2 created the same storages
    (:func:`~nncost.records.trace.same_storages`), each grown by one sample's share; otherwise
    batches 2 and 3 are the pair.  So the figure is the same at every batch.  Without a pair (a
    model that runs at one batch only or needs data to run, an ONNX file), or where the larger
    batch wrote less, it is ``written_bytes`` over the batch."""
    by_batch = {**trace.allocations, trace.batch_size: trace.allocation_sizes()} if trace.allocations else {}
    for smaller in sorted(by_batch):
        larger = by_batch.get(smaller + 1)
        if larger is None or (smaller == 1 and not same_storages(by_batch[1], larger)):
            continue
        added = sum(larger) - sum(by_batch[smaller])
        if added >= 0:
            return added
    return round(written_bytes(trace) / trace.batch_size)


def active_params(trace: Trace) -> int:
    """The parameters one token uses.

    A parameter that a grouped matrix product reads one slice per routed row (the experts of a
    mixture of experts) is used by each token in ``rows / tokens`` of its ``slices`` slices (top-k
    of E), the tokens being the rows of the input of the module call that ran the product; calls
    that read the same parameter add up, to at most all of it.  Every other parameter counts
    fully, the embedding and the LM head included, as published "active parameters" figures count
    them.  A dense model's active parameters are its parameters.
    """
    used: dict[str, Fraction] = {}
    sizes: dict[str, int] = {}
    for op in trace.ops:
        routed = op.routed
        if routed is None:
            continue
        tokens = token_rows(trace.layers[op.layer].input_shapes) if op.layer >= 0 else None
        share = routed.share(tokens) if tokens is not None else Fraction(1)
        used[routed.param] = min(Fraction(1), used.get(routed.param, Fraction(0)) + share)
        sizes[routed.param] = routed.numel
    unused = sum(size * (1 - used[param]) for param, size in sizes.items())
    return trace.params.params - round(unused)


def peak_live_bytes(events: list[tuple[int, int, int]]) -> tuple[int, int]:
    """The most bytes alive at once, and the index of the operator that reached it."""
    live = peak = 0
    peak_op = -1
    for op_index, delta, _ in events:
        live += delta
        if live > peak:
            peak, peak_op = live, op_index
    return peak, peak_op


def uncounted(trace: Trace) -> list[Uncounted]:
    calls: dict[str, int] = {}
    layers: dict[str, list[str]] = {}
    for op in trace.ops:
        if op.counted:
            continue
        calls[op.op] = calls.get(op.op, 0) + 1
        name = trace.layers[op.layer].name if op.layer >= 0 else "(outside the model)"
        names = layers.setdefault(op.op, [])
        if name not in names:
            names.append(name)
    return sorted((Uncounted(op, n, layers[op]) for op, n in calls.items()), key=lambda u: -u.calls)


def _layer_at(trace: Trace, op_index: int) -> str:
    if 0 <= op_index < len(trace.ops) and trace.ops[op_index].layer >= 0:
        return trace.layers[trace.ops[op_index].layer].name or trace.model
    return ""


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0
