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

from nncost.errors import BadRequest

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed")  # names only: the CLI reads them without torch


@dataclass(frozen=True)
class Precision:
    """What a precision setting means for a run."""

    name: str
    param_dtype: torch.dtype | None  # the dtype of the floating parameters and inputs (None: as built)
    autocast_dtype: torch.dtype | None  # mixed: the dtype autocast computes in
    grad_scaler: bool  # fp16-mixed: a GradScaler scales the loss and unscales the gradients

    @property
    def mixed(self) -> bool:
        return self.autocast_dtype is not None


def resolve_precision(precision: str, dtype: torch.dtype | None = None) -> Precision:
    """The :class:`Precision` for a name in :data:`PRECISIONS`; a ``dtype`` given beside it may
    only agree with it (fp32 takes any: the model then runs in that dtype)."""
    if precision not in PRECISIONS:
        raise BadRequest(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    base = precision.removesuffix("-mixed")
    if precision == "fp32":
        return Precision(precision, dtype, None, False)
    if precision.endswith("-mixed"):
        if dtype is not None and dtype != torch.float32:
            raise BadRequest(f"precision {precision!r} keeps fp32 master weights: drop dtype={dtype}")
        return Precision(precision, None, dtypes[base], base == "fp16")
    if dtype is not None and dtype != dtypes[base]:
        raise BadRequest(f"precision {precision!r} and dtype={dtype} disagree")
    return Precision(precision, dtypes[base], None, False)


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
