"""Real runs that cannot take the machine down: refused up front when they need more memory than
is available, and an allocation that fails inside one told as one sentence."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nncost.errors import NotEnoughMemory
from nncost.hardware.machine import available_memory_bytes
from nncost.render.units import nbytes

RUN_MARGIN = 0.2  # a real run's activations and runtime, over its weights


def run_need(model: nn.Module, dtype: torch.dtype | None) -> tuple[int, str]:
    """The least memory a real run of ``model`` holds, and what it is made of: its parameters and
    buffers at their dtypes, a copy of the floating ones in ``dtype`` where that differs (the run
    converts a copy), and ``RUN_MARGIN`` more for activations and the runtime."""
    tensors = [*model.parameters(), *model.buffers()]
    weights = weights_bytes(model)
    copies = sum(t.numel() * dtype.itemsize for t in tensors
                 if dtype is not None and t.is_floating_point() and t.dtype != dtype)
    dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors}))
    copy = f", a {str(dtype).removeprefix('torch.')} copy of {nbytes(copies)}" if copies and dtype is not None else ""
    return (int((weights + copies) * (1 + RUN_MARGIN)),
            f"its weights: {nbytes(weights)} in {dtypes}{copy}; and {RUN_MARGIN:.0%} more for activations and the "
            "runtime")


def weights_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def check_memory(what: str, device: str, needed: int, made_of: str) -> None:
    """Refuse ``what`` up front when it needs more memory than ``device`` has available now (the
    machine's for the CPU, :func:`~nncost.hardware.machine.available_memory_bytes`; the GPU's free
    memory for CUDA): a run past it is killed, or takes the machine down."""
    if device.startswith("cuda"):
        available: int | None = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        available = available_memory_bytes()
    if available is not None and needed > available:
        where = "this GPU has" if device.startswith("cuda") else "this machine has"
        raise NotEnoughMemory(f"{what} needs about {nbytes(needed)} of memory ({made_of}) and {where} "
                              f"{nbytes(available)} available; cost it on meta instead (without --device, "
                              "--measure-time and --measure)")


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is an allocation that failed: Python's,
    CUDA's, or torch's CPU allocator's (a RuntimeError that says it could not allocate)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
                isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def real_run(what: str, real: bool = True) -> Iterator[None]:
    """An allocation that fails inside (a ``real`` run) becomes one sentence naming ``what``."""
    try:
        yield
    except Exception as exc:
        if not real or not _out_of_memory(exc):
            raise
        available = available_memory_bytes()
        left = f" ({nbytes(available)} available now)" if available is not None else ""
        raise NotEnoughMemory(f"{what} ran out of memory{left}: cost it on meta instead (without --device, "
                              "--measure-time and --measure), or with a smaller batch") from exc
