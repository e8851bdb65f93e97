"""Output functions for operators whose meta kernel refuses what the real kernels accept.

PyTorch's meta kernel of ``torch._grouped_mm`` implements the CUDA kernel's dtype checks: it
takes bfloat16 only (float16 only where cuBLASLt has grouped GEMMs), while the CPU kernel takes
float32, bfloat16 and float16.  A transformers mixture-of-experts model runs its experts through
it, so in float32 on meta it would stop and fall back to a real run.  On tensors without data
(meta or fake) the tracer answers these operators with the function here instead of calling the
meta kernel: an output of the shape, dtype and strides the real kernel gives, any floating dtype
accepted, the shape checks kept (a wrong input still fails).  The cost is the rule's, which
needs shapes only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode

# the grouped GEMM kernels align each output row to 16 bytes (the CPU kernel as well as the CUDA one)
ROW_ALIGNMENT_BYTES = 16


def without_data(value: Any) -> bool:
    """Whether ``value`` is a tensor that carries no data: a meta tensor, or a fake one."""
    return isinstance(value, torch.Tensor) and (value.device.type == "meta" or isinstance(value, FakeTensor))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def grouped_mm_output(mat_a: torch.Tensor, mat_b: torch.Tensor, offs: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``aten::_grouped_mm(self, mat2, offs, bias, out_dtype)``: one product per group.

    2D ``(M, K)`` @ 3D ``(G, K, N)``: ``(M, N)``; 3D ``(G, M, K)`` @ 2D ``(K, N)``: ``(M, N)``;
    2D @ 2D, groups along ``K``: ``(G, M, N)``; 3D @ 3D: ``(G, M, N)``.  Rows are padded to 16 bytes.
    """
    _check(mat_a.dim() in (2, 3) and mat_b.dim() in (2, 3), "grouped_mm takes 2D or 3D operands")
    _check(mat_a.dtype == mat_b.dtype, f"grouped_mm operands differ in dtype: {mat_a.dtype} and {mat_b.dtype}")
    _check(mat_a.is_floating_point(), f"grouped_mm takes floating-point matrices, got {mat_a.dtype}")
    _check(mat_a.shape[-1] == mat_b.shape[-2], "contraction dimension of mat_a and mat_b must match")
    _check(bias is None, "grouped_mm does not take a bias")
    dtype = out_dtype or mat_a.dtype
    _check(dtype == mat_a.dtype, "Grouped gemm output dtype must match `mat_a` dtype")
    a_2d, b_2d = mat_a.dim() == 2, mat_b.dim() == 2
    groups = offs.shape[0] if offs is not None else 0
    if a_2d or b_2d:
        _check(offs is not None and offs.dim() == 1, "2D operands of grouped_mm need a 1D offs tensor")
    else:
        _check(offs is None, "Offsets tensor provided, but is not needed for 3D/3D multiplicand layouts.")
    if a_2d and b_2d:
        size = [groups, mat_a.shape[0], mat_b.shape[1]]
    elif a_2d:
        _check(groups == mat_b.shape[0], "matrix batch sizes have to match")
        size = [mat_a.shape[0], mat_b.shape[-1]]
    elif b_2d:
        _check(groups == mat_a.shape[0], "matrix batch sizes have to match")
        size = [mat_a.shape[1], mat_b.shape[1]]
    else:
        _check(mat_a.shape[0] == mat_b.shape[0], "batched dimension has to match")
        size = [mat_a.shape[0], mat_a.shape[1], mat_b.shape[-1]]
    alignment = max(1, ROW_ALIGNMENT_BYTES // dtype.itemsize)
    row = -(-size[-1] // alignment) * alignment
    stride = [row, 1] if len(size) == 2 else [size[1] * row, row, 1]
    return torch.empty_strided(size, stride, dtype=dtype, device=mat_a.device)


ANSWERED: dict[str, Callable[..., torch.Tensor]] = {
    "_grouped_mm": grouped_mm_output,
}


class Answering(TorchDispatchMode):
    """The same answers for a run on meta that is not traced (a warm-up that fills a generation
    cache); under the tracer they come from the tracer itself, which records the call."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        answer = ANSWERED.get(func._opname) if func.namespace == "aten" else None
        if answer is not None and args and without_data(args[0]):
            return answer(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
