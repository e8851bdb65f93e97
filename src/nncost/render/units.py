"""Human units, for renderers only: the records keep bytes and plain counts."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

NONE = "-"  # a figure that is zero or does not apply, in every view
ELLIPSIS = "…"
FALLBACK_WIDTH = 120  # when the output is not a terminal and COLUMNS is not set


def terminal_width() -> int:
    """The terminal's columns (``COLUMNS`` first, as ``shutil`` reads it), 120 off a terminal:
    the width every terminal view lays itself out for."""
    return shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns


COUNT_PREFIXES = ((1e24, "Y"), (1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"),
                  (1e3, "K"))
BYTE_PREFIXES = ((1 << 80, "YiB"), (1 << 70, "ZiB"), (1 << 60, "EiB"), (1 << 50, "PiB"), (1 << 40, "TiB"),
                 (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def count(n: float) -> str:
    """1234567 -> '1.23 M' (decimal prefixes up to Y, as parameter and MAC counts are quoted)."""
    for threshold, suffix in COUNT_PREFIXES:
        if abs(n) >= threshold * 0.999995:  # what rounds up to 1,000.00 of a prefix is 1.00 of the next
            return f"{n / threshold:.2f} {suffix}"
    return f"{int(n)}" if float(n).is_integer() else f"{n:.2f}"


def nbytes(n: float) -> str:
    """1536 -> '1.50 KiB' (binary prefixes up to YiB, as memory is quoted)."""
    for threshold, suffix in BYTE_PREFIXES:
        if abs(n) >= threshold * 0.999995:
            return f"{n / threshold:.2f} {suffix}"
    return f"{int(n)} B"


def bytes_by_dtype(total: int, by_dtype: Mapping[str, int]) -> str:
    """'97.49 MiB, float32'; with several dtypes, each one's share: '1.2 GiB (1.0 GiB bfloat16, ...)'."""
    if len(by_dtype) <= 1:
        return nbytes(total) + "".join(f", {dtype}" for dtype in by_dtype)
    return f"{nbytes(total)} ({', '.join(f'{nbytes(b)} {dtype}' for dtype, b in by_dtype.items())})"


def shape(s: Sequence[int]) -> str:
    return "×".join(str(d) for d in s) if s else "scalar"


def shapes(items: Sequence[Sequence[int]], limit: int = 2) -> str:
    if not items:
        return NONE
    text = ", ".join(shape(s) for s in items[:limit])
    return text + (f" (+{len(items) - limit})" if len(items) > limit else "")


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def grouped(n: int) -> str:
    return f"{n:,}"


def ratio(r: float) -> str:
    """0.1138 -> '0.114×', 2.5 -> '2.50×' (three significant figures, at least two decimals)."""
    return f"{r:.2f}×" if r >= 1 else f"{r:#.3g}×"


def _figures(x: float) -> str:
    """Three significant figures, trailing zeros kept so a column lines up: 5.1 -> '5.10', 614 -> '614'."""
    if abs(x) >= 999.5:
        return f"{x:,.0f}"
    return f"{x:#.3g}".rstrip(".")


MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def seconds(s: float) -> str:
    """0.00123 -> '1.23 ms', 5.1e-6 -> '5.10 µs', 90 -> '1.50 min', 53805 -> '14.9 h',
    1.2e6 -> '13.9 days' (every view's times: a layer's, a time to first token, a run's)."""
    if abs(s) >= 2 * DAY:
        return f"{_figures(s / DAY)} days"
    if abs(s) >= HOUR * 0.9995:
        return f"{_figures(s / HOUR)} h"
    if abs(s) >= MINUTE * 0.9995:
        return f"{_figures(s / MINUTE)} min"
    for threshold, suffix, scale in ((1.0, "s", 1.0), (1e-3, "ms", 1e3), (1e-6, "µs", 1e6)):
        if abs(s) >= threshold * 0.9995:  # what rounds up to 1,000 of a unit is 1.00 of the next
            return f"{_figures(s * scale)} {suffix}"
    return f"{_figures(s * 1e9)} ns"


def rate(flops_per_second: float) -> str:
    """3.1e14 -> '310 TFLOP/s'."""
    for threshold, suffix in ((1e18, "EFLOP/s"), (1e15, "PFLOP/s"), (1e12, "TFLOP/s"), (1e9, "GFLOP/s"),
                              (1e6, "MFLOP/s")):
        if abs(flops_per_second) >= threshold:
            return f"{flops_per_second / threshold:.3g} {suffix}"
    return f"{flops_per_second:.3g} FLOP/s"


def bandwidth(bytes_per_second: float) -> str:
    """3.35e12 -> '3.35 TB/s' (decimal, as datasheets quote bandwidth)."""
    for threshold, suffix in ((1e15, "PB/s"), (1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s")):
        if abs(bytes_per_second) >= threshold:
            return f"{bytes_per_second / threshold:.3g} {suffix}"
    return f"{bytes_per_second:.3g} B/s"


def per_second(rate: float) -> str:
    """A rate of whole things (tokens, samples): 1234.56 -> '1,234.6', 0.04123 -> '0.0412' (three
    significant figures below one, where one decimal would show 0.0)."""
    return f"{rate:,.1f}" if rate >= 1 or rate == 0 else f"{rate:#.3g}"


def samples_per_second(rate: float) -> str:
    """1234.56 -> '1,234.6 samples/s'."""
    return f"{per_second(rate)} samples/s"


def _has_digit(component: str) -> bool:
    return any(c.isdigit() for c in component)


def _cut(name: str, cuts: list[tuple[int, int]]) -> str:
    """``name`` with each (start, end) span replaced by one ellipsis."""
    pieces, at = [], 0
    for start, end in cuts:
        pieces.append(name[at:start])
        at = end
    return ELLIPSIS.join([*pieces, name[at:]])


def _merge(cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(cuts):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


MIN_KEPT = 6  # characters of a component cut in its middle; shorter, it goes whole


def path(name: str, limit: int) -> str:
    """A dotted module path in at most ``limit`` characters, shortened in its middle.

    The last component, the layer's own name, stays whole; so do the components with digits
    (``layer2``, ``0``, ``h.11``), which tell one block of a stack from the next.  The words
    between them go first, from the left, each replaced by ``…`` (``…0.blocks.0.attn.qkv``), and
    the last one to go keeps its two ends when enough of it is left (``layer1.0.down…mple.0``);
    the numbers go only when the words are not enough.  Two paths can still shorten alike:
    callers that need distinct labels check, and give the names more room.
    """
    if len(name) <= limit:
        return name
    if limit <= 1:
        return ELLIPSIS[:limit]
    parts = name.split(".")
    starts = [sum(len(p) + 1 for p in parts[:i]) for i in range(len(parts))]
    words = [i for i in range(len(parts) - 1) if not _has_digit(parts[i])]
    numbers = [i for i in range(len(parts) - 1) if _has_digit(parts[i])]
    cuts: list[tuple[int, int]] = []
    for i in words + numbers:
        start, end = starts[i], starts[i] + len(parts[i])
        whole = _merge([*cuts, (max(start - 1, 0), end + 1)])  # the component and the dots around it
        if len(_cut(name, whole)) > limit:
            cuts = whole
            continue
        excess = len(_cut(name, cuts)) - limit
        kept = len(parts[i]) - (excess + 1)  # replacing n characters by one ellipsis saves n - 1
        if kept >= MIN_KEPT:
            middle = start + (kept + 1) // 2
            return _cut(name, _merge([*cuts, (middle, middle + excess + 1)]))
        return _cut(name, whole)
    return ELLIPSIS + name[-(limit - 1):]


def aligned(lines: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    """Each (label, value) pair as one line, the values in one column."""
    width = max((len(label) for label, _ in lines), default=0)
    return [f"{indent}{label:<{width}}  {value}" for label, value in lines]
