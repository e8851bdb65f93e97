"""Output-metadata functions for the few operators whose meta kernels are slow.

PyTorch's meta kernel for BatchNorm is a Python decomposition that costs about a
millisecond a call, more than the rest of a ResNet's forward together.  Its outputs are fully
determined by the input's metadata, so for meta execution the tracer builds them here.  Each
function returns the outputs, or None to let the real meta kernel run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

REDUCED = (torch.float16, torch.bfloat16)


def batch_norm_stats_shapes(x: Any, weight: Any, bias: Any, running_mean: Any, *rest: Any) -> Any:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    stats_dtype = running_mean.dtype if isinstance(running_mean, torch.Tensor) else (
        torch.float32 if x.dtype in REDUCED else x.dtype
    )
    channels = x.shape[1]
    return (
        torch.empty_like(x),
        torch.empty((channels,), dtype=stats_dtype, device="meta"),
        torch.empty((channels,), dtype=stats_dtype, device="meta"),
    )


SHAPE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_native_batch_norm_legit_no_training": batch_norm_stats_shapes,
    "native_batch_norm": batch_norm_stats_shapes,
}
