"""Precisions: the names a run accepts, and what each means for the dtypes it runs in.

- ``fp32``: parameters, activations, gradients and optimizer state in float32 (or in the
  ``dtype`` given beside it).
- ``bf16`` / ``fp16`` ("pure"): the floating parameters, buffers and inputs in that dtype.
- ``bf16-mixed`` / ``fp16-mixed``: ``torch.autocast`` over the forward and the loss with fp32
  master weights; ``fp16-mixed`` adds a GradScaler.

The roofline reads the same record to pick its datasheet columns; the step simulation
(:mod:`nncost.simulation.autocast`) to run autocast for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nncost.compat import StrEnum
from nncost.errors import BadRequest

if TYPE_CHECKING:
    import torch


class Precision(StrEnum):
    """A precision a run accepts, by the name it is given (a member is its name: ``"bf16-mixed"``)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    BF16_MIXED = "bf16-mixed"
    FP16_MIXED = "fp16-mixed"

    @property
    def mixed(self) -> bool:
        """Autocast over the forward and the loss, with fp32 master weights, gradients and states."""
        return self in (Precision.BF16_MIXED, Precision.FP16_MIXED)

    @property
    def compute(self) -> Precision:
        """The precision its matrix products compute in: itself, or a mixed one's 16-bit dtype."""
        return {Precision.BF16_MIXED: Precision.BF16, Precision.FP16_MIXED: Precision.FP16}.get(self, self)

    @property
    def grad_scaler(self) -> bool:
        """Whether a GradScaler scales the loss and unscales the gradients (fp16-mixed)."""
        return self is Precision.FP16_MIXED


PRECISIONS = tuple(p.value for p in Precision)  # plain names: the CLI reads them without torch


def precision_named(name: str) -> Precision:
    """The :class:`Precision` of ``name``; a clear error naming the precisions there are."""
    try:
        return Precision(name)
    except ValueError:
        raise BadRequest(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}") from None


@dataclass(frozen=True)
class PrecisionSetting:
    """What a precision means for the dtypes of one run."""

    name: Precision
    param_dtype: torch.dtype | None  # the dtype of the floating parameters and inputs (None: as built)
    autocast_dtype: torch.dtype | None  # mixed: the dtype autocast computes in
    grad_scaler: bool  # fp16-mixed: a GradScaler scales the loss and unscales the gradients

    @property
    def mixed(self) -> bool:
        return self.autocast_dtype is not None


def resolve_precision(precision: str, dtype: torch.dtype | None = None) -> PrecisionSetting:
    """The :class:`PrecisionSetting` for a name in :data:`PRECISIONS`; a ``dtype`` given beside it
    may only agree with it (fp32 takes any: the model then runs in that dtype)."""
    named = precision_named(precision)
    import torch

    dtypes = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
    if named is Precision.FP32:
        return PrecisionSetting(named, dtype, None, False)
    if named.mixed:
        if dtype is not None and dtype != torch.float32:
            raise BadRequest(f"precision {precision!r} keeps fp32 master weights: drop dtype={dtype}")
        return PrecisionSetting(named, None, dtypes[named.compute], named.grad_scaler)
    if dtype is not None and dtype != dtypes[named]:
        raise BadRequest(f"precision {precision!r} and dtype={dtype} disagree")
    return PrecisionSetting(named, dtypes[named], None, False)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``"bfloat16"``, ``"torch.float16"`` or a ``torch.dtype`` → the dtype; only floating dtypes
    describe a model's weights."""
    if dtype is None:
        return None
    import torch

    value = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise BadRequest(f"unknown dtype {dtype!r}; try float32, float16 or bfloat16")
    if not value.is_floating_point:
        raise BadRequest(f"dtype {dtype!r} is not a floating dtype; weights and inputs are cast to it: "
                         "try float32, float16 or bfloat16 (quantized weights: --weights int8, int4, fp8 or nf4)")
    return value
