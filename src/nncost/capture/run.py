"""One capture: run the model once under the tracer and the module scopes, return a Trace.

Meta execution is the default: no weights, no activation memory, the same shapes and the same
operators as a real run.  Questions about values the run knows are answered on meta
(capture.shadows): where a first meta attempt stops, a second one keeps shadows, so a model that
asks nothing pays nothing for them.  A model that needs other data to decide what to do (``nonzero``, NMS,
``.item()`` of an activation), or an operator whose meta kernel is missing or stricter than the
real one, cannot go on without values; it is run again for real on the device that holds its
weights, and the trace says so.  Which failures those are is decided by capture.limits, without reading
messages; any other failure is the model rejecting its input (InputMismatch).

Each attempt runs outside inference mode and on a fork of the random generators
(capture.state): the real run starts from the caller's random state, as a direct run on that
device would, and the caller's state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, TypeVar

import torch
from torch import nn

from nncost.capture import inputs as inputs_mod
from nncost.capture.limits import meta_limitation
from nncost.capture.placement import (
    attributes_restored,
    four_bit_format,
    model_device,
    named_parameters,
    needs_swap,
    param_stats,
    quantized_weights,
    swapped,
    to_device,
    to_meta,
    training_flags,
)
from nncost.capture.scopes import Scopes
from nncost.capture.shadows import Shadows, entered
from nncost.capture.state import run_state
from nncost.capture.tracer import Tracer
from nncost.errors import InputMismatch, NeedsWeights, first_line
from nncost.records.trace import Trace, created_bytes, same_storages
from nncost.rules import ATEN

Progress = Callable[[str], None]
T = TypeVar("T")
# the positional and keyword inputs of a forward at a batch
InputsAt = Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]]


class MetaStopped(Exception):
    """A meta run stopped where a real run would go on (capture.limits decides which is which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def capture(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    device: str = "meta",
    dtype: torch.dtype | None = None,
    model_name: str = "",
    progress: Progress | None = None,
    other_batches: InputsAt | None = None,
) -> Trace:
    """One forward of ``model`` on ``device`` (see the module docstring).

    ``other_batches`` gives the inputs at another batch: then the trace also holds the storages
    the forward creates at the next batch (at batch 1: at 2, and at 3 where batch 1 creates other
    storages, ``records.trace.same_storages``), from light forwards (:func:`_allocations`) in the
    same placement, for the feature maps of a sample.  A forward that fell back to a real run, or
    that runs at one batch only, holds none."""
    target = torch.device(device)
    if target.type != "meta":
        if model_device(model).type == "meta":
            raise NeedsWeights(
                f"device={device!r} runs the model for real, but its parameters are on the meta device; "
                "build the model with weights (on CPU) or use device='meta'"
            )
        return _run(model, args, kwargs, target, dtype, model_name, memoise=False, other_batches=other_batches)
    home = model_device(model)
    quantized = quantized_weights(model)
    if quantized and home.type != "meta":
        # a torchao weight picks its kernel by its device (int4 asserts the CPU, int8 dynamic takes a float
        # path off CUDA): on meta it would not run what runs where it is
        trace = _run(model, args, kwargs, home, dtype, model_name, memoise=False)
        return replace(trace, fallback_reason=f"quantized weights ({', '.join(quantized)}) pick their kernels by "
                       f"device: run for real on {home}", weight_format=f"{', '.join(quantized)} (as stored)")
    try:
        return _on_meta(lambda shadows: _run(model, args, kwargs, target, dtype, model_name, memoise=True,
                                            real_device=_real_device(home), shadows=shadows,
                                            other_batches=other_batches))
    except MetaStopped as stopped:
        reason = stopped.reason
    if home.type == "meta":
        raise NeedsWeights(
            f"meta execution cannot go on at {reason}. This model needs real values; "
            "build it with weights on CPU (nncost does so itself from the CLI) and profile again"
        )
    if progress:
        progress(f"meta execution stopped ({reason.splitlines()[0][:120]}); running for real on {home}")
    return replace(_run(model, args, kwargs, home, dtype, model_name, memoise=False), fallback_reason=reason)


def _on_meta(attempt: Callable[[Shadows | None], T]) -> T:
    """``attempt`` on meta without shadows, and where it stops, again with them (capture.shadows):
    only a model that asks about values pays for keeping them.  Raises :class:`MetaStopped` where
    the second attempt stops too."""
    try:
        return attempt(None)
    except MetaStopped:
        return attempt(Shadows())


def _real_device(home: torch.device) -> torch.device:
    """Where a real run of a model whose weights are on ``home`` goes: there, or the CPU for none."""
    return home if home.type != "meta" else torch.device("cpu")


@contextmanager
def _placed(model: nn.Module, device: torch.device, dtype: torch.dtype | None,
            shadows: Shadows | None) -> Iterator[None]:
    """The model's parameters and buffers on ``device`` and its modules in eval mode, put back
    afterwards; ``shadows`` seeded with the values the model had."""
    convert = to_meta(dtype) if device.type == "meta" else to_device(device, dtype)
    swap = (
        swapped(model, shadows.seeding(convert) if shadows is not None else convert)
        if needs_swap(model, device, dtype)
        else nullcontext()
    )
    with training_flags(model, False), swap:
        yield


@contextmanager
def _forward(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device,
             dtype: torch.dtype | None, shadows: Shadows | None) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The state one forward runs in: its inputs on ``device`` (``shadows`` seeded with the values
    the caller had), its own random generators, no gradients, and every module attribute it
    rebinds put back afterwards."""
    with run_state(device), attributes_restored(model), torch.no_grad():
        placed = inputs_mod.place(args, device, dtype), inputs_mod.place(kwargs, device, dtype)
        if shadows is not None:
            shadows.seed_tree(placed, (args, kwargs))
        yield placed


def _allocations(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device,
                 dtype: torch.dtype | None, shadows: Shadows | None) -> list[int]:
    """The bytes of each storage one forward of the placed model creates, in order
    (``Trace.allocation_sizes`` of its capture), from a tracer that records no calls and no module
    scopes: a third of a capture's time."""
    tracer = Tracer(ATEN, _no_layer, memoise=device.type == "meta", record_calls=False)
    with _forward(model, args, kwargs, device, dtype, shadows) as (placed_args, placed_kwargs):
        try:
            with tracer, entered(shadows):
                model(*placed_args, **placed_kwargs)
        finally:
            tracer.close()
    return created_bytes(tracer.memory_events)


def _other_allocations(model: nn.Module, batch: int, own: list[int], inputs_at: InputsAt, device: torch.device,
                       dtype: torch.dtype | None, shadows: Shadows | None) -> dict[int, list[int]]:
    """What a forward that created ``own`` at ``batch`` creates at the batches the feature maps of
    a sample need (:func:`capture`'s ``other_batches``); none where a forward at another batch fails."""
    found: dict[int, list[int]] = {}
    try:
        found[batch + 1] = _allocations(model, *inputs_at(batch + 1), device, dtype, shadows)
        if batch == 1 and not same_storages(own, found[2]):
            found[3] = _allocations(model, *inputs_at(3), device, dtype, shadows)
    except Exception:  # a model that runs at one batch only: the sum over it instead
        return {}
    return found


def _no_layer() -> int:
    return -1


def _run(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype | None,
    model_name: str,
    *,
    memoise: bool,
    real_device: torch.device | None = None,
    shadows: Shadows | None = None,
    other_batches: InputsAt | None = None,
) -> Trace:
    """One attempt.  On the meta device, ``real_device`` is where a real run would go: a failure that
    is meta execution stopping raises MetaStopped, any other InputMismatch.  ``shadows`` answers
    questions about the values a meta run knows."""
    scopes = Scopes(model)
    with _placed(model, device, dtype, shadows):
        with _forward(model, args, kwargs, device, dtype, shadows) as (placed_args, placed_kwargs), \
                scopes.hooked(model):
            tracer = Tracer(ATEN, scopes.current, memoise=memoise, params=param_storages(model))
            input_bytes = inputs_mod.nbytes((placed_args, placed_kwargs))
            batch = inputs_mod.batch_of((placed_args, placed_kwargs)) or 1
            try:
                with tracer, entered(shadows):
                    output = model(*placed_args, **placed_kwargs)
            except Exception as exc:
                error = mismatch(exc, scopes, tracer, model_name)
                if real_device is not None and meta_limitation(exc, tracer.failed_call, real_device):
                    raise MetaStopped(f"{error.layer or 'the model'} ({error.layer_type}): {first_line(exc)}") \
                        from exc
                raise error from exc
            finally:
                tracer.close()
            del output
            scopes.finish()
            named = named_parameters(model, tracer.storage_id)
        return Trace(
            model=model_name or type(model).__name__,
            execution="meta" if device.type == "meta" else "real",
            device=str(device),
            batch_size=batch,
            layers=scopes.layers,
            ops=tracer.ops,
            memory_events=tracer.memory_events,
            params=param_stats(model, dtype),
            input_bytes=input_bytes,
            named=named,
            weight_format=four_bit_format(model),
            allocations={} if other_batches is None else _other_allocations(
                model, batch, created_bytes(tracer.memory_events), other_batches, device, dtype, shadows),
        )


def param_storages(model: nn.Module) -> dict[int, tuple[str, int]]:
    """Each distinct parameter's storage (``_cdata``), as placed for the run: its name and size (for
    the tracer's ``OpCall.routed``)."""
    return {p.untyped_storage()._cdata: (name, p.numel()) for name, p in model.named_parameters()}


def mismatch(exc: Exception, scopes: Scopes, tracer: Tracer, model_name: str) -> InputMismatch:
    from nncost.capture.mismatch import input_mismatch

    return input_mismatch(exc, scopes, tracer, model_name)
