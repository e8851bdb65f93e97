"""The ``cpu`` device: its roofs measured on the machine it runs on, cached.

A short calibration (rounds for at most ``BUDGET_SECONDS``) measures:

* the peak FLOP/s of a large matrix product per dtype (fp32: 1024³; bf16/fp16: 512³, as
  16-bit products are slow on CPUs without matrix units): the best of a few runs;
* the **bandwidth curve**: the bytes read plus written per second by a copy, at working sets
  from 32 KiB to 128 MiB (the best of a few runs each).  Small working sets stay in the caches
  and move several times faster than the largest, which sets ``bandwidth``; an operator's memory
  roof is read off the curve at its own working set (a cache-aware roofline);
* per operator family, its **fixed cost per call** and its **efficiency**, measured where
  operators run in a network: in two small calibration networks fixed in advance, not fitted
  to any model (``calibration_networks``), timed by the same hooks as ``--measure-time``.  A
  vision stack (3×3 convolution, batch norm, ReLU in place, 3×3 depthwise convolution,
  Hardswish, ReLU, 3×3/2 max pooling, global average pooling; 64 channels) and a sequence stack
  (linear, layer norm, GELU, linear).  Each operator runs after the others have had the
  caches and the interpreter, as in a model, so what it finds there is what a layer finds in a
  model.  At their tiny size (1×1 maps, one 64-wide token) a layer's time less that of an
  ``nn.Identity`` call is the fixed cost of its operators; at their full size (56×56 maps, 128
  tokens of 768) the roofline time over the measured time less the fixed costs is the
  family's efficiency, at most 1: no family beats its roofs (for transcendental functions, whose
  one counted FLOP per element hides a series, the compute roof alone: their time follows their
  elements).
* the fixed cost of one module call: the ``nn.Identity`` at the head of the networks, hooks
  included, added once per layer call.

The roofs keep the best round (highest peak and bandwidth); fixed costs and efficiencies the
median of the rounds.  The result is cached in ``$NNCOST_CACHE_DIR`` (default
``~/.cache/nncost``) as JSON, keyed by the CPU model, the thread count and the torch version.
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
from torch import nn

from nncost.hardware.catalogue import Device
from nncost.records.trace import OpCall

CACHE_FILE = "cpu_calibration.json"
VERSION = 10

ROUNDS = 3
BUDGET_SECONDS = 2.0  # no new round after this (one round takes ~0.5 s on an idle 2-core machine)
REPEATS = 7  # timed passes of each calibration network per round (medians, as --measure-time reports)
COPY_KIB = (16, 64, 256, 1024, 4096, 16384, 65536)  # copied tensors: working sets of 32 KiB to 128 MiB


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


def is_cached() -> bool:
    """Whether this machine's calibration (for this thread count and torch) is in the cache."""
    try:
        return cache_key() in json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return False


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
        bandwidth_curve=tuple((int(ws), float(bw)) for ws, bw in figures.get("bandwidth_curve", ())),
        family_efficiency=dict(figures["family_efficiency"]),
        family_overhead_seconds=dict(figures.get("family_overhead_seconds", {})),
        op_overhead_seconds=float(figures["op_overhead_seconds"]),
        module_call_seconds=float(figures.get("module_call_seconds", 0.0)),
    )


def _best(fn: Callable[[], object], runs: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def calibration_networks(tiny: bool) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The two calibration networks and their input sizes (batch 1): tiny, or full size."""
    c, s = 64, 1 if tiny else 56
    d, t = (64, 1) if tiny else (768, 128)
    vision = nn.Sequential(nn.Identity(), nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                           nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.Hardswish(), nn.ReLU(),
                           nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1))
    sequence = nn.Sequential(nn.Identity(), nn.Linear(d, d), nn.LayerNorm(d), nn.GELU(), nn.Linear(d, d))
    return [(vision.eval(), (c, s, s)), (sequence.eval(), (t, d))]


Network = tuple[nn.Module, tuple[int, ...], dict[str, tuple[str, list[OpCall]]]]


def _networks(tiny: bool) -> list[Network]:
    """Each calibration network, its input size and its leaf layers (name: type and operator
    calls), captured once on meta tensors."""
    from nncost.api import profile

    networks = []
    for model, size in calibration_networks(tiny):
        report = profile(model, size)
        leaves = {layer.name: (layer.type, list(layer.self_ops)) for layer in report.layers if layer.is_leaf}
        networks.append((model, size, leaves))
    return networks


def _timed(networks: list[Network]) -> list[tuple[float, str, list[OpCall]]]:
    """(median seconds, module type, operator calls) of every leaf call, timed as ``--measure-time`` does."""
    from nncost.capture.timing import measure_times

    timed = []
    for model, size, leaves in networks:
        times = measure_times(model, (torch.randn(1, *size),), {}, repeats=REPEATS)
        timed += [(seconds, *leaves[name]) for name, seconds in zip(times.names, times.seconds, strict=True)
                  if name in leaves]
    return timed


def _bandwidth_curve() -> list[tuple[int, float]]:
    curve = []
    for kib in COPY_KIB:
        source = torch.ones(kib * 256)
        target = torch.empty_like(source)
        moved = 2 * source.nbytes
        curve.append((moved, moved / _best(functools.partial(target.copy_, source))))
    return curve


def _round(tiny: list[Network], full: list[Network]) -> dict[str, Any]:
    from nncost.analyses.roofline import COMPUTE_CALIBRATED, make_roofline, op_seconds, roof_family

    with torch.no_grad():
        peaks: dict[str, float] = {}
        for name, dtype, n in (("fp32", torch.float32, 1024), ("bf16", torch.bfloat16, 512),
                               ("fp16", torch.float16, 512)):
            x, y = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            peaks[name] = 2 * n**3 / _best(functools.partial(torch.mm, x, y))
        curve = _bandwidth_curve()
    roofs = make_roofline(Device(name="cpu", title="", kind="cpu", peak_flops=peaks, bandwidth=curve[-1][1],
                                 memory_bytes=None, bandwidth_curve=tuple(curve)))  # efficiencies 1, no fixed costs
    tiny_times = _timed(tiny)
    module_call = statistics.median(seconds for seconds, kind, _ in tiny_times if kind == "Identity")
    fixed: dict[str, list[float]] = {}
    for seconds, _, ops in tiny_times:
        kinds = {roof_family(op.unit) for op in ops}
        if len(kinds) == 1:
            fixed.setdefault(kinds.pop(), []).append(max(0.0, seconds - module_call) / len(ops))
    overheads = {name: statistics.median(values) for name, values in fixed.items()}
    ratios: dict[str, list[float]] = {}
    for seconds, _, ops in _timed(full):
        kinds = {roof_family(op.unit) for op in ops}
        if len(kinds) == 1:
            name = kinds.pop()
            roof = sum(op_seconds(op, roofs)[0] if name in COMPUTE_CALIBRATED else max(op_seconds(op, roofs))
                       for op in ops)
            own = seconds - module_call - overheads.get(name, 0.0) * len(ops)
            ratios.setdefault(name, []).append(roof / max(own, 1e-9))
    return {
        "peak_flops": peaks,
        "bandwidth_curve": curve,
        "module_call_seconds": module_call,
        "family_overhead_seconds": overheads,
        "family_efficiency": {name: min(1.0, statistics.median(values)) for name, values in ratios.items()},
    }


def calibrate() -> dict[str, Any]:
    """Measure the roofs, fixed costs and per-family efficiencies of this CPU (see the module docstring)."""
    start = time.perf_counter()
    tiny, full = _networks(tiny=True), _networks(tiny=False)
    rounds = [_round(tiny, full)]
    while len(rounds) < ROUNDS and time.perf_counter() - start < BUDGET_SECONDS:
        rounds.append(_round(tiny, full))
    peaks = {name: max(r["peak_flops"][name] for r in rounds) for name in rounds[0]["peak_flops"]}
    curve = [(ws, max(r["bandwidth_curve"][i][1] for r in rounds))
             for i, (ws, _) in enumerate(rounds[0]["bandwidth_curve"])]

    def median(key: str) -> dict[str, float]:
        return {name: statistics.median(r[key][name] for r in rounds if name in r[key]) for name in rounds[0][key]}

    overheads = median("family_overhead_seconds")
    fp32 = [r["peak_flops"]["fp32"] for r in rounds]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "peak_flops": peaks,
        "bandwidth": curve[-1][1],
        "bandwidth_curve": curve,
        "memory_bytes": _memory_bytes(),
        "op_overhead_seconds": overheads.get("elementwise", 0.0),
        "module_call_seconds": statistics.median(r["module_call_seconds"] for r in rounds),
        "family_overhead_seconds": overheads,
        "family_efficiency": median("family_efficiency"),
        "rounds": len(rounds),
        "spread": max(fp32) / min(fp32),  # > 1.5: the machine was busy while calibrating
    }
