"""From a captured step to its memory report: the live bytes at the peak, by category."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from nncost.analyses.cuda_allocator import replay, round_request
from nncost.analyses.sharding import per_gpu
from nncost.hardware.catalogue import Allocator
from nncost.records.memory import CATEGORIES, MemoryReport
from nncost.rules.registry import op_label
from nncost.simulation.step import StepTrace


def uncounted_calls(trace: StepTrace) -> dict[str, int]:
    """The step's operators without a cost rule, by name: how many calls of each (their FLOPs are not in
    any figure, and the report says so)."""
    calls: dict[str, int] = {}
    for op in trace.ops:
        if not op.counted:
            calls[op.op] = calls.get(op.op, 0) + 1
    return calls


def allocation_size(allocator: str) -> Callable[[int], int]:
    """Bytes an allocation of ``n`` bytes takes: exact on CPU, in the caching allocator's blocks on CUDA."""
    return round_request if allocator == Allocator.CUDA else lambda n: n


def analyse_step(trace: StepTrace, *, model: str, allocator: str, optimizer: str, batch_size: int,
                 precision: str = "fp32", gpus: int = 1, sharding: str = "none") -> MemoryReport:
    """The memory report of one captured step under ``allocator`` semantics; with ``gpus`` and
    ``sharding``, also the per-GPU breakdown of data-parallel training, at the highest moment of
    one GPU's share of the step."""
    size = allocation_size(allocator)
    start = _live_at_start(trace, size)
    sharded = sharding != "none" or gpus > 1
    peak_total, peak = sum(start.values()), _Moment(-1, start, False, 0, 0)
    timeline = [(0, tuple(start.values()))]
    gpu_peak = _one_gpu(trace, peak, gpus, sharding) if sharded else {}
    for moment in _moments(trace, size, start):
        if not moment.in_kernel:
            timeline.append((moment.op_index, tuple(moment.live.values())))
        total = sum(moment.live.values())
        if total > peak_total:
            peak_total, peak = total, moment._replace(live=dict(moment.live))
        if sharded:
            share = _one_gpu(trace, moment, gpus, sharding)
            if sum(share.values()) > sum(gpu_peak.values()):
                gpu_peak = share

    forward = trace.ops[: trace.forward_end]
    backward = trace.ops[trace.loss_end : trace.backward_end]
    # Under checkpointing the backward re-runs module forwards: those ops are attributed to a layer.
    recompute = [op for op in backward if op.layer >= 0]
    step = trace.ops[trace.backward_end :]
    uncounted = uncounted_calls(trace)
    replayed = None
    if allocator == Allocator.CUDA:
        replayed = replay([*trace.param_tensor_bytes, *trace.state_tensor_bytes, *trace.input_tensor_bytes],
                          trace.memory_events)
    return MemoryReport(
        allocator_allocated_bytes=replayed.allocated if replayed else None,
        allocator_reserved_bytes=replayed.reserved if replayed else None,
        model=model,
        mode=trace.mode,
        allocator=allocator,
        precision=precision,
        gpus=gpus,
        sharding=sharding,
        per_gpu=gpu_peak if sharded else None,
        saved_for_backward=saved_for_backward(trace),
        optimizer=optimizer if trace.mode == "train" else "none",
        batch_size=batch_size,
        peak_bytes=peak_total,
        peak_phase=_phase(trace, peak.op_index),
        peak_at=_where(trace, peak.op_index) + (" (inside its kernel)" if peak.in_kernel else ""),
        breakdown=peak.live,
        forward_macs=sum(op.macs for op in forward),
        forward_flops=sum(op.flops for op in forward),
        backward_macs=sum(op.macs for op in backward),
        backward_flops=sum(op.flops for op in backward),
        optimizer_flops=sum(op.flops for op in step),
        checkpointed=trace.checkpointed,
        recompute_macs=sum(op.macs for op in recompute),
        recompute_flops=sum(op.flops for op in recompute),
        uncounted=uncounted,
        timeline=timeline,
        peak_op=peak.op_index,
        phase_ends=(trace.forward_end, trace.loss_end, trace.backward_end, len(trace.ops)),
    )


def _live_at_start(trace: StepTrace, size: Callable[[int], int]) -> dict[str, int]:
    """The bytes live before the step, by category (every one, in ``CATEGORIES`` order): the
    parameters, the optimizer's state and the inputs."""
    live = dict.fromkeys(CATEGORIES, 0)
    live["parameters"] = sum(size(n) for n in trace.param_tensor_bytes)
    live["optimizer_state"] = sum(size(n) for n in trace.state_tensor_bytes)
    live["inputs"] = sum(size(n) for n in trace.input_tensor_bytes)
    return live


def _category(trace: StepTrace, allocation: int) -> str:
    """What an allocation of the step holds: in inference everything is an activation; in training a
    gradient, an activation saved for backward, or a temporary."""
    if trace.mode == "infer":
        return "activations"
    if allocation in trace.gradients:
        return "gradients"
    return "activations" if allocation in trace.saved else "temporaries"


class _Moment(NamedTuple):
    """The bytes live by category at one moment of the step, and what one GPU's share of it needs."""

    op_index: int  # the operator it happened at; -1 before the step
    live: dict[str, int]
    in_kernel: bool  # inside the operator's kernel (a kernel high point), not after a memory event
    optimizer_temporaries: int  # of the temporaries, those the optimizer's step made
    parameter_casts: int  # of the temporaries, casts of parameters (StepTrace.parameter_casts)


def _moments(trace: StepTrace, size: Callable[[int], int], start: dict[str, int]) -> Iterator[_Moment]:
    """The moments of the step after ``start`` (the bytes live before it), in order: after each
    memory event, and at each kernel high point, where a call whose kernel holds more than its
    outputs (workspaces, blocked copies) holds the bytes live before the call plus its
    ``kernel_bytes``, as temporaries.  After an event ``live`` is one dict updated in place: a
    caller copies what it keeps."""
    live = dict(start)
    made_by_optimizer: set[int] = set()  # temporaries the optimizer's step made, still live
    optimizer_live = casts_live = 0
    kernels = [(i, op.kernel_bytes) for i, op in enumerate(trace.ops) if op.kernel_bytes]
    next_kernel = 0

    def kernels_before(op_index: int, delta: int) -> Iterator[_Moment]:
        """Every kernel high point that comes before this event."""
        nonlocal next_kernel
        while next_kernel < len(kernels) and (kernels[next_kernel][0] < op_index
                                               or (kernels[next_kernel][0] == op_index and delta > 0)):
            index, held = kernels[next_kernel]
            next_kernel += 1
            moment = dict(live)
            moment["temporaries"] += size(held)
            optimizer_temporaries = optimizer_live + (size(held) if index >= trace.backward_end else 0)
            yield _Moment(index, moment, True, optimizer_temporaries, casts_live)

    for op_index, delta, allocation in trace.memory_events:
        yield from kernels_before(op_index, delta)
        sign = 1 if delta > 0 else -1
        kind = _category(trace, allocation)
        live[kind] += sign * size(abs(delta))
        if kind == "temporaries" and allocation in trace.parameter_casts:
            casts_live += sign * size(abs(delta))
        if delta > 0 and kind == "temporaries" and trace.mode == "train" and op_index >= trace.backward_end:
            made_by_optimizer.add(allocation)
            optimizer_live += size(delta)
        elif delta < 0 and allocation in made_by_optimizer:
            made_by_optimizer.discard(allocation)
            optimizer_live -= size(-delta)
        yield _Moment(op_index, live, False, optimizer_live, casts_live)
    yield from kernels_before(len(trace.ops) + 1, 0)


def _one_gpu(trace: StepTrace, moment: _Moment, gpus: int, sharding: str) -> dict[str, int]:
    """One GPU's share of the bytes live at ``moment`` (``analyses.sharding.per_gpu``)."""
    return per_gpu(moment.live, gpus=gpus, sharding=sharding, largest_layer_bytes=trace.largest_layer_bytes,
                   optimizer_temporaries=moment.optimizer_temporaries, parameter_casts=moment.parameter_casts,
                   largest_layer_cast_bytes=trace.largest_layer_cast_bytes)


def saved_for_backward(trace: StepTrace) -> dict[str, int]:
    """The bytes each module's forward saved for backward, its submodules included, by qualified name
    (``MemoryReport.saved_for_backward``), in the order the modules were first called.

    This is the convention of activation-memory formulas (Korthikanti et al. 2022, docs/training.md):
    a tensor belongs to the operator that keeps it for its backward, so a layer counts the input its
    first normalisation saves although an earlier layer made it.  Each storage counts once: a view
    saved twice, or a tensor two operators save, is one storage.
    """
    totals = {call.name: 0 for call in trace.layers}
    for layer, nbytes in trace.saved_in_forward.values():
        names = set()
        while 0 <= layer < len(trace.layers):
            call = trace.layers[layer]
            names.add(call.name)
            layer = call.parent if call.parent is not None else -1
        for name in names:
            totals[name] += nbytes
    return totals if trace.saved_in_forward else {}


def _phase(trace: StepTrace, op_index: int) -> str:
    if op_index < 0:
        return "before the step"
    if op_index < trace.forward_end:
        return "forward"
    if op_index < trace.loss_end:
        return "loss"
    if op_index < trace.backward_end:
        return "backward"
    return "optimizer"


def _where(trace: StepTrace, op_index: int) -> str:
    if not 0 <= op_index < len(trace.ops):
        return "-"
    op = trace.ops[op_index]
    layer = trace.layers[op.layer].name if 0 <= op.layer < len(trace.layers) else ""
    return op_label(op.op) + (f" in {layer}" if layer else "")
