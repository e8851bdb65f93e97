"""Attention as the simulated device runs it (capture/paths.py).

The CUDA choice is checked case by case against the checks of PyTorch's
``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp`` (each case names the one that decides
it); generation on CUDA's kernels is checked against the real ``generate`` (the same MACs) and
against the bytes a fused kernel moves: q, k and v read once, the output and its log-sum-exp
written.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import nncost
from nncost.capture.generation import session
from nncost.capture.paths import cuda_sdpa_backend
from nncost.request import Generation

transformers = pytest.importorskip("transformers")


def meta(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def arguments(dtype: torch.dtype = torch.bfloat16, heads: int = 8, kv_heads: int = 8, length: int = 16,
              source: int = 16, head_dim: int = 64, mask: torch.dtype | None = None, causal: bool = False,
              gqa: bool = False) -> dict[str, Any]:
    given: dict[str, Any] = {"query": meta(2, heads, length, head_dim, dtype=dtype),
                             "key": meta(2, kv_heads, source, head_dim, dtype=dtype),
                             "value": meta(2, kv_heads, source, head_dim, dtype=dtype),
                             "attn_mask": None if mask is None else meta(2, 1, length, source, dtype=mask),
                             "is_causal": causal}
    if gqa:
        given["enable_gqa"] = True
    return given


@pytest.mark.parametrize("case, expected", [
    (dict(), "flash"),  # bf16, no mask, head dim 64: every flash check passes
    (dict(dtype=torch.float16, head_dim=256), "flash"),  # check_head_dim_size_flash: up to 256
    (dict(head_dim=100), "flash"),  # any head dim up to 256: attention.cpp pads it to a multiple of 8
    (dict(head_dim=288), "efficient"),  # over flash's 256; the efficient kernel takes multiples of 8
    (dict(dtype=torch.float32), "efficient"),  # check_dtypes_low_precision: flash is fp16/bf16 only
    (dict(mask=torch.bool), "efficient"),  # check_for_attn_mask: flash takes no mask
    (dict(mask=torch.bfloat16, dtype=torch.bfloat16), "efficient"),
    (dict(causal=True, length=1, source=16), "efficient"),  # check_flash_causal_non_square_seqlens
    (dict(causal=True), "flash"),  # causal, square
    (dict(kv_heads=2, gqa=True), "flash"),  # flash supports grouped-query heads
    (dict(dtype=torch.float32, kv_heads=2, gqa=True), "math"),  # the efficient kernel does not
    (dict(dtype=torch.float32, head_dim=6), "math"),  # check_head_dim_size_mem_efficient: fp32 needs 4 | dim
    (dict(head_dim=100, mask=torch.bool), "math"),  # ... and fp16/bf16 need 8 | dim
    (dict(dtype=torch.float64), "math"),  # neither fused kernel takes fp64
])
def test_the_cuda_kernel_is_the_one_sdp_utils_picks(case: dict[str, Any], expected: str) -> None:
    assert cuda_sdpa_backend(arguments(**case)) == expected


def test_strided_and_real_inputs_keep_the_math_path() -> None:
    given = arguments()
    given["query"] = meta(2, 8, 16, 128)[..., ::2]  # check_last_dim_stride_equals_1_dense
    assert cuda_sdpa_backend(given) == "math"
    on_cpu = {k: torch.empty_like(v, device="cpu") if isinstance(v, torch.Tensor) else v
              for k, v in arguments().items()}
    assert cuda_sdpa_backend(on_cpu) == "math"  # real tensors run their own kernels


def tiny_llama(dtype: torch.dtype, attention: str) -> Any:
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    config._attn_implementation = attention
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).to(dtype).eval()


def real_generate_macs(model: Any, batch: int, prompt: int, new: int) -> int:
    ids = torch.randint(3, 100, (batch, prompt))
    with FlopCounterMode(display=False) as counter:
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    return counter.get_total_flops() // 2


def generation(model: Any, batch: int, prompt: int, new: int, **request: Any) -> Any:
    result = nncost.run(nncost.Request(model, nncost.Inputs(batch_size=batch), generation=Generation(prompt, new),
                                       **request))
    assert result.generation is not None
    return result.generation


@pytest.mark.parametrize("dtype, kernel", [(torch.bfloat16, "_scaled_dot_product_flash_attention"),
                                           (torch.float32, None)])
def test_generation_on_cuda_kernels_counts_the_real_generate(dtype: torch.dtype, kernel: str | None) -> None:
    """The fused kernels do the same products as the real (eager) generate; fp32 with grouped heads
    is math on CUDA too, so the call stays the composite one."""
    batch, prompt, new = 2, 6, 5
    expected = real_generate_macs(tiny_llama(torch.float32, "eager"), batch, prompt, new)
    g = generation(tiny_llama(dtype, "sdpa"), batch, prompt, new, hardware="h100-sxm")
    assert g.prefill.totals.macs + g.decode.totals.macs == expected
    ops = {op.op for layer in g.prefill.layers for op in layer.self_ops}
    fused = {op for op in ops if "_scaled_dot_product" in op}
    assert fused == ({kernel} if kernel else set()), ops


def test_a_fused_kernel_reads_q_k_v_once_and_writes_the_output_and_its_log_sum_exp() -> None:
    """... and its RNG seed and offset, an int64 pair and an int64, which flash always returns."""
    batch, prompt, new, heads, kv_heads, head_dim = 2, 12, 3, 4, 2, 16
    g = generation(tiny_llama(torch.bfloat16, "sdpa"), batch, prompt, new, hardware="h100-sxm")
    flash = [op for layer in g.prefill.layers for op in layer.self_ops if "flash_attention" in op.op]
    assert len(flash) == 2  # one a layer
    q = batch * heads * prompt * head_dim * 2
    kv = batch * kv_heads * prompt * head_dim * 2
    for op in flash:
        assert op.read_bytes == q + 2 * kv
        assert op.write_bytes == q + batch * heads * prompt * 4 + 2 * 8 + 8


def test_the_cuda_kernels_read_less_than_the_math_path() -> None:
    """The math path writes the scores and the probabilities out and reads them back."""
    model = tiny_llama(torch.bfloat16, "sdpa")
    traces = {}
    for kernels in ("meta", "cuda"):
        with session(model, 1, max_cache_length=70, kernels=kernels) as run:
            traces[kernels] = run.decode_at(64)[0]
    fused, math_path = traces["cuda"], traces["meta"]
    assert sum(op.macs for op in fused.ops) == sum(op.macs for op in math_path.ops)
    assert sum(op.read_bytes for op in fused.ops) < sum(op.read_bytes for op in math_path.ops)
    assert any("flash_attention" in op.op for op in fused.ops)
    assert not any("flash_attention" in op.op for op in math_path.ops)


@pytest.mark.slow
def test_int4_decodes_at_least_2_5_times_faster_than_bf16_on_an_h100() -> None:
    """The serving issue's figure: Llama-2-7B's shape, 1,024 prompt tokens, 128 new, on an H100."""
    results = {weights: nncost.run(nncost.Request("hf:llama", precision="bf16", hardware="h100-sxm",
                                                  generation=Generation(1024, 128), weights=weights)).generation
               for weights in (None, "int4")}
    h100 = nncost.hardware.catalogue_device("h100-sxm")
    dense, int4 = results[None], results["int4"]
    assert dense is not None and int4 is not None
    for g in (dense, int4):
        assert g.tokens_per_second < h100.bandwidth / g.weights_bytes
    assert int4.tokens_per_second >= 2.5 * dense.tokens_per_second
