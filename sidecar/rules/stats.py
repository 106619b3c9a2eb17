"""NaN-aware statistics computed exactly as NumPy computes them (the Optuna rules use NumPy's)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def nanmin(values: Iterable[float]) -> float:
    """`numpy.nanmin`: the least non-NaN value; NaN when there is none."""
    kept = [v for v in values if not math.isnan(v)]
    return min(kept) if kept else math.nan


def nanmax(values: Iterable[float]) -> float:
    """`numpy.nanmax`: the greatest non-NaN value; NaN when there is none."""
    kept = [v for v in values if not math.isnan(v)]
    return max(kept) if kept else math.nan


def percentile_of_sorted(ordered: Sequence[float], q: float) -> float:
    """`numpy.nanpercentile(values, q)` with its default (linear) method, to the last bit, for
    values already without NaN and in ascending order: the virtual index (n - 1) * q / 100
    between the two nearest order statistics, interpolated with NumPy's `_lerp` (from the upper
    one when the fraction is at least 0.5). NaN for no values."""
    n = len(ordered)
    if n == 0:
        return math.nan
    virtual = (n - 1) * (q / 100)
    below = math.floor(virtual)
    below = min(max(below, 0), n - 1)
    above = min(below + 1, n - 1)
    gamma = virtual - below
    a, b = ordered[below], ordered[above]
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma
