"""QLoRA: peft's adapters over bitsandbytes' NF4 ``Linear4bit``, against a real step on the CPU.

The reference is what a user's script does: a model saved with random weights, loaded by
transformers with ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)``, wrapped by peft, and one
steady-state AdamW step measured with the CPU allocator's own events (bench/memory.py's method,
``nncost.simulation.measure.measure_cpu_peak``).  nncost builds the same model on meta tensors from
the config alone.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nncost
from cli_runs import cli_json
from nncost.errors import BadRequest
from nncost.quantization import WeightFormat
from nncost.request import Inputs, Lora, Request, Step
from nncost.rules import ATEN
from nncost.rules.kernel_memory.cpu import CPU
from nncost.simulation.measure import measure_cpu_peak

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
bnb = pytest.importorskip("bitsandbytes")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 128,
          "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 1000, "max_position_embeddings": 512, "tie_word_embeddings": False}
BATCH, SEQ, RANK = 4, 128, 8


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


def users_qlora_model(tmp_path: Path, dtype: torch.dtype | None = None) -> Any:
    """A user's QLoRA model: random weights saved, loaded 4-bit by transformers, adapters by peft."""
    config = transformers.LlamaConfig(**{k: v for k, v in CONFIG.items() if k not in ("model_type", "architectures")})
    saved = tmp_path / "weights"
    transformers.LlamaForCausalLM(config).save_pretrained(saved)
    quantization = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_use_double_quant=True,
                                                   bnb_4bit_compute_dtype=torch.bfloat16)
    model = transformers.AutoModelForCausalLM.from_pretrained(saved, quantization_config=quantization,
                                                              device_map="cpu", dtype=dtype or torch.float32)
    return peft.get_peft_model(model, peft.LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules="all-linear"))


def quantized_shapes() -> list[tuple[int, int]]:
    """The (out, in) shapes of the linear layers transformers quantizes: all but lm_head."""
    d, f = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    kv = d // CONFIG["num_attention_heads"] * CONFIG["num_key_value_heads"]
    return CONFIG["num_hidden_layers"] * [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]


def test_the_qlora_step_is_the_measured_step_of_a_users_model(config_dir: Path, tmp_path: Path) -> None:
    """The simulated peak within 2% of the measured one; the counts are peft's."""
    model = users_qlora_model(tmp_path)
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    ids = torch.zeros((BATCH, SEQ), dtype=torch.long)
    measured = measure_cpu_peak(model, (), {"input_ids": ids}, mode="train", optimizer="adamw")
    data = cli_json(str(config_dir), "--seq", str(SEQ), "--batch", str(BATCH), "--train", "--optimizer", "adamw",
                    "--allocator", "cpu", "--lora", str(RANK), "--weights", "nf4")
    trainable, total = model.get_nb_trainable_parameters()
    assert data["totals"]["trainable_params"] == trainable
    assert data["totals"]["params"] == total
    assert abs(data["memory"]["peak_bytes"] - measured) <= 0.02 * measured


def test_the_users_own_qlora_model_is_profiled_as_it_is_stored(config_dir: Path, tmp_path: Path) -> None:
    """A model quantized by transformers and wrapped by peft runs on meta as it is: the same step
    as the one nncost builds from the config, its weights left as they were."""
    model = users_qlora_model(tmp_path)
    ids = torch.zeros((BATCH, SEQ), dtype=torch.long)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    own = nncost.run(Request(model, Inputs(kwargs={"input_ids": ids}), step=Step(optimizer="adamw", allocator="cpu")))
    built = nncost.run(Request(str(config_dir), Inputs(batch_size=BATCH, seq=SEQ), lora=Lora(RANK), weights="nf4",
                               step=Step(optimizer="adamw", allocator="cpu")))
    assert own.memory is not None and built.memory is not None
    assert own.memory.peak_bytes == built.memory.peak_bytes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    layer = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert layer.weight.quant_state is not None and layer.weight.device.type == "cpu"


def test_the_base_weighs_nf4_codes_and_double_quantized_constants(config_dir: Path, tmp_path: Path) -> None:
    """4 bits a weight, an 8-bit absmax a block of 64, a float32 absmax a 256 blocks, the offset
    and the two code tables: the closed form, and what bitsandbytes holds in the real model."""
    data = cli_json(str(config_dir), "--seq", "16", "--lora", str(RANK), "--weights", "nf4")
    by_dtype = data["totals"]["param_bytes_by_dtype"]
    closed = sum(WeightFormat("nf4").nbytes(shape) for shape in quantized_shapes())
    assert by_dtype["nf4"] == closed
    blocks = [math.ceil(n * k / 64) for n, k in quantized_shapes()]
    assert closed == sum(n * k // 2 + b + 4 * math.ceil(b / 256) + 4 + 4 * (16 + 256)
                         for (n, k), b in zip(quantized_shapes(), blocks, strict=True))
    model = users_qlora_model(tmp_path)
    held = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            tensors = [module.weight, state.absmax, state.code, state.offset, state.state2.absmax, state.state2.code]
            held += sum(t.numel() * t.element_size() for t in tensors)
    assert held == closed
    d, v = CONFIG["hidden_size"], CONFIG["vocab_size"]
    dense = (2 * v * d + (2 * CONFIG["num_hidden_layers"] + 1) * d) * 4  # embeddings, lm_head, norms: float32
    assert by_dtype["float32"] == dense + 4 * data["totals"]["trainable_params"]  # and the float32 adapters


ADAPTER_TENSORS = 2 * 7 * CONFIG["num_hidden_layers"]  # lora_A and lora_B of every linear layer


def test_the_api_takes_the_same_request(config_dir: Path) -> None:
    request = Request(str(config_dir), Inputs(batch_size=2, seq=32), lora=Lora(RANK), weights="nf4",
                      precision="bf16", step=Step(optimizer="adamw", allocator="cpu"))
    result = nncost.run(request)
    data = cli_json(str(config_dir), "--seq", "32", "--batch", "2", "--train", "--optimizer", "adamw", "--lora",
                    str(RANK), "--weights", "nf4", "--precision", "bf16", "--allocator", "cpu")
    assert result.memory is not None and result.memory.peak_bytes == data["memory"]["peak_bytes"]
    assert result.report is not None
    by_dtype = result.report.totals.param_bytes_by_dtype
    assert set(by_dtype) == {"nf4", "bfloat16"}  # the user's bf16: adapters and their state in bf16 too
    trainable = result.report.totals.trainable_params
    assert result.memory.breakdown["optimizer_state"] == 2 * 2 * trainable + 4 * ADAPTER_TENSORS  # and a float32 step


def test_a_config_dtype_leaves_the_adapters_in_float32(tmp_path: Path) -> None:
    """Loaded in the config's dtype, the adapters float32 as peft makes them (autocast_adapter_dtype),
    and their AdamW state with them."""
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "torch_dtype": "bfloat16"}))
    result = nncost.run(Request(str(tmp_path), Inputs(batch_size=2, seq=32), lora=Lora(RANK), weights="nf4",
                                step=Step(optimizer="adamw", allocator="cpu")))
    assert result.report is not None and result.memory is not None
    trainable = result.report.totals.trainable_params
    assert result.report.totals.param_bytes_by_dtype["float32"] == 4 * trainable
    assert result.report.dtype == "bfloat16"
    assert result.memory.breakdown["optimizer_state"] == 2 * 4 * trainable + 4 * ADAPTER_TENSORS


def test_only_nf4_with_adapters_trains_over_quantized_weights(config_dir: Path) -> None:
    with pytest.raises(BadRequest, match="--weights nf4 --lora R"):
        Request(str(config_dir), weights="int4", lora=Lora(RANK), step=Step())
    with pytest.raises(BadRequest, match="inference what-if"):
        Request(str(config_dir), weights="nf4", step=Step())
    with pytest.raises(BadRequest, match="blocks of"):
        Request(str(config_dir), weights="nf4", group_size=48, lora=Lora(RANK), step=Step())


def test_a_larger_block_has_fewer_constants(config_dir: Path) -> None:
    data = cli_json(str(config_dir), "--seq", "16", "--lora", str(RANK), "--weights", "nf4", "--group-size", "128")
    assert data["totals"]["param_bytes_by_dtype"]["nf4"] == sum(WeightFormat("nf4", 128).nbytes(s)
                                                                 for s in quantized_shapes())


# -- the rules of bitsandbytes' operators ------------------------------------------------------------------------
@given(st.integers(1, 8), st.integers(1, 64), st.sampled_from([64, 128, 256]), st.integers(1, 96), st.booleans())
def test_the_4bit_product_is_a_matrix_product_and_a_dequantization(batch: int, rows: int, k: int, n: int,
                                                                    bias: bool) -> None:
    rule = ATEN.get("bitsandbytes::gemm_4bit")
    assert rule is not None and rule.unit == "matmul"
    macs, flops = rule.fn((batch, rows, k), ((n * k + 1) // 2, 1), [n, k], (n * k // 64,), 64, "nf4",
                          (n,) if bias else None, out=((batch, rows, n),))
    assert macs == batch * rows * k * n
    assert flops == 2 * macs + n * k + (batch * rows * n if bias else 0)


def test_dequantizing_is_one_flop_an_element() -> None:
    rule = ATEN.get("bitsandbytes::dequantize_4bit")
    assert rule is not None and rule.unit == "elementwise"
    assert rule.fn((96, 1), (3,), 64, "nf4", [12, 16], torch.bfloat16, out=((12, 16),)) == (0, 12 * 16)


def allocator_high(fn: Any, *args: Any) -> tuple[int, Any]:
    """The highest running sum of the CPU allocator's events during ``fn(*args)``, and its result."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn(*args)
    live = high = 0
    for event in sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns()):
        live += event.nbytes()
        high = max(high, live)
    return high, out


def test_the_cpu_4bit_product_holds_the_dequantized_weight_as_measured() -> None:
    """bitsandbytes' CPU gemm_4bit, one real call under the allocator's events: the rule's float32
    absmax and dequantized weight, plus whatever the bf16 product (F.linear) holds of its own."""
    rows, k, n = 96, 512, 384
    weight = torch.randn(n, k, dtype=torch.bfloat16)
    codes, state = bnb.functional.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    a = torch.randn(2, rows, k, dtype=torch.bfloat16)
    args = (a, codes.view(-1, 1), list(state.shape), state.state2.absmax, 64, "nf4", None, state.absmax,
            state.state2.code, state.offset)
    high, out = allocator_high(torch.ops.bitsandbytes.gemm_4bit.default, *args)
    product, _ = allocator_high(torch.nn.functional.linear, a, bnb.functional.dequantize_4bit(codes, state))
    meta = tuple(torch.empty_like(v, device="meta") if isinstance(v, torch.Tensor) else v for v in args)
    held = CPU.rules["bitsandbytes::gemm_4bit"](meta, [torch.empty_like(out, device="meta")])
    assert held == 4 * state.absmax.numel() + n * k * 2 + out.numel() * 2
    assert high == held + product - out.numel() * 2


# -- the paper's setup (bench/qlora.py; docs/training.md, "QLoRA against the paper") -------------------------------
@pytest.mark.slow
def test_the_papers_llama_fits_where_the_paper_says() -> None:
    """LLaMA 7B's base is the closed form and its adapters peft's count; 65B trains under 48 GB
    (abstract), even with bitsandbytes' float32 AdamW state; 33B does not quite fit 24 GiB (appendix):
    its allocator reserve with float32 state takes all of it (within 1%), with nothing left for the
    CUDA context, which is outside the allocator."""
    from scripts import load_script

    bench = load_script("bench/qlora.py", "nncost_bench_qlora")
    small, middle, large = (bench.run(size) for size in ("7b", "33b", "65b"))
    assert small["nf4"] == small["nf4_closed_form"]
    assert small["trainable"] == 32 * 64 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    assert large["peak"] < 48e9 and large["before_step"] + large["optimizer"] < 48e9
    assert middle["reserved"] + middle["optimizer"] > 0.99 * 24 * 2**30


def test_every_layer_counts_a_4bit_weight_as_the_elements_it_stands_for(config_dir: Path) -> None:
    """The packed codes hold two elements a byte; the rows count the weight's own shape, as the totals do."""
    report = nncost.run(Request(str(config_dir), Inputs(batch_size=1, seq=8), lora=Lora(RANK), weights="nf4",
                                step=Step(optimizer="adamw", allocator="cpu"))).report
    assert report is not None
    root = report.layers[0]
    assert root.params == report.totals.params
    h = CONFIG["hidden_size"]
    q_proj = [layer for layer in report.layers if layer.name.endswith("layers.0.self_attn.q_proj")]
    assert q_proj and q_proj[0].params == h * h + RANK * h + h * RANK  # the base, lora_A, lora_B
