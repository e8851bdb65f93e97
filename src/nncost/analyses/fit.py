"""The largest batch whose simulated peak fits a memory budget.

Peak memory grows almost linearly with the batch, so two simulations give a first guess; the
guess is then corrected by simulating around it, and confirmed: the answer N fits and N + 1 does
not, both simulated, never extrapolated.
"""

from __future__ import annotations

from collections.abc import Callable

from nncost.errors import BadRequest

MAX_BATCH = 1 << 24
SMALLEST_UNITLESS = 1 << 20  # a budget without a unit below this many bytes is a forgotten unit


def largest_batch(peak_at: Callable[[int], int], budget: int) -> int:
    """The largest N with ``peak_at(N) <= budget``; ``peak_at`` must not decrease with N."""
    cache: dict[int, int] = {}

    def peak(n: int) -> int:
        if n not in cache:
            cache[n] = peak_at(n)
        return cache[n]

    if peak(1) > budget:
        raise BadRequest(f"even batch 1 needs {peak(1):,} B, more than the budget of {budget:,} B")
    slope = max(peak(2) - peak(1), 1)
    guess = max(1, min(MAX_BATCH, 1 + (budget - peak(1)) // slope))
    low, high = 1, None  # low fits; high (when known) does not
    if peak(guess) <= budget:
        low = guess
        step = max(1, guess // 16)
        while high is None:
            probe = min(MAX_BATCH, low + step)
            if probe == low:
                return low
            if peak(probe) <= budget:
                low, step = probe, step * 2
            else:
                high = probe
    else:
        high = guess
    while high - low > 1:
        middle = (low + high) // 2
        if peak(middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def parse_bytes(text: str) -> int:
    """``24GiB``, ``80GB``, ``512MiB``, ``1e9`` → bytes (binary units for *iB, decimal for *B).

    A number without a unit is bytes; one under a MiB holds no model, so it is refused as a
    forgotten unit (``24`` → did you mean 24GiB?) rather than answered with batch 0."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1}
    cleaned = text.strip().lower().replace(" ", "")
    suffix = next((s for s in units if cleaned.endswith(s)), "")
    number, factor = cleaned[: len(cleaned) - len(suffix)], units.get(suffix, 1)
    try:
        value = float(number) * factor
    except ValueError:
        raise BadRequest(f"cannot read {text!r} as a memory size; try 24GiB or 80GB") from None
    if value <= 0:
        raise BadRequest(f"a memory budget must be positive, got {text!r}")
    if not suffix and value < SMALLEST_UNITLESS:
        raise BadRequest(f"a memory budget of {text.strip()} has no unit, so it is {int(value):,} bytes, too little "
                         f"for any model; did you mean {text.strip()}GiB?")
    return int(value)
