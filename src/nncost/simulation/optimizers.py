"""The optimizers a training step can use, built as PyTorch's own classes.

The simulator runs the real ``torch.optim`` class on meta parameters, so the state it keeps
(Adam: ``exp_avg``, ``exp_avg_sq`` and a scalar ``step``; SGD with momentum: one buffer) follows
PyTorch's rules exactly.  The implementation is the one PyTorch picks on the device by default:
the single-tensor loop on CPU, ``foreach`` (which allocates list temporaries) on CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING

from nncost.hardware.catalogue import Allocator

if TYPE_CHECKING:
    import torch
    from torch import nn

    Factory = Callable[[Iterable[nn.Parameter], bool], torch.optim.Optimizer]


def _optim() -> ModuleType:
    """``torch.optim``, imported when an optimizer is built: the names here are read without torch."""
    from torch import optim

    return optim


OPTIMIZERS: dict[str, Factory | None] = {
    "adam": lambda params, foreach: _optim().Adam(params, foreach=foreach),
    "adamw": lambda params, foreach: _optim().AdamW(params, foreach=foreach),
    "sgd": lambda params, foreach: _optim().SGD(params, lr=0.01, foreach=foreach),
    "sgd-momentum": lambda params, foreach: _optim().SGD(params, lr=0.01, momentum=0.9, foreach=foreach),
    "adagrad": lambda params, foreach: _optim().Adagrad(params, foreach=foreach),
    "rmsprop": lambda params, foreach: _optim().RMSprop(params, foreach=foreach),
    "none": None,
}


# State tensors each optimizer keeps per parameter element (Adam: exp_avg, exp_avg_sq; SGD with
# momentum: momentum_buffer; Adagrad: sum; RMSprop: square_avg), as torch.optim creates them.
STATE_TENSORS = {"adam": 2, "adamw": 2, "sgd": 0, "sgd-momentum": 1, "adagrad": 1, "rmsprop": 1, "none": 0}


def tensors_touched(optimizer: str) -> int:
    """Tensors one step reads or writes per parameter element: the parameter read and written,
    its gradient read, each state read and written (Adam: 7); none without an optimizer."""
    if optimizer == "none":
        return 0
    return 3 + 2 * STATE_TENSORS[optimizer]


def state_bytes(optimizer: torch.optim.Optimizer | None, *, allocator: str) -> list[int]:
    """Bytes of each tensor of the optimizer's state on the parameters' device, each storage once.

    The simulation keeps parameters on meta; PyTorch keeps Adam's scalar ``step`` on the host
    (unless capturable or fused), so under ``allocator="cuda"`` it is not GPU memory, while under
    ``allocator="cpu"`` it is.
    """
    if optimizer is None:
        return []
    import torch

    seen: dict[int, int] = {}
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and on_device(allocator, "", value):
                seen[id(value.untyped_storage())] = value.untyped_storage().nbytes()
    return list(seen.values())


def on_device(allocator: str, key: str, value: torch.Tensor) -> bool:
    """Whether a state tensor of a simulated step of ``allocator`` semantics is in device memory
    (:func:`state_bytes`)."""
    return value.device.type == "meta" or allocator == Allocator.CPU


def state_bytes_by_param(optimizer: torch.optim.Optimizer | None,
                         held: Callable[[str, torch.Tensor], bool]) -> dict[int, int]:
    """Bytes of each parameter's optimizer state that ``held(key, tensor)`` says is in device
    memory, by ``id`` of the parameter."""
    if optimizer is None:
        return {}
    import torch

    return {id(param): sum(value.untyped_storage().nbytes() for key, value in state.items()
                           if isinstance(value, torch.Tensor) and held(key, value))
            for param, state in optimizer.state.items()}
