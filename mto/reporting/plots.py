"""The report's plots (matplotlib, Agg, PNG bytes): the metric against the few-shot size (or one bar per
line without a few-shot axis) and ROUGE-L per relation, each point the mean +- std over seeds, clipped
to the metric's range."""

from __future__ import annotations

import io
import math
import statistics
import textwrap
from typing import Any

from mto.reporting.records import FEWSHOT_KEY, RunRecord, group, is_number, short_key

# What each metric can be, so error bars stop at its ends (a split prefix, e.g. `dev_`, keeps the range).
METRIC_RANGES = {"exact_match": (0.0, 1.0), "rougeL": (0.0, 1.0), "rougeL_micro": (0.0, 1.0),
                 "accuracy": (0.0, 1.0), "unmatched": (0.0, 1.0), "filling_share": (0.0, 1.0),
                 "bleu": (0.0, 100.0), "distinct": (0.0, math.inf), "n": (0.0, math.inf)}  # fmt: skip


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take (`dev_exact_match` as `exact_match`); unbounded when unknown."""
    for name in sorted(METRIC_RANGES, key=len, reverse=True):
        if metric == name or metric.endswith("_" + name):
            return METRIC_RANGES[name]
    return (-math.inf, math.inf)


def _mean_err(values: list[float], bounds: tuple[float, float]) -> tuple[float, float, float]:
    """(mean, lower error, upper error): the sample standard deviation, clipped to `bounds`."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, mean - max(bounds[0], mean - std), min(bounds[1], mean + std) - mean


def _n_label(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return f"n={low}" if low == high else f"n={low}-{high}"


def _detail(context: str) -> str:
    """The subtitle: what each point pools, then what all runs share (wrapped to fit the figure)."""
    text = f"mean ± std over seeds; {context}" if context else "mean ± std over seeds"
    return "\n".join(textwrap.wrap(text, 70))


def _size_label(x) -> str:
    return "full" if x is None else str(x)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(records: list[RunRecord], lines_by: list[str]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for key, members in group(records, lines_by).items():
        out[" / ".join(str(v) for v in key) or "all runs"] = members
    return out


def fewshot_figure(records: list[RunRecord], metric: str, lines_by: list[str], label: str = "",
                   context: str = ""):  # fmt: skip
    """`metric` against the few-shot size (data.n_train; `full` at the right when some runs used all the
    training data), one line per value of `lines_by`, mean ± std over seeds (clipped to the metric's
    range). With a single size there is no few-shot axis: one bar per line instead. None without data."""
    records = [r for r in records if is_number(r.metrics.get(metric))]
    if not records:
        return None
    plt = pyplot()
    bounds = metric_range(metric)
    series = _series(records, lines_by)
    sizes = sorted({r.value(FEWSHOT_KEY) for r in records}, key=lambda x: math.inf if x is None else x)
    label = label or " / ".join(short_key(k) for k in lines_by)
    detail = _detail(context)
    if len(sizes) < 2:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(series) + 2), 4))
        names = list(series)
        stats = [_mean_err([m.metrics[metric] for m in series[n]], bounds) for n in names]
        ax.bar(range(len(names)), [s[0] for s in stats], 0.6,
               yerr=[[s[1] for s in stats], [s[2] for s in stats]], capsize=4, color="tab:blue")  # fmt: skip
        ax.set_xticks(range(len(names)), [f"{n}\n(n={len(series[n])})" for n in names])
        size = sizes[0]
        where = "full training data" if size is None else f"{FEWSHOT_KEY}={size}"
        ax.set_title(f"{metric} by {label} ({where})\n{detail}", fontsize=10)
        ax.set_xlabel(label)
    else:
        finite = [x for x in sizes if x is not None]
        full_at = finite[-1] * 2 if finite else 1.0
        position = {x: full_at if x is None else x for x in sizes}
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for name, members in series.items():
            points: dict[Any, list[float]] = {}
            for m in members:
                points.setdefault(m.value(FEWSHOT_KEY), []).append(m.metrics[metric])
            xs = [x for x in sizes if x in points]
            stats = [_mean_err(points[x], bounds) for x in xs]
            ax.errorbar([position[x] for x in xs], [s[0] for s in stats],
                        yerr=[[s[1] for s in stats], [s[2] for s in stats]], marker="o", capsize=3,
                        label=f"{name} ({_n_label([len(points[x]) for x in xs])} per point)")  # fmt: skip
        if len(finite) > 1 and finite[-1] / max(finite[0], 1e-9) >= 4:
            ax.set_xscale("log")
        ax.set_xticks([position[x] for x in sizes], [_size_label(x) for x in sizes])
        ax.minorticks_off()
        ax.set_title(f"{metric} vs few-shot size\n{detail}", fontsize=10)
        xlabel = f"training size per relation ({FEWSHOT_KEY})"
        if None in sizes:
            xlabel += "; full: all training data"
        ax.set_xlabel(xlabel)
        ax.legend(title=label, fontsize="small")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def relation_figure(records: list[RunRecord], lines_by: list[str], label: str = "", context: str = ""):
    """ROUGE-L per relation, one bar per value of `lines_by`, mean ± std over seeds, at one few-shot
    size: the largest (full data if some runs used it). None when no run has per-relation scores."""
    records = [r for r in records if r.metrics.get("rougeL_per_group")]
    if not records:
        return None
    plt = pyplot()
    sizes = {r.value(FEWSHOT_KEY) for r in records}
    size = None if None in sizes else max(sizes)
    records = [r for r in records if r.value(FEWSHOT_KEY) == size]
    series = _series(records, lines_by)
    groups = sorted({g for r in records for g in r.metrics["rougeL_per_group"]})
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, len(groups) * 0.9), 4.2))
    for i, (name, members) in enumerate(series.items()):
        stats = []
        for g in groups:
            values = [m.metrics["rougeL_per_group"][g] for m in members if g in m.metrics["rougeL_per_group"]]
            stats.append(_mean_err(values, (0.0, 1.0)) if values else (math.nan, 0.0, 0.0))
        ax.bar([j + i * width for j in range(len(groups))], [s[0] for s in stats], width,
               yerr=[[s[1] for s in stats], [s[2] for s in stats]], capsize=2,
               label=f"{name} (n={len(members)})")  # fmt: skip
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))], groups, rotation=45,
                  ha="right")  # fmt: skip
    where = "full training data" if size is None else f"{FEWSHOT_KEY}={size}"
    if len(sizes) > 1:
        where += " (the largest size)"
    ax.set_title(f"ROUGE-L per relation, {where}\n{_detail(context)}", fontsize=10)
    ax.set_xlabel("relation")
    ax.set_ylabel("ROUGE-L (F1)")
    ax.set_ylim(0, 1)
    ax.legend(title=label or " / ".join(short_key(k) for k in lines_by), fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    pyplot().close(fig)
    return buffer.getvalue()


def mi_figure(title: str, panel: dict, threshold: float | None, overall: str = "overall"):
    """MI against the few-shot size for one setting x template pair (`panel`: relation -> size -> row of
    mto/reporting/mi.py), one line per relation, the overall MI in black, the decision threshold dashed.
    None with fewer than two sizes (the table says it all)."""
    sizes = sorted(
        {x for by_size in panel.values() for x in by_size}, key=lambda x: math.inf if x is None else x
    )
    if len(sizes) < 2:
        return None
    plt = pyplot()
    finite = [x for x in sizes if x is not None]
    full_at = finite[-1] * 2 if finite else 1.0
    position = {x: full_at if x is None else x for x in sizes}
    many = len(panel) > 8  # the legend goes beside the plot
    fig, ax = plt.subplots(figsize=(8.5 if many else 6.5, 4.2))
    for relation, by_size in panel.items():
        xs = [x for x in sizes if x in by_size]
        style = {"color": "black", "linewidth": 2.5} if relation == overall else {"linewidth": 1.2}
        ax.plot(
            [position[x] for x in xs], [by_size[x]["mi"] for x in xs], marker="o", label=relation, **style
        )
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    if len(finite) > 1 and finite[-1] / max(finite[0], 1e-9) >= 4:
        ax.set_xscale("log")
    ax.set_xticks([position[x] for x in sizes], [_size_label(x) for x in sizes])
    ax.minorticks_off()
    ax.set_title(f"maskability index vs few-shot size (DR: mean over seeds)\n{title}", fontsize=10)
    ax.set_xlabel(f"training size per relation ({FEWSHOT_KEY})")
    ax.set_ylabel("MI = (DR_mapping - DR_filling) / DR_mapping")
    beside = {"loc": "center left", "bbox_to_anchor": (1.0, 0.5)} if many else {}
    ax.legend(title="relation", fontsize="small", **beside)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
