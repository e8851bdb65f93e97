"""bitsandbytes' own operators (``bitsandbytes::``), met in QLoRA's 4-bit linear layers.

``Linear4bit`` multiplies by its NF4 weight with ``gemm_4bit`` (forward), and its backward turns
the weight back into numbers with ``dequantize_blockwise`` (the 8-bit block absmax, double
quantization) and ``dequantize_4bit`` before an ordinary matrix product.  Dequantizing is one
code lookup and one multiply by the block's absmax per element: one FLOP each.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, numel


@ATEN.rule("bitsandbytes::gemm_4bit", unit="matmul",
           formula="(…,k) activations @ an NF4 weight of shapeB (n,k): MACs = (…)·k·n; FLOPs = 2·MACs + n·k "
                   "(dequantizing the weight) + (…)·n with a bias")
def gemm_4bit(a: Shape, b: Shape, shape_b: Any, absmax: Shape, blocksize: int, quant_type: str,
              bias: Shape | None = None, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    n, k = int(shape_b[0]), int(shape_b[1])
    rows = numel(a) // k if k else 0
    macs = rows * k * n
    return Cost(macs, 2 * macs + n * k + (rows * n if bias is not None else 0))


@ATEN.rule("bitsandbytes::gemv_4bit", unit="matmul",
           formula="(…,k) activations @ a 4-bit weight of shapeB (n,k): MACs = (…)·k·n; FLOPs = 2·MACs")
def gemv_4bit(a: Shape, b: Shape, shape_b: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    n, k = int(shape_b[0]), int(shape_b[1])
    macs = (numel(a) // k if k else 0) * k * n
    return Cost(macs, 2 * macs)


@ATEN.rule("bitsandbytes::dequantize_4bit", "bitsandbytes::dequantize_blockwise", unit="elementwise",
           formula="a code lookup and a multiply by the block's absmax per output element: FLOPs = N")
def dequantize(a: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(out[0]) if out else 0)


@ATEN.rule("bitsandbytes::quantize_4bit", "bitsandbytes::quantize_blockwise", unit="elementwise",
           formula="each block's absmax, and a scaled search of the code table per element: FLOPs = 2·N")
def quantize(a: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 2 * numel(a))
