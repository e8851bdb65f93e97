"""What a serving engine costs beyond its kernels: every constant of the step-overhead model
(:mod:`nncost.analyses.overhead`), each with the measurement or source file that sets it.

Each source is a kernel-level or engine-internal measurement (a CUDA launch microbenchmark, an
engine's own profile, the engine's source), never an end-to-end throughput figure, so that the
published serving figures stay free to check the model against.  docs/engines.md shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

CUDA_GRAPHS = ("auto", "on", "off")  # --cuda-graphs: vLLM's default rule, always, never


@dataclass(frozen=True)
class Constant:
    """One number of the model and where it comes from."""

    value: float
    source: str


KERNEL_LAUNCH_SECONDS = Constant(
    3e-6,
    "NVIDIA developer forums, 'Too much time for kernel launch latency' (forums.developer.nvidia.com/t/"
    "233645, reply 3): the launch overhead of a null kernel is about 3 µs with recent hardware and "
    "software")
GRAPH_LAUNCH_SECONDS = Constant(
    15e-6,
    "ahrefs/ocannl issue 488, 'Measured: what graph replay is actually worth': a chain of N no-op kernels "
    "captured in a CUDA graph and replayed costs about 15 µs fixed plus 0.58 µs per node (RTX 5070 Ti, "
    "CUDA 13.3, medians of 200 runs, N = 8 to 117)")
GRAPH_NODE_SECONDS = Constant(0.58e-6, GRAPH_LAUNCH_SECONDS.source)
STEP_SCHEDULE_SECONDS = Constant(
    4e-3,
    "vLLM RFC 'Multi-Step Scheduling' (vllm-project/vllm issue 6854): its profile of the engine shows "
    "about 4 ms of GPU bubble per decode step (5 to 13 ms in its summary), the CPU's scheduling, input "
    "preparation, sampled-token transfer and output processing between two steps, before multi-step "
    "scheduling (vLLM 0.5)")
MAX_CAPTURE_BATCH = Constant(
    512,
    "vLLM, vllm/config/compilation.py, CompilationConfig.max_cudagraph_capture_size: min(max_num_seqs × 2, "
    "512) unless set; decode batches up to it replay a captured CUDA graph, larger ones run eagerly")

CONSTANTS = {"kernel_launch_seconds": KERNEL_LAUNCH_SECONDS, "graph_launch_seconds": GRAPH_LAUNCH_SECONDS,
             "graph_node_seconds": GRAPH_NODE_SECONDS, "step_schedule_seconds": STEP_SCHEDULE_SECONDS,
             "max_capture_batch": MAX_CAPTURE_BATCH}
