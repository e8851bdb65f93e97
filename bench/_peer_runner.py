"""One (tool, case) measurement, run in a fresh process by ``bench/peers.py``.

    python bench/_peer_runner.py TOOL CASE [--repeats N] [--min-repeats M] [--budget SECONDS]

Imports the tool, builds the model (random weights, nothing downloaded) and its example inputs,
then times the tool's own call: one first call (the warm-up), then up to ``--repeats`` more,
stopping early once ``--min-repeats`` are done and ``--budget`` seconds have been spent.
Imports, model build and input construction are outside every timing.  The last line printed
is ``@@RESULT@@ {json}``; a tool that raises still prints one, with ``error`` set.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import resource
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

MARK = "@@RESULT@@"

# case name -> how to build it
CASES: dict[str, dict[str, Any]] = {
    "resnet50@224 b1": {"kind": "vision", "arch": "resnet50", "batch": 1},
    "resnet50@224 b64": {"kind": "vision", "arch": "resnet50", "batch": 64},
    "vit_b_16@224 b1": {"kind": "vision", "arch": "vit_b_16", "batch": 1},
    "gpt2 1024 tok b1": {"kind": "gpt2", "tokens": 1024, "batch": 1},
}

# tool name -> the distribution whose version is reported
TOOLS: dict[str, str] = {
    "nncost": "nncost",
    "thop": "thop",
    "ptflops": "ptflops",
    "ptflops[aten]": "ptflops",
    "fvcore": "fvcore",
    "torchinfo": "torchinfo",
    "calflops": "calflops",
    "FlopCounterMode": "torch",
}


@dataclass
class Example:
    """The inputs of one case, built once, outside the timings."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    size: tuple[int, ...]  # per-sample input size (no batch dimension)
    batch: int
    notes: list[str] = field(default_factory=list)


def build_case(name: str) -> tuple[Any, Example]:
    import torch

    spec = CASES[name]
    torch.manual_seed(0)
    if spec["kind"] == "vision":
        import torchvision

        model = getattr(torchvision.models, spec["arch"])(weights=None)
        x = torch.randn(spec["batch"], 3, 224, 224)
        example = Example(args=(x,), kwargs={}, size=(3, 224, 224), batch=spec["batch"])
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(GPT2Config())
        ids = torch.randint(0, model.config.vocab_size, (spec["batch"], spec["tokens"]))
        example = Example(args=(ids,), kwargs={}, size=(spec["tokens"],), batch=spec["batch"])
    model.eval()
    return model, example


# -- the tools: each returns a zero-argument call giving (params, macs) as the tool reports them ---------------


Call = Callable[[], tuple[float | None, float | None]]
PEER_GRAD = False  # --peer-grad: run the peers with autograd on, as their READMEs call them


def quiet_grad() -> Any:
    """``torch.no_grad()`` around a peer's call (nncost traces under it too), unless --peer-grad."""
    import torch

    return contextlib.nullcontext() if PEER_GRAD else torch.no_grad()


def prepare(tool: str, model: Any, ex: Example, case: dict[str, Any]) -> Call:
    """Import the tool and bind its call; nothing here is timed."""

    if tool == "nncost":
        import nncost

        if case["kind"] == "vision":

            def call() -> tuple[float | None, float | None]:
                r = nncost.profile(model, ex.size, batch_size=ex.batch)
                return r.totals.params, r.totals.macs
        else:

            def call() -> tuple[float | None, float | None]:
                r = nncost.profile(model, inputs=ex.args[0])
                return r.totals.params, r.totals.macs

        return call

    if tool == "thop":
        import thop

        def call() -> tuple[float | None, float | None]:
            with quiet_grad():
                macs, params = thop.profile(model, inputs=ex.args, verbose=False)
            return params, macs

        return call

    if tool in ("ptflops", "ptflops[aten]"):
        from ptflops import get_model_complexity_info

        backend = "aten" if tool == "ptflops[aten]" else "pytorch"
        if case["kind"] == "vision":
            x = ex.args[0]

            def make(_res: tuple[int, ...]) -> Any:
                return x  # positional, so ptflops' batch counter sees the real batch
        else:
            ids = ex.args[0]

            def make(_res: tuple[int, ...]) -> Any:
                return {"input_ids": ids}

        def call() -> tuple[float | None, float | None]:
            log = io.StringIO()
            with quiet_grad():
                macs, params = get_model_complexity_info(
                    model,
                    ex.size,
                    input_constructor=make,
                    as_strings=False,
                    print_per_layer_stat=False,
                    ost=log,
                    backend=backend,
                )
            if macs is None:  # ptflops prints the exception and returns (None, None)
                raise RuntimeError(_last_error_line(log.getvalue()) or "ptflops returned None")
            return params, macs

        return call

    if tool == "fvcore":
        from fvcore.nn import FlopCountAnalysis, parameter_count

        def call() -> tuple[float | None, float | None]:
            with quiet_grad():
                analysis = FlopCountAnalysis(model, ex.args)
                analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                macs = analysis.total()  # fvcore counts one "flop" per multiply-add
            return parameter_count(model)[""], macs

        return call

    if tool == "torchinfo":
        from torchinfo import summary

        def call() -> tuple[float | None, float | None]:
            with quiet_grad():
                stats = summary(model, input_data=list(ex.args), verbose=0)
            return stats.total_params, stats.total_mult_adds

        return call

    if tool == "calflops":
        from calflops import calculate_flops

        if case["kind"] == "vision":
            args, kwargs = list(ex.args), {}
        else:
            args, kwargs = [], {"input_ids": ex.args[0]}

        def call() -> tuple[float | None, float | None]:
            with quiet_grad():
                _flops, macs, params = calculate_flops(
                    model,
                    args=args,
                    kwargs=kwargs,
                    print_results=False,
                    print_detailed=False,
                    output_as_string=False,
                )
            return params, macs

        return call

    if tool == "FlopCounterMode":
        from torch.utils.flop_counter import FlopCounterMode

        def call() -> tuple[float | None, float | None]:
            with quiet_grad(), FlopCounterMode(display=False) as counter:
                model(*ex.args, **ex.kwargs)
            return None, counter.get_total_flops() / 2  # it counts FLOPs = 2 x MACs; params: not reported

        return call

    raise SystemExit(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line
    return lines[-1] if lines else ""


# -- measurement ------------------------------------------------------------------------------------------------


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def reset_peak_rss() -> bool:
    """Reset the process's peak-RSS mark to its current RSS (Linux >= 4.0), so the tool's own peak shows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def cpu_snapshot() -> tuple[float, float, float]:
    """(seconds of busy CPU on the whole machine, this process's CPU seconds, wall clock)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    own = os.times()
    return busy, own.user + own.system, time.perf_counter()


def other_load(before: tuple[float, float, float], after: tuple[float, float, float]) -> float | None:
    """Mean number of cores that other processes kept busy between two snapshots."""
    wall = after[2] - before[2]
    others = (after[0] - before[0]) - (after[1] - before[1])
    if wall <= 0 or others != others:  # nan: no /proc/stat
        return None
    return max(others, 0.0) / wall


def timed(call: Call) -> tuple[float, tuple[float | None, float | None]]:
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        start = time.perf_counter()
        out = call()
        elapsed = time.perf_counter() - start
    return elapsed, out


def measure(
    tool: str, case_name: str, repeats: int, min_repeats: int, budget: float, threads: int | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {"tool": tool, "case": case_name, "error": None, "peer_grad": PEER_GRAD}
    try:
        result["version"] = metadata.version(TOOLS[tool])
    except metadata.PackageNotFoundError:
        result["version"] = None
    case = CASES[case_name]
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        result["torch"] = torch.__version__
        result["threads"] = torch.get_num_threads()
        model, ex = build_case(case_name)  # the model first, so a tool's import cannot change how it is built
        call = prepare(tool, model, ex, case)
    except Exception as exc:
        result["error"] = f"setup: {type(exc).__name__}: {exc}".splitlines()[0]
        result["traceback"] = traceback.format_exc()
        return result
    gc.collect()
    result["rss_setup_peak_mib"] = maxrss_mib()  # the high-water mark of imports + model build
    result["rss_after_setup_mib"] = current_rss_mib()
    result["peak_reset"] = reset_peak_rss()
    times: list[float] = []
    snap = cpu_snapshot()
    try:
        first, (params, macs) = timed(call)
        while len(times) < repeats and (len(times) < min_repeats or sum(times) < budget):
            elapsed, _ = timed(call)
            times.append(elapsed)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        result["traceback"] = traceback.format_exc()
        result["rss_tool_peak_mib"] = maxrss_mib()
        return result
    result.update(
        first_s=first,
        times_s=times,
        median_s=statistics.median(times) if times else first,
        min_s=min(times) if times else first,
        other_load=other_load(snap, cpu_snapshot()),
        params=params,
        macs=macs,
        rss_tool_peak_mib=maxrss_mib(),  # since the reset: the tool's calls (or the whole run if no reset)
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tool", choices=list(TOOLS))
    ap.add_argument("case", choices=list(CASES))
    ap.add_argument("--repeats", type=int, default=7, help="timed calls after the first, at most")
    ap.add_argument("--min-repeats", type=int, default=3, help="timed calls after the first, at least")
    ap.add_argument("--budget", type=float, default=30.0, help="stop repeating past this many seconds")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--peer-grad", action="store_true", help="no torch.no_grad() around the peers' calls")
    a = ap.parse_args(argv)
    global PEER_GRAD
    PEER_GRAD = a.peer_grad
    warnings.simplefilter("ignore")
    result = measure(a.tool, a.case, a.repeats, a.min_repeats, a.budget, a.threads)
    sys.stdout.flush()
    print(MARK, json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
