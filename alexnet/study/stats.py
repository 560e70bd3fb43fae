"""The statistics of ``alexnet study``: a paired effect with its 95% interval, and the verdict it allows.

Arms are paired by seed (same seed: same data order and, where the shapes allow, the same init), so the
effect is the mean of the per-seed differences, arm minus reference, with the interval
``mean +- t(0.975, n - 1) * sd / sqrt(n)``. No scipy: the Student-t quantiles for 1..30 degrees of
freedom are tabulated; beyond 30 the normal's 1.96 is used.
"""
from __future__ import annotations

import math
from typing import Sequence

# Student-t 0.975 quantiles, df = 1..30 (any statistics table; scipy.stats.t.ppf(0.975, df) to 4 decimals).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
NORMAL_975 = 1.95996
VERDICTS = ("agrees", "disagrees", "inconclusive")


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T975[df - 1] if df <= len(T975) else NORMAL_975


def mean_std(values: Sequence[float | None]) -> dict:
    """Mean and sample standard deviation (n - 1) of the finite values; None where there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(finite)}


def paired_effect(arm: Sequence[float | None], reference: Sequence[float | None]) -> dict:
    """Mean of ``arm[i] - reference[i]`` over the seeds where both are finite, with a 95% t interval.

    With one pair (or none) there is no interval: ``low``/``high`` are None."""
    if len(arm) != len(reference):
        raise ValueError(f"paired values need equal lengths, got {len(arm)} and {len(reference)}")
    diffs = [a - r for a, r in zip(arm, reference)
             if a is not None and r is not None and math.isfinite(a) and math.isfinite(r)]
    stats = mean_std(diffs)
    out = {"mean": stats["mean"], "std": stats["std"], "n": stats["n"], "low": None, "high": None,
           "differences": diffs}
    if stats["n"] >= 2:
        half = t_quantile_975(stats["n"] - 1) * stats["std"] / math.sqrt(stats["n"])
        out["low"], out["high"] = stats["mean"] - half, stats["mean"] + half
    return out


def verdict(effect: dict, expected_sign: int | None) -> str:
    """``agrees`` when the 95% interval excludes 0 on the side the paper claims (``expected_sign`` -1: the
    arm's value is lower than the reference's, +1: higher), ``disagrees`` when it excludes 0 on the other
    side, else ``inconclusive`` (also with fewer than two pairs, a zero-width interval at 0, or no claim)."""
    low, high = effect.get("low"), effect.get("high")
    if expected_sign not in (-1, 1) or low is None or high is None:
        return "inconclusive"
    if low > 0:
        side = 1
    elif high < 0:
        side = -1
    else:
        return "inconclusive"
    return "agrees" if side == expected_sign else "disagrees"
