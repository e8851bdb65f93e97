"""A whole training run: the simulated step repeated until the run's tokens are seen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class TrainingRun:
    """``tokens`` seen in ``steps`` steps of ``tokens_per_step`` (global batch × sequence) on
    ``gpus`` data-parallel GPUs of ``hardware``.

    ``flops`` is the work every GPU executes over the run (forward, backward with its
    recomputation, optimizer); ``flops_per_token`` is its share of one token.  ``seconds`` is
    the run's wall time at ``efficiency`` (the fraction of the device's dense matrix peak
    ``peak_flops`` a step achieves, as published runs achieve it: ``efficiency_source``), and
    ``gpu_hours`` its time on all GPUs; ``cost`` is ``gpu_hours × price_per_gpu_hour`` when priced.
    ``step_seconds`` is one step's time.  Under a ``layout`` (tensor and pipeline parallelism,
    micro-batches) the step's time also holds the pipeline's ``bubble_seconds`` and the
    ``communication_seconds`` of its all-reduces, sends and gradient reduction
    (:class:`nncost.records.parallel.ParallelStep`); ``gpus`` are then all of them.
    ``fits`` says whether the step the run repeats fits each GPU: its per-GPU peak
    ``step_peak_bytes`` against the device's ``budget_bytes`` (None without a budget).  A run whose
    step does not fit could not run as laid out; its figures are still given, and the views say so.
    """

    SECTION: ClassVar[str] = "training_run"  # its key in the document

    tokens: int
    tokens_per_step: int
    steps: int
    gpus: int
    hardware: str
    flops: float
    flops_per_token: float
    peak_flops: float
    efficiency: float
    efficiency_source: str
    seconds: float
    gpu_hours: float
    price_per_gpu_hour: float | None = None
    cost: float | None = None
    step_seconds: float | None = None
    layout: str | None = None  # the layout's label (TP8 PP8 DP1 M16 ...), None for data parallelism alone
    bubble_seconds: float | None = None  # per step
    communication_seconds: float | None = None  # per step
    fits: bool | None = None
    step_peak_bytes: int | None = None
    budget_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``training_run`` section of the JSON document."""
        from nncost.render.formats import training_run_dict

        return training_run_dict(self)
