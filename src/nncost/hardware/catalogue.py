"""The device catalogue: datasheet roofs of named accelerators, as data.

The ``cpu`` is not in it: it is measured on the machine that runs nncost (``nncost.hardware.calibration``).
Every figure in ``catalogue.json`` carries the key of the document it was read from.  Peaks
are dense (no 2:4 sparsity), in FLOP/s per dtype; bandwidth in bytes/s; memory in bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from nncost.compat import StrEnum
from nncost.errors import BadRequest, did_you_mean

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")


class Allocator(StrEnum):
    """The allocator semantics a memory simulation follows, and the kind of a device, whose
    allocator it is: ``cpu``, exact bytes (torch's CPU allocator asks the system for each
    tensor); ``cuda``, the caching allocator's 512-byte blocks and its replay
    (:mod:`nncost.analyses.cuda_allocator`).  The kernels a simulation runs (attention, kernel
    memory) are the same kind's."""

    CPU = "cpu"
    CUDA = "cuda"


ALLOCATORS = tuple(a.value for a in Allocator)  # plain names: the CLI reads them without torch


@dataclass(frozen=True)
class RingCollectives:
    """A ring collective within one node, as NCCL times it: ``base_latency + steps × step_latency``
    seconds (NCCL's tuner, ``src/graph/tuning.cc``: a ring all-reduce over n GPUs takes 2(n−1) steps,
    an all-gather n−1) plus the bytes each GPU sends over ``bus_bandwidth``, the busbw nccl-tests
    reports (doc/PERFORMANCE.md: an all-reduce of S bytes sends S × 2(n−1)/n, so the same busbw
    holds at any n).  The latency is the low-latency protocol's and the bandwidth the large-size
    ring's, each the best NCCL reaches: a lower bound on a collective's time."""

    bus_bandwidth: float  # bytes/s
    base_latency: float  # seconds per call
    step_latency: float  # seconds per ring step

    def seconds(self, steps: int, bus_bytes: float) -> float:
        """One call of ``steps`` ring steps in which each GPU sends ``bus_bytes``."""
        return self.base_latency + steps * self.step_latency + bus_bytes / self.bus_bandwidth


@dataclass(frozen=True)
class Device:
    """The roofs of one device.

    ``bandwidth_curve`` gives the bandwidth of a copy by its working set (the caches are faster
    than the memory that sets ``bandwidth``), measured on the ``cpu`` only.
    ``family_efficiency`` is the achieved fraction of the roofs per operator family, measured
    by calibration (only the ``cpu`` has it: a datasheet device is taken at its datasheet
    figures, 1.0); ``family_overhead_seconds`` the fixed cost of one operator call per family,
    ``op_overhead_seconds`` the generic one and ``module_call_seconds`` that of one module call,
    also measured on the ``cpu`` only (0 on datasheet devices).  ``interconnect_bandwidth`` is
    the GPU-to-GPU link's, both directions together (a ring all-reduce sends at half of it each way);
    ``network_bandwidth`` each GPU's port to other nodes of ``gpus_per_node`` GPUs, quoted the same way.
    ``collectives`` is what NCCL reaches on that link (None where no nccl-tests figure is published).
    """

    name: str
    title: str
    kind: Allocator  # a GPU's (cuda) or this machine's (cpu)
    peak_flops: dict[str, float]
    bandwidth: float
    memory_bytes: int | None
    sources: dict[str, str] = field(default_factory=dict)  # figure -> "document, url"
    # (working-set bytes, bytes/s) of copies, ascending (cpu: calibrated; datasheet devices: none)
    bandwidth_curve: tuple[tuple[int, float], ...] = ()
    family_efficiency: dict[str, float] = field(default_factory=dict)
    family_overhead_seconds: dict[str, float] = field(default_factory=dict)  # fixed cost of one call
    op_overhead_seconds: float = 0.0
    module_call_seconds: float = 0.0  # fixed cost of one module call (cpu: calibrated)
    notes: str = ""
    interconnect: str = ""  # the GPU-to-GPU link: "NVLink 4", "PCIe Gen4 x16"
    interconnect_bandwidth: float | None = None  # bytes/s, both directions together, as datasheets quote it
    gpus_per_node: int | None = None  # the GPUs of the vendor's system joined by ``interconnect``
    network: str = ""  # the link between such nodes, one port per GPU: "InfiniBand NDR 400 Gb/s per GPU"
    network_bandwidth: float | None = None  # bytes/s per GPU, both directions together
    collectives: RingCollectives | None = None  # NCCL's ring within a node

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype`` (fp32, tf32, bf16, fp16, fp8, int8)."""
        if dtype not in self.peak_flops:
            have = ", ".join(self.peak_flops)
            raise BadRequest(f"{self.name} has no {dtype} peak in its datasheet (it lists {have})")
        return self.peak_flops[dtype]


@cache
def _raw() -> dict[str, Any]:
    text = resources.files("nncost.hardware").joinpath("catalogue.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def names() -> list[str]:
    """The device names ``--hardware`` takes: the catalogue's, and ``cpu`` (calibrated by
    ``nncost.hardware.calibration``)."""
    return [k for k in _raw() if not k.startswith("_")] + ["cpu"]


def _citation(key: str) -> str:
    ref = _raw()["_references"][key]
    return f"{ref['document']}, {ref['url']}"


def catalogue_device(name: str) -> Device:
    """A named datasheet device; a clear error with close names for anything else."""
    key = name.strip().lower()
    if key == "cpu":
        raise BadRequest("'cpu' is measured on this machine, not read from the catalogue (nncost.hardware.calibration)")
    raw = _raw()
    if key.startswith("_") or key not in raw:
        raise BadRequest(f"unknown hardware {name!r}{did_you_mean(key, names())} (known: {', '.join(names())})")
    entry = raw[key]
    return Device(
        name=key,
        title=entry["title"],
        kind=Allocator(entry["kind"]),
        peak_flops={d: float(v) for d, v in entry["peak_flops"].items()},
        bandwidth=float(entry["bandwidth"]),
        memory_bytes=int(entry["memory_bytes"]),
        sources={figure: _citation(ref) for figure, ref in entry["sources"].items()},
        notes=entry.get("notes", ""),
        interconnect=entry.get("interconnect", ""),
        interconnect_bandwidth=entry.get("interconnect_bandwidth"),
        gpus_per_node=entry.get("gpus_per_node"),
        network=entry.get("network", ""),
        network_bandwidth=entry.get("network_bandwidth"),
        collectives=RingCollectives(float(entry["allreduce_bus_bandwidth"]), float(entry["ring_base_latency"]),
                                    float(entry["ring_step_latency"])) if "allreduce_bus_bandwidth" in entry else None,
    )


def match_cuda_name(gpu_name: str) -> str | None:
    """The catalogue key of a CUDA device from its driver name (``NVIDIA H100 80GB HBM3``), if listed."""
    text = gpu_name.upper()
    rules = (("H200", "h200"), ("H100", "h100-pcie" if "PCIE" in text else "h100-sxm"),
             ("A100", "a100-80gb" if "80GB" in text else "a100-40gb"), ("L40S", "l40s"), ("L4", "l4"),
             ("T4", "t4"), ("V100", "v100"), ("4090", "rtx-4090"), ("3090", "rtx-3090"))
    for marker, key in rules:
        if marker in text.replace(" ", "") or marker in text.split():
            return key
    return None
