"""Shared timing helpers for the benchmark scripts (not a pysciml module).

Every figure is a ratio against an anchor timed in the same process. The two sides
are timed alternately, round by round (and in alternating order), so that load from
other processes on the machine falls on both equally; the figure is the ratio of the
medians over rounds.
"""

import statistics
import time
from collections.abc import Callable


def _calibrate(fn: Callable[[], object], target_s: float) -> int:
    """How many calls of `fn` make one sample of about `target_s` seconds."""
    t = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t, 1e-7)
    return max(1, min(10_000, round(target_s / dt)))


def compare(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int,
    warmup: int = 3,
    target_s: float = 0.01,
) -> dict[str, dict[str, float]]:
    """Times each `fn` (which must block until its result is ready) `rounds` times,
    interleaved. Returns, per name, the median, the quartiles and the minimum of the
    time per call in seconds, the number of calls per sample, the median over rounds
    of the ratio to the first name's time in the same round, and the samples."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    inner = {name: _calibrate(fn, target_s) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, n = fns[name], inner[name]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t) / n)
    out = {}
    first = samples[names[0]]
    for name, xs in samples.items():
        q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
        out[name] = {
            "median": statistics.median(xs),
            "q1": q[0],
            "q3": q[2],
            "min": min(xs),
            "calls_per_sample": inner[name],
            # Median over rounds of this side's time over the first side's, same round.
            "paired_ratio": statistics.median(x / y for x, y in zip(xs, first)),
            "samples": xs,
        }
    return out


def ms(x: float) -> str:
    return f"{1e3 * x:.3f}"


def us(x: float) -> str:
    return f"{1e6 * x:.1f}"


def met(ratio: float, goal: float) -> str:
    return "yes" if ratio <= goal else "**no**"
