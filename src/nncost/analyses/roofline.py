"""Roofline time estimates: per operator, per layer, for the forward pass and a training step.

Each operator call is placed under two roofs of the device:

    seconds = max(flops / (peak · e), (read_bytes + write_bytes) / (bandwidth(W) · e)) + overhead

where ``peak`` is the dense peak of the datasheet column the operator runs on (its *family*),
``e`` the efficiency (the user's factor times the family's calibrated efficiency, at most 1),
``bandwidth(W)`` the memory roof at the operator's working set ``W`` and ``overhead`` the fixed
cost of one operator call (measured for the ``cpu``; 0 for datasheet devices).  The bound is
the larger term: ``compute`` or ``memory``.

Families: the roofline groups operator calls by the unit their cost rule gives them
(``OpCall.unit``, one of ``nncost.rules.registry.UNITS``), never by their names, so an ONNX
``Conv`` and an ``aten.convolution`` run alike.  ``conv``, ``depthwise`` (grouped convolutions
with one input channel per group) and ``matmul`` (mm, addmm, bmm, recurrent kernels) run on the
matrix units at the run's dtype; ``pooling`` (max pooling), ``norm`` (batch and instance norms),
``row-norm`` (layer, group and RMS norms: two passes over each row), ``reduction`` (means, sums,
maxima), ``transcendental`` (GELU, tanh, exp, softmax, ...: one counted FLOP per element for a
series, so its efficiency scales its compute roof only) and ``elementwise`` run on the vector
units, at the fp32 column.  The other units run under a family's roofs (``RUNS_AS``):
``attention`` under matmul's; ``gather``, ``copy`` and ``uncounted`` under elementwise's.  A
``free`` operator (a view) takes no time, not even the fixed cost of a call.

The memory roof: a datasheet device has one bandwidth.  The calibrated ``cpu`` has a curve,
the bandwidth of a copy by its working set (its caches are several times faster than the memory
behind them); an operator's working set is the bytes it reads and writes (an in-place operator,
``relu_``, reads and writes one storage: its read bytes), and its roof is read off the curve there
(log-log interpolation, clamped at the ends).  On the ``cpu`` each layer call also costs a
calibrated module-call overhead.  In fp32 on a CUDA device, convolutions use TF32 when
``torch.backends.cudnn.allow_tf32`` (PyTorch's default) and matrix products when
``torch.get_float32_matmul_precision()`` is not "highest" (not the default).  Mixed precisions
(``bf16-mixed``, ``fp16-mixed``) put matrix work on the 16-bit column and keep the bytes of the
fp32 profile.

No double counting: a layer's time is the sum of its own operators (``self_ops``: those run
directly in its forward) and of its children's times, as its FLOPs are; the forward total is the
sum over the top-level calls, so every operator is counted once whether it ran in a leaf or in a
parent's own code.  Operators that ran outside any module call (before the model's own hook)
are not in the report's layers and not in the estimate.

An uncounted operator (no cost rule, unit ``uncounted``) has no FLOPs; its bytes are counted, so
its estimate is a memory-bound lower bound.  Lookups (unit ``gather``: ``embedding``,
``index_select``, an ONNX ``Gather``) move the rows they gather: twice their output's bytes, not the
whole table their rule counts as read.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch

from nncost.errors import BadRequest
from nncost.hardware.catalogue import Device
from nncost.records.roofline import Roofline

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport
    from nncost.records.report import Report
    from nncost.records.trace import OpCall

PRECISIONS = ("fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed")
# The units with roofs of their own (each calibrated on the cpu); the others run under one of them.
FAMILIES = ("matmul", "conv", "depthwise", "pooling", "norm", "row-norm", "reduction", "transcendental", "elementwise")
MATRIX_FAMILIES = ("matmul", "conv", "depthwise")
RUNS_AS = {"attention": "matmul", "gather": "elementwise", "copy": "elementwise", "uncounted": "elementwise",
           "free": "elementwise"}
# Families whose efficiency is that of their compute roof alone: a transcendental function's one
# counted FLOP per element hides a series of instructions, so its time follows its elements, not
# its bytes; its memory roof stays at the bandwidth (times the user's factor).
COMPUTE_CALIBRATED = ("transcendental",)
TORCH_KEYS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "fp8",
              "float8_e5m2": "fp8", "int8": "int8"}
# Tensors an optimizer step reads and writes per parameter element (param, grad, states):
# Adam reads param, grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq.
OPTIMIZER_TENSORS = {"adam": 7, "adamw": 7, "sgd": 3, "sgd-momentum": 5, "adagrad": 5, "rmsprop": 5, "none": 0}


def precision_dtype(precision: str) -> torch.dtype | None:
    """The dtype a pure 16-bit precision profiles the model in; None for fp32 and mixed."""
    if precision not in PRECISIONS:
        raise BadRequest(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def roof_family(unit: str) -> str:
    """The family whose roofs a unit runs under: its own, or that of the unit it runs as."""
    return RUNS_AS.get(unit, unit)


def family_dtypes(device: Device, dtype: str, precision: str) -> dict[str, str]:
    """The datasheet column each family's peak is read from."""
    key = TORCH_KEYS.get(dtype)
    if key is None:
        raise BadRequest(f"no roofline for dtype {dtype}; use float32, bfloat16 or float16")
    matrix = precision.removesuffix("-mixed") if precision.endswith("-mixed") else key
    columns = {f: matrix if f in MATRIX_FAMILIES else "fp32" for f in FAMILIES}
    if matrix == "fp32" and device.kind == "cuda" and "tf32" in device.peak_flops:
        if torch.backends.cudnn.allow_tf32:
            columns["conv"] = columns["depthwise"] = "tf32"
        if torch.get_float32_matmul_precision() != "highest":
            columns["matmul"] = "tf32"
    return columns


def make_roofline(device: Device, *, dtype: str = "float32", precision: str = "fp32",
                  efficiency: float = 1.0) -> Roofline:
    if not 0 < efficiency <= 1:
        raise BadRequest(f"efficiency must be in (0, 1] (1.0: the datasheet figures), got {efficiency}")
    columns = family_dtypes(device, dtype, precision)
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


def op_seconds(op: OpCall, roofline: Roofline) -> tuple[float, float]:
    """(compute seconds, memory seconds) of one operator call, overhead not included."""
    kind = roof_family(op.unit)
    e = roofline.efficiency * roofline.family_efficiency.get(kind, 1.0)
    compute = op.flops / (roofline.family_peak_flops[kind] * e)
    moved = 2 * op.write_bytes if op.unit == "gather" else op.read_bytes + op.write_bytes
    working_set = op.read_bytes if op.op.endswith("_") else moved  # in place: one storage read and written
    e_memory = roofline.efficiency if kind in COMPUTE_CALIBRATED else e
    memory = moved / (bandwidth_at(roofline, working_set) * e_memory)
    return compute, memory


def op_overhead(op: OpCall, roofline: Roofline) -> float:
    """The fixed cost of one call: the family's calibrated one, else the generic one; none for a view."""
    if op.unit == "free":
        return 0.0
    return roofline.family_overhead_seconds.get(roof_family(op.unit), roofline.op_overhead_seconds)


def apply_roofline(report: Report, roofline: Roofline) -> Roofline:
    """Fill ``estimated_seconds`` and ``bound`` of every layer and the forward total.

    ``report`` must hold every layer call (apply it before folding by depth).
    """
    by_index = {layer.index: layer for layer in report.layers}
    compute_bound: dict[int, float] = {}
    memory_bound: dict[int, float] = {}
    for layer in report.layers:
        if layer.parent is not None and layer.parent not in by_index:
            raise BadRequest("the roofline needs every layer of the report; apply it before folding by depth")
        layer.estimated_seconds = roofline.module_call_seconds
        compute_bound[layer.index] = memory_bound[layer.index] = 0.0
        for op in layer.self_ops:
            compute, memory = op_seconds(op, roofline)
            seconds = max(compute, memory) + op_overhead(op, roofline)
            layer.estimated_seconds += seconds
            if compute >= memory:
                compute_bound[layer.index] += seconds
            else:
                memory_bound[layer.index] += seconds
    for layer in reversed(report.layers):  # children follow their parent: fold upwards
        if layer.parent is not None:
            parent = by_index[layer.parent]
            parent.estimated_seconds = (parent.estimated_seconds or 0.0) + (layer.estimated_seconds or 0.0)
            compute_bound[layer.parent] += compute_bound[layer.index]
            memory_bound[layer.parent] += memory_bound[layer.index]
    for layer in report.layers:
        if compute_bound[layer.index] or memory_bound[layer.index]:
            layer.bound = "compute" if compute_bound[layer.index] >= memory_bound[layer.index] else "memory"
    forward = sum(layer.estimated_seconds or 0.0 for layer in report.layers if layer.parent is None)
    report.totals.estimated_seconds = forward
    roofline.forward_seconds = forward
    roofline.samples_per_second = report.batch_size / forward if forward > 0 else None
    report.roofline = roofline
    return roofline


def add_training_step(report: Report, memory: MemoryReport) -> None:
    """Estimate a training step from the simulated one: forward + backward + optimizer.

    The backward runs the same kinds of operators as the forward (each matrix product's grad
    input and grad weight, each elementwise operator's backward), so it is estimated at the
    forward's estimated FLOP rate: ``forward_seconds × backward_flops / forward_flops``, both
    FLOP counts from the simulated step (recomputation under checkpointing included).  The
    optimizer is elementwise work over the parameters: the larger of its FLOPs on the vector
    roof and the bytes of the tensors it reads and writes (``OPTIMIZER_TENSORS`` per parameter
    element, at the parameters' size) on the memory roof.
    """
    roofline = report.roofline
    if roofline is None or memory.mode != "train" or roofline.forward_seconds is None:
        return
    forward = roofline.forward_seconds
    backward = forward * memory.backward_flops / memory.forward_flops if memory.forward_flops else 0.0
    totals = report.totals
    element_bytes = totals.param_bytes / totals.params if totals.params else 4.0
    if roofline.precision.endswith("-mixed"):
        element_bytes = 4.0  # fp32 master weights, gradients and states
    state_bytes = OPTIMIZER_TENSORS.get(memory.optimizer, 7) * totals.trainable_params * element_bytes
    e = roofline.efficiency * roofline.family_efficiency.get("elementwise", 1.0)
    optimizer = max(memory.optimizer_flops / (roofline.family_peak_flops["elementwise"] * e),
                    state_bytes / (roofline.bandwidth * e))
    roofline.backward_seconds = backward
    roofline.optimizer_seconds = optimizer
    roofline.train_step_seconds = forward + backward + optimizer
    roofline.samples_per_second = report.batch_size / roofline.train_step_seconds


def add_memory_fit(report: Report, memory: MemoryReport) -> None:
    """Set the simulated peak against the device's memory."""
    roofline = report.roofline
    if roofline is None or roofline.memory_bytes is None:
        return
    peak = sum(memory.per_gpu.values()) if memory.per_gpu else memory.peak_bytes
    roofline.device_peak_bytes = peak
    roofline.fits = peak <= roofline.memory_bytes
