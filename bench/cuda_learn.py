"""What a device's kernels hold and save in a training step: the facts the CUDA simulator still lacks.

    PYTHONPATH=src python bench/cuda_learn.py                    # every row of bench/memory_cuda.py, on CUDA
    PYTHONPATH=src python bench/cuda_learn.py --device cpu --rows "lstm b32 seq64"   # the same on the CPU

docs/memory_cuda.md names three gaps between the simulated and the measured CUDA peaks that only a GPU
can explain: the CNNs' constant 88–116 MB (kernel workspaces taken from the caching allocator), the
transformers' attention (which fused kernel runs, and what it saves for backward) and cuDNN's LSTM
(its reserve buffer).  For each row of ``bench/memory_cuda.py`` this script runs one warm-up step and
one profiled step (``torch.profiler``, ``profile_memory=True``, ``record_shapes=True``; the step of
``nncost.simulation.measure``, so the same set-up as ``--measure``) and prints:

1. the allocations on the device that one outermost ATen op call made and freed itself (workspaces),
   by op: how many calls, the largest call's high point and its input shapes;
2. what attention and recurrent ops left allocated after their call (what they save for backward),
   with the shapes of their inputs;
3. the device kernels that ran for attention, recurrent, convolution and matrix ops (CUDA only), by
   name and count;
4. the measured peak (``max_memory_allocated`` on CUDA, the allocator events' running sum on the CPU)
   beside ``nncost.memory(..., allocator=device)``.

It runs on the CPU too, which is how it was tested without a GPU (the CPU's answers are already rules in
``src/nncost/rules/kernel_memory/cpu.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nncost
from memory import _mib, _outer_op, _shapes_of, _short, allocations, events_inside_one_call, workspaces_by_op
from memory_cuda import rows
from nncost.precision import resolve_precision
from nncost.simulation.measure import _prepared, _step

SAVING_OPS = ("attention", "rnn", "lstm")  # ops whose kept outputs are what fused kernels save for backward
KERNEL_WORDS = ("attn", "attention", "fmha", "flash", "sdpa", "rnn", "lstm", "conv", "gemm", "cudnn", "cutlass")


def profiled_step(model: torch.nn.Module, spec: dict[str, Any], optimizer: str,
                  device: torch.device) -> tuple[Any, int | None]:
    """The profile of one steady-state training step (after a warm-up step) on ``device``, and on CUDA
    ``max_memory_allocated`` over it."""
    if "kwargs" in spec:
        args: tuple[Any, ...] = ()
        kwargs = spec["kwargs"]
    else:
        args, kwargs = (torch.randn(spec["batch_size"], *spec["input_size"]),), {}
    setting = resolve_precision("fp32")
    replica, real_args, real_kwargs, opt, scaler = _prepared(model, args, kwargs, device, True, optimizer, setting)
    _step(replica, real_args, real_kwargs, opt, True, None, scaler, device.type)  # creates the optimizer state
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=True) as prof:
        _step(replica, real_args, real_kwargs, opt, True, None, scaler, device.type)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return prof, int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None


def workspaces(events: list[Any], top: int) -> None:
    by_op = workspaces_by_op(events)
    print("  1. allocated and freed inside one op call (workspaces), by outermost op:")
    for op, (count, high, shapes) in sorted(by_op.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"     {_mib(high):>14}  {op} ×{count} (largest call: {shapes})")
    if not by_op:
        print("     none")


def saved(events: list[Any], top: int) -> None:
    """Allocations made inside an attention or recurrent op call and still live when the call ended."""
    freed_in_call = events_inside_one_call(events)
    kept: dict[str, list[Any]] = defaultdict(lambda: [0, 0, ""])
    for index, event in enumerate(events):
        outer = _outer_op(event)
        if (event.extra_fields.alloc_size > 0 and index not in freed_in_call and outer is not None
                and any(word in outer.name.lower() for word in SAVING_OPS)):
            entry = kept[f"{_short(outer)} → {_short(event.parent)}"]
            entry[0] += 1
            entry[1] += event.extra_fields.alloc_size
            entry[2] = _shapes_of(outer)
    print("  2. left allocated by attention and recurrent op calls (outputs and what backward keeps):")
    for site, (count, nbytes, shapes) in sorted(kept.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"     {_mib(nbytes):>14}  {site} ×{count} (inputs: {shapes})")
    if not kept:
        print("     none")


def kernels(prof: Any, top: int) -> None:
    names: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and any(w in event.name.lower() for w in KERNEL_WORDS):
            names[event.name] += 1
    print("  3. device kernels for attention, recurrent, convolution and matrix ops:")
    for name, count in sorted(names.items(), key=lambda kv: -kv[1])[:top]:
        print(f"     ×{count:<4} {name[:150]}")
    if not names:
        print("     none (no CUDA activity)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--rows", nargs="*", help="labels of bench/memory_cuda.py's rows (default: all)")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu to run the same on the CPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = False
    selected = [row for row in rows() if not args.rows or row[0] in args.rows]
    if args.rows and len(selected) != len(args.rows):
        known = ", ".join(row[0] for row in rows())
        print(f"unknown row among {args.rows}; known: {known}", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    for label, build, spec, optimizer in selected:
        torch.manual_seed(0)
        model = build()
        simulated = nncost.memory(model, optimizer=optimizer, allocator=device.type, **spec)
        prof, measured = profiled_step(model, spec, optimizer, device)
        events = [e for e in allocations(prof) if e.extra_fields.device.type == device.type]
        print(f"\n{label} ({optimizer}): simulated peak {_mib(simulated.peak_bytes)} at {simulated.peak_phase}, "
              f"{simulated.peak_at}" + (f"; measured max_memory_allocated {_mib(measured)}" if measured else ""))
        workspaces(events, args.top)
        saved(events, args.top)
        kernels(prof, args.top)
        del model, prof
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
