"""A whole training run from one simulated step: its steps, FLOPs, time, GPU-hours and cost.

The run's time is the FLOPs each GPU executes divided by an achievable rate: the device's dense
matrix peak at the run's precision times a model-FLOPs utilisation (MFU) taken from published
large runs, not the roofline's datasheet time, which no real run reaches (communication,
pipeline bubbles, kernels below their roof, data loading).  The MFU is the median of the
utilisations the papers below report themselves; docs/training.md holds the table, the runs
it is checked against (Llama 2's GPU-hours are left out of the median and predicted), and why
one figure serves them all.
"""

from __future__ import annotations

import math
import statistics

from nncost.analyses.sharding import sharding_named
from nncost.errors import BadRequest
from nncost.records.memory import MemoryReport
from nncost.records.parallel import ParallelStep
from nncost.records.roofline import Roofline
from nncost.records.training_run import TrainingRun

A100_BF16_PEAK = 312e12  # FLOP/s, dense: the peak the papers below divide by

# (run, FLOP/s per A100 reported, reference): each paper's own figure, recomputation included
# where the run recomputed activations (Megatron-LM and BLOOM count the FLOPs executed).
PUBLISHED_FLOP_RATES: tuple[tuple[str, float, str], ...] = (
    ("OPT-175B", 147e12, "Zhang et al. 2022, OPT, section 2.4"),
    ("BLOOM-176B", 150e12, "Le Scao et al. 2022, BLOOM, section 3.5"),
    ("Megatron GPT 1.7B", 137e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 3.6B", 138e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 7.5B", 142e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 18B", 135e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 39B", 138e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 76B", 140e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 145B", 148e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 310B", 155e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 530B", 163e12, "Narayanan et al. 2021, Table 1"),
    ("Megatron GPT 1T", 163e12, "Narayanan et al. 2021, Table 1"),
)

ACHIEVABLE_MFU = round(statistics.median(rate / A100_BF16_PEAK for _, rate, _ in PUBLISHED_FLOP_RATES), 3)
MFU_SOURCE = "median of published runs (docs/training.md)"


def step_flops_per_gpu(memory: MemoryReport) -> float:
    """The FLOPs one GPU executes in a step: its batch's forward and backward (recomputation
    included), and its share of the optimizer (all of it under DDP, 1/N when ZeRO or FSDP
    shards the optimizer state)."""
    optimizer = float(memory.optimizer_flops)
    if sharding_named(memory.sharding).shards_optimizer:
        optimizer = optimizer / memory.gpus
    return memory.forward_flops + memory.backward_flops + optimizer


def training_run(memory: MemoryReport, roofline: Roofline, *, tokens: int, seq: int,
                 price_per_gpu_hour: float | None = None, mfu: float | None = None) -> TrainingRun:
    """``tokens`` of training, each step ``memory``'s step on each of its GPUs, timed on
    ``roofline``'s device at ``mfu`` (default :data:`ACHIEVABLE_MFU`) of its dense matrix peak."""
    if memory.mode != "train":
        raise BadRequest("a training run repeats a training step: simulate one (mode='train')")
    tokens_per_step = memory.batch_size * seq * memory.gpus
    steps = math.ceil(tokens / tokens_per_step)
    per_gpu = step_flops_per_gpu(memory)
    flops = per_gpu * memory.gpus * steps
    peak = roofline.family_peak_flops.get("matmul", roofline.peak_flops)
    efficiency = mfu if mfu is not None else ACHIEVABLE_MFU
    seconds = steps * per_gpu / (efficiency * peak)
    gpu_hours = seconds * memory.gpus / 3600
    return TrainingRun(
        tokens=tokens, tokens_per_step=tokens_per_step, steps=steps, gpus=memory.gpus, hardware=roofline.hardware,
        flops=flops, flops_per_token=flops / (steps * tokens_per_step), peak_flops=peak, efficiency=efficiency,
        efficiency_source="given" if mfu is not None else MFU_SOURCE, seconds=seconds, gpu_hours=gpu_hours,
        price_per_gpu_hour=price_per_gpu_hour,
        cost=gpu_hours * price_per_gpu_hour if price_per_gpu_hour is not None else None, step_seconds=seconds / steps,
        fits=memory.fits, step_peak_bytes=memory.peak_per_gpu_bytes, budget_bytes=memory.budget_bytes)


def layout_run(step: ParallelStep, *, tokens: int, price_per_gpu_hour: float | None = None,
               given_mfu: bool = False) -> TrainingRun:
    """``tokens`` of training in steps of ``step``'s layout: its global batch of tokens a step,
    its FLOPs on all its GPUs, and its step time (compute at its efficiency, the pipeline's
    bubble, the communication: :mod:`nncost.analyses.parallel`)."""
    if step.tokens_per_step is None:
        raise BadRequest("a training run counts tokens: it is for token models (hf:NAME, --seq)")
    if step.step_seconds is None or step.hardware is None or step.peak_flops is None or step.efficiency is None:
        raise BadRequest("a training run's time is on a device: give --hardware (e.g. h100-sxm)")
    steps = math.ceil(tokens / step.tokens_per_step)
    flops = step.flops * steps
    seconds = steps * step.step_seconds
    gpu_hours = seconds * step.layout.gpus / 3600
    communication = sum(x or 0.0 for x in (step.tensor_parallel_seconds, step.pipeline_seconds,
                                           step.data_parallel_seconds))
    return TrainingRun(
        tokens=tokens, tokens_per_step=step.tokens_per_step, steps=steps, gpus=step.layout.gpus,
        hardware=step.hardware, flops=flops, flops_per_token=flops / (steps * step.tokens_per_step),
        peak_flops=step.peak_flops, efficiency=step.efficiency,
        efficiency_source="given" if given_mfu else MFU_SOURCE, seconds=seconds, gpu_hours=gpu_hours,
        price_per_gpu_hour=price_per_gpu_hour,
        cost=gpu_hours * price_per_gpu_hour if price_per_gpu_hour is not None else None,
        step_seconds=step.step_seconds, layout=step.layout.label, bubble_seconds=step.bubble_seconds,
        communication_seconds=communication, fits=step.fits, step_peak_bytes=step.peak_bytes,
        budget_bytes=step.budget_bytes)
