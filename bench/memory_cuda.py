"""Simulated training-step peak against the CUDA caching allocator, one invocation for every row.

    PYTHONPATH=src python3 bench/memory_cuda.py [--out docs/memory_cuda.txt]

For each row: the model on the GPU with its optimizer (PyTorch's CUDA default, foreach), one
warm-up step, ``zero_grad(set_to_none=True)``, then ``torch.cuda.reset_peak_memory_stats()`` and a
second step; the measured peaks are ``torch.cuda.max_memory_allocated()`` and
``torch.cuda.max_memory_reserved()``.  ``cudnn.benchmark`` is off.  Beside them,
``nncost.memory(..., allocator="cuda")`` for the same step: its peak of live tensors, and its replay
of the caching allocator (allocated and reserved).  Like a training loop (and like the simulation),
the step keeps its output until the optimizer step is done.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

import nncost


class LSTMTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(256, 512, num_layers=2, batch_first=True)
        self.head = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


def rows() -> list[tuple[str, Any, dict[str, Any], str]]:
    import torchvision
    import transformers

    def vision(name: str) -> Any:
        return lambda: torchvision.models.get_model(name, weights=None)

    def gpt2() -> nn.Module:
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="sdpa"))

    tokens = {"input_ids": torch.zeros(4, 512, dtype=torch.long)}
    return [
        ("resnet18 b32", vision("resnet18"), {"input_size": (3, 224, 224), "batch_size": 32}, "adam"),
        ("resnet50 b16", vision("resnet50"), {"input_size": (3, 224, 224), "batch_size": 16}, "adam"),
        ("resnet50 b64", vision("resnet50"), {"input_size": (3, 224, 224), "batch_size": 64}, "sgd"),
        ("mobilenet_v2 b32", vision("mobilenet_v2"), {"input_size": (3, 224, 224), "batch_size": 32}, "adam"),
        ("efficientnet_b0 b32", vision("efficientnet_b0"), {"input_size": (3, 224, 224), "batch_size": 32}, "adam"),
        ("densenet121 b16", vision("densenet121"), {"input_size": (3, 224, 224), "batch_size": 16}, "sgd"),
        ("vit_b_16 b16", vision("vit_b_16"), {"input_size": (3, 224, 224), "batch_size": 16}, "adamw"),
        ("gpt2 b4 seq512", gpt2, {"kwargs": tokens}, "adamw"),
        ("lstm b32 seq64", LSTMTagger, {"input_size": (64, 256), "batch_size": 32}, "adam"),
    ]


def measure(model: nn.Module, spec: dict[str, Any], optimizer: str) -> tuple[int, int]:
    """nncost's own CUDA measurement (``measure_cuda_peak``), and the reserved peak of the same step."""
    from nncost.simulation.measure import measure_cuda_peak

    if "kwargs" in spec:
        args: tuple[Any, ...] = ()
        kwargs = spec["kwargs"]
    else:
        args, kwargs = (torch.randn(spec["batch_size"], *spec["input_size"]),), {}
    allocated = measure_cuda_peak(model, args, kwargs, mode="train", optimizer=optimizer)
    return allocated, torch.cuda.max_memory_reserved()


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/memory_cuda.py needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = False
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    print("| row | optimizer | max allocated | simulated peak | error | allocator replay, allocated | "
          "max reserved | allocator replay, reserved | simulated peak at | time |", flush=True)
    errors = []
    for label, build, spec, optimizer in rows():
        start = time.perf_counter()
        torch.manual_seed(0)
        model = build()
        simulated = nncost.memory(model, optimizer=optimizer, allocator="cuda", **spec)
        measured, reserved = measure(model, spec, optimizer)
        del model
        torch.cuda.empty_cache()
        error = (simulated.peak_bytes - measured) / measured
        errors.append(error)
        replayed = simulated.allocator_allocated_bytes or 0
        replayed_reserved = simulated.allocator_reserved_bytes or 0
        print(f"| {label} | {optimizer} | {measured:,} | {simulated.peak_bytes:,} | {100 * error:+.2f}% | "
              f"{replayed:,} ({100 * (replayed - measured) / measured:+.2f}%) | {reserved:,} | "
              f"{replayed_reserved:,} ({100 * (replayed_reserved - reserved) / reserved:+.2f}%) | "
              f"{simulated.peak_phase}: {simulated.peak_at} | {time.perf_counter() - start:.1f} s |", flush=True)
    print(f"median |error| {100 * statistics.median(abs(e) for e in errors):.2f}%, "
          f"max |error| {100 * max(abs(e) for e in errors):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
