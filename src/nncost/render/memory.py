"""The memory report as text: the peak, where it happens, and what it is made of."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncost.render import units

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport


def memory_lines(report: MemoryReport) -> list[tuple[str, str]]:
    what = (f"one training step ({report.optimizer}, batch {report.batch_size})" if report.mode == "train"
            else f"one inference pass (no_grad, batch {report.batch_size})")
    lines = [
        ("Memory of", f"{what}, {report.allocator} allocator semantics"
                      + (f", {report.precision}" if report.precision != "fp32" else "")),
        ("Peak", f"{units.nbytes(report.peak_bytes)} ({units.grouped(report.peak_bytes)} B) in the "
                 f"{report.peak_phase}, at {report.peak_at}"),
    ]
    if report.measured_peak_bytes:
        error = (report.peak_bytes - report.measured_peak_bytes) / report.measured_peak_bytes
        lines.append(("Measured peak", f"{units.nbytes(report.measured_peak_bytes)} "
                                       f"({units.grouped(report.measured_peak_bytes)} B, one real step, "
                                       f"{report.allocator}); "
                                       f"estimate error {100 * error:+.2f}%"))
    if report.allocator_reserved_bytes is not None and report.allocator_allocated_bytes is not None:
        lines.append(("CUDA allocator", f"{units.nbytes(report.allocator_allocated_bytes)} allocated, "
                                        f"{units.nbytes(report.allocator_reserved_bytes)} reserved (its rules, "
                                        "replayed)"))
        lines.append(("  not included", "cuBLAS/cuDNN workspaces; the CUDA context (docs/memory_cuda.md)"))
    if report.budget_bytes is not None:
        verdict = "fits" if report.fits else "does NOT fit"
        per_gpu = " (per GPU)" if report.per_gpu is not None else ""
        lines.append(("Fits", f"{verdict}: the peak{per_gpu} against a budget of {units.nbytes(report.budget_bytes)}"))
    else:
        lines.append(("Fits", "no budget given: --hardware NAME (its memory) or --fit 24GiB"))
    for category, nbytes in report.breakdown.items():
        share = units.percent(nbytes / report.peak_bytes) if report.peak_bytes else "-"
        lines.append((f"  {category.replace('_', ' ')}", f"{units.nbytes(nbytes)} ({share})"))
    if report.per_gpu is not None:
        peak = sum(report.per_gpu.values())
        parts = ", ".join(f"{k.replace('_', ' ')} {units.nbytes(v)}" for k, v in report.per_gpu.items() if v)
        lines.append((f"Per GPU ({report.sharding}, {report.gpus} GPUs)", f"{units.nbytes(peak)}: {parts}"))
    if report.max_batch is not None and report.budget_bytes is not None:
        lines.append(("Largest batch that fits", f"{report.max_batch} in {units.nbytes(report.budget_bytes)}"
                                                 " (simulated at that batch and the next)"))
    if report.mode == "train":
        lines.append(("Backward MACs / FLOPs", f"{units.count(report.backward_macs)} / "
                                               f"{units.count(report.backward_flops)} "
                                               f"(forward {units.count(report.forward_macs)} / "
                                               f"{units.count(report.forward_flops)})"))
        lines.append(("Optimizer FLOPs", units.count(report.optimizer_flops)))
    if report.checkpointed:
        lines.append(("Checkpointing", f"{len(report.checkpointed)} modules ({', '.join(report.checkpointed[:3])}"
                                       f"{', …' if len(report.checkpointed) > 3 else ''}); recomputation "
                                       f"{units.count(report.recompute_macs)} MACs / "
                                       f"{units.count(report.recompute_flops)} FLOPs, in the backward"))
    if report.uncounted:
        ops = ", ".join(f"{op}×{n}" for op, n in report.uncounted.items())
        lines.append(("UNCOUNTED ops in the step", ops))
    return lines


def render_memory(report: MemoryReport) -> str:
    return "\n".join(units.aligned(memory_lines(report))) + "\n"
