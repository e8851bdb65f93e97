"""Quantized weights and caches: the what-if against closed forms, real torchao models as stored.

The what-if (``weights=``, ``kv_cache_dtype=``) keeps the traced operators and changes the bytes
of the weights of matrix products and of the KV cache; its layouts are checked against the
tensors torchao and bitsandbytes really store.  A model quantized with torchao is profiled as it
runs on the CPU: the same MACs as the unquantized model, its parameters at their stored width.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.cli import run as cli_run
from nncost.errors import BadRequest
from nncost.hardware import catalogue_device
from nncost.quantization import WeightFormat, cache_nbytes, weight_format
from nncost.request import Generation

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text())


def stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).to(torch.bfloat16)


WEIGHTS = ((128, 64), (32, 128))  # the stack's two weights, (out, in)
BIASES = (128 + 32) * 2  # bf16


# -- the layouts ------------------------------------------------------------------------------
@given(st.integers(1, 64), st.sampled_from([32, 64, 128]), st.integers(1, 8))
def test_int4_and_int8_are_codes_plus_a_scale_and_zero_per_group(rows: int, group: int, groups: int) -> None:
    shape = (rows, group * groups)
    n = rows * group * groups
    assert WeightFormat("int4", group).nbytes(shape) == n // 2 + rows * groups * (2 + 2)  # bf16 scale and zero
    assert WeightFormat("int8", group).nbytes(shape) == n + rows * groups * (4 + 1)  # fp32 scale, int8 zero
    assert WeightFormat("int8").nbytes(shape) == n + rows * 5  # default: one group per output channel
    assert WeightFormat("fp8").nbytes(shape) == n + rows * 4  # e4m3 codes, an fp32 scale per channel


def test_nf4_is_qlora_double_quantization() -> None:
    """4 bits, and 8/64 + 32/(64·256) = 0.127 bits of constants per parameter (QLoRA, section 3)."""
    n = 4096 * 4096
    stored = WeightFormat("nf4").nbytes((4096, 4096))
    constants = stored * 8 / n - 4
    assert constants == pytest.approx(8 / 64 + 32 / (64 * 256), abs=1e-3)


def test_nf4_is_what_bitsandbytes_stores() -> None:
    functional = pytest.importorskip("bitsandbytes.functional")
    weight = torch.randn(256, 192, dtype=torch.bfloat16)
    codes, state = functional.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    stored = [codes, state.absmax, state.code, state.offset, state.state2.absmax, state.state2.code]
    assert WeightFormat("nf4").nbytes(tuple(weight.shape)) == sum(t.numel() * t.element_size() for t in stored)


def test_formats_refuse_what_they_do_not_have() -> None:
    assert weight_format("int4") == WeightFormat("int4", 128)  # torchao's default group
    with pytest.raises(BadRequest, match="one scale per output channel"):
        weight_format("fp8", 64)
    with pytest.raises(BadRequest, match="give --weights"):
        weight_format(None, 64)
    with pytest.raises(BadRequest, match="unknown weight format"):
        nncost.Request(stack(), weights="int3")
    with pytest.raises(BadRequest, match="generation"):
        nncost.Request(stack(), kv_cache_dtype="int8")


def test_kv_cache_layouts() -> None:
    shape = (2, 4, 10, 16)  # batch, KV heads, tokens, head dim
    assert cache_nbytes(None, shape, 2) == 2 * 4 * 10 * 16 * 2
    assert cache_nbytes("fp8", shape, 2) == 2 * 4 * 10 * 16
    assert cache_nbytes("int8", shape, 2) == 2 * 4 * 10 * (16 + 4)  # a 16-bit scale and zero per token and head


# -- the what-if on a traced model --------------------------------------------------------------
@pytest.mark.parametrize("name, group", [("int4", 32), ("int8", None), ("int8-dynamic", None), ("fp8", None),
                                         ("nf4", None)])
def test_the_what_if_changes_weight_bytes_not_work(name: str, group: int | None) -> None:
    dense = nncost.profile(stack(), (64,), batch_size=2)
    fmt = WeightFormat(name, group)
    report = nncost.profile(stack(), (64,), batch_size=2, weights=name, group_size=group)
    assert report.execution == "meta"
    assert report.totals.macs == dense.totals.macs and report.totals.flops == dense.totals.flops
    quantized = sum(fmt.nbytes(shape) for shape in WEIGHTS)
    assert report.totals.param_bytes_by_dtype == {"bfloat16": BIASES, name: quantized}
    saved = sum(math.prod(shape) * 2 for shape in WEIGHTS) - quantized
    assert dense.totals.read_bytes - report.totals.read_bytes == saved  # each weight read once, in its format
    assert report.weight_format == fmt.label and "Weight format" in report.table()


def test_a_tied_embedding_keeps_its_dense_copy() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 64)
            self.head = nn.Linear(64, 100, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(ids))

    report = nncost.run(nncost.Request(Tied(), nncost.Inputs(args=torch.zeros(1, 8, dtype=torch.long)),
                                       weights="int8")).report
    assert report is not None
    assert report.totals.param_bytes_by_dtype == {"float32": 100 * 64 * 4, "int8": 100 * 64 + 100 * 5}


def test_int8_dynamic_and_fp8_compute_on_their_peaks() -> None:
    """w8a8 runs the products on the int8 peak; fp8 on the fp8 peak where the device lists one."""
    def matrix_seconds(weights: str | None, hardware: str) -> float:
        model = nn.Sequential(nn.Linear(4096, 4096, bias=False)).to(torch.bfloat16)
        report = nncost.run(nncost.Request(model, nncost.Inputs((4096,), batch_size=4096), weights=weights,
                                           hardware=hardware, precision="bf16")).report
        assert report is not None and report.totals.estimated_seconds is not None
        return report.totals.estimated_seconds

    flops = 2 * 4096**3
    h100 = catalogue_device("h100-sxm")
    assert matrix_seconds("int4", "h100-sxm") == pytest.approx(flops / h100.peak("bf16"), rel=1e-3)
    assert matrix_seconds("int8-dynamic", "h100-sxm") == pytest.approx(flops / h100.peak("int8"), rel=1e-3)
    assert matrix_seconds("fp8", "h100-sxm") == pytest.approx(flops / h100.peak("fp8"), rel=1e-3)
    a100 = catalogue_device("a100-80gb")  # no fp8 on its datasheet: the weight is widened to bf16
    assert matrix_seconds("fp8", "a100-80gb") == pytest.approx(flops / a100.peak("bf16"), rel=1e-3)


# -- generation -------------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")


def llama(**sizes: int) -> Any:
    """Llama's structure (no GQA, as the 7B default), at a size the tests can trace."""
    config = transformers.LlamaConfig(**{"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 2,
                                         "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1000,
                                         **sizes})
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config).eval()


def generate(model: Any, prompt: int, new: int, **request: Any) -> Any:
    result = nncost.run(nncost.Request(model, generation=Generation(prompt, new), hardware="h100-sxm",
                                       precision="bf16", **request))
    assert result.generation is not None
    return result.generation


def matrix_weights(model: Any) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]


def test_int4_generation_is_faster_and_under_its_own_bound() -> None:
    """Decode reads every weight each step: tokens/s stays under bandwidth / weight bytes, and int4
    weights (a quarter of the bytes, and the scales) make it faster; the prefill stays compute
    bound, over 2·N·P / peak (matrix work at the bf16 peak, the weights widened)."""
    model = llama()
    dense, int4 = generate(model, 64, 16), generate(model, 64, 16, weights="int4")
    h100 = catalogue_device("h100-sxm")
    shapes = matrix_weights(model)
    others = dense.weights_bytes - sum(math.prod(s) * 2 for s in shapes)  # embedding, norms
    assert int4.weights_bytes == others + sum(WeightFormat("int4", 128).nbytes(s) for s in shapes)
    assert int4.prefill.totals.macs == dense.prefill.totals.macs
    assert int4.decode.totals.macs == dense.decode.totals.macs
    for g in (dense, int4):
        assert g.tokens_per_second < h100.bandwidth / g.weights_bytes
        params = sum(math.prod(s) for s in shapes)
        assert g.time_to_first_token_seconds > 2 * 64 * params / h100.peak("bf16")
    assert int4.tokens_per_second >= 2.5 * dense.tokens_per_second  # a short context: the weights dominate a step
    assert int4.weight_format == "int4 (groups of 128)" and int4.peak_bytes < dense.peak_bytes


def test_kv_cache_dtype_sizes_the_cache_and_its_reads() -> None:
    model = llama(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    dense = generate(model, 32, 8)
    head_dim, per_token = 64, 2 * 2 * 2 * 64 * 2  # K and V, 2 layers, 2 KV heads, head dim, bf16
    assert dense.kv_cache_bytes_per_token == per_token
    fp8, int8 = generate(model, 32, 8, kv_cache_dtype="fp8"), generate(model, 32, 8, kv_cache_dtype="int8")
    assert fp8.kv_cache_bytes_per_token == per_token // 2
    assert int8.kv_cache_bytes_per_token == per_token // 2 // head_dim * (head_dim + 4)
    for g in (fp8, int8):
        assert g.kv_cache_bytes == (32 + 8 - 1) * g.kv_cache_bytes_per_token
        assert g.peak_bytes < dense.peak_bytes and g.decode.totals.read_bytes < dense.decode.totals.read_bytes
        assert g.decode.totals.macs == dense.decode.totals.macs and g.kv_cache_dtype in ("fp8", "int8")
    assert fp8.tokens_per_second > dense.tokens_per_second


def test_the_cli_says_the_format_and_follows_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    chunks: list[str] = []
    argv = ["hf:gpt2", "--prompt", "8", "--new-tokens", "3", "--weights", "nf4", "--kv-cache-dtype", "int8",
            "--hardware", "h100-sxm"]
    assert cli_run([*argv, "--format", "json"], out=chunks.append) == 0
    data = json.loads("".join(chunks))
    jsonschema.validate(data, SCHEMA)
    g = data["generation"]
    assert g["weight_format"].startswith("nf4") and g["kv_cache_dtype"] == "int8"
    assert data["weight_format"] == g["weight_format"]
    text: list[str] = []
    assert cli_run(argv, out=text.append) == 0
    assert "nf4 (blocks of 64, double-quantized)" in "".join(text) and "stored as int8" in "".join(text)
    assert cli_run(["resnet18", "--kv-cache-dtype", "int8"], out=text.append) == 2


# -- real torchao models ---------------------------------------------------------------------------
def torchao_config(name: str, group: int) -> Any:
    quantization = pytest.importorskip("torchao.quantization")
    if name == "int4":
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=group)  # the CPU's int4 (tinygemm layout)
    return {"int8": quantization.Int8WeightOnlyConfig(), "int8-dynamic":
            quantization.Int8DynamicActivationInt8WeightConfig(), "fp8": quantization.Float8WeightOnlyConfig()}[name]


@pytest.mark.parametrize("name, op", [("int8", "mm"), ("int8-dynamic", "_int_mm"), ("fp8", "mm"),
                                      ("int4", "_weight_int4pack_mm_for_cpu")])
def test_a_torchao_model_is_profiled_as_stored(name: str, op: str) -> None:
    pytest.importorskip("torchao")
    from torchao.quantization import quantize_

    group = 32
    model = stack()
    quantize_(model, torchao_config(name, group))
    dense = nncost.profile(stack(), (64,), batch_size=2, dtype=torch.bfloat16)
    report = nncost.profile(model, (64,), batch_size=2, dtype=torch.bfloat16, hardware="h100-sxm")
    assert report.execution == "real" and "quantized weights" in (report.fallback_reason or "")
    assert report.totals.macs == dense.totals.macs and not report.uncounted
    fmt = WeightFormat(name, group if name == "int4" else None)
    assert report.totals.param_bytes == sum(fmt.nbytes(shape) for shape in WEIGHTS) + BIASES
    products = [o for layer in report.layers for o in layer.self_ops if o.unit == "matmul"]
    assert {o.op for o in products} == {op}
    assert report.weight_format is not None and "(as stored)" in report.weight_format
    with pytest.raises(BadRequest, match="quantized already"):
        nncost.run(nncost.Request(model, nncost.Inputs((64,), batch_size=2), weights="int4"))


def test_a_torchao_llama_has_the_macs_of_the_unquantized_one() -> None:
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).eval()
    shapes = matrix_weights(model)
    ids = torch.zeros(1, 16, dtype=torch.long)
    dense = nncost.profile(model, inputs=ids)
    quantize_(model, Int8WeightOnlyConfig())
    report = nncost.profile(model, inputs=ids)
    assert report.execution == "real" and report.totals.macs == dense.totals.macs
    others = dense.totals.param_bytes - sum(math.prod(s) * 2 for s in shapes)
    assert report.totals.param_bytes == others + sum(WeightFormat("int8").nbytes(s) for s in shapes)
    with pytest.raises(BadRequest, match="do not run on meta"):
        nncost.run(nncost.Request(model, generation=Generation(8, 2)))
