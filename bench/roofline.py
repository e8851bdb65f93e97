"""Roofline estimates against measured CPU latency, per leaf layer and in total.

    PYTHONPATH=src /work/venv/bin/python bench/roofline.py                 # prints the table
    PYTHONPATH=src /work/venv/bin/python bench/roofline.py --write-docs    # and writes it into docs/roofline.md
    PYTHONPATH=src /work/venv/bin/python bench/roofline.py --only resnet50
    PYTHONPATH=src /work/venv/bin/python bench/roofline.py --held-out --trials 3  # models not looked at
    PYTHONPATH=src /work/venv/bin/python bench/roofline.py --cli             # through the command line

For each model nncost profiles the forward on meta tensors with ``hardware="cpu"`` (the roofs
and per-family efficiencies calibrated on this machine by ``nncost.hardware.calibration``, at the
same thread count) and ``measure_time=True`` (the same model, random init, run for real: warm-up,
then the median of ``--repeats`` passes per module call, the forward being the model's own).
Goals (issue 5): the estimated forward within 30% of the measured one, and the estimate within
2× of the measurement for at least 80% of the leaf layers.  Leaf layers that run no operator
(Dropout and Identity in eval mode) have no estimate and are left out of the per-layer count
(they are listed).

Each model runs in its own process, ``--trials`` times (calibration and measurement each time);
the table shows the trial with the median total error, and the errors of all trials. The machine
may be shared: the load average is recorded before and after every model, and ``--threads``
(default 1) pins torch's intra-op threads, as OpenMP threads that wait on each other are what a
busy machine hurts most. The ``cpu`` is calibrated again just before each model
(``cpu_device(refresh=True)``), so that its roofs and the measurement see the same machine.

``--cli`` checks the path a user runs instead: each trial is one process of the command line,
``nncost MODEL --input 3x224x224 --hardware cpu --measure-time --format json`` (gpt2:
``nncost hf:gpt2 --seq 128 ...``), with a fresh ``NNCOST_CACHE_DIR``, so every trial calibrates
the ``cpu`` anew, and ``OMP_NUM_THREADS`` set to ``--threads``; the figures are read from its
JSON document.  It runs ``--trials`` (default 3) per model and its table gives every trial: the
spread across calibrations (the estimate and the total error, min and max over the trials), the
spread of the measurement (the measured forward, min and max), the leaves within 2× of each
trial, and whether the goals held in every trial, naming the misses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nncost.hardware.calibration import cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK = "@@RESULT@@"
MODELS = ("resnet50", "mobilenet_v3_large", "vit_b_16", "gpt2")
# Models the roofline's structure was not shaped on: run with --held-out, a table of their own.
HELD_OUT = ("resnet18", "efficientnet_b0", "convnext_tiny", "densenet121", "swin_t")


def markers(held_out: bool, cli: bool = False) -> tuple[str, str]:
    tag = "bench/roofline.py" + (" --cli" if cli else "") + (" --held-out" if held_out else "")
    return f"<!-- {tag}: start -->", f"<!-- {tag}: end -->"


GOALS = {"total": 0.30, "layer_factor": 2.0, "layer_share": 0.80}


def build(name: str, batch: int, seq: int) -> tuple[Any, dict[str, Any]]:
    import torch

    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(GPT2Config())
        return model, {"kwargs": {"input_ids": torch.zeros((batch, seq), dtype=torch.long)}}
    import torchvision

    return torchvision.models.get_model(name, weights=None), {"input_size": (3, 224, 224), "batch_size": batch}


def worker(name: str, batch: int, seq: int, repeats: int, threads: int) -> dict[str, Any]:
    import torch

    import nncost
    from nncost.hardware.calibration import cpu_device

    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    # calibrated just before this model, under the same load
    cpu = cpu_device(refresh=True, say=lambda message: print(message, file=sys.stderr, flush=True))
    model, inputs = build(name, batch, seq)
    report = nncost.profile(model, name=name, hardware="cpu", measure_time=True, repeats=repeats, **inputs)
    leaves, silent = [], []
    for layer in report.layers:
        if not layer.is_leaf or layer.measured_seconds is None:
            continue
        if not layer.self_ops:
            silent.append(layer.type)
            continue
        leaves.append({"name": layer.name, "type": layer.type, "estimated": layer.estimated_seconds,
                       "measured": layer.measured_seconds, "bound": layer.bound})
    return {
        "model": name, "batch": batch, "seq": seq if name == "gpt2" else None,
        "estimated": report.totals.estimated_seconds, "measured": report.totals.measured_seconds,
        "flops": report.totals.flops, "mfu": report.roofline.mfu if report.roofline else None,
        "hooked_root": report.layers[0].measured_seconds,
        "leaves": leaves, "silent_leaves": sorted(set(silent)), "silent_count": len(silent),
        "load_before": load_before, "load_after": os.getloadavg(),
        "cpu": {"peak_flops": cpu.peak_flops, "bandwidth": cpu.bandwidth, "family_efficiency": cpu.family_efficiency,
                "bandwidth_curve": cpu.bandwidth_curve, "family_overhead_seconds": cpu.family_overhead_seconds,
                "module_call_seconds": cpu.module_call_seconds, "title": cpu.title},
    }


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, __file__, "--worker", name, "--batch", str(args.batch), "--seq", str(args.seq),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(out.stderr)  # the calibration's messages and warnings
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK):])
            return result
    raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")


def cli_command(name: str, batch: int, seq: int, repeats: int) -> list[str]:
    """The command line a user types for ``name``, less the program: ``nncost`` ARGS."""
    model = ["hf:gpt2", "--seq", str(seq)] if name == "gpt2" else [name, "--input", "3x224x224"]
    return [*model, *(["--batch", str(batch)] if batch != 1 else []), "--hardware", "cpu", "--measure-time",
            *(["--repeats", str(repeats)] if repeats != 10 else []), "--format", "json"]


def cli_trial(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One trial through the command line: a process of ``python -m nncost`` (what the ``nncost``
    script runs) with a cache directory of its own, so that it calibrates the ``cpu`` itself."""
    command = cli_command(name, args.batch, args.seq, args.repeats)
    with tempfile.TemporaryDirectory(prefix="nncost-cache-") as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NNCOST_CACHE_DIR=cache,
                   OMP_NUM_THREADS=str(args.threads))
        load_before = os.getloadavg()
        out = subprocess.run([sys.executable, "-m", "nncost", *command], env=env, cwd=cache, capture_output=True,
                             text=True, check=False)
        load_after = os.getloadavg()
    sys.stderr.write(out.stderr)  # the calibration's messages and warnings
    if out.returncode != 0:
        raise RuntimeError(f"nncost {' '.join(command)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return from_document(name, json.loads(out.stdout), args.batch, args.seq, load_before, load_after)


def from_document(name: str, doc: dict[str, Any], batch: int, seq: int, load_before: tuple[float, ...],
                  load_after: tuple[float, ...]) -> dict[str, Any]:
    """A trial's figures from the command line's JSON document, in the shape ``worker`` returns.
    A leaf that moved no bytes ran no operator (Dropout, Identity in eval mode): left out."""
    leaves, silent = [], []
    for layer in doc["layers"]:
        if not layer["is_leaf"] or layer["measured_seconds"] is None:
            continue
        if layer["read_bytes"] + layer["write_bytes"] == 0:
            silent.append(layer["type"])
            continue
        leaves.append({"name": layer["name"], "type": layer["type"], "estimated": layer["estimated_seconds"],
                       "measured": layer["measured_seconds"], "bound": layer["bound"]})
    roofline = doc["roofline"]
    totals = doc["totals"]
    return {
        "model": name, "batch": batch, "seq": seq if name == "gpt2" else None,
        "estimated": totals["estimated_seconds"], "measured": totals["measured_seconds"],
        "flops": totals["flops"], "mfu": roofline["mfu"],
        "leaves": leaves, "silent_leaves": sorted(set(silent)), "silent_count": len(silent),
        "load_before": list(load_before), "load_after": list(load_after),
        "cpu": {"peak_flops": roofline["family_peak_flops"], "bandwidth_curve": roofline["bandwidth_curve"],
                "family_efficiency": roofline["family_efficiency"],
                "family_overhead_seconds": roofline["family_overhead_seconds"],
                "module_call_seconds": roofline["module_call_seconds"]},
    }


def total_error(result: dict[str, Any]) -> float:
    return float((result["estimated"] - result["measured"]) / result["measured"])


def trial_goals(result: dict[str, Any]) -> tuple[bool, bool]:
    """Whether one trial met each goal: its total within 30%, 80% of its leaves within 2×."""
    within, count, _ = ratio_stats(result["leaves"])
    return abs(total_error(result)) <= GOALS["total"], bool(count) and within / count >= GOALS["layer_share"]


def span(values: list[float], scale: float, digits: int, unit: str = "") -> str:
    low, high = min(values) * scale, max(values) * scale
    return f"{low:.{digits}f}{unit}" if low == high else f"{low:.{digits}f}–{high:.{digits}f}{unit}"


def cli_table(models: list[list[dict[str, Any]]], args: argparse.Namespace, command: str) -> str:
    """The table of ``--cli``: each model's trials, in the order they ran."""
    start, end = markers(args.held_out, cli=True)
    trials = [t for model in models for t in model]
    fp32 = [t["cpu"]["peak_flops"].get("matmul", 0.0) for t in trials]
    largest = [t["cpu"]["bandwidth_curve"][-1][1] for t in trials]
    lines = [
        start,
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; CPU: {cpu_model()} "
        f"({os.cpu_count()} cores, shared with other jobs); `OMP_NUM_THREADS={args.threads}`, "
        f"Python {platform.python_version()}.  ",
        f"Each trial: `nncost {' '.join(cli_command('MODEL', args.batch, args.seq, args.repeats))}` in a process "
        "of its own with an empty `NNCOST_CACHE_DIR`, so each trial calibrated the cpu anew: "
        f"{len(trials)} calibration{'s' if len(trials) != 1 else ''}, "
        f"fp32 matrix peak {span(fp32, 1e-9, 0)} GFLOP/s, copy bandwidth at "
        f"{trials[0]['cpu']['bandwidth_curve'][-1][0] >> 20} MiB {span(largest, 1e-9, 1)} GB/s.",
        "",
        "| model | batch | measured forward, min–max | estimated, min–max | error of each trial | error min / max "
        "| leaves within 2×, each trial | MFU, min–max | load avg (1 min) |",
        "|---|---:|---:|---:|---|---:|---|---:|---|",
    ]
    misses: list[str] = []
    missed: set[tuple[str, int]] = set()
    for model in models:
        first = model[0]
        shape = f"{first['batch']}×{first['seq']} tokens" if first["seq"] else str(first["batch"])
        errors, shares = [], []
        for number, trial in enumerate(model, 1):
            total_ok, leaves_ok = trial_goals(trial)
            within, count, _ = ratio_stats(trial["leaves"])
            errors.append(f"{100 * total_error(trial):+.0f}% {'✓' if total_ok else '✗'}")
            shares.append(f"{100 * within / max(count, 1):.0f}% {'✓' if leaves_ok else '✗'}")
            if not (total_ok and leaves_ok):
                missed.add((trial["model"], number))
            if not total_ok:
                misses.append(f"{trial['model']} trial {number}: total {100 * total_error(trial):+.0f}%")
            if not leaves_ok:
                misses.append(f"{trial['model']} trial {number}: {within}/{count} leaves within 2×")
        error_values = [total_error(t) for t in model]
        loads = [t["load_before"][0] for t in model] + [t["load_after"][0] for t in model]
        lines.append(
            f"| {first['model']} | {shape} | {span([t['measured'] for t in model], 1e3, 1, ' ms')} | "
            f"{span([t['estimated'] for t in model], 1e3, 1, ' ms')} | {', '.join(errors)} | "
            f"{100 * min(error_values):+.0f}% / {100 * max(error_values):+.0f}% | {', '.join(shares)} | "
            f"{span([100 * (t['mfu'] or 0) for t in model], 1, 1, '%')} | {span(loads, 1, 2)} |")
    lines += ["", "Goals (total within 30%, at least 80% of the leaves within 2×) met in every trial: "
                  + ("yes." if not misses else f"no; {len(trials) - len(missed)} of {len(trials)} trials met both. "
                     "Misses: "
                     + "; ".join(misses) + ".")]
    medians = [sorted(model, key=total_error)[len(model) // 2] for model in models]
    lines += leaf_types(medians, trials, "each model's median trial")
    return "\n".join([*lines, end])


def write_docs(text: str, start: str, end: str) -> None:
    """``text`` into docs/roofline.md, between its markers (at the end when it has none)."""
    doc = ROOT / "docs" / "roofline.md"
    current = doc.read_text() if doc.exists() else ""
    if start in current and end in current:
        current = current[: current.index(start)] + text + current[current.index(end) + len(end):]
    else:
        current += "\n" + text + "\n"
    doc.write_text(current)


def ratio_stats(leaves: list[dict[str, Any]]) -> tuple[int, int, float]:
    within = sum(1 for leaf in leaves
                 if leaf["measured"] > 0 and 1 / GOALS["layer_factor"] <= leaf["estimated"] / leaf["measured"]
                 <= GOALS["layer_factor"])
    ratios = sorted(leaf["estimated"] / leaf["measured"] for leaf in leaves if leaf["measured"] > 0)
    median = ratios[len(ratios) // 2] if ratios else float("nan")
    return within, len(leaves), median


def by_type(leaves: list[dict[str, Any]]) -> dict[str, tuple[int, int, float, float]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for leaf in leaves:
        groups.setdefault(leaf["type"], []).append(leaf)
    summary = {}
    for kind, items in groups.items():
        within, count, median = ratio_stats(items)
        summary[kind] = (within, count, median, sum(i["measured"] for i in items))
    return summary


def leaf_types(results: list[dict[str, Any]], every: list[dict[str, Any]], which: str) -> list[str]:
    """The per-leaf-type table of ``results`` (``which`` says whose leaves), and the leaf types of
    ``every`` result that ran no operator."""
    lines = ["", f"Per leaf type ({which}): leaves within 2×, median estimated/measured, measured time.", "",
             "| leaf type | within 2× | median est./meas. | measured |", "|---|---:|---:|---:|"]
    merged = by_type([leaf for r in results for leaf in r["leaves"]])
    for kind, (within, count, median, seconds) in sorted(merged.items(), key=lambda kv: -kv[1][3]):
        lines.append(f"| {kind} | {within}/{count} | {median:.2f} | {seconds * 1e3:.1f} ms |")
    silent = sorted({t for r in every for t in r["silent_leaves"]})
    lines += ["", f"Leaves with no operator, left out: {', '.join(silent) or 'none'}."]
    return lines


def table(results: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    cpu = results[0]["cpu"]
    start, end = markers(args.held_out)
    lines = [
        start,
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {cpu['title']}, "
        f"{os.cpu_count()} cores (shared with other jobs), torch threads {args.threads}, "
        f"Python {platform.python_version()}.  ",
        "Calibration of the first row's median trial (`nncost.hardware.calibration.cpu_device()`): "
        f"fp32 {cpu['peak_flops']['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {cpu['peak_flops']['bf16'] / 1e9:.0f}, fp16 {cpu['peak_flops']['fp16'] / 1e9:.0f}; "
        "copy bandwidth by working set " + ", ".join(f"{ws >> 10} KiB {bw / 1e9:.0f}"
                                                      for ws, bw in cpu["bandwidth_curve"]) + " GB/s; "
        f"module call {cpu['module_call_seconds'] * 1e6:.1f} µs; family efficiency (fixed cost per call): "
        + ", ".join(f"{k} {v:.2f} ({cpu['family_overhead_seconds'].get(k, 0) * 1e6:.1f} µs)"
                    for k, v in cpu["family_efficiency"].items()) + ".",
        "",
        "| model | batch | measured forward | estimated | error | errors of all trials | leaves within 2× | "
        "median est./meas. | MFU | load avg (1 min) before → after |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        within, count, median = ratio_stats(r["leaves"])
        error = (r["estimated"] - r["measured"]) / r["measured"]
        shape = f"{r['batch']}×{r['seq']} tokens" if r["seq"] else str(r["batch"])
        total_ok = "✓" if abs(error) <= GOALS["total"] else "✗"
        layer_ok = "✓" if count and within / count >= GOALS["layer_share"] else "✗"
        lines.append(
            f"| {r['model']} | {shape} | {r['measured'] * 1e3:.1f} ms | {r['estimated'] * 1e3:.1f} ms | "
            f"{100 * error:+.1f}% {total_ok} | {', '.join(f'{100 * e:+.0f}%' for e in r.get('errors', [error]))} | "
            f"{within}/{count} ({100 * within / max(count, 1):.0f}%) {layer_ok} | "
            f"{median:.2f} | {100 * (r['mfu'] or 0):.1f}% | {r['load_before'][0]:.2f} → {r['load_after'][0]:.2f} |")
    lines += leaf_types(results, results, "all these models")
    return "\n".join([*lines, end])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--held-out", action="store_true",
                        help=f"run the held-out models ({', '.join(HELD_OUT)}) into their own table")
    parser.add_argument("--cli", action="store_true",
                        help="each trial runs the command line as a user does, calibrating in a fresh cache")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, default=None,
                        help="runs per model (default 1, with --cli 3); the in-process table shows the median one")
    parser.add_argument("--write-docs", action="store_true", help="also write the table into docs/roofline.md")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    if args.worker:
        print(MARK + json.dumps(worker(args.worker, args.batch, args.seq, args.repeats, args.threads)))
        return
    trials_per_model = args.trials or (3 if args.cli else 1)
    models: list[list[dict[str, Any]]] = []
    for name in args.only or (HELD_OUT if args.held_out else MODELS):
        trials = []
        for _ in range(trials_per_model):
            result = cli_trial(name, args) if args.cli else run_case(name, args)
            within, count, _ = ratio_stats(result["leaves"])
            print(f"{name}: measured {result['measured'] * 1e3:.1f} ms, estimated {result['estimated'] * 1e3:.1f} ms, "
                  f"{within}/{count} leaves within 2x, load {result['load_before'][0]:.2f}", flush=True)
            trials.append(result)
        models.append(trials)
    command = "PYTHONPATH=src python bench/roofline.py " + " ".join(a for a in sys.argv[1:] if a != "--write-docs")
    if args.cli:
        text = cli_table(models, args, command.strip())
        results: list[Any] = models
    else:
        results = []
        for trials in models:
            ordered = sorted(trials, key=total_error)
            middle = dict(ordered[len(ordered) // 2])  # the trial with the median total error
            middle["errors"] = [total_error(r) for r in ordered]
            results.append(middle)
        text = table(results, args, command.strip())
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.write_docs:
        write_docs(text, *markers(args.held_out, cli=args.cli))


if __name__ == "__main__":
    main()
