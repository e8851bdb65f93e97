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
