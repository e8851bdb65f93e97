"""Measured latency: the real forward pass, timed per module call.

The model runs for real on ``device`` (its weights must be real: build it on the CPU with random
init), in eval mode under ``no_grad``, after ``warmup`` untimed passes.  Then ``repeats`` passes,
each with a forward pre-hook and a forward hook on every module that stamp the start and the end
of each call (CPU: ``time.perf_counter``; CUDA: CUDA events, read after a synchronisation).

Each call's time is its median over the repeats, and the forward's is the model's own call: the
median of the outermost interval, from the same passes.  So every layer's share of the forward
is a share of one measurement, and the model's row is the forward, exactly (its share 100%).
A module call's time includes its children's and their hooks' small cost, the forward's too
(a few microseconds per module call).  Every hook is removed afterwards, also when the forward
raises, and each module's ``training`` flag is restored; when ``dtype`` or ``device`` differ from
the weights', the weights are converted into copies for the run and the originals put back.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nncost.capture import inputs as inputs_mod
from nncost.capture.placement import attributes_restored, model_device, needs_swap, swapped, to_device, training_flags
from nncost.capture.state import run_state
from nncost.errors import BadRequest, NeedsWeights


@dataclass
class LayerTimes:
    """Median seconds of each module call, in call order, and of the whole forward: the first call's,
    the model's own (``total_seconds == seconds[0]``)."""

    names: list[str]
    types: list[str]
    seconds: list[float]
    total_seconds: float
    repeats: int
    device: str


class _Clock:
    """Wall time on the CPU, CUDA events on a CUDA device."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def stamp(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        if self.cuda:
            return float(start.elapsed_time(end)) / 1000.0
        return float(end - start)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@contextmanager
def _hooked(model: nn.Module, clock: _Clock, calls: list[tuple[nn.Module, Any, Any]]) -> Iterator[None]:
    stack: list[int] = []
    handles = []

    def pre(module: nn.Module, args: Any) -> None:
        stack.append(len(calls))
        calls.append((module, clock.stamp(), None))

    def post(module: nn.Module, args: Any, output: Any) -> None:
        index = stack.pop()
        calls[index] = (module, calls[index][1], clock.stamp())

    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post, always_call=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def measure_times(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    repeats: int = 10,
    warmup: int = 2,
    autocast: torch.dtype | None = None,
    on_pass: Callable[[], None] | None = None,
) -> LayerTimes:
    """Time ``model(*args, **kwargs)`` per module call (see the module docstring).

    ``autocast`` (bfloat16 or float16) runs every pass under ``torch.autocast``: mixed precision.
    """
    if repeats < 1:
        raise BadRequest(f"repeats must be at least 1, got {repeats}")
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise BadRequest("measuring on CUDA was asked for, but no CUDA device is available")
    if target.type == "meta":
        raise BadRequest("time cannot be measured on the meta device; measure on cpu or cuda")
    if model_device(model).type == "meta":
        raise NeedsWeights("measuring time needs real weights; build the model on the CPU (random init)")
    clock = _Clock(target)
    names = {id(m): name for name, m in model.named_modules()}
    swap = swapped(model, to_device(target, dtype)) if needs_swap(model, target, dtype) else nullcontext()
    calls: list[tuple[nn.Module, Any, Any]] = []
    per_call: list[list[float]] = []
    order: list[nn.Module] = []
    mixed = torch.autocast(target.type, dtype=autocast) if autocast is not None else nullcontext()
    with run_state(target), attributes_restored(model), training_flags(model, False), swap, torch.no_grad(), mixed:
        placed_args = inputs_mod.place(args, target, dtype)
        placed_kwargs = inputs_mod.place(kwargs, target, dtype)
        for _ in range(warmup):
            model(*placed_args, **placed_kwargs)
            clock.sync()
            if on_pass:
                on_pass()
        for _ in range(repeats):
            calls.clear()
            clock.sync()
            with _hooked(model, clock, calls):
                model(*placed_args, **placed_kwargs)
            clock.sync()
            if not order:
                order = [module for module, _, _ in calls]
                per_call = [[] for _ in calls]
            if len(calls) != len(order) or any(m is not o for (m, _, _), o in zip(calls, order, strict=True)):
                raise BadRequest("the model called its modules in a different order on two passes; "
                                 "its per-layer time cannot be measured")
            for i, (_, begin, finish) in enumerate(calls):
                per_call[i].append(clock.seconds(begin, finish))
            if on_pass:
                on_pass()
    seconds = [statistics.median(times) for times in per_call]
    return LayerTimes(
        names=[names.get(id(m), type(m).__name__) for m in order],
        types=[type(m).__name__ for m in order],
        seconds=seconds,
        total_seconds=seconds[0],
        repeats=repeats,
        device=str(target),
    )
