"""A serving engine's step overhead: what a prefill or decode step costs beyond its kernels.

Each step pays the engine's CPU work between two steps (scheduling, input preparation, sampling's
transfer and output processing), then launches its kernels: one by one, each paying the CUDA
launch cost, or, for a decode step captured in a CUDA graph, as one graph launch whose cost grows
with its nodes.  The two are added to the kernels' time, as if the CPU never ran ahead of the GPU.
A step's kernels are the operators nncost counts in the traced step (views launch none); the ones
an engine's fusions remove are still counted.  Every constant is in :mod:`nncost.hardware.engines`
with its source; docs/engines.md shows the model and its limits.
"""

from __future__ import annotations

from nncost.hardware.engines import (
    CUDA_GRAPHS,
    GRAPH_LAUNCH_SECONDS,
    GRAPH_NODE_SECONDS,
    KERNEL_LAUNCH_SECONDS,
    MAX_CAPTURE_BATCH,
    STEP_SCHEDULE_SECONDS,
)
from nncost.records.generation import EngineOverhead
from nncost.records.trace import Trace


def kernels(trace: Trace) -> int:
    """The kernels a traced step launches: one per counted operator, none for a view."""
    return sum(1 for op in trace.ops if op.unit != "free")


def graphs_used(mode: str, batch: int) -> bool:
    """Whether decode steps of ``batch`` sequences replay a CUDA graph: always with ``on``, never
    with ``off``, and with ``auto`` as vLLM decides, up to its largest captured batch."""
    if mode not in CUDA_GRAPHS:
        raise ValueError(f"CUDA graphs are one of {', '.join(CUDA_GRAPHS)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and batch <= MAX_CAPTURE_BATCH.value)


def step_seconds(kernels: int, graph: bool) -> float:
    """One step's overhead: the engine's scheduling, then its kernels' launches, as one graph or one by one."""
    launch = GRAPH_LAUNCH_SECONDS.value + kernels * GRAPH_NODE_SECONDS.value if graph \
        else kernels * KERNEL_LAUNCH_SECONDS.value
    return STEP_SCHEDULE_SECONDS.value + launch


def engine_overhead(prefill: Trace, step: Trace | None, steps: int, batch: int, mode: str) -> EngineOverhead:
    """The overhead of a prefill, run eagerly, and ``steps`` decode steps like ``step`` (every decode
    step launches the same kernels; only their shapes change with the context)."""
    graph = graphs_used(mode, batch)
    decode_kernels = kernels(step) if step is not None else 0
    prefill_kernels = kernels(prefill)
    return EngineOverhead(prefill_seconds=step_seconds(prefill_kernels, graph=False),
                          decode_seconds=steps * step_seconds(decode_kernels, graph) if steps else 0.0,
                          prefill_kernels=prefill_kernels, decode_kernels=decode_kernels, cuda_graphs=graph)
