"""Mixed precision: nncost's simulated peak against a real CPU step under ``torch.autocast``.

    /work/venv/bin/python bench/memory_precision.py                       # every case, prints a markdown table
    /work/venv/bin/python bench/memory_precision.py --cases "resnet18 b8 bf16-mixed adam"
    /work/venv/bin/python bench/memory_precision.py --diagnose "gpt2-2l b8 bf16-mixed adam"
    /work/venv/bin/python bench/memory_precision.py --lists     # CPU against CUDA autocast, op by op

Each case runs in a fresh process: ``nncost.memory(..., precision=P, allocator="cpu")`` beside
``measure_cpu_peak(..., precision=P)``, which runs forward and loss under
``torch.autocast("cpu", dtype)`` (fp16-mixed: with a ``torch.amp.GradScaler("cpu")``) and takes the
peak from the profiler's allocator events.

Besides the error, each row splits the measured peak: *kernel-internal* is what the measured step
held at its peak in allocations that one outermost ATen op call made and freed itself (workspaces,
reordered operands, a composite op's intermediates): what a dispatch-level simulation cannot see
without per-kernel rules.  *error without it* compares the simulation with the measured running sum
with those allocations left out.  The helpers that read the profiler's event tree are
``bench/memory.py``'s.

Case keys: ``"MODEL bN PRECISION OPTIMIZER"``; models: resnet18, resnet50 (3×224×224), resnet18-64
(3×64×64: CPU fp16 convolutions are slow), vit_b_16, gpt2-2l (``GPT2Config(n_layer=2)``) and gpt2
(GPT-2 small), both at 128 tokens, and bench/memory.py's lstm (128 tokens).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
MARK = "@@ROW"
MIB = 1 << 20
SEQ = 128
CASES = [
    "resnet18 b8 bf16-mixed adam",
    "resnet18 b16 bf16-mixed adam",
    "resnet18 b16 bf16-mixed sgd",
    "resnet18-64 b8 fp16-mixed adam",
    "resnet50 b8 bf16-mixed adam",
    "gpt2-2l b8 bf16-mixed adam",
    "gpt2-2l b8 bf16-mixed sgd",
    "gpt2 b4 bf16-mixed adam",
    "gpt2 b8 bf16-mixed sgd",
    "gpt2-2l b2 fp16-mixed adam",
    "vit_b_16 b8 bf16-mixed sgd",
    "lstm b16 bf16-mixed sgd",
]


def base() -> Any:
    """bench/memory.py, for its profiler event-tree helpers."""
    import memory

    return memory


def parse_case(key: str) -> tuple[str, int, str, str]:
    name, batch, precision, optimizer = key.split()
    return name, int(batch.removeprefix("b")), precision, optimizer


def build(name: str, batch: int) -> tuple[Any, tuple[Any, ...]]:
    import torch

    torch.manual_seed(0)
    if name.startswith("gpt2"):
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(n_layer=2) if name == "gpt2-2l" else GPT2Config()
        return GPT2LMHeadModel(config), (torch.zeros(batch, SEQ, dtype=torch.long),)
    if name == "lstm":  # bench/memory.py's: Embedding(8000, 256), LSTM(256, 512, 2 layers), Linear(512, 8000)
        model, args, _ = base().build("lstm", batch)
        return model, args
    import torchvision

    side = 64 if name.endswith("-64") else 224  # fp16 convolutions are slow on the CPU: a smaller image
    model = torchvision.models.get_model(name.removesuffix("-64"), weights=None)
    return model, (torch.empty(batch, 3, side, side, device="meta"),)


def measured_with_profile(model: Any, args: tuple[Any, ...], optimizer: str, precision: str) -> tuple[int, Any]:
    from nncost.simulation import measure

    captured: dict[str, Any] = {}
    original = measure.peak_of_events

    def spy(prof: Any) -> int:
        captured["prof"] = prof
        return int(original(prof))

    measure.peak_of_events = spy  # type: ignore[assignment]
    try:
        measured = measure.measure_cpu_peak(model, args, {}, mode="train", optimizer=optimizer, precision=precision)
    finally:
        measure.peak_of_events = original  # type: ignore[assignment]
    return measured, captured["prof"]


def kernel_internal(events: list[Any]) -> tuple[set[int], int, int]:
    """Indices of the events of allocations made and freed inside one outermost ATen op call; the measured
    running sum's peak without them, and the bytes of such allocations live at the full peak."""
    paired = base().events_inside_one_call(events)
    total = peak = visible_total = visible_peak = 0
    internal = internal_at_peak = 0
    for index, event in enumerate(events):
        size = event.extra_fields.alloc_size
        total += size
        if index in paired:
            internal += size
        else:
            visible_total += size
            visible_peak = max(visible_peak, visible_total)
        if total > peak:
            peak, internal_at_peak = total, internal
    return paired, visible_peak, internal_at_peak


def run_case(key: str) -> dict[str, Any]:
    import torch

    import nncost

    name, batch, precision, optimizer = parse_case(key)
    model, args = build(name, batch)
    start = time.perf_counter()
    report = nncost.memory(model, inputs=args, optimizer=optimizer, precision=precision, allocator="cpu", name=name)
    simulate_s = time.perf_counter() - start
    measured, prof = measured_with_profile(model, args, optimizer, precision)
    from nncost.simulation.measure import peak_of_events

    before = measured - peak_of_events(prof)  # parameters, buffers, optimizer state, inputs
    _, visible_peak, internal_at_peak = kernel_internal(base().allocations(prof))
    visible = before + visible_peak
    return {
        "case": key, "model": name, "batch": batch, "precision": precision, "optimizer": optimizer,
        "measured": measured, "simulated": report.peak_bytes,
        "error_pct": (report.peak_bytes - measured) / measured * 100,
        "internal_at_peak": internal_at_peak, "visible": visible,
        "visible_error_pct": (report.peak_bytes - visible) / visible * 100,
        "peak_phase": report.peak_phase, "peak_at": report.peak_at, "breakdown": report.breakdown,
        **base().measured_peak_site(prof),
        "simulate_s": simulate_s, "threads": torch.get_num_threads(),
    }


def diagnose(key: str, top: int) -> None:
    """What is live at each peak, grouped by the op that allocated it (measured and simulated)."""
    from nncost.analyses.memory import analyse_step
    from nncost.simulation.step import capture_step

    b = base()
    name, batch, precision, optimizer = parse_case(key)
    model, args = build(name, batch)
    trace = capture_step(model, args, {}, optimizer=optimizer, device="cpu", precision=precision)
    report = analyse_step(trace, model=name, allocator="cpu", optimizer=optimizer, batch_size=batch)
    measured, prof = measured_with_profile(model, args, optimizer, precision)
    events = b.allocations(prof)
    peak, at_peak, peak_event = b.live_at_peak(events)
    print(f"{key}: measured {b._mib(measured)} ({b._mib(measured - peak)} before the step); simulated "
          f"{b._mib(report.peak_bytes)} ({(report.peak_bytes - measured) / measured * 100:+.2f}%)")
    print(f"  simulated peak: {report.peak_phase}, {report.peak_at}; "
          + ", ".join(f"{k} {b._mib(v)}" for k, v in report.breakdown.items() if v))
    if peak_event is not None:
        print(f"  measured peak: {b._phase(b._root(peak_event).name)}, {b._site(peak_event)}")
    b.print_live_at_peaks(at_peak, trace, top)


def autocast_lists() -> list[str]:
    """The dtype CPU and CUDA autocast (bf16) give a few ops, probed on fake tensors of each device.

    CUDA autocast's kernels run on fake CUDA tensors without a GPU (only autograd's backward cannot),
    so the CUDA column is PyTorch's own CUDA lists as compiled into the installed torch.
    """
    import torch
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode

    def probe(device: str) -> dict[str, str]:
        found: dict[str, str] = {}
        with FakeTensorMode():
            x, w = torch.empty(4, 8, 16, device=device), torch.empty(16, 16, device=device)
            img, kernel = torch.empty(2, 4, 8, 8, device=device), torch.empty(4, 4, 3, 3, device=device)
            low, low_img = x.bfloat16(), img.bfloat16()
            labels = torch.zeros(8, dtype=torch.long, device=device)
            ops = {
                "linear": lambda: F.linear(x, w), "matmul": lambda: x @ w, "conv2d": lambda: F.conv2d(img, kernel),
                "scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(x, x, x),
                "softmax": lambda: torch.softmax(low, -1), "log_softmax": lambda: torch.log_softmax(low, -1),
                "layer_norm": lambda: F.layer_norm(low, (16,)), "group_norm": lambda: F.group_norm(low_img, 2),
                "batch_norm": lambda: F.batch_norm(low_img, torch.zeros(4, device=device),
                                                   torch.ones(4, device=device), training=True),
                "exp": low.exp, "pow": lambda: low.pow(2), "sum": low.sum, "cumsum": lambda: low.cumsum(0),
                "gelu": lambda: F.gelu(low), "max_pool2d": lambda: F.max_pool2d(low_img, 2),
                "interpolate (nearest)": lambda: F.interpolate(low_img, scale_factor=2),
                "mse_loss": lambda: F.mse_loss(low, low), "cross_entropy": lambda: F.cross_entropy(low[0], labels),
                "cat (bf16 with fp32)": lambda: torch.cat([low, x]),
            }
            if device == "cuda" and not torch.cuda.is_available():  # torch.autocast would disable itself
                torch.set_autocast_enabled("cuda", True)
                torch.set_autocast_dtype("cuda", torch.bfloat16)
                context: Any = None
            else:
                context = torch.autocast(device, dtype=torch.bfloat16)
                context.__enter__()
            try:
                for name, fn in ops.items():
                    found[name] = str(fn().dtype).removeprefix("torch.")
            finally:
                if context is not None:
                    context.__exit__(None, None, None)
                else:
                    torch.clear_autocast_cache()
                    torch.set_autocast_enabled("cuda", False)
        return found

    cpu, cuda = probe("cpu"), probe("cuda")
    lines = ["| op (input bf16 unless it is a matmul) | CPU autocast | CUDA autocast |", "|---|---|---|"]
    lines += [f"| {name} | {cpu[name]} | {cuda[name]}{' (differs)' if cpu[name] != cuda[name] else ''} |"
              for name in cpu]
    return lines


def run_subprocess(key: str, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               KINETO_LOG_LEVEL="5", PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", key]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"case": key, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            row: dict[str, Any] = json.loads(line[len(MARK) + 1:])
            row["wall_s"] = time.perf_counter() - start
            return row
    return {"case": key, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | batch | precision | optimizer | measured (MiB) | simulated (MiB) | error | "
             "kernel-internal at the measured peak (MiB) | error without it | simulated peak | measured peak |",
             "|---|--:|---|---|--:|--:|--:|--:|--:|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | | | | | | {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['precision']} | {r['optimizer']} | {r['measured'] / MIB:,.1f} | "
            f"{r['simulated'] / MIB:,.1f} | {r['error_pct']:+.2f}% | {r['internal_at_peak'] / MIB:,.1f} | "
            f"{r['visible_error_pct']:+.2f}% | {r['peak_phase']}, {r['peak_at']} | "
            f"{r['measured_phase']}, {r['measured_at']} |")
    done = [r for r in rows if "error" not in r]
    if done:
        errors = [abs(r["error_pct"]) for r in done]
        visible = [abs(r["visible_error_pct"]) for r in done]
        lines += ["", f"- Median |error|: **{statistics.median(errors):.2f}%**, max {max(errors):.2f}% "
                      f"({sum(e > 5 for e in errors)} of {len(errors)} over 5%, {sum(e > 2 for e in errors)} over 2%)",
                  f"- Without kernel-internal allocations: median |error| **{statistics.median(visible):.2f}%**, "
                  f"max {max(visible):.2f}%"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", metavar="CASE")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", metavar="CASE", help=argparse.SUPPRESS)
    ap.add_argument("--diagnose", metavar="CASE")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--lists", action="store_true", help="CPU against CUDA autocast dtypes, op by op")
    a = ap.parse_args(argv)
    if a.lists:
        print("\n".join(autocast_lists()))
        return 0
    if a.worker:
        print(MARK + " " + json.dumps(run_case(a.worker)), flush=True)
        return 0
    if a.diagnose:
        diagnose(a.diagnose, a.top)
        return 0
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    rows = []
    for key in a.cases or CASES:
        row = run_subprocess(key, a.timeout)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "breakdown"}), file=sys.stderr, flush=True)
    arguments = "".join(" " + json.dumps(x) for x in (argv or sys.argv[1:]))
    print(f"Run {started:%Y-%m-%d %H:%M} UTC, {time.perf_counter() - t0:.0f} s; "
          f"`/work/venv/bin/python bench/memory_precision.py{arguments}`\n")
    print("\n".join(table(rows)))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
