"""bench/llm_training_peers.py's cases, and the llm-analysis conventions docs/training.md explains.

The case configs must be the published models: their parameter counts, written here in closed
form from the config alone, are Meta's.  Where llm-analysis is installed in ``.peers``, its
figures for the Llama 2 70B case are checked against the closed forms docs/training.md ("Against
llm-analysis") gives for them: no output projection, the MLP as two d×ffn' matrices, 16·b·s·d²
MLP FLOPs whatever ffn', 2 bytes a weight, 4 a gradient and 12 of optimizer state a parameter.
"""

from __future__ import annotations

import pytest

from scripts import ROOT, load_script

bench = load_script("bench/llm_training_peers.py", "nncost_bench_llm_training_peers")


def llama_params(config: dict[str, int | bool | str]) -> int:
    """Embedding, output projection (unless tied), per block the q, k, v, o projections, the three
    MLP matrices and two RMSNorm weights, and the final norm."""
    h, layers, f, vocab = (int(config[k]) for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                   "vocab_size"))
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    head_dim = h // heads
    block = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h + 3 * h * f + 2 * h
    return vocab * h * (1 if config["tie_word_embeddings"] else 2) + layers * block + h


@pytest.mark.parametrize("name", list(bench.CASES))
def test_case_is_the_published_model(name: str) -> None:
    case = bench.CASES[name]
    assert llama_params(case["config"]) == case["params"]


def test_published_counts() -> None:
    assert {name: case["params"] for name, case in bench.CASES.items()} == {
        "llama-2-7b": 6_738_415_616, "llama-2-13b": 13_015_864_320, "llama-2-70b": 68_976_648_192,
        "llama-3-70b": 70_553_706_496}


@pytest.mark.skipif(not (ROOT / ".peers" / "llm_analysis").exists(),
                    reason="llm-analysis not installed: pip install --target .peers llm-analysis hf-mem")
def test_llm_analysis_conventions() -> None:
    config = bench.CASES["llama-2-70b"]["config"]
    la = bench.peer_figures("llama-2-70b", 0.463)["llm_analysis"]
    h, layers, vocab, kv_heads, heads = 8192, 80, 32000, 8, 64
    ffn = h * round(1.5 * config["intermediate_size"] / h)  # the bench's mapping: 5·h
    assert ffn == 40960
    block = 2 * h * h + 2 * h * h * kv_heads // heads + 2 * h * ffn + 2 * h
    assert la["num_params_total"] == layers * block + vocab * h + h  # no output projection
    s, b, tp, pp, dp = bench.SEQ, 1, 8, 4, 64
    forward = layers * (4 * b * s * h * h + 4 * b * s * h * h * kv_heads // heads + 4 * b * s * s * h
                        + 16 * b * s * h * h) + 2 * b * s * h * vocab
    assert la["num_flops_total_per_micro_batch"] == 3 * forward  # backward = 2 × forward
    per_gpu = (layers // pp) * block / tp + (vocab * h + h) / tp  # every stage: the embedding, the last norm
    assert la["weight_memory_per_gpu"] == pytest.approx(2 * per_gpu)
    assert la["gradient_memory_per_gpu"] == pytest.approx(4 * per_gpu)
    assert la["optimizer_state_memory_per_gpu"] == pytest.approx(12 * per_gpu / dp)
