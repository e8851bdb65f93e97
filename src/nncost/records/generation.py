"""Generation as ``model.generate`` runs it: the prefill, the decode steps, the cache, the time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nncost.records.report import Report


@dataclass(frozen=True)
class EngineOverhead:
    """What a serving engine's steps cost beyond their kernels (:mod:`nncost.analyses.overhead`):
    the prefill's seconds and the decode steps' summed, the kernels the prefill and one decode step
    launch, and whether each decode step replays one CUDA graph (``cuda_graphs``) or launches its
    kernels one by one.  The prefill always launches them one by one."""

    prefill_seconds: float
    decode_seconds: float
    prefill_kernels: int
    decode_kernels: int  # one decode step's
    cuda_graphs: bool


@dataclass(frozen=True)
class GenerationReport:
    """``prompt_tokens`` per sequence prefilled, then ``new_tokens − 1`` decode steps of one token
    each (the prefill yields the first new token), for ``batch_size`` sequences at once.

    ``prefill`` is the report of the prefill call; ``decode`` holds every layer's figures summed
    over the decode steps (with ``new_tokens`` 1 there is none, and every figure is 0).  Bytes are
    the whole batch's unless named per token.  ``kv_cache_bytes`` is what the model's cache object
    holds after the last step (every storage it keeps alive); ``kv_cache_bytes_per_token`` what one
    more token of one sequence adds before any sliding window fills.  ``peak_bytes`` is weights + cache +
    the working memory of the call at the peak.  Times are on the report's roofline, when one was
    asked for: ``time_to_first_token_seconds`` is the prefill, ``tokens_per_second`` one
    sequence's decode rate.  ``steps`` has (context length, MACs, seconds, cache bytes) of the
    decode step at a few context lengths, between which the step's cost is a line.  With
    ``tensor_parallel`` > 1 every figure is one GPU's (:mod:`nncost.analyses.tensor_parallel`).
    With a serving engine, ``overhead`` is what its steps cost beyond their kernels, and the times
    include it.
    """

    SECTION: ClassVar[str] = "generation"  # its key in the document

    prompt_tokens: int
    new_tokens: int
    batch_size: int
    cache: str  # the model's cache class and the classes of its layers
    prefill: Report
    decode: Report
    decode_steps: int
    kv_cache_bytes: int
    kv_cache_bytes_per_token: int
    weights_bytes: int
    peak_bytes: int
    peak_phase: str  # "prefill" or "decode"
    peak_cache_bytes: int  # the cache held at the peak
    peak_working_bytes: int  # the call's own live bytes at the peak (activations, the growing cache's copies)
    time_to_first_token_seconds: float | None = None
    tokens_per_second: float | None = None
    steps: tuple[tuple[int, int, float | None, int], ...] = ()
    budget_bytes: int | None = None
    max_batch: int | None = None  # the most sequences whose peak fits budget_bytes
    tensor_parallel: int = 1  # GPUs the model is split over; every figure above is one GPU's
    communication_bytes: tuple[int, int] = (0, 0)  # sent by each GPU: in the prefill, over all decode steps
    communication_seconds: tuple[float, float] | None = None  # on the device's link, in TTFT and tokens/s
    weight_format: str | None = None  # quantized weights: the format (nncost.quantization), weights_bytes in it
    kv_cache_dtype: str | None = None  # fp8 or int8: the cache's bytes as stored in it; None: the model's dtype
    engine: str = "hf-generate"  # whose generation: hf-generate (model.generate) or vllm (a paged cache)
    overhead: EngineOverhead | None = None  # an engine's step overhead, in the times; None for hf-generate

    @property
    def decode_seconds(self) -> float | None:
        """The whole decode phase's time: its kernels, the link's sends under tensor parallelism
        and the engine's step overhead (what ``tokens_per_second`` divides)."""
        kernels = self.decode.totals.estimated_seconds
        if kernels is None:
            return None
        sends = self.communication_seconds[1] if self.communication_seconds is not None else 0.0
        return kernels + sends + (self.overhead.decode_seconds if self.overhead is not None else 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The ``generation`` section of the document (:func:`nncost.render.formats.generation_dict`)."""
        from nncost.render.formats import generation_dict

        return generation_dict(self)

    def __str__(self) -> str:
        from nncost.render.text import render_generation

        return render_generation(self)
