"""nncost's whole-run training figures beside llm-analysis's, on the same cases.

    pip install --target .peers llm-analysis hf-mem     # the peers, apart from nncost's own packages
    PYTHONPATH=src python bench/llm_training_peers.py [--only llama-2-7b,...] [--write-docs]

Every case is a published config.json (the values are written below and into a temporary
directory; nothing is downloaded), trained at seq 4096 in bf16-mixed with AdamW for 2T tokens.
nncost runs the model's own code on meta tensors, from the command line the table's notes print
(parsed by nncost's own CLI parser, then ``nncost.run``).  llm-analysis 0.2.2
(``llm_analysis.analysis.train``) runs in a process of its own with ``.peers`` on the path,
because it pins an old huggingface_hub; it gets the case's sizes in its own ModelConfig format,
the same layout (``tp_size``, ``pp_size``, ``sp_size``, ``ds_zero``, the micro-batch and the
micro-batches as ``gradient_accumulation_steps``) and **nncost's MFU as its** ``flops_efficiency``,
so that the times differ only by the FLOPs counted and by what each adds to them.

Each llm-analysis figure is shown as a ratio to nncost's.  docs/training.md ("Against
llm-analysis") explains every difference from both sides' code.
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

HEADING = "### Four Llama runs, side by side"

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "rms_norm_eps": 1e-5,
         "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
LLAMA_2 = {**LLAMA, "vocab_size": 32000, "max_position_embeddings": 4096}
SEQ, TOKENS = 4096, 2 * 10**12
COMMON = ["--seq", str(SEQ), "--train", "--optimizer", "adamw", "--precision", "bf16-mixed", "--tokens", "2T"]
A100_FSDP = ["--batch", "2", "--hardware", "a100-80gb", "--gpus", "2048", "--sharding", "fsdp"]
CASES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-2-7b-hf: 6,738,415,616 parameters (Touvron et al., 2023)
    "llama-2-7b": {
        "config": {**LLAMA_2, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32},
        "params": 6_738_415_616,
        "nncost": A100_FSDP,
        "llm_analysis": {"gpu_name": "a100-sxm-80gb", "total_num_gpus": 2048, "batch_size_per_gpu": 2,
                         "gradient_accumulation_steps": 1, "ds_zero": 3, "activation_recomputation": 0},
    },
    # meta-llama/Llama-2-13b-hf: 13,015,864,320
    "llama-2-13b": {
        "config": {**LLAMA_2, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                   "num_attention_heads": 40, "num_key_value_heads": 40},
        "params": 13_015_864_320,
        "nncost": [*A100_FSDP, "--checkpointing"],
        "llm_analysis": {"gpu_name": "a100-sxm-80gb", "total_num_gpus": 2048, "batch_size_per_gpu": 2,
                         "gradient_accumulation_steps": 1, "ds_zero": 3, "activation_recomputation": 2},
    },
    # meta-llama/Llama-2-70b-hf: 68,976,648,192, grouped-query attention
    "llama-2-70b": {
        "config": {**LLAMA_2, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                   "num_attention_heads": 64, "num_key_value_heads": 8},
        "params": 68_976_648_192,
        "nncost": ["--batch", "1", "--hardware", "a100-80gb", "--gpus", "2048", "--tensor-parallel", "8",
                   "--pipeline-parallel", "4", "--micro-batches", "16", "--sequence-parallel", "--sharding", "zero1"],
        "llm_analysis": {"gpu_name": "a100-sxm-80gb", "total_num_gpus": 2048, "batch_size_per_gpu": 1,
                         "gradient_accumulation_steps": 16, "tp_size": 8, "pp_size": 4, "sp_size": 8, "ds_zero": 1,
                         "activation_recomputation": 0},
    },
    # meta-llama/Meta-Llama-3-70B: 70,553,706,496, on the layout `--plan` picks for 64 H100s
    "llama-3-70b": {
        "config": {**LLAMA, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                   "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
                   "max_position_embeddings": 8192, "rope_theta": 500000.0},
        "params": 70_553_706_496,
        "nncost": ["--batch", "1", "--hardware", "h100-sxm", "--gpus", "64", "--tensor-parallel", "8",
                   "--pipeline-parallel", "2", "--micro-batches", "32", "--sequence-parallel", "--sharding", "zero1"],
        "llm_analysis": {"gpu_name": "h100-sxm-80gb", "total_num_gpus": 64, "batch_size_per_gpu": 1,
                         "gradient_accumulation_steps": 32, "tp_size": 8, "pp_size": 2, "sp_size": 8, "ds_zero": 1,
                         "activation_recomputation": 0},
    },
}

SUMMARY_KEYS = ("num_params_total", "num_flops_total_per_micro_batch", "weight_memory_per_gpu",
                "gradient_memory_per_gpu", "optimizer_state_memory_per_gpu", "activation_memory_per_gpu",
                "(weight+op_state+grad+act)_memory_per_gpu", "latency_per_iter", "global_batch_size",
                "total_training_latency", "gpu_hours", "flops_efficiency", "achieved_flops")

PEER_SCRIPT = r"""
import json, sys
case, path = json.loads(sys.argv[1]), sys.argv[2]
out = {}
try:
    from llm_analysis.analysis import train
    json.dump(case["model"], open(path, "w"))
    summary = train(model_name=path, dtype_name="w16a16e16", log_level="ERROR", seq_len=case["seq"],
                    total_num_tokens=case["tokens"], flops_efficiency=case["efficiency"], **case["llm_analysis"])
    out["llm_analysis"] = {k: summary[k] for k in case["keys"] if k in summary}
except Exception as exc:
    out["llm_analysis_error"] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(out))
"""


def command(name: str) -> str:
    """The nncost command line of a case, ``NAME/`` being a folder holding its config.json."""
    return " ".join(["nncost", f"{name}/", *COMMON, *CASES[name]["nncost"]])


def nncost_figures(name: str) -> dict[str, Any]:
    """One GPU's memory (the worst pipeline stage's under a layout), the FLOPs a token, the step and
    the run, from nncost's result for the case's command line."""
    import nncost
    from nncost.cli import build_parser, request_of
    from nncost.records.memory import CATEGORIES

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(CASES[name]["config"]))
        start = time.perf_counter()
        result = nncost.run(request_of(build_parser().parse_args([folder, *COMMON, *CASES[name]["nncost"]])))
        seconds = time.perf_counter() - start
    run = result.training_run
    assert run is not None and result.report is not None
    figures: dict[str, Any] = {"params": result.report.totals.params, "flops_per_token": run.flops_per_token,
                               "step_seconds": run.step_seconds, "gpu_hours": run.gpu_hours,
                               "efficiency": run.efficiency, "wall": seconds,
                               # the step's FLOPs on one GPU at the MFU, nothing added
                               "flops_seconds": run.flops_per_token * run.tokens_per_step / run.gpus
                               / (run.efficiency * run.peak_flops),
                               "added_seconds": (run.bubble_seconds or 0.0) + (run.communication_seconds or 0.0)}
    if result.parallel is not None:
        stage = result.parallel.stages[result.parallel.peak_stage]
        figures |= {"weights": stage.parameter_bytes, "gradients": stage.gradient_bytes,
                    "optimizer": stage.optimizer_state_bytes,
                    "activations": stage.activation_bytes * stage.micro_batches_in_flight + stage.recompute_bytes,
                    "peak": result.parallel.peak_bytes, "where": f"stage {stage.index}"}
    else:
        memory = result.memory
        assert memory is not None and memory.per_gpu is not None
        # The step's peak is before the backward, with no gradient alive: the gradients are shown at
        # their own largest (the trace's timeline), sharded as nncost shards them (analyses/sharding.py).
        most = max(live[CATEGORIES.index("gradients")] for _, live in memory.timeline)
        figures |= {"weights": memory.per_gpu["parameters"], "gradients": -(-most // memory.gpus),
                    "optimizer": memory.per_gpu["optimizer_state"], "activations": memory.per_gpu["activations"],
                    "peak": memory.peak_per_gpu_bytes, "where": f"the {memory.peak_phase}"}
    return figures


def peer_figures(name: str, efficiency: float) -> dict[str, Any]:
    """llm-analysis's summary for the case at MFU ``efficiency``, from its own process (``.peers``)."""
    return run_peer(PEER_SCRIPT, {"model": model_config(CASES[name]["config"]),
                                  "llm_analysis": CASES[name]["llm_analysis"], "seq": SEQ, "tokens": TOKENS,
                                  "efficiency": efficiency, "keys": SUMMARY_KEYS})


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.3f}" if value is not None and base else "-"


def gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def tables(rows: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> str:
    lines = [HEADING, "",
             "Made by `pip install --target .peers llm-analysis hf-mem && PYTHONPATH=src python "
             "bench/llm_training_peers.py --write-docs`. nncost's figures, then llm-analysis's as a ratio to "
             "nncost's (1.000: the same). Memory is one GPU's (under a pipeline, nncost's worst stage); "
             "llm-analysis was given nncost's MFU as its `flops_efficiency`. *FLOPs ÷ rate* is nncost's step "
             "without its pipeline bubble and communication: one GPU's share of the step's FLOPs at the MFU; "
             "llm-analysis's step is compared with it and with nncost's whole step.", "",
             "| case | peak at | weights | ÷ | gradients | ÷ | optimizer state | ÷ | activations | ÷ | peak | ÷ |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, ours, peers in rows:
        la = peers.get("llm_analysis")
        cells = [f"| {name} | {ours['where']}"]
        for ours_key, la_key in (("weights", "weight_memory_per_gpu"), ("gradients", "gradient_memory_per_gpu"),
                                 ("optimizer", "optimizer_state_memory_per_gpu"),
                                 ("activations", "activation_memory_per_gpu"),
                                 ("peak", "(weight+op_state+grad+act)_memory_per_gpu")):
            cells.append(f"{gib(ours[ours_key])} | {ratio(la.get(la_key), ours[ours_key]) if la else '-'}")
        lines.append(" | ".join(cells) + " |")
    lines += ["", "| case | params | ÷ | FLOPs a token | ÷ | FLOPs ÷ rate | ÷ | step (bubble + communication) | ÷ | "
              "GPU-hours | ÷ |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    errors = []
    for name, ours, peers in rows:
        la = peers.get("llm_analysis")
        if not la:
            errors.append(f"{name}: {peers.get('llm_analysis_error', peers.get('error', 'no figures'))}")
            la = {}
        micro_batch_tokens = SEQ * CASES[name]["llm_analysis"]["batch_size_per_gpu"]
        la_per_token = (la["num_flops_total_per_micro_batch"] / micro_batch_tokens
                        if "num_flops_total_per_micro_batch" in la else None)
        lines.append(
            f"| {name} | {ours['params']:,} | {ratio(la.get('num_params_total'), ours['params'])} | "
            f"{ours['flops_per_token']:.4g} | {ratio(la_per_token, ours['flops_per_token'])} | "
            f"{ours['flops_seconds']:.3f} s | {ratio(la.get('latency_per_iter'), ours['flops_seconds'])} | "
            f"{ours['step_seconds']:.3f} s ({ours['added_seconds']:.3f} s) | "
            f"{ratio(la.get('latency_per_iter'), ours['step_seconds'])} | "
            f"{ours['gpu_hours']:,.0f} | {ratio(la.get('gpu_hours'), ours['gpu_hours'])} |")
    lines += ["", "The nncost command of each row (`NAME/` holds the config.json the bench writes):", "", "```console"]
    lines += [f"$ {command(name)}" for name, _, _ in rows]
    lines += ["```"]
    if errors:
        lines += ["", *(f"- llm-analysis failed on {e}" for e in errors)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--write-docs", action="store_true", help="also write the tables into docs/training.md")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    rows = []
    for name in names:
        ours = nncost_figures(name)
        print(f"{name}: nncost {ours['wall']:.1f} s", file=sys.stderr, flush=True)
        rows.append((name, ours, peer_figures(name, ours["efficiency"])))
    text = tables(rows)
    print(text)
    if args.write_docs:
        replace_section(ROOT / "docs" / "training.md", HEADING, text, new_page="# A whole training run\n",
                        ends=("## ", "### "))


if __name__ == "__main__":
    main()
