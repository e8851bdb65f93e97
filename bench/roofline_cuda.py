"""Roofline estimates against CUDA kernel times and latency: every GPU row of issue 14 in one invocation.

    PYTHONPATH=src python bench/roofline_cuda.py                 # prints the table
    PYTHONPATH=src python bench/roofline_cuda.py --write-docs    # and writes docs/roofline_cuda.md
    PYTHONPATH=src python bench/roofline_cuda.py --only resnet50 --precisions bf16 --batches 64

Rows: resnet50, vit_b_16 and gpt2 (``GPT2LMHeadModel(GPT2Config())``, 512 tokens a sequence), each
in fp32 with TF32 on (``torch.set_float32_matmul_precision("high")``, ``cudnn.allow_tf32``) and in
bf16, at batch 1 and 64.  Each model is built on the CPU with random init;
``nncost.profile(..., hardware=<this GPU's catalogue name>, precision=P, measure_time=True)``
profiles it on meta tensors, then times it on the GPU with CUDA events (warm-up, then the median of
``--repeats`` passes per module call; ``cudnn.benchmark`` off).  Then one more pass runs under
``torch.profiler`` with every leaf module's calls in a range of its own: a leaf's **kernel time** is
the summed duration of the kernels launched inside it, the device's own time without the host's
launch gaps, which is what a roofline models.

Goals (issue 14): totals within 30% and at least 80% of the leaf layers within 2× of their kernel
times, under an efficiency factor.  The table gives, per row, the efficiency that explains the row
(estimated at the datasheet's roofs ÷ kernel time), the error under one factor shared by all rows
(the geometric mean) and under the factor of the other rows only (so that a row is not judged on a
factor fitted to it), the leaves within 2×, and the CUDA-event forward beside the kernels' sum (at
batch 1 the launches, not the kernels, set the wall time).  Per leaf type, the fraction of the
datasheet roof reached; a type far under 1 at batch 64 is where the roof is unreachable.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _profiler import leaf_ranges, profiled, range_seconds  # noqa: E402
from roofline import GOALS, by_type, ratio_stats  # noqa: E402  (bench/roofline.py, the CPU bench)

MODELS = ("resnet50", "vit_b_16", "gpt2")
PRECISIONS = ("fp32", "bf16")
BATCHES = (1, 64)
SEQ = 512  # gpt2's tokens a sequence


def build(name: str, batch: int) -> tuple[Any, dict[str, Any]]:
    import torch

    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        return GPT2LMHeadModel(GPT2Config()), {"kwargs": {"input_ids": torch.zeros((batch, SEQ), dtype=torch.long)}}
    import torchvision

    return torchvision.models.get_model(name, weights=None), {"input_size": (3, 224, 224), "batch_size": batch}


@contextmanager
def tf32(on: bool) -> Any:
    """fp32 rows run with TF32 convolutions and matrix products (what the estimate is told through the
    request's torch flags); the settings are restored afterwards."""
    import torch

    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    if on:
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def leaf_kernel_seconds(model: Any, inputs: dict[str, Any], precision: str, device: str,
                        passes: int = 3) -> dict[str, float]:
    """Each leaf module's kernel time in one forward (the mean over ``passes`` profiled passes, after a warm-up),
    on a copy of ``model`` in the precision's dtype."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    replica = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if "kwargs" in inputs:
        args: tuple[Any, ...] = ()
        kwargs = {k: v.to(device) for k, v in inputs["kwargs"].items()}
    else:
        args = (torch.randn(inputs["batch_size"], *inputs["input_size"], device=device, dtype=dtype),)
        kwargs = {}

    def forward() -> None:
        with torch.no_grad():
            for _ in range(passes):
                replica(*args, **kwargs)

    forward()
    with leaf_ranges(replica):
        seconds = range_seconds(profiled(forward, device), device)
    return {name: total / passes for name, total in seconds.items()}


def measure(name: str, precision: str, batch: int, hardware: str, repeats: int, device: str = "cuda") -> dict[str, Any]:
    import nncost

    model, inputs = build(name, batch)
    start = time.perf_counter()
    with tf32(precision == "fp32"):
        report = nncost.profile(model, name=name, hardware=hardware, precision=precision, measure_time=True,
                                repeats=repeats, **inputs)
        kernels = leaf_kernel_seconds(model, inputs, precision, device)
    leaves = [{"name": layer.name, "type": layer.type, "estimated": layer.estimated_seconds,
               "measured": kernels.get(layer.name, 0.0), "event": layer.measured_seconds, "bound": layer.bound}
              for layer in report.layers if layer.is_leaf and layer.self_ops and layer.estimated_seconds]
    assert report.roofline is not None and report.totals.estimated_seconds is not None
    return {"model": name, "precision": precision, "batch": batch, "seq": SEQ if name == "gpt2" else None,
            "estimated": report.totals.estimated_seconds, "kernels": sum(kernels.values()),
            "forward": report.totals.measured_seconds, "mfu": report.roofline.mfu, "leaves": leaves,
            "flops": report.totals.flops, "seconds": time.perf_counter() - start}


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def table(results: list[dict[str, Any]], gpu: str, hardware: str, command: str, versions: str) -> str:
    ratios = [r["estimated"] / r["kernels"] for r in results]  # at the datasheet's roofs: below 1
    factor = geometric_mean(ratios)
    lines = [
        "# Roofline on CUDA",
        "",
        "Estimated (roofline) against the kernels' time on the GPU, per row and per leaf layer; see "
        "[roofline.md](roofline.md) for the model and `bench/roofline_cuda.py` for the method.",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; GPU: {gpu} (catalogue `{hardware}`); "
        f"{versions}.",
        "",
        f"One efficiency factor for all rows (geometric mean of estimated/kernels at the datasheet's roofs): "
        f"**{factor:.3f}**.",
        "",
        "| model | precision | batch | kernels | forward (CUDA events) | estimated at 1.0 | efficiency explaining "
        "the row | error at the shared factor | error at the other rows' factor | leaves within 2× (shared "
        "factor) | MFU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(results):
        others = [x for j, x in enumerate(ratios) if j != i]
        held_out = geometric_mean(others) if others else factor
        error = (r["estimated"] / factor - r["kernels"]) / r["kernels"]
        held_error = (r["estimated"] / held_out - r["kernels"]) / r["kernels"]
        scaled = [dict(leaf, estimated=leaf["estimated"] / factor) for leaf in r["leaves"]]
        within, count, _ = ratio_stats(scaled)
        shape = f"{r['batch']}×{r['seq']} tokens" if r["seq"] else str(r["batch"])
        total_ok = "✓" if abs(error) <= GOALS["total"] else "✗"
        layer_ok = "✓" if count and within / count >= GOALS["layer_share"] else "✗"
        precision = "fp32 (TF32)" if r["precision"] == "fp32" else r["precision"]
        forward = f"{r['forward'] * 1e3:.3f} ms" if r["forward"] else "–"
        lines.append(f"| {r['model']} | {precision} | {shape} | {r['kernels'] * 1e3:.3f} ms | {forward} | "
                     f"{r['estimated'] * 1e3:.3f} ms | {ratios[i]:.3f} | {100 * error:+.1f}% {total_ok} | "
                     f"{100 * held_error:+.1f}% | {within}/{count} {layer_ok} | {100 * (r['mfu'] or 0):.1f}% |")
    lines += ["", "Per leaf type and precision: the fraction of the datasheet roof reached (Σ estimated at 1.0 ÷ "
              "Σ kernel time) at batch 1 and at the largest batch, and the leaves within 2× at the shared factor.",
              "", "| leaf type | precision | roof reached, batch 1 | roof reached, largest batch | within 2× | "
              "kernel time |", "|---|---|---:|---:|---:|---:|"]
    smallest, largest = min(r["batch"] for r in results), max(r["batch"] for r in results)
    for precision in sorted({r["precision"] for r in results}):
        rows = [r for r in results if r["precision"] == precision]
        merged = by_type([dict(leaf, estimated=leaf["estimated"] / factor) for r in rows for leaf in r["leaves"]])

        def reached(kind: str, batch: int, rows: list[dict[str, Any]] = rows) -> str:
            leaves = [leaf for r in rows if r["batch"] == batch for leaf in r["leaves"] if leaf["type"] == kind]
            measured = sum(leaf["measured"] for leaf in leaves)
            return f"{sum(leaf['estimated'] for leaf in leaves) / measured:.2f}" if measured else "–"

        for kind, (within, count, _median, seconds) in sorted(merged.items(), key=lambda kv: -kv[1][3]):
            lines.append(f"| {kind} | {precision} | {reached(kind, smallest)} | {reached(kind, largest)} | "
                         f"{within}/{count} | {seconds * 1e3:.3f} ms |")
    lines.append("")
    return "\n".join(lines)


def versions() -> str:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}"


def main() -> None:
    import torch

    from nncost.hardware.catalogue import match_cuda_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--precisions", nargs="*", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--batches", nargs="*", type=int, default=list(BATCHES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--hardware", help="catalogue name (default: matched from the GPU's name)")
    parser.add_argument("--write-docs", action="store_true", help="also write the table to docs/roofline_cuda.md")
    parser.add_argument("--json", type=Path, help="also write every row and leaf to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/roofline_cuda.py needs a CUDA GPU")
    torch.backends.cudnn.benchmark = False
    gpu = torch.cuda.get_device_name()
    hardware = args.hardware or match_cuda_name(gpu)
    if hardware is None:
        sys.exit(f"{gpu} is not in the catalogue; pass --hardware NAME")
    results = []
    for name in args.only:
        for precision in args.precisions:
            for batch in args.batches:
                result = measure(name, precision, batch, hardware, args.repeats)
                print(f"{name} {precision} b{batch}: kernels {result['kernels'] * 1e3:.3f} ms, forward "
                      f"{(result['forward'] or 0) * 1e3:.3f} ms, estimated {result['estimated'] * 1e3:.3f} ms "
                      f"({result['seconds']:.0f} s)", flush=True)
                results.append(result)
    command = "PYTHONPATH=src python bench/roofline_cuda.py " + " ".join(a for a in sys.argv[1:] if a != "--write-docs")
    text = table(results, gpu, hardware, command.strip(), versions())
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "hardware": hardware, "versions": versions(), "rows": results},
                                        indent=1))
    if args.write_docs:
        (ROOT / "docs" / "roofline_cuda.md").write_text(text)


if __name__ == "__main__":
    main()
