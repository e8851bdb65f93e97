"""The ``cpu`` device: its roofs measured on the machine it runs on, cached.

A short calibration (rounds for at most 1.2 s, then a 0.8 s sustained run) measures:

* the peak FLOP/s of a large matrix product per dtype (fp32: 1024³; bf16/fp16: 512³, as
  16-bit products are slow on CPUs without matrix units) — the best of a few runs;
* the memory bandwidth of a 64 MiB copy (bytes read + bytes written over the time);
* per operator family, one representative operator, shapes fixed in advance (not fitted to any
  model): a 3×3 convolution (64 channels), a 3×3 depthwise convolution (144 channels), a
  128×768×768 matrix product (a transformer projection), a 3×3/2 max pooling (128 channels),
  an inference batch norm and a spatial mean (64 channels), GELU (transcendental), ReLU
  (elementwise).  Run on a tiny input (1×1 spatial; the matrix product 1×64×64) it gives the
  family's fixed cost per call (the best of 5 runs); run at 56×56 (GELU and ReLU at 112×112) it gives the family's
  efficiency: the operator's roofline time over its median time (of 5 runs, as ``--measure-time``
  reports medians) less the fixed cost.  Matrix families (convolutions, matrix products) are
  at most 1.  The vector families' tensors (0.8 to 3 MiB) stay in the CPU's caches, which are
  faster than the DRAM copy that sets the bandwidth roof, so their efficiency may exceed 1 (up
  to ``CACHE_CAP``): it then raises their memory roof only, never a compute roof.
* the fixed cost of one module call (``nn.Identity``, no hooks), added once per layer call.

The result is cached in ``$NNCOST_CACHE_DIR`` (default ``~/.cache/nncost``) as JSON, keyed by
the CPU model, the thread count and the torch version.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nncost.hardware.catalogue import Device

CACHE_FILE = "cpu_calibration.json"
VERSION = 8


def cache_dir() -> Path:
    return Path(os.environ.get("NNCOST_CACHE_DIR") or Path.home() / ".cache" / "nncost")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def cache_key() -> str:
    return f"{cpu_model()} | threads={torch.get_num_threads()} | torch={torch.__version__} | v{VERSION}"


def cpu_device(*, refresh: bool = False) -> Device:
    path = cache_dir() / CACHE_FILE
    key = cache_key()
    try:
        cached: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if refresh or key not in cached:
        cached[key] = calibrate()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cached, indent=2))
        except OSError:
            pass  # an unwritable cache only costs a calibration next time
    return _device(cached[key], key)


def _device(figures: dict[str, Any], key: str) -> Device:
    source = f"measured on this machine ({key}) by nncost.hardware.calibrate, {figures['date']}"
    return Device(
        name="cpu",
        title=cpu_model(),
        kind="cpu",
        peak_flops=dict(figures["peak_flops"]),
        bandwidth=float(figures["bandwidth"]),
        memory_bytes=figures.get("memory_bytes"),
        sources={"peak_flops": source, "bandwidth": source, "memory_bytes": "os.sysconf"},
        family_efficiency=dict(figures["family_efficiency"]),
        family_overhead_seconds=dict(figures.get("family_overhead_seconds", {})),
        op_overhead_seconds=float(figures["op_overhead_seconds"]),
        module_call_seconds=float(figures.get("module_call_seconds", 0.0)),
    )


def _times(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _best(fn: Callable[[], object], runs: int = 5) -> float:
    return min(_times(fn, runs))


def _typical(fn: Callable[[], object], runs: int = 5) -> float:
    """The median time of ``runs`` calls after one warm-up: what a measured median is compared with."""
    return statistics.median(_times(fn, runs))


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


ROUNDS = 5
BUDGET_SECONDS = 1.2  # no new round after this (one round takes ~0.2 s on an idle 2-core machine)
SUSTAINED_SECONDS = 0.8  # the length of the sustained matrix-product run
CACHE_CAP = 4.0  # vector operators on cache-resident tensors may beat the DRAM copy, up to this
MATRIX_FAMILIES = ("conv", "depthwise", "matmul")  # efficiencies at most 1: they read the weights


def calibrate() -> dict[str, Any]:
    """Measure the roofs and per-family efficiencies of this CPU (see the module docstring).

    The whole measurement is made up to ``ROUNDS`` times, while under ``BUDGET_SECONDS``.
    The roofs keep their best round (highest peak and bandwidth, lowest overhead): on a
    shared machine a round can land on a moment when other processes hold the cores, and
    the roofs describe the machine itself.  Each family's efficiency is computed within a
    round, against that round's own roofs, and the median over the rounds is kept, so that
    a load that comes and goes does not skew the ratio.  Last, a matrix product run for
    ``SUSTAINED_SECONDS`` gives the fraction of the peak the machine sustains (about 1 when idle;
    less when other processes share the cores): every family's efficiency is multiplied by it and
    every fixed cost divided by it.
    """
    start = time.perf_counter()
    rounds = [_round()]
    while len(rounds) < ROUNDS and time.perf_counter() - start < BUDGET_SECONDS:
        rounds.append(_round())
    best = rounds[0]
    for other in rounds[1:]:
        for name, value in other["peak_flops"].items():
            best["peak_flops"][name] = max(best["peak_flops"][name], value)
        best["bandwidth"] = max(best["bandwidth"], other["bandwidth"])
        best["op_overhead_seconds"] = min(best["op_overhead_seconds"], other["op_overhead_seconds"])
        best["module_call_seconds"] = min(best["module_call_seconds"], other["module_call_seconds"])
        for name, value in other["family_overhead_seconds"].items():
            best["family_overhead_seconds"][name] = min(best["family_overhead_seconds"][name], value)
    best["family_efficiency"] = {
        name: statistics.median(r["family_efficiency"][name] for r in rounds) for name in best["family_efficiency"]
    }
    sustained = _sustained_fraction(best["peak_flops"]["fp32"])
    best["sustained_fraction"] = sustained
    best["family_efficiency"] = {name: value * sustained for name, value in best["family_efficiency"].items()}
    best["family_overhead_seconds"] = {name: value / sustained
                                       for name, value in best["family_overhead_seconds"].items()}
    best["op_overhead_seconds"] /= sustained
    best["module_call_seconds"] /= sustained
    fp32 = [r["peak_flops"]["fp32"] for r in rounds]
    best["spread"] = max(fp32) / min(fp32)  # > 1.5: the machine was busy while calibrating
    return best


def _sustained_fraction(peak: float, seconds: float = SUSTAINED_SECONDS) -> float:
    """The fp32 matrix-product throughput sustained over ``seconds``, as a fraction of ``peak``.

    A short run fits in a scheduler time slice; a model's forward does not.  On an idle machine
    the two agree (about 1); on a machine shared with other busy processes the sustained rate is
    what a whole forward pass gets, and every family's efficiency is scaled by it.
    """
    x, y = torch.randn(512, 512), torch.randn(512, 512)
    torch.mm(x, y)
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(x, y)
        calls += 1
    elapsed = time.perf_counter() - start
    return min(1.0, 2 * 512**3 * calls / elapsed / peak)


def _copy_bandwidth(nbytes: int) -> float:
    """Bytes read plus bytes written per second by a copy of ``nbytes``."""
    source = torch.ones(nbytes, dtype=torch.uint8)
    target = torch.empty_like(source)
    return 2 * nbytes / _best(lambda: target.copy_(source))


def _families(size: int) -> dict[str, tuple[Callable[[], object], float, float]]:
    """One representative operator per family at spatial size ``size`` (1: a tiny input, whose time
    is the fixed cost of a call): ``(run it, its FLOPs, its bytes read + written)``."""
    s, h = size, max(1, size // 2)
    x, w = torch.randn(1, 64, s, s), torch.randn(64, 64, 3, 3)
    xd, wd = torch.randn(1, 144, s, s), torch.randn(144, 1, 3, 3)
    rows, width = (128, 768) if size > 1 else (1, 64)
    a, b = torch.randn(rows, width), torch.randn(width, width)
    p = torch.randn(1, 128, s, s)
    n = torch.randn(1, 64, s, s)
    mean, var, weight, bias = torch.zeros(64), torch.ones(64), torch.ones(64), torch.zeros(64)
    r = torch.randn(1, 64, 2 * s, 2 * s)
    g = torch.randn(1, 64, 2 * s, 2 * s)
    return {
        "conv": (lambda: torch.conv2d(x, w, padding=1), 2 * 64 * 64 * 9 * s * s, 4 * (2 * x.numel() + w.numel())),
        "depthwise": (lambda: torch.conv2d(xd, wd, padding=1, groups=144), 2 * 144 * 9 * s * s,
                      4 * (2 * xd.numel() + wd.numel())),
        "matmul": (lambda: torch.mm(a, b), 2 * rows * width * width, 4 * (a.numel() + b.numel() + rows * width)),
        "pool": (lambda: torch.max_pool2d(p, 3, 2, 1), 128 * h * h * 9, p.nbytes + 128 * h * h * 4),
        "norm": (lambda: torch.batch_norm(n, weight, bias, mean, var, False, 0.1, 1e-5, False), 2 * n.numel(),
                 2 * n.nbytes),
        "reduce": (lambda: torch.mean(n, dim=(-2, -1), keepdim=True), n.numel(), n.nbytes + 64 * 4),
        "transcendental": (lambda: torch.nn.functional.gelu(g), g.numel(), 2 * g.nbytes),
        "elementwise": (lambda: torch.relu(r), r.numel(), 2 * r.nbytes),
    }


def _round() -> dict[str, Any]:
    with torch.no_grad():
        peaks: dict[str, float] = {}
        for name, dtype, n in (("fp32", torch.float32, 1024), ("bf16", torch.bfloat16, 512),
                               ("fp16", torch.float16, 512)):
            x, y = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            peaks[name] = 2 * n**3 / _best(functools.partial(torch.mm, x, y))
        bandwidth = _copy_bandwidth(64 << 20)
        overheads = {name: _best(fn) for name, (fn, _, _) in _families(1).items()}
        identity, tiny = torch.nn.Identity(), torch.ones(1)
        module_call = _best(lambda: identity(tiny))
        efficiencies = {}
        for name, (fn, flops, nbytes) in _families(56).items():
            roof = max(flops / peaks["fp32"], nbytes / bandwidth)
            cap = 1.0 if name in MATRIX_FAMILIES else CACHE_CAP
            efficiencies[name] = min(cap, roof / max(_typical(fn) - overheads[name], 1e-9))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "peak_flops": peaks,
        "bandwidth": bandwidth,
        "memory_bytes": _memory_bytes(),
        "op_overhead_seconds": overheads["elementwise"],
        "module_call_seconds": module_call,
        "family_overhead_seconds": overheads,
        "family_efficiency": efficiencies,
    }
