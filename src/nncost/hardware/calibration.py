"""The ``cpu`` device: its roofs measured on the machine it runs on, checked, and cached.

A short calibration measures the peak FLOP/s of a matrix product per dtype, the bandwidth of a
copy by working set (a cache-aware memory roof), and per operator family its fixed cost per call
and its efficiency, timed inside two small networks fixed in advance
(:func:`calibration_networks`).  Its figures are checked against physical sense
(:func:`problems`) before they are stored and each time they are read.  On a machine with more
runnable threads than cores, torch's threads wait on each other for milliseconds at every parallel
region and a calibration on them measures the waits, not the CPU: when a first copy curve shows
that (:func:`oversubscribed`), or a calibration is implausible, it is measured on one thread,
which has no one to wait for (the roofs are then one core's, and said to be).  At most
``ATTEMPTS`` calibrations are tried, then ``CalibrationError``; the pipeline reports everything
else without time estimates and says why.  The cache
(``$NNCOST_CACHE_DIR``, else ``$XDG_CACHE_HOME/nncost``, else ``~/.cache/nncost``) keeps one
record per host, CPU, instruction set, thread count and torch version, with when and under what
load it was measured, and is measured again when stale, foreign, implausible or busy.  Whatever
calibrates says so through ``say``.  docs/roofline.md ("The cpu", "A calibration you can trust")
gives the method, the thresholds and the reasons for them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncost.analyses.build import build_report
from nncost.analyses.roofline import COMPUTE_CALIBRATED, FAMILIES, make_roofline, op_seconds, roof_family
from nncost.capture.inputs import sizes_to_inputs
from nncost.capture.run import capture
from nncost.capture.timing import measure_times
from nncost.errors import CalibrationError, NncostWarning
from nncost.hardware.catalogue import Allocator, Device, catalogue_device
from nncost.records.trace import OpCall

Say = Callable[[str], None]

CACHE_FILE = "cpu_calibration.json"
VERSION = 11

ROUNDS = 3
BUDGET_SECONDS = 2.0  # no new round after this (one round takes ~0.5 s on an idle 2-core machine)
REPEATS = 7  # timed passes of each calibration network per round (medians, as --measure-time reports)
COPY_KIB = (16, 64, 256, 1024, 4096, 16384, 65536)  # copied tensors: working sets of 32 KiB to 128 MiB

# Plausibility (docs/roofline.md, "A calibration you can trust", says why each bound is where it is).
ATTEMPTS = 3  # calibrations tried before an implausible one is refused
MIN_PEAK_FLOPS = {"fp32": 1e9, "bf16": 1e8, "fp16": 1e8}  # 16-bit products may run in software
MAX_PEAK_FLOPS = 1e15
MIN_BANDWIDTH = 1e9  # bytes/s, at every working set
MAX_BANDWIDTH = 1e14
CURVE_TOLERANCE = 1.5  # how far one point of the copy curve may break its expected order
MIN_EFFICIENCY = 1e-3
MAX_OP_SECONDS = 2e-3  # fixed cost of one operator call
MAX_MODULE_CALL_SECONDS = 2e-4
MAX_AGE_DAYS = 30


class CalibrationWarning(NncostWarning):
    """A calibration measured under heavy load, or an implausible attempt measured again (the CLI
    prints it as one line, as every :class:`~nncost.errors.NncostWarning`)."""


def cache_dir() -> Path:
    """Where the calibration is cached: ``$NNCOST_CACHE_DIR``, else ``$XDG_CACHE_HOME/nncost``
    (the XDG base directory convention), else ``~/.cache/nncost``; an empty variable counts as unset."""
    if os.environ.get("NNCOST_CACHE_DIR"):
        return Path(os.environ["NNCOST_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "nncost"
    return Path.home() / ".cache" / "nncost"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def host() -> dict[str, Any]:
    """What a calibration belongs to: the host, its CPU, the instruction set torch's kernels run
    (``ATEN_CPU_CAPABILITY`` lowers it, and with it the roofs), torch's thread count and version."""
    return {"hostname": platform.node(), "cpu_model": cpu_model(), "isa": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def cache_key() -> str:
    here = host()
    return (f"{here['hostname']} | {here['cpu_model']} | {here['isa']} | threads={here['threads']} | "
            f"torch={here['torch']} | v{VERSION}")


def memory_bytes() -> int | None:
    """This machine's physical memory (``os.sysconf``), without calibrating anything."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def resolve_device(name: str, *, calibrate: bool = True, refresh: bool = False, say: Say | None = None) -> Device:
    """The device ``name`` names, in any case: a catalogue device, or ``cpu``, this machine.  The
    ``cpu`` is calibrated (its cached calibration, measured again when unusable or on ``refresh``;
    ``say`` hears it) when ``calibrate``; else it comes without roofs (:func:`uncalibrated_cpu`),
    for what needs only its kind and memory, and nothing is measured."""
    if name.strip().lower() == Allocator.CPU:
        return cpu_device(refresh=refresh, say=say) if calibrate else uncalibrated_cpu()
    return catalogue_device(name)




def uncalibrated_cpu() -> Device:
    """This machine's ``cpu`` as a device before any calibration: its kind, its name and its
    physical memory, and no roofs (no peak, no bandwidth)."""
    return Device(name="cpu", title=cpu_model(), kind=Allocator.CPU, peak_flops={}, bandwidth=0.0,
                  memory_bytes=memory_bytes(), notes="not calibrated: no roofs")


def is_cached() -> bool:
    """Whether a usable calibration of this machine (this thread count and torch) is in the cache."""
    cached, _ = _read_cache(cache_dir() / CACHE_FILE)
    return cache_key() in cached and _unusable(cached[cache_key()]) is None


def cpu_device(*, refresh: bool = False, say: Say | None = None) -> Device:
    """This machine's ``cpu``: its cached calibration when that one is usable, else a new one,
    checked and stored; ``refresh`` measures again in any case.  ``say`` hears that a calibration
    runs, and why, and any warning."""
    path = cache_dir() / CACHE_FILE
    cached, unreadable = _read_cache(path)
    key = cache_key()
    record = cached.get(key)
    if refresh:
        why = " again, as asked"
    elif record is None:
        why = f" again: {unreadable}" if unreadable else ", once"
    else:
        reason = _unusable(record)
        if reason is None:
            _warn_if_busy(record, say, cached=True)
            return _device(record)
        why = f" again: the cached calibration {reason}"
    if say is not None:
        say(f"measuring this cpu's roofs{why} (a few seconds; cached in {path.parent})")
    record = _measure(say)
    cached[key] = record
    _write_cache(path, cached, say)
    _warn_if_busy(record, say, cached=False)
    return _device(record)


def problems(figures: Mapping[str, Any]) -> list[str]:
    """What is physically implausible in a calibration's figures: one phrase per figure, naming it
    and the bound it breaks (empty: nothing)."""
    try:
        return [*_peak_problems(figures), *_curve_problems(figures), *_efficiency_problems(figures),
                *_fixed_cost_problems(figures)]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"its figures are malformed ({type(exc).__name__}: {exc})"]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


def _peak_problems(figures: Mapping[str, Any]) -> list[str]:
    found = []
    for dtype, floor in MIN_PEAK_FLOPS.items():
        peak = _number(figures["peak_flops"][dtype])
        if not floor <= peak <= MAX_PEAK_FLOPS:
            side = (f"below the floor of {floor / 1e9:g}" if peak < floor
                    else f"above the ceiling of {MAX_PEAK_FLOPS / 1e9:g}")
            found.append(f"the {dtype} peak is {peak / 1e9:.3g} GFLOP/s, {side} GFLOP/s")
    return found


def _curve_problems(figures: Mapping[str, Any]) -> list[str]:
    """Floors and ceilings on every point, then the order a memory hierarchy gives a copy: copying
    more never takes less time, and past the fastest point (the smallest cache that the copy's
    threads fill) a larger working set is never faster; each within ``CURVE_TOLERANCE``."""
    curve = [(int(ws), _number(bw)) for ws, bw in figures["bandwidth_curve"]]
    expected = [2 * kib * 1024 for kib in COPY_KIB]
    if [ws for ws, _ in curve] != expected:
        return [f"the bandwidth curve's working sets are {[ws for ws, _ in curve]}, not the {expected} measured"]
    found = []
    for ws, bw in curve:
        if not MIN_BANDWIDTH <= bw <= MAX_BANDWIDTH:
            side = (f"below the floor of {MIN_BANDWIDTH / 1e9:g}" if bw < MIN_BANDWIDTH
                    else f"above the ceiling of {MAX_BANDWIDTH / 1e9:g}")
            found.append(f"the copy bandwidth at {ws >> 10} KiB is {bw / 1e9:.3g} GB/s, {side} GB/s")
    for (ws0, bw0), (ws1, bw1) in pairwise(curve):
        if ws1 / bw1 * CURVE_TOLERANCE < ws0 / bw0:
            found.append(f"copying {ws1 >> 10} KiB took {ws1 / bw1 * 1e6:.3g} µs, less than the "
                         f"{ws0 / bw0 * 1e6:.3g} µs of {ws0 >> 10} KiB")
    fastest = max(range(len(curve)), key=lambda i: curve[i][1])
    for i in range(fastest + 1, len(curve)):
        ws_slow, bw_slow = min(curve[fastest:i], key=lambda point: point[1])
        ws, bw = curve[i]
        if bw > bw_slow * CURVE_TOLERANCE:
            found.append(f"the copy bandwidth at {ws >> 10} KiB is {bw / 1e9:.3g} GB/s, above the "
                         f"{bw_slow / 1e9:.3g} GB/s at {ws_slow >> 10} KiB, a smaller working set past the fastest")
    bandwidth = _number(figures["bandwidth"])
    if not math.isclose(bandwidth, curve[-1][1], rel_tol=1e-9):
        found.append(f"the bandwidth is {bandwidth / 1e9:.3g} GB/s, not the curve's "
                     f"{curve[-1][1] / 1e9:.3g} GB/s at its largest working set")
    return found


def _efficiency_problems(figures: Mapping[str, Any]) -> list[str]:
    efficiency = figures["family_efficiency"]
    found = [f"the {name} family has no efficiency" for name in FAMILIES if name not in efficiency]
    for name in FAMILIES:
        if name in efficiency:
            value = _number(efficiency[name])
            if not MIN_EFFICIENCY <= value <= 1:
                side = f"below the floor of {MIN_EFFICIENCY:g}" if value < MIN_EFFICIENCY else "above 1"
                found.append(f"the {name} efficiency is {value:.3g}, {side}")
    return found


def _fixed_cost_problems(figures: Mapping[str, Any]) -> list[str]:
    costs = {f"the {name} fixed cost": (value, MAX_OP_SECONDS)
             for name, value in figures["family_overhead_seconds"].items()}
    costs["the generic operator fixed cost"] = (figures["op_overhead_seconds"], MAX_OP_SECONDS)
    costs["the module call's fixed cost"] = (figures["module_call_seconds"], MAX_MODULE_CALL_SECONDS)
    found = []
    for what, (value, ceiling) in costs.items():
        seconds = _number(value)
        if not 0 <= seconds <= ceiling:
            side = "negative" if seconds < 0 else f"above the ceiling of {ceiling * 1e6:g} µs"
            found.append(f"{what} is {seconds * 1e6:.3g} µs, {side}")
    return found


def _unusable(record: Any) -> str | None:
    """Why a cached record cannot be used as it is (``None``: it can)."""
    if not isinstance(record, dict) or record.get("version") != VERSION:
        return "was written by another version of nncost"
    record_host, here = record.get("host"), host()
    if not isinstance(record_host, dict) or record_host != here:
        differ = [f"{field} {record_host.get(field)!r}, here {value!r}" for field, value in here.items()
                  if record_host.get(field) != value] if isinstance(record_host, dict) else ["no host"]
        return f"was measured elsewhere ({'; '.join(differ)})"
    load = record.get("load")
    if not isinstance(load, dict) or not {"before", "after", "cores"} <= load.keys():
        return "has no load average"
    measured_at = record.get("measured_at")
    if isinstance(measured_at, bool) or not isinstance(measured_at, (int, float)):
        return "has no date"
    age_days = (time.time() - measured_at) / 86400
    if age_days < -1:
        return "is dated in the future"
    if age_days > MAX_AGE_DAYS:
        return f"is {age_days:.0f} days old (at most {MAX_AGE_DAYS})"
    found = problems(record)
    if found:
        return f"is implausible: {_listed(found)}"
    if record.get("busy") and not _busy(_load()):
        return "was measured under heavy load, and the machine is quieter now"
    return None


def _load() -> float | None:
    """The load average over the last minute (``None`` where the system does not keep one)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _busy(load: float | None) -> bool:
    """Heavy load: more runnable tasks, on average, than the machine has cores."""
    return load is not None and load > (os.cpu_count() or 1)


def _measure(say: Say | None) -> dict[str, Any]:
    """A calibration that passes ``problems``, as a cache record; ``CalibrationError`` after
    ``ATTEMPTS`` implausible ones.  The first runs on torch's threads (or one, when they are
    oversubscribed); the attempts after an implausible one run on one thread."""
    found: list[str] = []
    threads: int | None = None
    for attempt in range(1, ATTEMPTS + 1):
        before = _load()
        figures = calibrate(threads)
        after = _load()
        found = problems(figures)
        if not found:
            return _record(figures, before, after, attempt)
        threads = 1
        if attempt < ATTEMPTS:
            _warn(say, f"this cpu's calibration is implausible ({_listed(found)}); measuring again on one "
                       f"thread (attempt {attempt + 1} of {ATTEMPTS})")
    load = _load()
    busy = f" (load average {load:.2f} on {os.cpu_count() or 1} cores)" if load is not None else ""
    raise CalibrationError(
        f"this cpu's calibration was implausible {ATTEMPTS} times in a row, on one thread too ({_listed(found)}), "
        f"so it is not used; the machine may be too busy to measure{busy}: try again when it is quieter, or name "
        "a catalogue device")


def _listed(found: list[str], most: int = 3) -> str:
    """The first ``most`` problems, and how many more."""
    more = f"; and {len(found) - most} more" if len(found) > most else ""
    return "; ".join(found[:most]) + more


def _record(figures: Mapping[str, Any], before: float | None, after: float | None, attempt: int) -> dict[str, Any]:
    """The cache record of ``figures``: busy when the load average was above the core count, or
    when the calibration had to fall back to one thread (the machine was oversubscribed)."""
    loads = [load for load in (before, after) if load is not None]
    return {
        "version": VERSION,
        "host": host(),
        "measured_at": time.time(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load": {"before": before, "after": after, "cores": os.cpu_count() or 1},
        "busy": (_busy(max(loads)) if loads else False) or _one_thread_of_several(figures),
        "attempt": attempt,
        **figures,
    }


def _one_thread_of_several(figures: Mapping[str, Any]) -> bool:
    """Whether ``figures`` were measured on fewer threads than torch runs on."""
    measured = figures.get("threads")
    return isinstance(measured, int) and measured < torch.get_num_threads()


def _warn_if_busy(record: Mapping[str, Any], say: Say | None, *, cached: bool) -> None:
    if not record.get("busy"):
        return
    load = record["load"]
    seen = [value for value in (load["before"], load["after"]) if isinstance(value, (int, float))]
    average = f"load average {max(seen):.2f}" if seen else "load average unknown"
    which = "the cached calibration of this cpu" if cached else "this cpu's calibration"
    if _one_thread_of_several(record):
        how = (f"on one thread of {torch.get_num_threads()}, the machine being oversubscribed ({average} on "
               f"{load['cores']} cores): its roofs are one core's and the time estimates may be high")
    else:
        how = f"under heavy load ({average} on {load['cores']} cores): its roofs may be low and the time estimates high"
    _warn(say, f"{which} was measured {how}; it is measured again once the machine is quieter")


def _warn(say: Say | None, message: str) -> None:
    if say is not None:
        say(message)
    else:
        warnings.warn(message, CalibrationWarning, stacklevel=4)


def _read_cache(path: Path) -> tuple[dict[str, Any], str | None]:
    """The cache's records by key, and why it could not be read (``None``: it was, or is absent)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"the cache file {path} could not be read ({exc})"
    except ValueError:
        return {}, f"the cache file {path} is not valid JSON"
    if not isinstance(data, dict):
        return {}, f"the cache file {path} holds no records"
    return data, None


def _write_cache(path: Path, cached: dict[str, Any], say: Say | None) -> None:
    """Write the whole cache at once (a reader never sees half a file); an unwritable cache only
    costs a calibration next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(cached, indent=2))
        os.replace(partial, path)
    except OSError as exc:
        if say is not None:
            say(f"could not store the calibration in {path} ({exc}); it is measured again next time")


def _device(record: Mapping[str, Any]) -> Device:
    where, load = record["host"], record["load"]
    loads = " → ".join(f"{value:.2f}" for value in (load["before"], load["after"])
                       if isinstance(value, (int, float)))
    source = (f"measured on {where['hostname']} ({where['cpu_model']}, {where['threads']} torch threads, torch "
              f"{where['torch']}) by nncost.hardware.calibration, {record.get('date', 'undated')}, "
              f"load average {loads or 'unknown'} on {load['cores']} cores")
    return Device(
        name="cpu",
        title=cpu_model(),
        kind=Allocator.CPU,
        peak_flops=dict(record["peak_flops"]),
        bandwidth=float(record["bandwidth"]),
        memory_bytes=record.get("memory_bytes"),
        sources={"peak_flops": source, "bandwidth": source, "memory_bytes": "os.sysconf"},
        bandwidth_curve=tuple((int(ws), float(bw)) for ws, bw in record["bandwidth_curve"]),
        family_efficiency=dict(record["family_efficiency"]),
        family_overhead_seconds=dict(record["family_overhead_seconds"]),
        op_overhead_seconds=float(record["op_overhead_seconds"]),
        module_call_seconds=float(record["module_call_seconds"]),
        notes=("measured on one thread, the machine being oversubscribed: its roofs are one core's"
               if _one_thread_of_several(record) else
               "measured under heavy load: its roofs may be low" if record.get("busy") else ""),
    )


def _best(fn: Callable[[], object], runs: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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
    networks = []
    for model, size in calibration_networks(tiny):
        report = build_report(capture(model, sizes_to_inputs(size, 1, None), {}))
        leaves = {layer.name: (layer.type, list(layer.self_ops)) for layer in report.layers if layer.is_leaf}
        networks.append((model, size, leaves))
    return networks


def _timed(networks: list[Network]) -> list[tuple[float, str, list[OpCall]]]:
    """(median seconds, module type, operator calls) of every leaf call, timed as ``--measure-time`` does."""
    timed = []
    for model, size, leaves in networks:
        times = measure_times(model, (torch.randn(1, *size),), {}, repeats=REPEATS)
        timed += [(seconds, *leaves[name]) for name, seconds in zip(times.names, times.seconds, strict=True)
                  if name in leaves]
    return timed


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch on ``threads`` threads inside, its own count restored after."""
    own = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(own)


def oversubscribed() -> list[str]:
    """What a copy curve measured on torch's threads shows wrong (:func:`problems`' curve checks;
    empty: nothing, or torch runs one thread).  Torch's threads meet at a barrier at the end of
    every parallel region, so a thread that waits for a core delays the copy by a scheduler slice
    (milliseconds) whatever its size: the curve's small working sets come out orders of magnitude
    slow, then faster than the larger ones."""
    if torch.get_num_threads() == 1:
        return []
    curve = _bandwidth_curve()
    return _curve_problems({"bandwidth_curve": curve, "bandwidth": curve[-1][1]})


def _bandwidth_curve() -> list[tuple[int, float]]:
    curve = []
    for kib in COPY_KIB:
        source = torch.ones(kib * 256)
        target = torch.empty_like(source)
        moved = 2 * source.nbytes
        curve.append((moved, moved / _best(functools.partial(target.copy_, source))))
    return curve


def _round(tiny: list[Network], full: list[Network]) -> dict[str, Any]:
    with torch.no_grad():
        peaks: dict[str, float] = {}
        for name, dtype, n in (("fp32", torch.float32, 1024), ("bf16", torch.bfloat16, 512),
                               ("fp16", torch.float16, 512)):
            x, y = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            peaks[name] = 2 * n**3 / _best(functools.partial(torch.mm, x, y))
        curve = _bandwidth_curve()
    roofs = make_roofline(Device(name="cpu", title="", kind=Allocator.CPU, peak_flops=peaks, bandwidth=curve[-1][1],
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


def calibrate(threads: int | None = None) -> dict[str, Any]:
    """Measure the roofs, fixed costs and per-family efficiencies of this CPU (see the module
    docstring) on ``threads`` torch threads (None: torch's own count, or one when those are
    :func:`oversubscribed`), torch's count restored after; unchecked: ``cpu_device`` checks and
    stores them."""
    if threads is None:
        threads = 1 if oversubscribed() else torch.get_num_threads()
    with _torch_threads(threads):
        figures = _calibrate()
    return {**figures, "threads": threads}


def _calibrate() -> dict[str, Any]:
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
        "peak_flops": peaks,
        "bandwidth": curve[-1][1],
        "bandwidth_curve": curve,
        "memory_bytes": memory_bytes(),
        "op_overhead_seconds": overheads.get("elementwise", 0.0),
        "module_call_seconds": statistics.median(r["module_call_seconds"] for r in rounds),
        "family_overhead_seconds": overheads,
        "family_efficiency": median("family_efficiency"),
        "rounds": len(rounds),
        "spread": max(fp32) / min(fp32),  # > 1.5: the machine was busy while calibrating
    }
