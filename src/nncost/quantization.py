"""Quantized weights and caches: the formats a run accepts, and the bytes each stores.

A weight format says how many bytes a weight of a given shape takes, constants included (the
scales and zero points that turn codes back into numbers), and what the matrix products that
read it compute in.  Each layout follows one implementation, cited in docs/llm.md ("Quantized
weights"):

- ``int4``: torchao's ``Int4WeightOnlyConfig`` (the tinygemm layout, ``Int4TilePackedTo4dTensor``
  on CUDA and ``Int4OpaqueTensor`` on the CPU): two codes a byte, and per group of
  ``group_size`` (default 128) along the input dimension a bfloat16 scale and a bfloat16 zero
  point (``scale_and_zero``, shape ``(K/g, N, 2)``);
- ``int8``: torchao's ``Int8WeightOnlyConfig`` (``Int8Tensor``): one code a byte, and per
  group (default: the whole row, one per output channel) a float32 scale and an int8 zero point;
- ``int8-dynamic``: torchao's ``Int8DynamicActivationInt8WeightConfig``: the int8 layout, one
  group per row; the activations are quantized too and the product runs in int8;
- ``fp8``: torchao's ``Float8WeightOnlyConfig`` (``Float8Tensor``): one e4m3 code a byte and one
  float32 scale per output channel; the product runs in fp8 where the device has an fp8 peak;
- ``nf4``: bitsandbytes' ``quantize_4bit(quant_type="nf4", blocksize=64,
  compress_statistics=True)`` (QLoRA's double quantization): two codes a byte over the flattened
  tensor, per block of 64 an 8-bit absmax, per 256 of those a float32 absmax, a float32 offset,
  and the two code tables (16 and 256 float32).

Weight-only formats compute in the activations' dtype (the weight is dequantized on the way to
the matrix units).  A KV cache format says how many bytes one cache tensor takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nncost.errors import BadRequest

NF4 = "nf4"  # bitsandbytes' 4-bit NormalFloat, QLoRA's base
WEIGHT_FORMATS = ("int8", "int8-dynamic", "int4", "fp8", NF4)
KV_CACHE_DTYPES = ("fp8", "int8")
NF4_TABLES_BYTES = 16 * 4 + 256 * 4  # the nf4 code and the second level's 8-bit code, float32
NF4_BLOCKS = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # the blocks bitsandbytes' quantize_4bit takes


@dataclass(frozen=True)
class WeightFormat:
    """One weight format: ``name`` (one of :data:`WEIGHT_FORMATS`), its ``group_size`` (elements
    per scale along the input dimension; None: one group per row, or nf4's block of 64), and the
    dtype its matrix products compute in (None: the activations')."""

    name: str
    group_size: int | None = None

    @property
    def compute_dtype(self) -> str | None:
        return {"int8-dynamic": "int8", "fp8": "float8_e4m3fn"}.get(self.name)

    @property
    def label(self) -> str:
        """``int4 (groups of 128)``: the format as the summary names it."""
        if self.name == "nf4":
            return f"nf4 (blocks of {self.group_size or 64}, double-quantized)"
        if self.group_size is None:
            return f"{self.name} (per output channel)"
        return f"{self.name} (groups of {self.group_size})"

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """The bytes a weight of ``shape`` (``(out, in, ...)``: groups along the last dimension)
        takes in this format, scales and zero points included."""
        numel = math.prod(shape)
        if numel == 0:
            return 0
        columns = shape[-1] if shape else 1
        rows = numel // columns
        if self.name == "nf4":
            blocks = math.ceil(numel / (self.group_size or 64))
            return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / 256) + 4 + NF4_TABLES_BYTES
        groups = rows * math.ceil(columns / (self.group_size or columns))
        if self.name == "int4":
            return rows * math.ceil(columns / 2) + groups * 2 * 2
        if self.name == "fp8":
            return numel + rows * 4
        return numel + groups * (4 + 1)  # int8, int8-dynamic: float32 scale and int8 zero point


def weight_format(name: str | None, group_size: int | None = None) -> WeightFormat | None:
    """The :class:`WeightFormat` of a name in :data:`WEIGHT_FORMATS` (None: none asked for)."""
    if name is None:
        if group_size is not None:
            raise BadRequest("--group-size is the group of a quantized weight format: give --weights too")
        return None
    if name not in WEIGHT_FORMATS:
        raise BadRequest(f"unknown weight format {name!r}; choose one of {', '.join(WEIGHT_FORMATS)}")
    if group_size is not None:
        if group_size < 1:
            raise BadRequest(f"group size must be at least 1, got {group_size}")
        if name in ("fp8", "int8-dynamic"):
            raise BadRequest(f"{name} weights have one scale per output channel; drop --group-size")
    if name == "int4" and group_size is None:
        group_size = 128
    return WeightFormat(name, group_size)


def cache_nbytes(kv_cache_dtype: str | None, shape: tuple[int, ...], element_size: int) -> int:
    """The bytes one KV cache tensor of ``shape`` (``(..., head_dim)``) takes stored as
    ``kv_cache_dtype``: fp8, one byte an element (vLLM's per-tensor scales, a few bytes a layer,
    are left out); int8, one byte an element and, per token and head, a 16-bit scale and zero
    point (LMDeploy's online per-head, per-token asymmetric quantization)."""
    numel = math.prod(shape)
    if kv_cache_dtype is None:
        return numel * element_size
    if kv_cache_dtype == "fp8":
        return numel
    head_dim = shape[-1] if shape and shape[-1] else 1
    return numel + 4 * (numel // head_dim)


def check_kv_cache_dtype(name: str | None) -> None:
    if name is not None and name not in KV_CACHE_DTYPES:
        raise BadRequest(f"unknown KV cache dtype {name!r}; choose one of {', '.join(KV_CACHE_DTYPES)}")
