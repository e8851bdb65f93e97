"""The layout stage: a training step spread over GPUs (tensor, pipeline and data parallelism,
micro-batches), from one traced step at the micro-batch; or a plan's search of such layouts."""

from __future__ import annotations

from typing import Any

from torch import nn

from nncost.analyses.parallel import Cluster, Layouts, profile_step
from nncost.analyses.parallel import plan as search_layouts
from nncost.analyses.roofline import make_roofline
from nncost.analyses.training_run import ACHIEVABLE_MFU
from nncost.capture.inputs import batch_of
from nncost.capture.placement import model_device
from nncost.hardware.calibration import resolve_device
from nncost.hardware.catalogue import Allocator
from nncost.records.parallel import Layout, ParallelStep, Plan
from nncost.records.result import Result
from nncost.request import DEFAULT_SEQ, Request
from nncost.simulation.step import capture_step
from nncost.stages.progress import Counts, Progress
from nncost.stages.source import Source, param_dtype, weights_dtype
from nncost.stages.step import memory_budget, warn_cpu_autocast


def wanted(request: Request) -> bool:
    return request.step is not None and request.step.parallel


def add(source: Source, result: Result) -> Result:
    """The result with the layout asked for, or with a plan (whose best layout it shows)."""
    step, plan = lay_out(source.request, source, source.say)
    return result.with_section(plan if plan is not None else step)


def lay_out(request: Request, source: Source, say: Progress) -> tuple[ParallelStep | None, Plan | None]:
    """The step spread over GPUs: one traced step at the micro-batch, cut into pieces, then the
    layout asked for, or a plan's search and its best layout (:mod:`nncost.analyses.parallel`)."""
    step = request.step
    assert step is not None
    model = source.on(source.built_on())
    args, kwargs = source.inputs(str(model_device(model)))
    batch = batch_of((args, kwargs)) or request.inputs.batch_size
    warn_cpu_autocast(request)
    with say.step(f"tracing one training step of {source.label} at the micro-batch ({batch})", slow=False):
        trace = capture_step(model, args, kwargs, mode="train", optimizer=step.optimizer, allocator=step.allocator,
                             dtype=request.dtype, checkpointing=False, precision=request.precision)
    heads, kv_heads = attention_heads(model)
    seq = (request.inputs.seq or DEFAULT_SEQ) if source.spec is not None and source.spec.token_input else None
    profile = profile_step(trace, model=source.label, allocator=step.allocator, optimizer=step.optimizer,
                           batch_size=batch, seq=seq, precision=request.precision, heads=heads, kv_heads=kv_heads)
    cluster = _cluster(request, model)
    budget = memory_budget(None, request.hardware)
    if step.plan:
        assert cluster is not None and budget is not None  # the request asks for a catalogue device
        with say.bar(f"searching layouts of {step.gpus} × {cluster.hardware}", None, counts=Counts.LAYOUTS) as advance:
            found = search_layouts(profile, cluster, gpus=step.gpus, budget=budget, global_batch=step.global_batch,
                                   sequence_parallel=step.sequence_parallel, advance=advance)
        return (found.best[0] if found.best else None), found
    layout = Layout(gpus=step.gpus, tensor_parallel=step.tensor_parallel, pipeline_parallel=step.pipeline_parallel,
                    data_parallel=step.gpus // (step.tensor_parallel * step.pipeline_parallel),
                    micro_batches=step.micro_batches, micro_batch_size=batch,
                    sequence_parallel=step.sequence_parallel, checkpointing=bool(step.checkpointing),
                    sharding=step.sharding)
    return Layouts(profile).step(layout, cluster, budget), None


def _cluster(request: Request, model: nn.Module) -> Cluster | None:
    """The request's device as a layout's time sees it: its dense matrix peak at the run's
    precision, the training run's MFU, memory bandwidth, and its links; None without one."""
    device = resolve_device(request.hardware, calibrate=False) if request.hardware is not None else None
    if device is None or device.kind is not Allocator.CUDA:
        return None
    roofline = make_roofline(device, request.flags, dtype=weights_dtype(model, param_dtype(request)),
                             precision=request.precision)
    mfu = request.run.mfu if request.run is not None and request.run.mfu is not None else ACHIEVABLE_MFU
    return Cluster(hardware=device.name, peak_flops=roofline.family_peak_flops.get("matmul", roofline.peak_flops),
                   efficiency=mfu, bandwidth=device.bandwidth, interconnect=device.interconnect,
                   interconnect_bandwidth=device.interconnect_bandwidth, gpus_per_node=device.gpus_per_node,
                   network=device.network, network_bandwidth=device.network_bandwidth)


def attention_heads(model: nn.Module) -> tuple[int | None, int | None]:
    """The attention heads and key/value heads a transformers config names (None where it names none)."""
    config: Any = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return (int(heads) if heads is not None else None), (int(kv_heads) if kv_heads is not None else None)
