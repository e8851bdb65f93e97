"""Device time from ``torch.profiler``: the kernels' own durations, in total and per labelled range."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

PREFIX = "nncost::"


def kernel_seconds(events: Iterable[Any]) -> float:
    """The summed duration of the device kernels (and copies) among ``events`` (``prof.events()``),
    each kernel counted once: on the device's own event, else through the outermost CPU ops that launched it."""
    events = list(events)
    on_device = sum(e.device_time_total for e in events if e.device_type != DeviceType.CPU)
    if on_device:
        return on_device / 1e6
    return sum(e.device_time_total for e in events if e.device_type == DeviceType.CPU and e.cpu_parent is None) / 1e6


def range_seconds(events: Iterable[Any], device: str) -> dict[str, float]:
    """Per ``record_function`` range labelled ``PREFIX + name``: the time of what ran inside it, summed over
    its calls.  On CUDA, the kernels' durations (a range's device time counts the kernels of every op inside
    it); on the CPU, the range's wall time."""
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name.startswith(PREFIX) and event.device_type == DeviceType.CPU:
            micro = event.device_time_total if device == "cuda" else event.cpu_time_total
            totals[event.name.removeprefix(PREFIX)] += micro / 1e6
    return dict(totals)


@contextmanager
def leaf_ranges(model: torch.nn.Module) -> Iterator[None]:
    """Every leaf module's calls inside a ``record_function`` range named after it, for the duration."""
    names = {module: name for name, module in model.named_modules() if not any(module.children())}
    open_ranges: dict[torch.nn.Module, list[Any]] = defaultdict(list)

    def enter(module: torch.nn.Module, _args: Any) -> None:
        scope = record_function(PREFIX + names[module])
        scope.__enter__()
        open_ranges[module].append(scope)

    def leave(module: torch.nn.Module, _args: Any, _output: Any) -> None:
        open_ranges[module].pop().__exit__(None, None, None)

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profiled(call: Any, device: str) -> list[Any]:
    """The profiler's events over one ``call()`` on ``device`` ("cuda" or "cpu"), the device synchronized."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        call()
        if device == "cuda":
            torch.cuda.synchronize()
    return list(prof.events())
