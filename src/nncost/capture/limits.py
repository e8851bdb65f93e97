"""Why a run on meta tensors stopped: a limit of meta execution, or an input the model rejects.

The two need opposite answers.  A limit of meta execution (an operator without a meta kernel, a
meta kernel stricter than the real one, an output size that depends on data, ``.item()``, a
custom operator without a fake implementation) is answered by running the model for real; a
wrong input (three channels where the convolution wants four) must be reported at once, with
the layer and the shapes, without building weights or running anything big.

The decision reads no error message, so it cannot miss a new kernel's wording:

- The failure happened inside an operator: that one operator is run again for real, on tensors
  of the same sizes, strides and dtypes, on the device the real run would use, filled with
  zeros and then with ones (some kernels check values: lengths must be positive).  If the real
  kernel accepts what the meta kernel refused, meta execution is what stopped; if it refuses
  both, the input is wrong.  The check runs one operator, never the model.  An operator whose
  arguments cannot be rebuilt for real (a tensor subclass, an exotic dtype, more than
  ``CHECK_LIMIT_BYTES``) is left to the real run.
- The failure happened in Python code, outside any operator: a ``raise`` or ``assert``
  statement is the code's own check (a shape check in the model, ``torch._check`` in
  ``torch.nn.functional``); those look at shapes, which meta tensors have, so the input is
  wrong.  An error raised by the interpreter or by a call into torch's C++ (``.numpy()`` of a
  meta tensor, autocast asked about the meta device) is meta execution stopping.
- ``NotImplementedError`` is always meta execution stopping: it never says an input is wrong.
"""

from __future__ import annotations

import dis
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_unflatten

# The largest set of arguments the check rebuilds for real; a bigger operator is left to the real run.
CHECK_LIMIT_BYTES = 1 << 30
# The values the check tries, in turn: zeros are valid indices, offsets and counts; ones are valid
# lengths and probabilities.  A kernel that accepts the shapes with either accepts the shapes.
FILLS = (0, 1)
_RAISE_OPCODES = {"RAISE_VARARGS", "RERAISE"}


FailedCall = tuple[Any, tuple[Any, ...], dict[str, Any], BaseException]


def meta_limitation(exc: BaseException, failed_call: FailedCall | None, device: torch.device) -> bool:
    """Whether ``exc``, raised by a meta run, means meta execution stopped (run for real) rather than
    a wrong input.  ``failed_call`` is the last operator call that raised under the tracer, with
    its exception (it counts if that exception led to ``exc``); ``device`` is where a real run
    would go (the CPU when the model has no weights)."""
    chain = _chain(exc)
    if any(isinstance(e, NotImplementedError) for e in chain):
        return True
    if failed_call is not None and failed_call[3] in chain:
        func, args, kwargs, _ = failed_call
        accepted = accepted_for_real(func, args, kwargs, device=device)
        return True if accepted is None else accepted
    return not raised_by_statement(exc)


def accepted_for_real(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, device: torch.device) -> bool | None:
    """Run one operator for real on zero tensors shaped like ``args``: does the real kernel accept
    them?  None when the arguments cannot be rebuilt for real."""
    leaves, spec = tree_flatten((args, kwargs))
    total = 0
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            if not _rebuildable(leaf):
                return None
            total += _storage_numel(leaf) * leaf.element_size()
    if total > CHECK_LIMIT_BYTES:
        return None
    with _disable_current_modes(), torch.no_grad():
        for fill in FILLS:
            try:
                real = [_filled_like(leaf, fill, device) if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
            except Exception:  # a dtype or layout that has no real tensors on this device
                return None
            real_args, real_kwargs = tree_unflatten(real, spec)
            try:
                func(*real_args, **real_kwargs)
            except Exception:
                continue
            return True
    return False


def raised_by_statement(exc: BaseException) -> bool:
    """Whether the innermost Python frame raised ``exc`` with a ``raise`` or ``assert`` statement,
    rather than the interpreter or a call into C++ raising it."""
    tb: TracebackType | None = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    for instruction in dis.get_instructions(tb.tb_frame.f_code):
        if instruction.offset == tb.tb_lasti:
            return instruction.opname in _RAISE_OPCODES
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _rebuildable(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    plain = type(t) in (torch.Tensor, torch.nn.Parameter) or isinstance(t, FakeTensor)
    return plain and not t.is_nested and t.layout == torch.strided and not t.is_quantized


def _storage_numel(t: torch.Tensor) -> int:
    if t.numel() == 0:
        return 0
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    return 1 + int(t.storage_offset()) + last


def _filled_like(t: torch.Tensor, fill: int, device: torch.device) -> torch.Tensor:
    """``fill`` everywhere, with ``t``'s sizes, strides and dtype, on ``device``."""
    storage = torch.full((_storage_numel(t),), fill, dtype=t.dtype, device=device)
    return storage.as_strided(tuple(t.shape), t.stride(), t.storage_offset())
