"""Output-metadata functions for the few operators whose meta kernels are slow.

PyTorch's meta kernel for BatchNorm is a Python decomposition that costs about a
millisecond a call, more than the rest of a ResNet's forward together; the convolution's meta
kernel searches for a memory layout in Python.  Its outputs are fully
determined by the input's metadata, so for meta execution the tracer builds them here.  Each
function returns the outputs, or None to let the real meta kernel run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

REDUCED = (torch.float16, torch.bfloat16)


def _dense(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out in one of the dense formats whose strides ``empty_like`` keeps."""
    if x.is_contiguous():
        return True
    if x.dim() == 4:
        return x.is_contiguous(memory_format=torch.channels_last)
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)


def meta_like(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty_like(t, device="meta", dtype=dtype)``.  For a meta ``t`` that is a Python
    reference costing half a millisecond; a plain dense tensor's strides are copied directly (a
    tensor subclass decides for itself)."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) and _dense(t):
        return torch.empty_strided(t.shape, t.stride(), dtype=dtype, device="meta")
    return torch.empty_like(t, device="meta", dtype=dtype)


def batch_norm_stats_shapes(x: Any, weight: Any, bias: Any, running_mean: Any, *rest: Any) -> Any:
    """BatchNorm's output like its input (:func:`meta_like`), and the two per-channel statistics."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    stats_dtype = running_mean.dtype if isinstance(running_mean, torch.Tensor) else (
        torch.float32 if x.dtype in REDUCED else x.dtype
    )
    channels = x.shape[1]
    return (
        meta_like(x, x.dtype),
        torch.empty((channels,), dtype=stats_dtype, device="meta"),
        torch.empty((channels,), dtype=stats_dtype, device="meta"),
    )


def convolution_shape(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
                      transposed: Any, output_padding: Any, groups: Any, *rest: Any) -> Any:
    """Direct convolutions of contiguous tensors: the meta kernel's Python shape arithmetic, without
    its layout search.  Anything else (transposed, channels-last, string padding) runs the kernel."""
    if transposed or not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        return None
    if not (x.is_contiguous() and weight.is_contiguous()) or x.dim() != weight.dim() or x.dim() < 3:
        return None
    dims = x.dim() - 2
    if not all(isinstance(v, (list, tuple)) and len(v) == dims for v in (stride, padding, dilation)):
        return None
    spatial = []
    for size, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation, strict=True):
        out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        if out <= 0:
            return None  # let the kernel raise its own error
        spatial.append(out)
    if x.shape[1] != weight.shape[1] * groups:
        return None
    return torch.empty((x.shape[0], weight.shape[0], *spatial), dtype=x.dtype, device="meta")


SHAPE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "convolution": convolution_shape,
    "_native_batch_norm_legit_no_training": batch_norm_stats_shapes,
    "native_batch_norm": batch_norm_stats_shapes,
}
