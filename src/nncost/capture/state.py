"""The global torch state a capture runs in, and what it leaves exactly as it found it.

Two pieces of the caller's state would change what a capture counts or what the caller sees
afterwards:

- **Inference mode.**  Inside ``torch.inference_mode()`` autograd's dispatch keys are off, so
  composite operators (``linear``, ``conv2d``, ``layer_norm``, SDPA) reach the dispatch tracer
  whole instead of as the ATen operators they are made of, and a training step has no autograd
  at all.  A capture leaves inference mode for its run (``torch.inference_mode(False)``), so it
  counts the same inside and outside; the forward of ``profile`` still runs under ``no_grad``.
- **The random number generators.**  A capture draws from them: a real run fills meta inputs
  with noise, a model calls ``torch.rand``.  Each attempt (the meta run, the real run it may
  fall back to) runs on a fork of the generators, so the fallback starts from the caller's state,
  as a direct run on that device would, and the caller's generators are put back afterwards.
  CUDA's are forked when CUDA is already initialised or the run is on CUDA (forking them would
  otherwise initialise CUDA for nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def cuda_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generators a run on ``device`` may draw from."""
    if not torch.cuda.is_available():
        return []
    if device.type == "cuda" or torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextmanager
def run_state(device: torch.device) -> Iterator[None]:
    """Outside inference mode, on forked random generators, for one attempt at running a model."""
    with torch.random.fork_rng(devices=cuda_devices(device)), torch.inference_mode(False):
        yield
