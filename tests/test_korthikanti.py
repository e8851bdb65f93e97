"""Activation memory per layer against Korthikanti et al. 2022, Table 2 (docs/training.md).

The reference layer is bench/korthikanti.py's: Megatron-LM's GPT layer in bf16 with dropout on,
one tensor-parallel rank's shard of it, without recomputation, with selective (core attention)
and with full recomputation.  Every expected figure is the paper's formula plus the named,
closed-form differences of ``differences()``; none comes from nncost's output.  Three figures
must equal it to the byte (for every row of Table 2 by default, more shapes with ``-m slow``):

- nncost's simulated step with CUDA's kernels (``allocator="cuda"``): the paper plus the layer
  norms' fp32 mean and rstd;
- nncost's simulated step with the CPU's kernels (``allocator="cpu"``), and
- PyTorch's own accounting of a real CPU forward (``saved_tensors_hooks``, distinct storages):
  the paper plus the statistics in bf16 and the CPU's 2-byte dropout masks.
"""

from __future__ import annotations

import pytest
import torch

from scripts import load_script

bench = load_script("bench/korthikanti.py", "nncost_bench_korthikanti")
Shape = bench.Shape

# One shape per row of Table 2 by default (no parallelism, tensor parallel, tensor + sequence
# parallel); the others with -m slow.
SHAPES = [
    Shape(32, 2, 64, 4),
    Shape(32, 2, 64, 4, t=2),
    Shape(32, 2, 64, 4, t=4, sequence_parallel=True),
    *(pytest.param(shape, marks=pytest.mark.slow) for shape in (
        Shape(48, 1, 96, 6),
        Shape(32, 2, 64, 4, t=4),
        Shape(32, 2, 64, 4, t=2, sequence_parallel=True),
    )),
]


def _case(shape: Shape, recompute: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return bench.build(shape, recompute)


@pytest.mark.parametrize("recompute", bench.RECOMPUTE)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.label)
def test_table_2_is_reproduced_within_the_documented_differences(shape: Shape, recompute: str) -> None:
    layer, x = _case(shape, recompute)
    assert bench.simulated(layer, x, "cuda") == bench.expected(shape, recompute, "cuda")
    assert bench.simulated(layer, x, "cpu") == bench.expected(shape, recompute, "cpu")
    assert bench.measured(layer, x) == bench.expected(shape, recompute, "cpu")


def test_the_paper_formulas_are_table_2() -> None:
    """The rows of Table 2, written out once more from the paper's letters."""
    s, b, h, a = 64, 2, 128, 8
    sbh = s * b * h
    assert bench.paper(Shape(s, b, h, a), "none") == sbh * (34 + 5 * a * s // h)
    for t in (2, 4):
        assert bench.paper(Shape(s, b, h, a, t=t), "none") == sbh * 10 + sbh * 24 // t + 5 * a * s * s * b // t
        assert bench.paper(Shape(s, b, h, a, t=t, sequence_parallel=True), "none") == sbh * (34 + 5 * a * s // h) // t
        assert bench.paper(Shape(s, b, h, a, t=t), "selective") == sbh * 10 + sbh * 24 // t
        assert bench.paper(Shape(s, b, h, a, t=t, sequence_parallel=True), "selective") == 34 * sbh // t
        assert bench.paper(Shape(s, b, h, a, t=t), "full") == 2 * sbh
    assert bench.paper(Shape(s, b, h, a), "full") == 2 * sbh


def test_each_item_of_section_4_is_where_the_paper_puts_it() -> None:
    """The paper's items, module by module (t = 1, CUDA's kernels): each linear keeps its input, each
    layer norm its input (and its fp32 mean and rstd); the rest is the layer's own functional code:
    Q, K and V (one QKV output), the softmax output, its dropout mask (1 byte) and output, GeLU's
    input and the two hidden dropout masks (1 byte)."""
    s, b, h, a = 32, 2, 64, 4
    sbh, statistics = s * b * h, 2 * s * b * 4
    layer, x = _case(Shape(s, b, h, a), "none")
    import nncost

    saved = nncost.memory(layer, inputs=(x.detach(),), precision="bf16", optimizer="sgd").saved_for_backward
    assert saved["input_norm"] == 2 * sbh + statistics
    assert saved["post_attention_norm"] == 2 * sbh + statistics
    assert saved["qkv"] == 2 * sbh
    assert saved["projection"] == 2 * sbh
    assert saved["fc1"] == 2 * sbh
    assert saved["fc2"] == 8 * sbh
    core = 4 * sbh + 2 * sbh + 2 * a * s * s * b + a * s * s * b + 2 * a * s * s * b  # Q, K; V; softmax; mask; out
    mlp_and_masks = 8 * sbh + sbh + sbh  # GeLU's input; the two hidden dropout masks
    own = saved[""] - sum(saved[name] for name in ("input_norm", "post_attention_norm", "qkv", "projection",
                                                  "fc1", "fc2"))
    assert own == core + mlp_and_masks


def test_the_llama_items_add_up_to_nncost_s_figure() -> None:
    """bench/korthikanti.py's HF Llama layer, item by item (docs/training.md), against nncost's
    ``model.layers.1`` on a small config."""
    pytest.importorskip("transformers")
    s, b, h, a, f = 64, 2, 128, 4, 344
    total, inside = bench.llama_layer_bytes(h, a, a, f, s, b)
    items = bench.llama_formula(s, b, h, a, f)
    assert total == sum(items.values())
    assert inside["model.layers.1.input_layernorm"] == items["RMSNorm ×2"] // 2
    assert inside["model.layers.1.mlp"] == items["SwiGLU MLP"]


@pytest.mark.parametrize("fused", [False, True], ids=["math", "flash"])
def test_the_llama_figure_is_pytorch_s_own_on_a_real_cpu_forward(fused: bool) -> None:
    """The items, against PyTorch's accounting of a real CPU forward and against nncost: SDPA's math
    kernel (nncost's ``cuda`` simulation) and the CPU's flash kernel (its ``cpu`` simulation)."""
    pytest.importorskip("transformers")
    s, b, h, a, f = 64, 2, 128, 4, 344
    items = sum(bench.llama_formula(s, b, h, a, f, fused=fused).values())
    assert bench.llama_measured(h, a, f, s, b, fused=fused) == items
    assert bench.llama_layer_bytes(h, a, a, f, s, b, allocator="cpu" if fused else "cuda")[0] == items
