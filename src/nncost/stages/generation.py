"""The generation stage: prefill and decode as ``model.generate`` runs them, traced on meta with
the request's weight format and cache dtype, one GPU's share of them under tensor parallelism,
and the most sequences that fit."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from nncost.analyses.fit import largest_batch
from nncost.analyses.fusion import fused
from nncost.analyses.generation import linear_segments
from nncost.analyses.generation_report import TensorParallel, Traced, one_gpu
from nncost.analyses.quantize import quantized
from nncost.analyses.reads import bytes_read
from nncost.analyses.roofline import make_roofline
from nncost.analyses.split import check_tensor_parallel
from nncost.capture.generation import session
from nncost.capture.paged import BLOCK_TOKENS
from nncost.errors import BadRequest
from nncost.hardware.calibration import resolve_device
from nncost.quantization import WeightFormat
from nncost.records.generation import GenerationReport
from nncost.records.result import Result
from nncost.records.roofline import Roofline
from nncost.records.trace import Trace
from nncost.request import Request
from nncost.stages.forward import time_device
from nncost.stages.layout import attention_heads
from nncost.stages.progress import Counts, Progress
from nncost.stages.source import Source, asked_weights, param_dtype, weights_dtype
from nncost.stages.step import memory_budget


def wanted(request: Request) -> bool:
    return request.generation is not None


def add(source: Source, result: Result) -> Result:
    """The result with the generation, its prefill shown at the request's depth and dtype."""
    request = source.request
    report = generation(request, source, source.say)
    prefill = replace(report.prefill, depth=request.depth, dtype=source.dtype_name, dtype_source=source.dtype_source)
    return result.with_section(replace(report, prefill=prefill))


def generation(request: Request, source: Source, say: Progress) -> GenerationReport:
    """Prefill and decode as ``model.generate`` runs them, on meta; the most sequences that fit."""
    wanted = request.generation
    assert wanted is not None
    if source.spec is not None and not source.spec.token_input:
        raise BadRequest(f"{source.label} takes no token ids: generation is for language models (hf:NAME)")
    model = source.on("meta")
    dtype = param_dtype(request)
    roofline = None
    kernels = "cuda"  # whose attention kernels run: the roofline device's, else a GPU's, where LLMs are served
    unavailable = None
    if request.hardware is not None:
        device, unavailable = time_device(request.hardware, say)
        if device is not None:
            roofline = make_roofline(device, request.flags, dtype=weights_dtype(model, dtype),
                                     precision=request.precision, efficiency=request.efficiency)
        kernels = device.kind if device is not None else "cpu"  # only the calibrated cpu can be missing
    if wanted.engine == "vllm":
        kernels = "cuda"  # a GPU engine: its attention is a fused kernel whatever the roofline device
    batch = request.inputs.batch_size
    parallel = _parallel(model, wanted.tensor_parallel, request.hardware)
    quantize = _Quantize(asked_weights(request, model), request.kv_cache_dtype, wanted.engine, wanted.cuda_graphs)
    with say.step(f"tracing the generation of {source.label}", slow=False):
        report = _generate(model, wanted.prompt_tokens, wanted.new_tokens, batch, dtype=dtype, roofline=roofline,
                           name=source.label, parallel=parallel, quantize=quantize, kernels=kernels)
    if unavailable is not None:
        report = replace(report, prefill=replace(report.prefill, time_unavailable=unavailable))
    budget = memory_budget(wanted.fit, request.hardware)
    if budget is None:
        return report
    max_batch = None
    if wanted.fit is not None:
        with say.bar(f"searching the most sequences {source.label} serves", None, counts=Counts.SIMULATIONS) as advance:
            def peak_at(sequences: int) -> int:
                advance()
                if sequences == batch:
                    return report.peak_bytes
                return _generate(model, wanted.prompt_tokens, wanted.new_tokens, sequences, dtype=dtype,
                                 roofline=None, name=source.label, peak_only=True, parallel=parallel,
                                 quantize=quantize, kernels=kernels).peak_bytes

            max_batch = largest_batch(peak_at, budget)
    return replace(report, budget_bytes=budget, max_batch=max_batch)


@dataclass(frozen=True)
class _Quantize:
    """The what-ifs applied to every traced call of a generation, and the engine that makes them."""

    weights: WeightFormat | None = None
    kv_cache_dtype: str | None = None
    engine: str = "hf-generate"  # whose generation loop and cache each call runs (Generation.engine)
    cuda_graphs: str = "auto"  # whether the engine's decode steps replay CUDA graphs (Generation.cuda_graphs)

    def __call__(self, trace: Trace) -> Trace:
        """``trace`` in the weight format and cache dtype asked, each lookup and routed expert read
        as it is, and, in an engine that compiles the model, its pointwise runs fused."""
        trace = bytes_read(quantized(trace, self.weights, self.kv_cache_dtype))
        return fused(trace) if self.engine == "vllm" else trace


def _generate(model: nn.Module, prompt: int, new: int, batch: int, *, dtype: torch.dtype | None,
              roofline: Roofline | None, name: str, peak_only: bool = False, parallel: TensorParallel | None = None,
              quantize: _Quantize | None = None, kernels: str = "meta") -> GenerationReport:
    """The generation's report: traced (see :mod:`nncost.analyses.generation`) with ``kernels``'
    attention kernels and ``quantize``'s weight format and cache dtype applied to each call, then,
    with ``parallel``, one GPU's share of it; with ``peak_only``, only what the peak needs."""
    quantize = quantize or _Quantize()
    traced = _trace_generation(model, prompt, new, batch, dtype=dtype, name=name, peak_only=peak_only,
                               quantize=quantize, kernels=kernels)
    graphs = quantize.cuda_graphs if quantize.engine == "vllm" else None
    return replace(one_gpu(traced, model, prompt, new, batch, roofline, parallel, graphs),
                   weight_format=traced.prefill.weight_format, kv_cache_dtype=quantize.kv_cache_dtype,
                   engine=quantize.engine)


def _trace_generation(model: nn.Module, prompt: int, new: int, batch: int, *, dtype: torch.dtype | None, name: str,
                      peak_only: bool, quantize: _Quantize, kernels: str) -> Traced:
    """Trace the prefill, and enough decode steps to sum all of them."""
    last = prompt + new - 2  # the context of the last decode step
    with session(model, batch, dtype=dtype, model_name=name, max_cache_length=prompt + new - 1,
                 kv_cache_dtype=quantize.kv_cache_dtype, kernels=kernels, engine=quantize.engine) as run:
        prefill_trace, cache_after_prefill = run.prefill(prompt)
        prefill_trace = quantize(prefill_trace)
        caches: dict[int, int] = {prompt - 1: cache_after_prefill}
        traced: dict[int, Trace] = {}

        def step_at(context: int) -> Trace:
            if context not in traced:
                step, _, caches[context] = run.decode_at(context)
                traced[context] = quantize(step)
            return traced[context]

        segments = [] if new == 1 or peak_only else linear_segments(step_at, prompt, last)
        if new > 1:
            step_at(last)
            if last - 1 not in caches:
                step_at(last - 1)
        span = BLOCK_TOKENS if quantize.engine == "vllm" else 1  # a paged cache grows a block at a time
        per_token = (run.cache_bytes_at(1 + span) - run.cache_bytes_at(1)) // (batch * span)
        cache = run.cache_description()
    return Traced(prefill_trace, segments, traced.get(last) if new > 1 else None, cache_after_prefill,
                   caches.get(last - 1, cache_after_prefill), caches.get(last, cache_after_prefill), per_token, cache,
                   caches, prefill_cache=cache_after_prefill if quantize.engine == "vllm" else 0)


def _parallel(model: nn.Module, size: int, hardware: str | None) -> TensorParallel | None:
    """Tensor parallelism over ``size`` GPUs of ``hardware``, checked against the model's heads."""
    if size == 1:
        return None
    heads, kv_heads = attention_heads(model)
    device = resolve_device(hardware, calibrate=False) if hardware is not None else None
    check_tensor_parallel(heads, size, gpus_per_node=device.gpus_per_node if device is not None else None,
                          hardware=device.name if device is not None else "", kv_heads=kv_heads)
    assert kv_heads is not None  # named whenever the heads are (attention_heads)
    return TensorParallel(size, kv_heads, device.interconnect_bandwidth if device is not None else None,
                          device.collectives if device is not None else None)
