"""Human units, for renderers only: the records keep bytes and plain counts."""

from __future__ import annotations

from collections.abc import Sequence


def count(n: float) -> str:
    """1234567 -> '1.23 M' (decimal prefixes, as parameter and MAC counts are quoted)."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= threshold:
            return f"{n / threshold:.2f} {suffix}"
    return f"{int(n)}" if float(n).is_integer() else f"{n:.2f}"


def nbytes(n: float) -> str:
    """1536 -> '1.50 KiB' (binary prefixes, as memory is quoted)."""
    for threshold, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= threshold:
            return f"{n / threshold:.2f} {suffix}"
    return f"{int(n)} B"


def shape(s: Sequence[int]) -> str:
    return "×".join(str(d) for d in s) if s else "scalar"


def shapes(items: Sequence[Sequence[int]], limit: int = 2) -> str:
    if not items:
        return "-"
    text = ", ".join(shape(s) for s in items[:limit])
    return text + (f" (+{len(items) - limit})" if len(items) > limit else "")


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def grouped(n: int) -> str:
    return f"{n:,}"


def ratio(r: float) -> str:
    """0.1138 -> '0.114×', 2.5 -> '2.50×' (three significant figures, at least two decimals)."""
    return f"{r:.2f}×" if r >= 1 else f"{r:#.3g}×"


def seconds(s: float) -> str:
    """0.00123 -> '1.23 ms'."""
    for threshold, suffix, scale in ((1.0, "s", 1.0), (1e-3, "ms", 1e3), (1e-6, "µs", 1e6)):
        if abs(s) >= threshold:
            return f"{s * scale:.3g} {suffix}"
    return f"{s * 1e9:.3g} ns"


def rate(flops_per_second: float) -> str:
    """3.1e14 -> '310 TFLOP/s'."""
    for threshold, suffix in ((1e15, "PFLOP/s"), (1e12, "TFLOP/s"), (1e9, "GFLOP/s"), (1e6, "MFLOP/s")):
        if abs(flops_per_second) >= threshold:
            return f"{flops_per_second / threshold:.3g} {suffix}"
    return f"{flops_per_second:.3g} FLOP/s"


def bandwidth(bytes_per_second: float) -> str:
    """3.35e12 -> '3.35 TB/s' (decimal, as datasheets quote bandwidth)."""
    for threshold, suffix in ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s")):
        if abs(bytes_per_second) >= threshold:
            return f"{bytes_per_second / threshold:.3g} {suffix}"
    return f"{bytes_per_second:.3g} B/s"
