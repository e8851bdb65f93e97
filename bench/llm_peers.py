"""nncost's generation figures beside llm-analysis, hf-mem and the standard formula sheet.

    pip install --target .peers llm-analysis hf-mem     # the peers, apart from nncost's own packages
    PYTHONPATH=src python bench/llm_peers.py [--only llama-2-7b,...] [--prompt 2048] [--new 256] [--write-docs]

Every case is a published config.json (the values are written below and into a temporary
directory; nothing is downloaded), served at batch 1 on an H100 SXM in bf16: a prefill of
``--prompt`` tokens, then ``--new`` tokens.  nncost runs the model's own code on meta tensors
(``nncost DIR --prompt P --new-tokens M --hardware h100-sxm``).  The peers are run in a process
of their own with ``.peers`` on the path, because llm-analysis pins an old huggingface_hub:

- **llm-analysis** 0.2.2 (``llm_analysis.analysis.infer``, efficiencies set to 1 so its roofs are
  the datasheet's as nncost's are), from the config's sizes in its own ModelConfig format;
- **hf-mem** 0.5.6's KV cache formula (``compute_safetensors_kv_cache_size``, from config.json
  alone; its weight figure needs the Hub's safetensors metadata, so it is not run);
- **the formula sheet** of Kaplan et al. (2020, Table 1): params ≈ 12·L·d² (+ the embeddings),
  forward FLOPs per token ≈ 2·N + 2·L·n_ctx·d.

Each peer's figure is shown as a ratio to nncost's.  docs/llm.md explains every difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _llm_analysis import model_config, run_peer  # noqa: E402
from _sections import replace_section  # noqa: E402

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "rms_norm_eps": 1e-5,
         "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
CASES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-2-7b-hf: 6.74 B parameters (Touvron et al., 2023)
    "llama-2-7b": {**LLAMA, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                   "max_position_embeddings": 4096},
    # meta-llama/Meta-Llama-3-8B: 8.03 B
    "llama-3-8b": {**LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                   "max_position_embeddings": 8192, "rope_theta": 500000.0},
    # meta-llama/Meta-Llama-3-70B: 70.55 B, grouped-query attention
    "llama-3-70b": {**LLAMA, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                    "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
                    "max_position_embeddings": 8192, "rope_theta": 500000.0},
    # mistralai/Mistral-7B-v0.1: a 4,096-token sliding window
    "mistral-7b": {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 4096,
                   "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "vocab_size": 32000, "sliding_window": 4096, "rms_norm_eps": 1e-5,
                   "max_position_embeddings": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    # mistralai/Mixtral-8x7B-v0.1: 46.7 B, 12.9 B active (8 experts, top 2)
    "mixtral-8x7b": {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 4096,
                     "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "vocab_size": 32000, "num_local_experts": 8,
                     "num_experts_per_tok": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 32768,
                     "tie_word_embeddings": False, "torch_dtype": "bfloat16", "sliding_window": None},
}

PEER_SCRIPT = r"""
import json, sys
payload, path = json.loads(sys.argv[1]), sys.argv[2]
config, prompt, new = payload["config"], payload["prompt"], payload["new"]
out = {}
try:
    from llm_analysis.analysis import infer
    json.dump(payload["model"], open(path, "w"))
    summary = infer(model_name=path, gpu_name="h100-sxm-80gb", dtype_name="w16a16e16", log_level="ERROR",
                    seq_len=prompt, num_tokens_to_generate=new, flops_efficiency=1.0, hbm_memory_efficiency=1.0,
                    tp_size=payload["tp"])
    out["llm_analysis"] = {k: summary[k] for k in ("kv_cache_memory_per_gpu",
        "weight_memory_per_gpu", "prefill_num_flops_fwd_total", "decode_num_flops_fwd_total", "prefill_latency",
        "decode_latency", "decode_tokens_per_sec") if k in summary}
except Exception as exc:
    out["llm_analysis_error"] = f"{type(exc).__name__}: {exc}"[:300]
try:
    from hf_mem.safetensors.kv_cache import compute_safetensors_kv_cache_size
    out["hf_mem_kv"] = compute_safetensors_kv_cache_size(config, "BF16", prompt + new, 1)
except Exception as exc:
    out["hf_mem_error"] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(out))
"""


# Models over one H100's 80 GB are served over two, split in the Megatron layout by both tools.
TENSOR_PARALLEL = {"llama-3-70b": 2, "mixtral-8x7b": 2}


def nncost_figures(config: dict[str, Any], prompt: int, new: int, tp: int) -> dict[str, Any]:
    import nncost
    from nncost.request import Generation

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(config))
        start = time.perf_counter()
        result = nncost.run(nncost.Request(folder, generation=Generation(prompt, new, tensor_parallel=tp),
                                           hardware="h100-sxm"))
        seconds = time.perf_counter() - start
    g = result.generation
    assert g is not None and g.decode is not None
    return {"params": g.prefill.totals.params, "active_params": getattr(g.prefill.totals, "active_params", None),
            "kv_per_token": g.kv_cache_bytes_per_token, "kv": g.kv_cache_bytes, "weights": g.weights_bytes,
            "prefill_flops": g.prefill.totals.flops, "decode_flops": g.decode.totals.flops,
            "ttft": g.time_to_first_token_seconds, "tokens_per_second": g.tokens_per_second, "wall": seconds}


def peer_figures(config: dict[str, Any], prompt: int, new: int, tp: int) -> dict[str, Any]:
    return run_peer(PEER_SCRIPT, {"config": config, "model": model_config(config), "prompt": prompt, "new": new,
                                  "tp": tp})


def kaplan(config: dict[str, Any], prompt: int, new: int) -> dict[str, float]:
    """Kaplan et al. (2020), Table 1: N = 12·L·d² (non-embedding), forward FLOPs per token 2N + 2·L·n_ctx·d;
    the embeddings added to N as most sheets do."""
    d, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    n = 12 * layers * d * d
    embeddings = vocab * d * (1 if config.get("tie_word_embeddings") else 2)
    prefill = sum(2 * n + 2 * layers * ctx * d for ctx in range(1, prompt + 1))
    decode = sum(2 * n + 2 * layers * ctx * d for ctx in range(prompt + 1, prompt + new))
    return {"params": n + embeddings, "prefill_flops": prefill, "decode_flops": decode}


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.3f}" if value and base else "-"


def table(rows: list[tuple[str, int, dict[str, Any], dict[str, Any], dict[str, float]]], prompt: int, new: int
          ) -> str:
    lines = [f"### Serving at batch 1 on H100 SXMs, bf16: {prompt:,} prompt tokens, {new:,} new", "",
             f"Made by `pip install --target .peers llm-analysis hf-mem && PYTHONPATH=src python bench/llm_peers.py "
             f"--prompt {prompt} --new {new}`. nncost's figures, then each peer's as a ratio to nncost's "
             "(1.000: the same). Models over 80 GB are split over 2 GPUs (`--tensor-parallel 2`, llm-analysis's "
             "`tp_size=2`): memory, FLOPs and time are one GPU's, except hf-mem's KV cache, which is the whole "
             "batch's; Kaplan's figures are the whole model's.", "",
             "| case | GPUs | nncost params | KV / token / GPU | weights / GPU | prefill FLOPs | decode FLOPs | TTFT | "
             "tokens/s | llm-analysis: weights, KV, prefill FLOPs, decode FLOPs, TTFT, tokens/s | hf-mem: KV | "
             "Kaplan: params, prefill FLOPs, decode FLOPs |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|---|"]
    for name, tp, ours, peers, sheet in rows:
        la = peers.get("llm_analysis", {})
        kv_gpu = ours["kv_per_token"] * (prompt + new)
        analysis = ", ".join([
            ratio(la.get("weight_memory_per_gpu"), ours["weights"]),
            ratio(la.get("kv_cache_memory_per_gpu"), kv_gpu),
            ratio(la.get("prefill_num_flops_fwd_total"), ours["prefill_flops"]),
            ratio(la.get("decode_num_flops_fwd_total", 0) * (new - 1) if la else None, ours["decode_flops"]),
            ratio(la.get("prefill_latency"), ours["ttft"]),
            ratio(la.get("decode_tokens_per_sec"), ours["tokens_per_second"]),
        ]) if la else peers.get("llm_analysis_error", peers.get("error", "-"))
        lines.append(
            f"| {name} | {tp} | {ours['params']:,} | {ours['kv_per_token'] / 1024:,.0f} KiB | "
            f"{ours['weights'] / 2**30:.2f} GiB | {ours['prefill_flops']:.3e} | {ours['decode_flops']:.3e} | "
            f"{ours['ttft'] * 1e3:.1f} ms | "
            f"{ours['tokens_per_second']:.1f} | {analysis} | {ratio(peers.get('hf_mem_kv'), kv_gpu * tp)} | "
            f"{ratio(sheet['params'], ours['params'])}, {ratio(sheet['prefill_flops'], ours['prefill_flops'])}, "
            f"{ratio(sheet['decode_flops'], ours['decode_flops'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--write-docs", action="store_true", help="also write the table into docs/llm.md")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    rows = []
    for name in names:
        config, tp = CASES[name], TENSOR_PARALLEL.get(name, 1)
        ours = nncost_figures(config, args.prompt, args.new, tp)
        print(f"{name}: nncost {ours['wall']:.1f} s", file=sys.stderr, flush=True)
        rows.append((name, tp, ours, peer_figures(config, args.prompt, args.new, tp),
                     kaplan(config, args.prompt, args.new)))
    text = table(rows, args.prompt, args.new)
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "llm.md", text.splitlines()[0], text, new_page="# LLMs\n",
                        ends=("## ", "### "))


if __name__ == "__main__":
    main()
