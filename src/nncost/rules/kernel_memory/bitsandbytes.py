"""What bitsandbytes' ``gemm_4bit`` holds inside one call when it dequantizes and multiplies.

Its CPU kernel (``backends/default/ops.py``, ``_gemm_4bit_default_impl``) and the CUDA fallback
(``backends/cuda/ops.py``, ``_dequant_linear_fallback``, taken past 1,536 rows and below that
where the GPU's table prefers it) first turn the double-quantized block absmax back into float32
(one tensor a block), then dequantize the whole weight into the activations' dtype, then call
``F.linear``: at the product, the float32 absmax, the dequantized weight and the output are live.
The CPU keeps one float32 absmax (the dequantized one is freed once the offset is added); the
CUDA fallback keeps both (it writes the first into a buffer it holds until it returns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nncost.rules.kernel_memory import KernelRule, produced

NOTE = ("the weight dequantized into the activations' dtype, and the block absmax in float32, beside the output "
        "(bitsandbytes' dequantize-then-multiply path)")


def gemm_4bit(absmax_copies: int) -> KernelRule:
    """The rule for a kernel that holds ``absmax_copies`` float32 copies of the block absmax."""

    def held(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
        a, shape_b, absmax_8bit = args[0], args[2], args[7]
        n, k = int(shape_b[0]), int(shape_b[1])
        absmax = absmax_copies * 4 * absmax_8bit.numel() if isinstance(absmax_8bit, torch.Tensor) else 0
        return absmax + n * k * a.element_size() + produced(outputs)

    return held
