"""How long a layout search takes: Llama 3 70B's shape on 64 H100s, traced once, then the search.

    PYTHONPATH=src python bench/plan.py [--precision bf16-mixed] [--gpus 64]

Writes the config (hidden 8192, 80 layers, 64 heads, 8 key/value heads, MLP 28672, vocabulary
128256) to a temporary folder, then times each stage in this process: the imports, building the
model on meta, tracing one training step at the micro-batch (batch 1 of 4096 tokens, AdamW), cutting
it into pieces, and the search itself (arithmetic on those pieces: the goal is 1,000 layouts in
under 10 s).  Then the whole ``nncost ... --plan`` command, timed from outside in a fresh process,
its forward report included.  Prints the five best layouts and the reasons the others were left out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
          "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
          "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
SEQ, BATCH, GOAL_SECONDS = 4096, 1, 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--hardware", default="h100-sxm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(CONFIG))
        in_process(folder, args)
        whole_command(folder, args)


def in_process(folder: str, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    import torch

    from nncost.analyses.parallel import Cluster, plan, profile_step
    from nncost.analyses.training_run import ACHIEVABLE_MFU
    from nncost.hardware.catalogue import catalogue_device
    from nncost.precision import resolve_precision
    from nncost.render.parallel import render_plan
    from nncost.simulation.step import capture_step
    from nncost.sources.models import resolve

    imported = time.perf_counter()
    model = resolve(folder).build("meta")
    built = time.perf_counter()
    ids = torch.zeros((BATCH, SEQ), dtype=torch.long)
    trace = capture_step(model, (), {"input_ids": ids}, mode="train", optimizer="adamw", device="cuda",
                         precision=args.precision)
    traced = time.perf_counter()
    profile = profile_step(trace, model="llama-3-70b", allocator="cuda", optimizer="adamw", batch_size=BATCH,
                           seq=SEQ, precision=args.precision, heads=64, kv_heads=8)
    cut = time.perf_counter()
    device = catalogue_device(args.hardware)
    setting = resolve_precision(args.precision, None)
    matrix = setting.autocast_dtype or setting.param_dtype
    column = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(matrix, "fp32")
    cluster = Cluster(device.name, device.peak(column), ACHIEVABLE_MFU, device.bandwidth, device.interconnect,
                      device.interconnect_bandwidth, device.gpus_per_node, device.network, device.network_bandwidth)
    assert device.memory_bytes is not None
    found = plan(profile, cluster, gpus=args.gpus, budget=device.memory_bytes)
    searched = time.perf_counter()
    print(render_plan(found))
    print("| stage | seconds |")
    print("|---|---|")
    for stage, seconds in (("imports", imported - start), ("build on meta", built - imported),
                           (f"trace one step ({args.precision})", traced - built), ("cut into pieces", cut - traced),
                           (f"search {found.considered:,} layouts", searched - cut)):
        print(f"| {stage} | {seconds:.2f} |")
    verdict = "under" if searched - cut < GOAL_SECONDS else "OVER"
    print(f"\nsearch: {found.considered:,} layouts in {searched - cut:.2f} s ({verdict} the {GOAL_SECONDS:.0f} s "
          f"goal); {1e3 * (searched - cut) / max(found.considered, 1):.2f} ms a layout")


def whole_command(folder: str, args: argparse.Namespace) -> None:
    argv = [sys.executable, "-m", "nncost", folder, "--seq", str(SEQ), "--batch", str(BATCH), "--train",
            "--optimizer", "adamw", "--precision", args.precision, "--hardware", args.hardware, "--gpus",
            str(args.gpus), "--plan", "--depth", "0", "--format", "json"]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    found = json.loads(done.stdout)["plan"]
    print(f"whole command (fresh process, forward report included): {wall:.1f} s; "
          f"{found['fitting']:,} of {found['considered']:,} layouts fit")


if __name__ == "__main__":
    main()
