"""Mixtures of experts through transformers' own classes: on meta in float32 (no real run),
against real CPU runs of the same models, FlopCounterMode, and the closed forms of the configs.

transformers runs its experts as one ``torch._grouped_mm`` per projection, whose meta kernel
takes bfloat16 only; nncost answers it on meta itself (``capture/meta_kernels.py``).
FlopCounterMode has no formula for ``_grouped_mm`` (nor for the CPU flash attention kernel), so
its reference figure comes from the same weights run with transformers' eager experts (a loop of
one ``mm`` per expert hit, over the rows routed to it) and eager attention.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import nncost
from nncost.analyses.build import active_params
from nncost.capture.meta_kernels import grouped_mm_output
from nncost.capture.run import capture
from nncost.cli import run
from nncost.errors import InputMismatch
from nncost.records.trace import Routed, token_rows
from nncost.rules.aten.grouped_mm import routed

transformers = pytest.importorskip("transformers")

VOCAB, HIDDEN, TOKENS = 128, 64, (2, 8)


def mixtral() -> Any:
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64))


def qwen2_moe() -> Any:
    return transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, moe_intermediate_size=48,
        shared_expert_intermediate_size=96, num_experts=8, num_experts_per_tok=2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def deepseek_v3() -> Any:
    return transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
        first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
        n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1, q_lora_rank=32, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, max_position_embeddings=64))


def embeddings(c: Any) -> int:
    """The token embedding, and the LM head unless it is tied to it."""
    return c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)


def mixtral_params(c: Any) -> tuple[int, int]:
    """(params, the routed experts' params) of a Mixtral config, in closed form."""
    h = c.hidden_size
    kv = c.num_key_value_heads * (c.head_dim or h // c.num_attention_heads)
    experts = c.num_local_experts * 3 * h * c.intermediate_size
    layer = 2 * h * h + 2 * h * kv + 2 * h + c.num_local_experts * h + experts
    return embeddings(c) + c.num_hidden_layers * layer + h, c.num_hidden_layers * experts


def qwen2_moe_params(c: Any) -> tuple[int, int]:
    """Qwen2-MoE: biased q, k, v; a shared expert with its sigmoid gate beside the routed ones."""
    h = c.hidden_size
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h
    experts = c.num_experts * 3 * h * c.moe_intermediate_size
    shared = 3 * h * c.shared_expert_intermediate_size + h
    layer = attention + 2 * h + c.num_experts * h + experts + shared
    return embeddings(c) + c.num_hidden_layers * layer + h, c.num_hidden_layers * experts


def deepseek_v3_params(c: Any) -> tuple[int, int]:
    """DeepSeek-V3: multi-head latent attention, dense first layers, then routed and shared experts."""
    h, heads = c.hidden_size, c.num_attention_heads
    qk = c.qk_nope_head_dim + c.qk_rope_head_dim
    attention = (h * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * qk
                 + h * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
                 + c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim) + heads * c.v_head_dim * h)
    experts = c.n_routed_experts * 3 * h * c.moe_intermediate_size
    moe = c.n_routed_experts * h + experts + 3 * h * c.moe_intermediate_size * c.n_shared_experts
    dense, sparse = c.first_k_dense_replace, c.num_hidden_layers - c.first_k_dense_replace
    total = embeddings(c) + c.num_hidden_layers * (attention + 2 * h) + dense * 3 * h * c.intermediate_size
    return total + sparse * moe + h, sparse * experts


def top_k_of(c: Any) -> tuple[int, int]:
    experts = getattr(c, "num_local_experts", None) or getattr(c, "n_routed_experts", None) or c.num_experts
    return c.num_experts_per_tok, experts


CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], tuple[int, int]]]] = {
    "mixtral": (mixtral, mixtral_params),
    "qwen2_moe": (qwen2_moe, qwen2_moe_params),
    "deepseek_v3": (deepseek_v3, deepseek_v3_params),
}


def reference_macs(model: Any, ids: torch.Tensor) -> int:
    """FlopCounterMode's count of a real CPU forward, halved, with eager experts and attention."""
    experts, attention = model.config._experts_implementation, model.config._attn_implementation
    model.set_experts_implementation("eager")
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(input_ids=ids)
    finally:
        model.set_experts_implementation(experts)
        model.set_attn_implementation(attention)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", list(CASES))
def test_float32_moe_runs_on_meta_as_it_runs_for_real(name: str) -> None:
    build, closed_form = CASES[name]
    torch.manual_seed(0)
    model = build().eval()
    assert model.config._experts_implementation == "grouped_mm"
    ids = torch.randint(0, VOCAB, TOKENS)
    meta = nncost.profile(model, kwargs={"input_ids": ids})
    real = nncost.profile(model, kwargs={"input_ids": ids}, device="cpu")
    assert meta.execution == "meta" and meta.fallback_reason is None
    assert real.execution == "real"
    assert meta.uncounted == real.uncounted == []

    assert meta.totals.macs == real.totals.macs == reference_macs(model, ids)

    params, routed_experts = closed_form(model.config)
    top_k, experts = top_k_of(model.config)
    assert meta.totals.params == real.totals.params == sum(p.numel() for p in model.parameters()) == params
    active = params - routed_experts * (experts - top_k) // experts
    assert meta.totals.active_params == real.totals.active_params == active


def test_moe_in_every_float_dtype_on_meta() -> None:
    with torch.device("meta"):
        model = mixtral()
    ids = torch.zeros(TOKENS, dtype=torch.long)
    reports = {dtype: nncost.profile(model, kwargs={"input_ids": ids}, dtype=dtype)
               for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64)}
    assert {r.execution for r in reports.values()} == {"meta"}
    assert len({(r.totals.macs, r.totals.active_params) for r in reports.values()}) == 1


def test_mixtral_8x7b_default_config_on_meta() -> None:
    config = transformers.MixtralConfig()
    with torch.device("meta"):
        model = transformers.MixtralForCausalLM(config)
    seq = 8
    report = nncost.profile(model, kwargs={"input_ids": torch.zeros(1, seq, dtype=torch.long)})
    assert report.execution == "meta"
    assert report.totals.params == 46_702_792_704
    # the closed form: all parameters but the 6 of 8 experts a token is not routed to, in 32 layers
    layers, experts, top_k, d, inner, vocab, kv = 32, 8, 2, 4096, 14336, 32000, 1024
    routed_experts = layers * experts * 3 * d * inner
    assert mixtral_params(config) == (46_702_792_704, routed_experts)
    assert report.totals.active_params == 46_702_792_704 - routed_experts * (experts - top_k) // experts
    assert report.totals.active_params == 12_879_925_248  # the published "12.9B active"
    per_layer = (2 * d * d + 2 * d * kv + d * experts + top_k * 3 * d * inner) * seq + 32 * seq * seq * 2 * 128
    assert report.totals.macs == layers * per_layer + d * vocab * seq


def test_deepseek_v3_default_config_on_meta() -> None:
    config = transformers.DeepseekV3Config()
    with torch.device("meta"):
        model = transformers.DeepseekV3ForCausalLM(config)
    report = nncost.profile(model, kwargs={"input_ids": torch.zeros(1, 8, dtype=torch.long)})
    assert report.execution == "meta"
    params, routed_experts = deepseek_v3_params(config)
    assert report.totals.params == params == 671_026_404_352  # the published 671B (without the MTP module)
    top_k, experts = top_k_of(config)
    assert (top_k, experts) == (8, 256)
    assert report.totals.active_params == params - routed_experts * (experts - top_k) // experts
    assert report.totals.active_params == 37_552_282_624  # the published "37B activated for each token"


def test_a_dense_model_uses_all_its_parameters() -> None:
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100))
    report = nncost.profile(model, kwargs={"input_ids": torch.zeros(1, 8, dtype=torch.long)})
    assert report.totals.active_params == report.totals.params
    assert "Active params" not in report.table()


def test_explain_shows_the_routed_experts_and_says_uniform_is_an_assumption() -> None:
    torch.manual_seed(0)
    report = nncost.profile(mixtral(), kwargs={"input_ids": torch.zeros(TOKENS, dtype=torch.long)})
    text = report.explain("model.layers.0.mlp.experts")
    assert "each of 32 rows reads 1 of 4 slices of model.layers.0.mlp.experts.gate_up_proj (49,152 params)" in text
    assert "16 tokens, 2 slices per token (top-k): each token uses 1/2 of it, 24,576 active" in text
    assert "if the routing were uniform (an assumption" in text
    assert "MACs = Σ_g m_g·k·n = M·K·N = 32·64·192" in text
    expected = 4 * (1 - (1 - 2 / 4) ** 16)  # of 4 experts, top-2, 16 tokens: 3.99994
    assert (f"bytes read: the slices its tokens route to, E·(1 − (1 − k/E)^T) = {expected:.3g} of E = 4 (T = 16, "
            "k = 2), routing assumed uniform and independent") in text
    # one row for the experts: no per-expert module call that did not happen
    assert [layer.name for layer in report.layers if ".mlp.experts" in layer.name] == [
        f"model.layers.{i}.mlp.experts{child}" for i in range(2) for child in ("", ".act_fn")]


def test_a_moe_training_step_runs_on_meta() -> None:
    memory = nncost.memory(mixtral(), kwargs={"input_ids": torch.zeros(TOKENS, dtype=torch.long)}, optimizer="adamw")
    forward = nncost.profile(mixtral(), kwargs={"input_ids": torch.zeros(TOKENS, dtype=torch.long)})
    assert memory.backward_macs == 2 * forward.totals.macs  # the input's and the weights' gradients


def test_the_document_and_the_summary_carry_active_params(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text())
    source = tmp_path / "moe_net.py"
    source.write_text(
        "import torch, transformers\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lm = transformers.MixtralForCausalLM(transformers.MixtralConfig(vocab_size=128, hidden_size=64,"
        " intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,"
        " num_local_experts=4, num_experts_per_tok=2))\n"
        "    def forward(self, x):\n"
        "        return self.lm(inputs_embeds=x).logits\n")
    chunks: list[str] = []
    assert run([f"{source}:Net", "--input", "8x64", "--format", "json"], out=chunks.append) == 0
    data = json.loads("".join(chunks))
    jsonschema.validate(data, schema)
    assert data["execution"] == "meta"
    assert data["totals"]["active_params"] == 189_248 - 2 * 4 * 3 * 64 * 96 // 2
    chunks.clear()
    assert run([f"{source}:Net", "--input", "8x64", "--depth", "0"], out=chunks.append) == 0
    assert "Active params          115,520 (115.52 K) per token" in "".join(chunks)


# -- the pieces ------------------------------------------------------------------------------
def grouped_operands(layout: str, groups: int, m: int, k: int, n: int) -> tuple[tuple[int, ...], tuple[int, ...],
                                                                             int | None]:
    """The two shapes of a grouped product in ``layout``, and the size of each group (None: no offsets)."""
    return {
        "2d3d": ((groups * m, k), (groups, k, n), m),  # groups of rows of a
        "3d2d": ((groups, m, k), (k, groups * n), n),  # groups of columns of b
        "2d2d": ((m, groups * k), (groups * k, n), k),  # groups along K
        "3d3d": ((groups, m, k), (groups, k, n), None),  # a batched product
    }[layout]


@settings(max_examples=25, deadline=None)
@given(groups=st.integers(1, 5), m=st.integers(1, 3), k=st.integers(1, 3), n=st.integers(1, 19),
       layout=st.sampled_from(["2d3d", "3d2d", "2d2d", "3d3d"]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_the_meta_answer_is_the_real_kernels_output(groups: int, m: int, k: int, n: int, layout: str,
                                                    dtype: torch.dtype) -> None:
    """b is column-major, as transformers passes its experts (``weight.transpose(-2, -1)``): any n,
    and the kernel pads each output row to 16 bytes.  m and k are multiples of 8, the alignment the
    real kernel asks of its inputs' strides."""
    a_shape, b_shape, size = grouped_operands(layout, groups, 8 * m, 8 * k, n)
    offs = None if size is None else torch.arange(1, groups + 1, dtype=torch.int32) * size
    a = torch.randn(a_shape, dtype=dtype)
    b = torch.randn((*b_shape[:-2], b_shape[-1], b_shape[-2]), dtype=dtype).transpose(-2, -1)
    real = torch._grouped_mm(a, b, offs=offs)
    meta = grouped_mm_output(a.to("meta"), b.to("meta"), None if offs is None else offs.to("meta"))
    assert (meta.shape, meta.stride(), meta.dtype, meta.device.type) == (real.shape, real.stride(), real.dtype, "meta")


class Experts(torch.nn.Module):
    """Four experts run as one grouped product, top-1, each token to the next expert; ``calls``
    times over the same weight."""

    def __init__(self, calls: int = 1) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(4, 32, 32))
        self.calls = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offs = torch.arange(1, 5, dtype=torch.int32, device=x.device) * (x.shape[0] // 4)
        for _ in range(self.calls):
            x = torch._grouped_mm(x, self.weight, offs=offs)
        return x


def test_a_wrong_expert_shape_is_an_input_mismatch_not_a_real_run() -> None:
    ok = nncost.profile(Experts(), inputs=(torch.zeros(8, 32),))
    assert ok.execution == "meta" and ok.totals.macs == 8 * 32 * 32
    with pytest.raises(InputMismatch, match="contraction dimension"):
        nncost.profile(Experts(), inputs=(torch.zeros(8, 24),))


@pytest.mark.parametrize(("calls", "share"), [(1, 1 / 4), (2, 2 / 4), (5, 1)])
def test_calls_on_one_parameter_add_up_to_at_most_all_of_it(calls: int, share: float) -> None:
    report = nncost.profile(Experts(calls), inputs=(torch.zeros(8, 32),))
    assert report.totals.params == 4 * 32 * 32
    assert report.totals.active_params == round(4 * 32 * 32 * share)


def test_routing_of_each_layout() -> None:
    assert routed((12, 8), (4, 8, 6)) == (1, 12, 4)  # rows of a through 4 slices of b
    assert routed((4, 12, 8), (8, 6)) == (0, 6, 4)  # columns of b through 4 slices of a
    assert routed((12, 8), (8, 6), (4,)) is None  # groups along K: a weight gradient
    assert routed((4, 12, 8), (4, 8, 6)) is None  # a batched product: every slice for every row


def test_share_and_tokens() -> None:
    experts = Routed(param="experts.w", numel=8 * 100, rows=2 * 16, slices=8)
    assert experts.share(16) == pytest.approx(2 / 8)
    assert experts.share(1) == 1  # more rows than slices for one token: all of it, no more
    assert token_rows([(2, 8, 64), (2, 8)]) == 16
    assert token_rows([(16, 64)]) == 16
    assert token_rows([]) is None and token_rows([(64,)]) is None


def test_the_trace_names_the_routed_parameters() -> None:
    trace = capture(mixtral(), (), {"input_ids": torch.zeros(TOKENS, dtype=torch.long)})
    named = [(op.routed.param, op.routed.rows, op.routed.slices) for op in trace.ops if op.routed is not None]
    assert named == [(f"model.layers.{i}.mlp.experts.{p}", 32, 4)
                     for i in range(2) for p in ("gate_up_proj", "down_proj")]
    assert active_params(trace) == trace.params.params - 2 * 4 * 3 * 64 * 96 // 2


def test_generation_of_a_float32_moe_runs_on_meta() -> None:
    from nncost.request import Generation

    with torch.device("meta"):
        model = mixtral()
    result = nncost.run(nncost.Request(model, nncost.Inputs(batch_size=2), generation=Generation(8, 4)))
    assert result.generation is not None and result.generation.prefill.execution == "meta"
    assert result.generation.prefill.totals.active_params == 189_248 - 2 * 4 * 3 * 64 * 96 // 2


# -- the experts a step reads ----------------------------------------------------------------
@pytest.mark.parametrize(("experts", "top_k", "tokens"), [(8, 2, 1), (8, 2, 3), (8, 2, 16), (128, 8, 1),
                                                          (128, 8, 5), (64, 6, 40)])
def test_expected_experts_is_the_mean_of_simulated_uniform_routing(experts: int, top_k: int, tokens: int) -> None:
    """Each token draws its top-k as k distinct experts uniformly at random, independently of the
    others: the mean number of distinct experts over many draws is E·(1 − (1 − k/E)^T)."""
    from nncost.analyses.reads import expected_experts

    generator = torch.Generator().manual_seed(experts * 1000 + top_k * 10 + tokens)
    trials = 4000
    scores = torch.rand(trials, tokens, experts, generator=generator)
    chosen = scores.topk(top_k, dim=-1).indices  # k distinct experts a token, uniform over the k-subsets
    hit = torch.zeros(trials, experts, dtype=torch.bool)
    hit.scatter_(1, chosen.reshape(trials, -1), True)
    distinct = hit.sum(dim=1).double()
    error = 4 * distinct.std().item() / trials ** 0.5 + 1e-9  # four standard errors of the mean
    assert abs(distinct.mean().item() - expected_experts(experts, top_k, tokens)) <= error
    assert expected_experts(experts, top_k, 1) == pytest.approx(top_k)


def tiny_mixtral_generation(batch: int) -> tuple[Any, int]:
    """A Mixtral of 8 experts, top-2, tiny sizes, generating on meta in float32: the generation, and
    the bytes of one layer's expert weights (gate_up (E, 2I, H) and down (E, H, I))."""
    from nncost.request import Generation

    config = transformers.MixtralConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=96,
                                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                        num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=64)
    with torch.device("meta"):
        model = transformers.MixtralForCausalLM(config)
    result = nncost.run(nncost.Request(model, nncost.Inputs(batch_size=batch), generation=Generation(6, 5),
                                       hardware="h100-sxm"))
    assert result.generation is not None
    return result.generation, 8 * 3 * HIDDEN * 96 * 4


@pytest.mark.parametrize("batch", [1, 3])
def test_a_decode_step_reads_the_experts_its_tokens_route_to(batch: int) -> None:
    from nncost.analyses.reads import expected_experts

    g, expert_bytes = tiny_mixtral_generation(batch)
    layer = next(layer for layer in g.decode.layers if layer.name.endswith("mlp.experts"))
    one_expert = expert_bytes / 8
    weights = g.decode_steps * expected_experts(8, 2, batch) * one_expert  # T = batch tokens a step
    activations = layer.read_bytes - weights  # the rows, the routing's indices, the activations
    assert 0 <= activations < g.decode_steps * one_expert / 4
    assert layer.macs == g.decode_steps * batch * 2 * 3 * HIDDEN * 96  # top-2 of the MACs, unchanged
    assert "E·(1 − (1 − k/E)^T)" in str(g) and "routing assumed uniform" in str(g)


@pytest.mark.slow
@pytest.mark.parametrize(("config", "active"), [
    # Mixtral-8x7B's published config; 12.9B active parameters (Mistral AI, "Mixtral of experts", 2023)
    ({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000, "max_position_embeddings": 32768,
      "rope_theta": 1e6, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}, 12.9e9),
    # Qwen3-30B-A3B's published config; 3.3B activated (Qwen3 model card)
    ({"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 2048,
      "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
      "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
      "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True, "vocab_size": 151936,
      "max_position_embeddings": 40960, "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
      "torch_dtype": "bfloat16"}, 3.3e9),
], ids=["mixtral-8x7b", "qwen3-30b-a3b"])
def test_moe_decode_is_near_the_active_weights_bandwidth_bound(tmp_path: Path, config: dict[str, Any],
                                                              active: float) -> None:
    """Batch-1 decode reads the active weights once a step: tokens/s near 3.35 TB/s (the H100 SXM
    datasheet) over the published active parameters in bf16."""
    directory = tmp_path / config["model_type"]
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    chunks: list[str] = []
    assert run([str(directory), "--prompt", "1024", "--new-tokens", "128", "--hardware", "h100-sxm",
                "--precision", "bf16", "--format", "json"], out=chunks.append) == 0
    tokens_per_second = json.loads("".join(chunks))["generation"]["tokens_per_second"]
    bound = 3.35e12 / (active * 2)
    assert tokens_per_second == pytest.approx(bound, rel=0.15)
