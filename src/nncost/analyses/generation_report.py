"""A generation's report from its traces: the prefill, the decode steps summed exactly
(:mod:`nncost.analyses.generation`), the cache, the peak and the times; under tensor
parallelism, one GPU's share of them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from nncost.analyses.build import build_report, peak_live_bytes
from nncost.analyses.generation import Segment, decode_report, no_decode, step_samples
from nncost.analyses.overhead import engine_overhead
from nncost.analyses.roofline import estimate
from nncost.analyses.split import link_seconds, split_layers
from nncost.analyses.tensor_parallel import collectives, shard_segments, shard_trace
from nncost.hardware.catalogue import RingCollectives
from nncost.records.generation import EngineOverhead, GenerationReport
from nncost.records.report import Report
from nncost.records.roofline import Roofline
from nncost.records.trace import Trace


@dataclass(frozen=True)
class Traced:
    """What a generation's traces hold: the prefill, the decode steps as linear segments, the
    last step (and, for the peak, the cache the step before it left), the cache's sizes."""

    prefill: Trace
    segments: list[Segment]
    last_step: Trace | None
    cache_after_prefill: int
    cache_before_last: int
    cache_after_last: int
    per_token: int
    cache: str
    caches: dict[int, int]  # the bytes the cache holds after the step at each traced context
    prefill_cache: int = 0  # the cache held beside the prefill's own memory (a paged cache's blocks)


def one_gpu(traced: Traced, model: nn.Module, prompt: int, new: int, batch: int, roofline: Roofline | None,
            parallel: TensorParallel | None, cuda_graphs: str | None = None) -> GenerationReport:
    """The generation's report on one GPU: the whole of ``traced``, or, with ``parallel``, one
    GPU's share of its layers, weights and cache, and the collectives it joins; with
    ``cuda_graphs`` (a serving engine's --cuda-graphs), its steps' overhead in the times."""
    weights = sum(traced.prefill.params.param_bytes_by_dtype.values()) + traced.prefill.params.buffer_bytes
    kv_share = 1
    sends = Sends((), (), new - 1)
    if parallel is not None:
        report = build_report(traced.prefill)
        split = split_layers(report)
        n = parallel.size
        sends = Sends(tuple(collectives(report, split, n)),
                      tuple(collectives(build_report(traced.last_step), split, n)) if traced.last_step else (), new - 1)
        weights = parallel.weights_bytes(model, report, split, traced.prefill.params.buffer_bytes,
                                         sum(traced.prefill.params.param_bytes_by_dtype.values()))
        kv_share = min(n, parallel.kv_heads)
        traced = replace(traced, prefill=shard_trace(traced.prefill, split, n),
                         segments=shard_segments(traced.segments, split, n),
                         last_step=shard_trace(traced.last_step, split, n) if traced.last_step else None)
    overhead = engine_overhead(traced.prefill, traced.last_step, new - 1, batch, cuda_graphs) \
        if cuda_graphs is not None else None
    return replace(generation_report(traced, prompt, new, batch, weights, roofline, kv_share, sends, parallel,
                                     overhead), overhead=overhead)


def generation_report(traced: Traced, prompt: int, new: int, batch: int, weights: int, roofline: Roofline | None,
                       kv_share: int, sends: Sends, parallel: TensorParallel | None,
                       overhead: EngineOverhead | None = None) -> GenerationReport:
    """The figures of one GPU: the cache divided among ``kv_share`` GPUs, and the time of its
    collectives (``sends``: the prefill's, every decode step's) and the engine's ``overhead``
    added to each phase's."""
    def share(nbytes: int) -> int:
        return -(-nbytes // kv_share)

    peaks = [("prefill", share(traced.prefill_cache), peak_live_bytes(traced.prefill.memory_events)[0])]
    if traced.last_step is not None:
        peaks.append(("decode", share(traced.cache_before_last), peak_live_bytes(traced.last_step.memory_events)[0]))
    phase, peak_cache, working = max(peaks, key=lambda p: p[1] + p[2])
    prefill = build_report(traced.prefill)
    decode = decode_report(traced.segments, roofline) if traced.segments else no_decode(traced.prefill, roofline)
    send = (0.0, 0.0)
    extra = (overhead.prefill_seconds, overhead.decode_seconds) if overhead is not None else (0.0, 0.0)
    per_step = extra[1] / (new - 1) if new > 1 else 0.0
    if roofline is not None:
        prefill = estimate(prefill, roofline)
        if parallel is not None and parallel.link is not None:
            send = (parallel.seconds(sends.prefill), parallel.seconds(sends.step) * sends.steps)
    ttft = prefill.totals.estimated_seconds + send[0] + extra[0] if prefill.totals.estimated_seconds is not None \
        else None
    decode_seconds = decode.totals.estimated_seconds + send[1] + extra[1] \
        if decode.totals.estimated_seconds is not None else None
    samples = tuple((context, macs, seconds + per_step if seconds is not None else None,
                     share(traced.caches.get(context, 0))) for context, macs, seconds in
                    step_samples(traced.segments, roofline)) if traced.segments else ()
    return GenerationReport(
        prompt_tokens=prompt, new_tokens=new, batch_size=batch, cache=traced.cache, prefill=prefill, decode=decode,
        decode_steps=new - 1, kv_cache_bytes=share(traced.cache_after_last),
        kv_cache_bytes_per_token=share(traced.per_token), weights_bytes=weights,
        peak_bytes=weights + peak_cache + working, peak_phase=phase, peak_cache_bytes=peak_cache,
        peak_working_bytes=working, time_to_first_token_seconds=ttft,
        tokens_per_second=(new - 1) / decode_seconds if decode_seconds else None, steps=samples,
        tensor_parallel=parallel.size if parallel is not None else 1,
        communication_bytes=sends.bytes,
        communication_seconds=send if parallel is not None and parallel.link is not None else None)


@dataclass(frozen=True)
class Sends:
    """The collectives one GPU joins in a generation, each as (ring steps, bytes it sends)
    (:func:`~nncost.analyses.tensor_parallel.collectives`): the prefill's, and those of each of the
    ``steps`` decode steps (the last step's: every step runs the same layers)."""

    prefill: tuple[tuple[int, float], ...]
    step: tuple[tuple[int, float], ...]
    steps: int

    @property
    def bytes(self) -> tuple[int, int]:
        """Bytes sent in the prefill and over all decode steps."""
        return round(sum(b for _, b in self.prefill)), round(sum(b for _, b in self.step)) * self.steps


@dataclass(frozen=True)
class TensorParallel:
    """Tensor parallelism over ``size`` GPUs joined by a link of ``link`` bytes/s (both ways), on
    which NCCL's ring reaches ``collectives`` (None: no published figure for the device)."""

    size: int
    kv_heads: int
    link: float | None  # None: no device named, no time for the link
    collectives: RingCollectives | None = None

    def seconds(self, calls: tuple[tuple[int, float], ...]) -> float:
        """The time of ``calls`` (ring steps, bytes sent) one after another: each NCCL's ring
        (latency and bus bandwidth), or, without its figures, their bytes at half the link's
        two-way bandwidth and no latency."""
        if self.collectives is not None:
            return sum(self.collectives.seconds(steps, sent) for steps, sent in calls)
        assert self.link is not None
        return link_seconds(sum(sent for _, sent in calls), self.link)

    def weights_bytes(self, model: nn.Module, report: Report, split: set[int], buffers: int, params: int) -> int:
        """One GPU's weights: the ``params`` bytes of split layers divided by ``size``, the rest
        and the ``buffers`` whole."""
        split_names = {layer.name for layer in report.layers if layer.index in split}
        owner: dict[int, str] = {}
        for module_name, module in model.named_modules():
            for parameter in module.parameters(recurse=False):
                owner.setdefault(id(parameter), module_name)
        sizes = {id(p): p.numel() for p in model.parameters()}
        total = sum(sizes.values())
        if not total:
            return buffers
        split_elements = sum(n for key, n in sizes.items() if owner.get(key) in split_names)
        return buffers + round(params / total * (total - split_elements + -(-split_elements // self.size)))
