"""What CUDA kernels hold inside one call, beyond their outputs: bitsandbytes' ``gemm_4bit``
only (its dequantize-then-multiply fallback); cuBLAS and cuDNN workspaces are not modelled."""

from __future__ import annotations

from nncost.hardware.catalogue import Allocator
from nncost.rules.kernel_memory import KernelMemory
from nncost.rules.kernel_memory.bitsandbytes import NOTE, gemm_4bit

CUDA = KernelMemory(Allocator.CUDA)
CUDA.rule("bitsandbytes::gemm_4bit", note=NOTE + "; two float32 absmax copies")(gemm_4bit(2))
