"""Roofline time estimates: per operator, per layer, for the forward pass and a training step.

Each operator call runs under two roofs of the device, ``max(flops / peak, bytes / bandwidth(W))``
scaled by the efficiency, plus the fixed cost of a call; its peak is that of the *family* its
cost rule's execution unit runs under (``OpCall.unit``, never the operator's name), its memory
roof the bandwidth at its working set ``W``.  A layer's time is its own operators' plus its
children's.  docs/roofline.md ("The model") states every convention: families and units, the
cache-aware memory roof, TF32 from the request's :class:`~nncost.records.trace.TorchFlags`,
mixed precision, lookups, uncounted operators and the training step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from nncost.errors import BadRequest
from nncost.hardware.catalogue import Allocator, Device
from nncost.precision import precision_named
from nncost.records.roofline import Roofline
from nncost.records.trace import TorchFlags
from nncost.simulation.optimizers import tensors_touched

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport
    from nncost.records.report import Report
    from nncost.records.trace import OpCall

# The units with roofs of their own (each calibrated on the cpu); the others run under one of them.
FAMILIES = ("matmul", "conv", "depthwise", "pooling", "norm", "row-norm", "reduction", "transcendental", "elementwise")
MATRIX_FAMILIES = ("matmul", "conv", "depthwise")
RUNS_AS = {"attention": "matmul", "spectral": "elementwise", "gather": "elementwise", "copy": "elementwise",
           "uncounted": "elementwise", "free": "elementwise", "fused": "elementwise"}
# Families whose efficiency is that of their compute roof alone: a transcendental function's one
# counted FLOP per element hides a series of instructions, so its time follows its elements, not
# its bytes; its memory roof stays at the bandwidth (times the user's factor).
COMPUTE_CALIBRATED = ("transcendental",)
# The datasheet column of a matrix product whose operands are narrower than the run's dtype (OpCall.dtype):
# int8 products (torch._int_mm) on the int8 peak, fp8 ones (torch._scaled_mm) on the fp8 peak.
NARROW_COLUMNS = {"int8": "int8", "uint8": "int8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
                  "float8_e4m3fnuz": "fp8", "float8_e5m2fnuz": "fp8"}
NARROW = ("int8", "fp8")
WIDE = ("float32", "bfloat16", "float16")
TORCH_KEYS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "fp8",
              "float8_e5m2": "fp8", "int8": "int8"}


def roof_family(unit: str) -> str:
    """The family whose roofs a unit runs under: its own, or that of the unit it runs as."""
    return RUNS_AS.get(unit, unit)


def family_dtypes(device: Device, dtype: str, precision: str, flags: TorchFlags) -> dict[str, str]:
    """The datasheet column each family's peak is read from; ``flags`` are the torch settings
    the run was made under (TF32 for fp32 convolutions and matrix products on CUDA)."""
    key = TORCH_KEYS.get(dtype)
    if key is None:
        raise BadRequest(f"no roofline for dtype {dtype}; use float32, bfloat16 or float16")
    named = precision_named(precision)
    matrix = str(named.compute) if named.mixed else key
    columns = {f: matrix if f in MATRIX_FAMILIES else "fp32" for f in FAMILIES}
    if matrix == "fp32" and device.kind == Allocator.CUDA and "tf32" in device.peak_flops:
        if flags.cudnn_allow_tf32:
            columns["conv"] = columns["depthwise"] = "tf32"
        if flags.matmul_precision != "highest":
            columns["matmul"] = "tf32"
    return columns


def run_dtype(report: Report, dtype: torch.dtype | None) -> str:
    """The dtype the run of ``report`` computes in (:func:`compute_dtype` of its parameters)."""
    return compute_dtype(report.totals.param_bytes_by_dtype, dtype)


def compute_dtype(param_bytes_by_dtype: Mapping[str, int], dtype: torch.dtype | None) -> str:
    """The dtype a run computes in: the one asked for, else that of most floating parameter bytes
    (quantized codes are not what the activations are in)."""
    if dtype is not None:
        return str(dtype).removeprefix("torch.")
    by_dtype = {k: v for k, v in param_bytes_by_dtype.items() if k in WIDE}  # not quantized codes
    return max(by_dtype, key=lambda k: by_dtype[k]) if by_dtype else "float32"


def make_roofline(device: Device, flags: TorchFlags | None = None, *, dtype: str = "float32",
                  precision: str = "fp32", efficiency: float = 1.0) -> Roofline:
    """The roofs of ``device`` for a run in ``dtype`` at ``precision`` under ``flags`` (PyTorch's
    defaults when not given), before any estimate."""
    if not 0 < efficiency <= 1:
        raise BadRequest(f"efficiency must be in (0, 1] (1.0: the datasheet figures), got {efficiency}")
    columns = family_dtypes(device, dtype, precision, flags or TorchFlags.defaults())
    peaks = {f: device.peak(column) for f, column in columns.items()}
    return Roofline(
        hardware=device.name,
        dtype=dtype,
        peak_flops=peaks["matmul"],
        bandwidth=device.bandwidth,
        memory_bytes=device.memory_bytes,
        efficiency=efficiency,
        precision=precision,
        family_peak_flops=peaks,
        family_dtype=columns,
        family_efficiency={f: min(1.0, device.family_efficiency.get(f, 1.0)) for f in FAMILIES},
        narrow_peak_flops={column: device.peak_flops[column] for column in NARROW if column in device.peak_flops},
        bandwidth_curve=list(device.bandwidth_curve),
        module_call_seconds=device.module_call_seconds,
        op_overhead_seconds=device.op_overhead_seconds,
        family_overhead_seconds=dict(device.family_overhead_seconds),
    )


def bandwidth_at(roofline: Roofline, working_set: int) -> float:
    """The memory roof for ``working_set`` bytes: the curve, interpolated log-log, else the one bandwidth."""
    curve = roofline.bandwidth_curve
    if not curve:
        return roofline.bandwidth
    if working_set <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if working_set <= x1:
            t = math.log(working_set / x0) / math.log(x1 / x0)
            return y0 * (y1 / y0) ** t
    return curve[-1][1]


def peak_of(op: OpCall, kind: str, roofline: Roofline) -> float:
    """The peak an operator call of family ``kind`` computes at: its family's, or for a matrix
    product of int8 or fp8 operands the device's int8 or fp8 peak, where it lists one (else the
    operands are taken as widened to the run's dtype, as a weight-only kernel does)."""
    if kind in MATRIX_FAMILIES:
        column = NARROW_COLUMNS.get(op.dtype)
        if column is not None and column in roofline.narrow_peak_flops:
            return roofline.narrow_peak_flops[column]
    return roofline.family_peak_flops[kind]


def op_seconds(op: OpCall, roofline: Roofline) -> tuple[float, float]:
    """(compute seconds, memory seconds) of one operator call, overhead not included."""
    kind = roof_family(op.unit)
    e = roofline.efficiency * roofline.family_efficiency.get(kind, 1.0)
    compute = op.flops / (peak_of(op, kind, roofline) * e)
    moved = 2 * op.write_bytes if op.unit == "gather" else op.read_bytes + op.write_bytes
    working_set = op.read_bytes if op.op.endswith("_") else moved  # in place: one storage read and written
    e_memory = roofline.efficiency if kind in COMPUTE_CALIBRATED else e
    memory = moved / (bandwidth_at(roofline, working_set) * e_memory)
    return compute, memory


# A run of calls whose memory roof follows a bandwidth curve (a calibrated cpu) is summed call by
# call up to this many calls, and from this many evenly spread calls beyond.
SUMMED_CALLS = 4096


def op_seconds_sum(op: OpCall, slope: tuple[int, int, int, int], count: int, roofline: Roofline
                   ) -> tuple[float, float]:
    """(seconds of the compute-bound calls, seconds of the memory-bound calls), overhead included,
    of the calls ``0 … count − 1`` of :func:`op_seconds_at`, in time independent of ``count``.

    Under one bandwidth both roofs are lines in the call's index ``k``, so the calls are
    compute-bound on one side of the index where the lines cross and memory-bound on the other,
    and each side is an arithmetic series.  Under a bandwidth curve the memory roof is not a line:
    up to :data:`SUMMED_CALLS` calls are summed one by one, more are summed from that many calls
    at the middles of equal runs of calls, each standing for its run.
    """
    if count <= 0:
        return 0.0, 0.0
    if roofline.bandwidth_curve:
        if count <= SUMMED_CALLS:
            calls, weight = np.arange(count, dtype=np.float64), np.ones(count)
        else:
            edges = np.round(np.linspace(0, count, SUMMED_CALLS + 1))
            calls, weight = np.floor((edges[:-1] + edges[1:]) / 2), np.diff(edges)
        on_compute, on_memory, fixed = op_seconds_at(op, slope, calls, roofline)
        total = (np.maximum(on_compute, on_memory) + fixed) * weight
        return float(total[on_compute >= on_memory].sum()), float(total[on_compute < on_memory].sum())
    # under one bandwidth both roofs are lines in k: their values at the first two calls give them
    (c0, c_next), (m0, m_next), (overhead, _) = op_seconds_at(op, slope, np.array([0.0, 1.0]), roofline)
    c1, m1 = c_next - c0, m_next - m0
    d0, d1 = c0 - m0, c1 - m1  # compute minus memory seconds: ≥ 0 where compute-bound
    last = count - 1
    if d1 == 0:
        compute_bound = (0, last) if d0 >= 0 else (0, -1)
    elif d1 > 0:
        compute_bound = (min(count, max(0, math.ceil(-d0 / d1))), last)
    else:
        compute_bound = (0, max(-1, min(last, math.floor(-d0 / d1))))
    first, end = compute_bound
    memory_bound = (end + 1, last) if first == 0 else (0, first - 1)

    def series(x0: float, x1: float, span: tuple[int, int]) -> float:
        a, b = span
        n = b - a + 1
        return 0.0 if n <= 0 else float(n * (x0 + overhead) + x1 * (a + b) * n / 2)

    return series(c0, c1, compute_bound), series(m0, m1, memory_bound)


def op_seconds_at(op: OpCall, slope: tuple[int, int, int, int], k: np.ndarray, roofline: Roofline
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compute, memory, overhead) seconds of the calls ``k`` (indices, as floats) of a run of calls
    of ``op`` whose MACs, FLOPs, read and written bytes grow by ``slope`` from one call to the next
    (decode steps over a growing cache): :func:`op_seconds` for each of them, as arrays."""
    flops = op.flops + slope[1] * k
    read, write = op.read_bytes + slope[2] * k, op.write_bytes + slope[3] * k
    kind = roof_family(op.unit)
    e = roofline.efficiency * roofline.family_efficiency.get(kind, 1.0)
    compute = flops / (peak_of(op, kind, roofline) * e)
    moved = 2 * write if op.unit == "gather" else read + write
    working_set = read if op.op.endswith("_") else moved
    e_memory = roofline.efficiency if kind in COMPUTE_CALIBRATED else e
    memory = moved / (_bandwidths(roofline, working_set) * e_memory)
    return compute, memory, np.full(k.shape, op_overhead(op, roofline))


def _bandwidths(roofline: Roofline, working_sets: np.ndarray) -> np.ndarray:
    """:func:`bandwidth_at` for many working sets: log-log interpolation, clamped at the ends."""
    curve = roofline.bandwidth_curve
    if not curve:
        return np.full(working_sets.shape, roofline.bandwidth)
    xs, ys = np.log([x for x, _ in curve]), np.log([y for _, y in curve])
    return np.exp(np.interp(np.log(np.maximum(working_sets, 1.0)), xs, ys))


def op_overhead(op: OpCall, roofline: Roofline) -> float:
    """The fixed cost of one call: the family's calibrated one, else the generic one; none for a view."""
    if op.unit == "free":
        return 0.0
    return roofline.family_overhead_seconds.get(roof_family(op.unit), roofline.op_overhead_seconds)


def _op_time(op: OpCall, roofline: Roofline) -> tuple[float, float]:
    """(seconds if compute bound, seconds if memory bound) of one call, overhead included: one
    of the two is 0."""
    compute, memory = op_seconds(op, roofline)
    seconds = max(compute, memory) + op_overhead(op, roofline)
    return (seconds, 0.0) if compute >= memory else (0.0, seconds)


def estimate(report: Report, roofline: Roofline,
             op_time: Callable[[OpCall], tuple[float, float]] | None = None, calls: int = 1) -> Report:
    """A new report with every layer's ``estimated_seconds`` and ``bound`` and the total
    estimated on ``roofline``; ``report`` must hold every layer call.

    ``op_time`` gives an operator's (compute-bound, memory-bound) seconds (default: one call on
    the roofline); ``calls`` is how many times each layer ran (decode steps summed into one
    report), each paying the module-call overhead.
    """
    timed = op_time or (lambda op: _op_time(op, roofline))
    by_index = {layer.index: layer for layer in report.layers}
    seconds: dict[int, float] = {}
    compute_bound: dict[int, float] = {}
    memory_bound: dict[int, float] = {}
    for layer in report.layers:
        if layer.parent is not None and layer.parent not in by_index:
            raise BadRequest("the roofline needs every layer of the report, not a depth-filtered copy")
        seconds[layer.index] = roofline.module_call_seconds * calls
        compute_bound[layer.index] = memory_bound[layer.index] = 0.0
        for op in layer.self_ops:
            on_compute, on_memory = timed(op)
            seconds[layer.index] += on_compute + on_memory
            compute_bound[layer.index] += on_compute
            memory_bound[layer.index] += on_memory
    for layer in reversed(report.layers):  # children follow their parent: fold upwards
        if layer.parent is not None:
            seconds[layer.parent] += seconds[layer.index]
            compute_bound[layer.parent] += compute_bound[layer.index]
            memory_bound[layer.parent] += memory_bound[layer.index]

    def bound(index: int) -> str | None:
        if not (compute_bound[index] or memory_bound[index]):
            return None
        return "compute" if compute_bound[index] >= memory_bound[index] else "memory"

    layers = [replace(layer, estimated_seconds=seconds[layer.index], bound=bound(layer.index))
              for layer in report.layers]
    forward = sum(seconds[layer.index] for layer in report.layers if layer.parent is None)
    estimated = replace(roofline, forward_seconds=forward,
                        forward_samples_per_second=report.batch_size / forward if forward > 0 else None)
    return replace(report, layers=layers, totals=replace(report.totals, estimated_seconds=forward),
                   roofline=estimated)


def with_training_step(report: Report, memory: MemoryReport) -> Report:
    """A new report whose roofline also estimates the simulated training step: forward +
    backward + optimizer.

    The backward runs the same kinds of operators as the forward (each matrix product's grad
    input and grad weight, each elementwise operator's backward), so it is estimated at the
    forward's estimated FLOP rate: ``forward_seconds × backward_flops / forward_flops``, both
    FLOP counts from the simulated step (recomputation under checkpointing included).  The
    optimizer is elementwise work over the parameters: the larger of its FLOPs on the vector
    roof and the bytes of the tensors it reads and writes per parameter element
    (:func:`nncost.simulation.optimizers.tensors_touched`, at the parameters' size) on the memory roof.
    """
    roofline = report.roofline
    if roofline is None or memory.mode != "train" or roofline.forward_seconds is None:
        return report
    forward = roofline.forward_seconds
    backward = forward * memory.backward_flops / memory.forward_flops if memory.forward_flops else 0.0
    totals = report.totals
    element_bytes = totals.param_bytes / totals.params if totals.params else 4.0
    if precision_named(roofline.precision).mixed:
        element_bytes = 4.0  # fp32 master weights, gradients and states
    state_bytes = tensors_touched(memory.optimizer) * totals.trainable_params * element_bytes
    e = roofline.efficiency * roofline.family_efficiency.get("elementwise", 1.0)
    optimizer = max(memory.optimizer_flops / (roofline.family_peak_flops["elementwise"] * e),
                    state_bytes / (roofline.bandwidth * e))
    step = forward + backward + optimizer
    trained = replace(roofline, backward_seconds=backward, optimizer_seconds=optimizer, train_step_seconds=step,
                      train_samples_per_second=report.batch_size / step)
    return replace(report, roofline=trained)
