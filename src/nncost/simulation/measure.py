"""Measuring the real peak of one step, to set beside the simulated one.

The model is deep-copied (a training step changes weights and optimizer state), its blocks put
under activation checkpointing as the simulation does (``checkpointing``, on the copy), warmed up
with one full step so that the optimizer state exists, and the second step is measured:

* on the CPU under ``torch.profiler`` with ``profile_memory=True``: the peak is the bytes alive
  before the step (parameters, buffers, optimizer state, inputs) plus the highest running sum of
  the allocator's signed ``[memory]`` events during it;
* on CUDA, ``torch.cuda.max_memory_allocated()`` over the step (peak statistics reset after the
  warm-up, ``cudnn.benchmark`` off), the optimizers' CUDA default (``foreach``).

torch.profiler's C++ side (kineto) writes to file descriptor 2 on every start and stop: USDT
``profiler_start``/``profiler_stop`` markers at any log level, and, in a CUDA build on a machine
without a GPU, ``ERROR ... gpuGetDeviceCount failed``.  Neither says anything about the step, so
the profiled step runs with descriptor 2 pointed at a temporary file, and what landed there is
written back to the real stderr afterwards, less those lines (``without_profiler_noise``).
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from nncost.capture import inputs as inputs_mod
from nncost.capture.placement import model_device
from nncost.capture.scopes import tensors_in
from nncost.errors import BadRequest, NeedsWeights
from nncost.precision import PrecisionSetting, resolve_precision
from nncost.simulation.optimizers import OPTIMIZERS
from nncost.simulation.step import checkpoint_blocks, checkpointed


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    return sum({id(t.untyped_storage()): t.untyped_storage().nbytes() for t in tensors}.values())


def _step(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], opt: torch.optim.Optimizer | None,
          train: bool, mixed: PrecisionSetting | None = None, scaler: torch.amp.GradScaler | None = None,
          device_type: str = "cpu") -> None:
    # forward and loss under autocast when mixed; fp16-mixed scales the loss with a GradScaler
    autocast = (torch.autocast(device_type, dtype=mixed.autocast_dtype) if mixed and mixed.autocast_dtype
                else nullcontext())
    if not train:
        with torch.no_grad(), autocast:
            model(*args, **kwargs)
        return
    with autocast:
        output = model(*args, **kwargs)
        floating = [t for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
        loss = torch.stack([t.float().sum() for t in floating]).sum()
    (scaler.scale(loss) if scaler is not None else loss).backward()
    del floating, loss
    if scaler is not None and opt is not None:
        scaler.step(opt)
        scaler.update()
    elif opt is not None:
        opt.step()
    del output  # after the step, as in a training loop and in the simulation (docs/memory.md, finding 10)


def _prepared(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device, train: bool,
              optimizer: str, setting: PrecisionSetting, checkpointing: bool | Sequence[str] = False,
              ) -> tuple[nn.Module, Any, Any, torch.optim.Optimizer | None, torch.amp.GradScaler | None]:
    """A replica of the model on ``device`` in the step's precision, its blocks checkpointed, its
    inputs, optimizer and scaler."""
    replica = copy.deepcopy(model).to(device).train(train)
    if setting.param_dtype is not None:
        replica = replica.to(setting.param_dtype)
    for _, block in checkpoint_blocks(replica, checkpointing) if train else []:
        checkpointed(block)
    params = [p for p in replica.parameters() if p.requires_grad]
    factory = OPTIMIZERS[optimizer] if train else None
    opt = factory(params, device.type == "cuda") if factory is not None and params else None
    # A scale of 1: the default 65536 overflows fp16 on a sum loss, and GradScaler then skips the
    # optimizer's step (no state): not the steady state.  The scale's value changes no memory.
    scaler = torch.amp.GradScaler(device.type, init_scale=1.0) if setting.grad_scaler and train else None
    real_args = inputs_mod.place(args, device, setting.param_dtype)
    real_kwargs = inputs_mod.place(kwargs, device, setting.param_dtype)
    return replica, real_args, real_kwargs, opt, scaler


def measure_cpu_peak(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], *, mode: str,
                     optimizer: str, precision: str = "fp32", checkpointing: bool | Sequence[str] = False) -> int:
    """``precision`` as in ``nncost.memory``: mixed runs forward and loss under
    ``torch.autocast("cpu", dtype)`` (fp16-mixed with a ``torch.amp.GradScaler("cpu")``), pure
    ``bf16``/``fp16`` casts the replica's floating parameters, buffers and inputs.
    ``checkpointing`` as in ``nncost.memory``: the replica's blocks, or those named, run under
    non-reentrant activation checkpointing in training."""
    if model_device(model).type == "meta":
        raise NeedsWeights("--measure runs a real step: build the model with weights (on CPU)")
    train = mode == "train"
    setting = resolve_precision(precision)
    mixed = setting if setting.mixed else None
    with torch.random.fork_rng(devices=[]):
        replica, real_args, real_kwargs, opt, scaler = _prepared(model, args, kwargs, torch.device("cpu"), train,
                                                                 optimizer, setting, checkpointing)
        params = [p for p in replica.parameters() if p.requires_grad]
        _step(replica, real_args, real_kwargs, opt, train, mixed, scaler)  # warm-up: creates the optimizer state
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        for p in params:
            p.grad = None
        state = [t for s in (opt.state.values() if opt else []) for t in s.values() if isinstance(t, torch.Tensor)]
        if scaler is not None and scaler.get_scale() < 1.0:  # the scale backs off when a step is skipped
            raise RuntimeError("fp16 gradients overflowed in the warm-up step: the GradScaler skipped it")
        scaler_state = [t for t in (scaler._scale, scaler._growth_tracker) if t is not None] if scaler else []
        before = _storage_bytes([*replica.parameters(), *replica.buffers(), *state, *scaler_state,
                                 *tensors_in((real_args, real_kwargs))])
        activities = [torch.profiler.ProfilerActivity.CPU]
        with without_profiler_noise(), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            _step(replica, real_args, real_kwargs, opt, train, mixed, scaler)
        if scaler is not None and scaler.get_scale() < 1.0:
            raise RuntimeError("fp16 gradients overflowed in the measured step: the GradScaler skipped it")
    return before + peak_of_events(prof)


# kineto's log lines: "LEVEL:date time pid:tid File.cpp:line] message"
PROFILER_NOISE = re.compile(
    rb"^(USDT|ERROR):\S+ \S+ \d+:\d+ \S+\.cpp:\d+\] (profiler_start|profiler_stop|gpuGetDeviceCount failed.*)$")


@contextmanager
def without_profiler_noise() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block; afterwards every line written there
    goes to the real stderr, in order, except kineto's start/stop markers and its complaint that
    there is no GPU (``PROFILER_NOISE``).  Another thread's writes in the meantime come out late,
    not lost.  Without a descriptor 2 (a closed stderr) the block runs as it is."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True)
                    if not PROFILER_NOISE.match(line.rstrip(b"\r\n"))]
            rest = memoryview(b"".join(kept))
            while rest:
                rest = rest[os.write(2, rest):]


def peak_of_events(prof: torch.profiler.profile) -> int:
    """Highest running sum of the allocator's signed ``[memory]`` events (raw, in time order)."""
    raw = prof.profiler.kineto_results.events() if prof.profiler and prof.profiler.kineto_results else []
    memory = sorted((e for e in raw if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for event in memory:
        live += event.nbytes()  # type: ignore[attr-defined]  # missing from the stubs
        peak = max(peak, live)
    return peak


def measure_cuda_peak(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], *, mode: str,
                      optimizer: str, precision: str = "fp32", checkpointing: bool | Sequence[str] = False) -> int:
    """``torch.cuda.max_memory_allocated()`` over one steady-state step on the current CUDA device
    (``precision`` and ``checkpointing`` as in :func:`measure_cpu_peak`)."""
    if not torch.cuda.is_available():
        raise BadRequest("measuring on CUDA needs a CUDA device, and none is available")
    if model_device(model).type == "meta":
        raise NeedsWeights("--measure runs a real step: build the model with weights")
    train = mode == "train"
    setting = resolve_precision(precision)
    mixed = setting if setting.mixed else None
    cuda = torch.device("cuda")
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
            replica, real_args, real_kwargs, opt, scaler = _prepared(model, args, kwargs, cuda, train, optimizer,
                                                                     setting, checkpointing)
            _step(replica, real_args, real_kwargs, opt, train, mixed, scaler, "cuda")  # warm-up
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            _step(replica, real_args, real_kwargs, opt, train, mixed, scaler, "cuda")
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
    finally:
        torch.backends.cudnn.benchmark = benchmark
