"""Pure helpers of the benchmark: summaries of repeated figures, the interleaved run order, paired ratios
and the reliability verdict from a series of load samples. No clock, no processes: unit-tested in
tests/test_bench.py."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summary(values: Sequence[float | None]) -> dict | None:
    """Median and spread (min, max, and the quartiles) of the figures of the repeats; None values (a repeat
    that has no such figure) are left out; None when none is left."""
    xs = sorted(float(v) for v in values if v is not None)
    if not xs:
        return None
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "q1": q1, "q3": q3, "n": len(xs)}


def relative_spread(s: dict | None) -> float | None:
    """(max - min) / median: how far apart the repeats lie, as a share of the figure."""
    if not s or not s["median"]:
        return None
    return (s["max"] - s["min"]) / abs(s["median"])


def show(s: dict | None, spec: str = ".1f", scale: float = 1.0, suffix: str = "") -> str:
    """'median (min–max)' for a table cell; the median alone for one repeat or when all agree."""
    if s is None:
        return "–"
    med, lo, hi = (format(s[k] * scale, spec) + suffix for k in ("median", "min", "max"))
    return med if s["n"] == 1 or lo == hi else f"{med} ({lo}–{hi})"


def interleaved(arms: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """The run order: (repeat, arm) with the arms alternated within each repeat, B M P B M P ..., so that
    a load that changes during the benchmark touches every arm alike instead of one."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if len(set(arms)) != len(arms) or not arms:
        raise ValueError(f"arms must be distinct and not empty, got {list(arms)}")
    return [(r, arm) for r in range(repeats) for arm in arms]


def paired_ratios(runs: Sequence[dict], key: str, arm: str, reference: str) -> list[float]:
    """Per repeat, `key` of `arm` over `key` of `reference` (the two ran next to each other, under the
    same load); repeats where either is missing or the reference is zero are left out."""
    by = {(r["repeat"], r["arm"]): r for r in runs}
    out = []
    for repeat in sorted({r["repeat"] for r in runs}):
        a, b = by.get((repeat, arm)), by.get((repeat, reference))
        if a and b and a.get(key) is not None and b.get(key):
            out.append(a[key] / b[key])
    return out


def load_excess(samples: Sequence[tuple[float, float]], threads: int, margin: float = 0.5):
    """The highest 1-min load average of `samples` ((seconds, load) pairs) when it exceeded `threads` (the
    benchmark's own runnable threads) by more than `margin`: others were using the cores. None if never."""
    over = [(t, load) for t, load in samples if load > threads + margin]
    return max(over, key=lambda s: s[1]) if over else None


def unreliable_reasons(run: dict, threads: int, margin: float = 0.5) -> list[str]:
    """Why one timed run cannot be trusted, from what was recorded around and during it: the 1-min load
    above `threads` + `margin` at any sample, other processes using more than `margin` cores on average
    over the run (/proc/stat), or a wait for a quiet machine that timed out."""
    reasons = []
    peak = load_excess(run.get("load_samples", []), threads, margin)
    if peak is not None:
        reasons.append(f"1-min load {peak[1]:.2f} > {threads} threads + {margin:g} (at {peak[0]:.0f} s)")
    others = run.get("others_cores")
    if others is not None and others > margin:
        reasons.append(f"other processes used {others:.2f} cores on average")
    if run.get("wait_timed_out"):
        reasons.append(f"started while others used {run.get('others_at_start', 0):.2f} cores (waited out)")
    return reasons


def top_consumers(before: dict, after: dict, seconds: float, exclude: set[int] = frozenset(), n: int = 3):
    """The `n` processes that used the most CPU between two snapshots ({pid: (name, cpu seconds)}), as
    (name, pid, cores); a process born in between counts from zero; `exclude` (ours) is left out."""
    used = []
    for pid, (name, cpu) in after.items():
        if pid in exclude:
            continue
        delta = cpu - before.get(pid, (name, 0.0))[1]
        if delta > 0:
            used.append((name, pid, delta / max(seconds, 1e-9)))
    return sorted(used, key=lambda u: -u[2])[:n]
