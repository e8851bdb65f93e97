"""The memory timeline as a picture: live bytes over the step, stacked by category."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncost.errors import BadRequest
from nncost.records.memory import CATEGORIES
from nncost.render import units
from nncost.render.files import writable, write_failed

if TYPE_CHECKING:
    from nncost.records.memory import MemoryReport


def plot_memory(report: MemoryReport, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BadRequest("--plot needs matplotlib: pip install 'nncost[plot]'") from exc
    xs = [op for op, _ in report.timeline]
    scale = 1 << 20
    series = [[live[i] / scale for _, live in report.timeline] for i in range(len(CATEGORIES))]
    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=120)
    axes.stackplot(xs, series, labels=[c.replace("_", " ") for c in CATEGORIES], step="post", alpha=0.85)
    top = axes.get_ylim()[1]
    for row, (end, name) in enumerate(zip(report.phase_ends[:3], ("forward", "loss", "backward"), strict=True)):
        axes.axvline(end, color="grey", linewidth=0.8, linestyle=":")
        axes.text(end, top * (0.98 - 0.05 * row), f" {name} ends", fontsize=7, va="top", color="grey")
    axes.axvline(report.peak_op, color="red", linewidth=1)
    label = f"peak {units.nbytes(report.peak_bytes)}\n{report.peak_at}"
    right = bool(xs) and report.peak_op > xs[0] + 0.7 * (xs[-1] - xs[0])  # near the right edge: label on the left
    axes.annotate(label, (report.peak_op, report.peak_bytes / scale), xytext=(-10 if right else 10, -40),
                  textcoords="offset points", ha="right" if right else "left", fontsize=8, color="red",
                  bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    axes.set_xlabel("operator index in the step")
    axes.set_ylabel("live MiB")
    what = f"training step, {report.optimizer}" if report.mode == "train" else "inference pass"
    axes.set_title(f"{report.model}: {what}, batch {report.batch_size} ({report.allocator} allocator semantics)")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    try:
        figure.savefig(writable(path, "the memory plot"))
    except OSError as exc:
        raise write_failed(path, "the memory plot", exc) from exc
    finally:
        plt.close(figure)
