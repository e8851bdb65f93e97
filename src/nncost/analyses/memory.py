"""From a captured step to its memory report: the live bytes at the peak, by category."""

from __future__ import annotations

from collections.abc import Callable

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
    baseline = {
        "parameters": sum(size(n) for n in trace.param_tensor_bytes),
        "optimizer_state": sum(size(n) for n in trace.state_tensor_bytes),
        "inputs": sum(size(n) for n in trace.input_tensor_bytes),
    }

    def category(allocation: int) -> str:
        if trace.mode == "infer":
            return "activations"
        if allocation in trace.gradients:
            return "gradients"
        return "activations" if allocation in trace.saved else "temporaries"

    live = dict.fromkeys(CATEGORIES, 0)
    live.update(baseline)
    peak_total, peak_live, peak_op, in_kernel = sum(live.values()), dict(live), -1, False
    timeline = [(0, tuple(live.values()))]
    sharded = sharding != "none" or gpus > 1
    made_by_optimizer: set[int] = set()  # temporaries the optimizer's step made, still live
    optimizer_live = 0
    casts_live = 0  # temporaries that are casts of parameters (StepTrace.parameter_casts), live
    gpu_peak: dict[str, int] = {}

    def on_one_gpu(moment: dict[str, int], optimizer_temporaries: int) -> None:
        """Keep the highest moment of one GPU's share of the step."""
        nonlocal gpu_peak
        share = per_gpu(moment, gpus=gpus, sharding=sharding, largest_layer_bytes=trace.largest_layer_bytes,
                        optimizer_temporaries=optimizer_temporaries, parameter_casts=casts_live,
                        largest_layer_cast_bytes=trace.largest_layer_cast_bytes)
        if not gpu_peak or sum(share.values()) > sum(gpu_peak.values()):
            gpu_peak = share

    if sharded:
        on_one_gpu(live, 0)
    # Kernel high points: a call whose kernel holds more than its outputs (workspaces, blocked
    # copies) peaks at the bytes live before the call plus its kernel_bytes.
    kernels = [(i, op.kernel_bytes) for i, op in enumerate(trace.ops) if op.kernel_bytes]
    next_kernel = 0

    def kernels_before(op_index: int, delta: int) -> None:
        """Consider every kernel high point that comes before this event."""
        nonlocal next_kernel, peak_total, peak_live, peak_op, in_kernel
        while next_kernel < len(kernels) and (kernels[next_kernel][0] < op_index
                                               or (kernels[next_kernel][0] == op_index and delta > 0)):
            index, held = kernels[next_kernel]
            next_kernel += 1
            total = sum(live.values()) + size(held)
            if total > peak_total:
                peak_total, peak_live, peak_op, in_kernel = total, dict(live), index, True
                peak_live["temporaries"] += size(held)
            if sharded:
                moment = dict(live)
                moment["temporaries"] += size(held)
                on_one_gpu(moment, optimizer_live + (size(held) if index >= trace.backward_end else 0))

    for op_index, delta, allocation in trace.memory_events:
        kernels_before(op_index, delta)
        sign = 1 if delta > 0 else -1
        kind = category(allocation)
        live[kind] += sign * size(abs(delta))
        if kind == "temporaries" and allocation in trace.parameter_casts:
            casts_live += sign * size(abs(delta))
        if delta > 0 and kind == "temporaries" and trace.mode == "train" and op_index >= trace.backward_end:
            made_by_optimizer.add(allocation)
            optimizer_live += size(delta)
        elif delta < 0 and allocation in made_by_optimizer:
            made_by_optimizer.discard(allocation)
            optimizer_live -= size(-delta)
        timeline.append((op_index, tuple(live.values())))
        total = sum(live.values())
        if total > peak_total:
            peak_total, peak_live, peak_op, in_kernel = total, dict(live), op_index, False
        if sharded:
            on_one_gpu(live, optimizer_live)
    kernels_before(len(trace.ops) + 1, 0)

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
        peak_phase=_phase(trace, peak_op),
        peak_at=_where(trace, peak_op) + (" (inside its kernel)" if in_kernel else ""),
        breakdown=peak_live,
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
        peak_op=peak_op,
        phase_ends=(trace.forward_end, trace.loss_end, trace.backward_end, len(trace.ops)),
    )


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
