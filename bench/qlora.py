"""QLoRA's memory, LLaMA 7B to 65B, against the figures of the QLoRA paper (Dettmers et al., 2023).

    python bench/qlora.py                 # every size, prints the tables
    python bench/qlora.py --only 7b 65b
    python bench/qlora.py --write-docs    # and writes them into docs/training.md

Each size is simulated on meta tensors, nothing downloaded: a LLaMA-1 config (``CONFIGS``, the
shapes of Touvron et al., 2023, Table 2, and the released ``params.json``: vocabulary 32,000) is
written into a temporary directory, and nncost runs the setup of the paper's ``qlora.py``
(github.com/artidoro/qlora) on it: NF4 with double quantization, bf16 compute, LoRA r = 64,
alpha = 16 on every linear layer but the output head, bf16 adapters and embeddings, gradient
checkpointing, batch 1 of 512 tokens (the setup of the paper's memory figure), AdamW.  The command
line of one size:

    nncost CONFIG_DIR --seq 512 --batch 1 --train --optimizer adamw --lora 64 --lora-alpha 16 \\
        --weights nf4 --precision bf16 --checkpointing

Each size runs in a fresh process (nncost's process-wide cache of meta outputs stays per size).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _sections import replace_section  # noqa: E402

MB = 1e6  # the paper's megabytes
SECTION = "### QLoRA against the paper"
# LLaMA-1: hidden size, MLP size, layers, heads (Touvron et al., 2023, Table 2; 33B is the released "30B").
CONFIGS = {"7b": (4096, 11008, 32, 32), "13b": (5120, 13824, 40, 40), "33b": (6656, 17920, 60, 52),
           "65b": (8192, 22016, 80, 64)}
# The paper's memory figure (arXiv 2305.14314, appendix "Memory Footprint"), batch 1, 512 tokens,
# gradient checkpointing, MB: (4-bit model, adapters, optimizer, total).  The figure is an image; these
# are the numbers on its bars as a third-party transcription gives them (see docs/training.md).
FIGURE = {"7b": (5046, 298, 1152, 6900), "13b": (8476, 450, 1800, 11300), "33b": (19302, 897.5, 3510, 24700),
          "65b": (37074, 1440, 5760, 45000)}


INTRO = """LLaMA-1's shapes (vocabulary 32,000), the setup of the paper's `qlora.py`: NF4 with double
quantization, LoRA r = 64, alpha = 16 on every linear layer but `lm_head`, bf16 compute, adapters
and embeddings, gradient checkpointing, batch 1 of 512 tokens, AdamW; CUDA allocator semantics.
Megabytes are 10⁶ bytes. Produced by `python bench/qlora.py --write-docs` (about a minute), one size
being

```sh
nncost CONFIG_DIR --seq 512 --batch 1 --train --optimizer adamw --lora 64 --lora-alpha 16 \\
    --weights nf4 --precision bf16 --checkpointing
```

"Peak before the optimizer" is the highest the step reaches up to the end of the backward;
"CUDA reserved" the caching allocator's replay of the whole step. The second table sets nncost's
parts beside the paper's memory figure, with the AdamW state in float32 (doubled: bitsandbytes'
32-bit AdamW, the paper's) and the total counted to the end of the backward."""


def config(size: str) -> dict[str, Any]:
    hidden, mlp, layers, heads = CONFIGS[size]
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
            "intermediate_size": mlp, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "vocab_size": 32000, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": False}


def measure(size: str, seq: int = 512, batch: int = 1) -> dict[str, Any]:
    """One size's figures, in bytes (run in a fresh process by :func:`run`)."""
    import nncost
    from nncost.quantization import WeightFormat
    from nncost.request import Inputs, Lora, Step

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config(size)))
        result = nncost.run(nncost.Request(tmp, Inputs(batch_size=batch, seq=seq), precision="bf16",
                                           lora=Lora(64, alpha=16), weights="nf4",
                                           step=Step(optimizer="adamw", checkpointing=True)))
    report, memory = result.report, result.memory
    assert report is not None and memory is not None
    by_dtype = report.totals.param_bytes_by_dtype
    hidden, mlp, layers, _ = CONFIGS[size]
    linears = layers * (4 * [(hidden, hidden)] + 2 * [(mlp, hidden)] + [(hidden, mlp)])
    trainable = report.totals.trainable_params
    backward_end = memory.phase_ends[2]
    before_step = max(sum(live) for index, live in memory.timeline if index < backward_end)
    return {
        "params": report.totals.params, "trainable": trainable,
        "nf4": by_dtype.get("nf4", 0), "nf4_closed_form": sum(WeightFormat("nf4").nbytes(s) for s in linears),
        "bf16": by_dtype.get("bfloat16", 0), "adapters": 2 * trainable,
        "gradients": memory.breakdown.get("gradients", 0), "optimizer": memory.breakdown.get("optimizer_state", 0),
        "peak": memory.peak_bytes, "peak_phase": memory.peak_phase, "before_step": before_step,
        "reserved": memory.allocator_reserved_bytes or 0,
    }


def run(size: str) -> dict[str, Any]:
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import qlora; "
            f"print(json.dumps(qlora.measure({size!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def tables(results: dict[str, dict[str, Any]]) -> str:
    """The two tables of docs/training.md: nncost's breakdown, and the paper's figure beside it."""
    lines = ["| LLaMA | base parameters | trainable (peft's count) | NF4 linears (closed form) | bf16 weights |"
             " adapters | AdamW state (bf16) | peak before the optimizer | peak of the step | CUDA reserved |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size, r in results.items():
        closed = "=" if r["nf4"] == r["nf4_closed_form"] else f"≠ {r['nf4_closed_form'] / MB:,.0f}"
        base = (r["params"] - r["trainable"]) / 1e9
        lines.append(f"| {size.upper()} | {base:.2f} B | {r['trainable'] / 1e6:.1f} M | "
                     f"{r['nf4'] / MB:,.0f} MB ({closed}) | {r['bf16'] / MB:,.0f} MB | {r['adapters'] / MB:,.0f} MB | "
                     f"{r['optimizer'] / MB:,.0f} MB | {r['before_step'] / MB:,.0f} MB | "
                     f"{r['peak'] / MB:,.0f} MB ({r['peak_phase']}) | {r['reserved'] / MB:,.0f} MB |")
    lines += ["", "| LLaMA | model: paper / nncost | adapters: paper / nncost | optimizer: paper / nncost (fp32) |"
              " total: paper / nncost (fp32 state) |", "|---|---:|---:|---:|---:|"]
    for size, r in results.items():
        model, adapters, optimizer, total = FIGURE[size]
        weights = r["nf4"] + r["bf16"] - r["adapters"]
        fp32_state = 2 * r["optimizer"]
        total_fp32 = r["before_step"] + r["optimizer"]
        lines.append(f"| {size.upper()} | {model:,} / {weights / MB:,.0f} MB | "
                     f"{adapters:,} / {r['adapters'] / MB:,.0f} MB | "
                     f"{optimizer:,} / {fp32_state / MB:,.0f} MB | {total:,} / {total_fp32 / MB:,.0f} MB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    results = {size: run(size) for size in args.only}
    text = tables(results)
    print(text)
    if args.write_docs:
        section = f"{SECTION}\n\n<!-- written by bench/qlora.py -->\n\n{INTRO}\n\n{text}\n"
        replace_section(ROOT / "docs" / "training.md", SECTION, section, new_page="", ends=("## ", "### "))


if __name__ == "__main__":
    main()
