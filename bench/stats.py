"""Medians, spreads and percentiles, and how the report and the logs print them."""

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements (NaN-free)."""
    clean = [value for value in values if value is not None and not math.isnan(value)]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean), "n": len(clean)}


def fmt(value: float, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def fmt_summary(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """``median (min–max)`` of repeated measurements."""
    s = summary([value * scale for value in values if value is not None])
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def ratio_values(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-repetition ratios (the i-th numerator over the i-th denominator, same run, interleaved)."""
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d]


def size_label(size: int) -> str:
    """``1 MiB``, ``64 KiB``, ``1000 B``: the largest binary unit that divides ``size`` exactly."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"
