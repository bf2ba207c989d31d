"""`mto report`: gather runs into one table (mean +- std over seeds), CSV, Markdown, plots and HTML.

    mto report outputs/multirun/train/2026-11-22 by=template.name,data.n_train metric=rougeL

It reads each run's own `run.json`, `metrics.json` and `.hydra/config.yaml`, so it works on a sweep that
is still running (unfinished runs are listed apart, with failed ones). A `skipped` job (its completed
twin made it unnecessary) counts through its twin, once. Config keys are dotted paths; `template` is
short for `template.name`, `model` for `model.name_or_path`, `data` for `data.name`; `lineage.*` and
`figures.*` keys read run.json (`adaptation` is `lineage.adapt_objective`: how the model was adapted).

Only like runs are averaged: runs that land in one row (or one point of a plot) must have the same
resolved config but for the seed. A run named by `run=`, `adapt_run=` or `match_run=` is compared
through that run's own config (`adapt_run.objective.name`), so two seeds of one arm are alike while
two adaptations are not. Runs that differ in anything else are refused with the keys that differ,
unless `pool=true` (then a warning says what was pooled).
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from mto.curves import plot_runs
from mto.errors import MtoError
from mto.runs import NOT_HASHED, RUN_FILE, read_json

SHORT_KEYS = {"template": "template.name", "model": "model.name_or_path", "data": "data.name",
              "objective": "objective.name", "tuning": "tuning.method",
              "adaptation": "lineage.adapt_objective"}  # fmt: skip
DEFAULT_BY = ("stage", "data.name", "model.name_or_path", "template.name", "data.n_train")
FEWSHOT_KEY = "data.n_train"
# Keys a suggestion of `by=` prefers when several would split runs as well.
PREFERRED = {*DEFAULT_BY, *SHORT_KEYS.values()}

# Keys in which runs averaged together may differ: the seeds, and how a run is carried out.
SEED_KEYS = ("seed", "data.sample_seed")
IGNORED_KEYS = (*SEED_KEYS, "threads", *NOT_HASHED)
# Keys naming another run (and the run.json lineage field that holds its resolved path): compared
# through that run's config, under the key as prefix (`adapt_run.objective.name`).
REFERENCES = {"run": "train_run", "adapt_run": "adapt_run", "match_run": "match_run"}

# What each metric can be, so error bars stop at its ends (a split prefix, e.g. `dev_`, keeps the range).
METRIC_RANGES = {"exact_match": (0.0, 1.0), "rougeL": (0.0, 1.0), "rougeL_micro": (0.0, 1.0),
                 "accuracy": (0.0, 1.0), "unmatched": (0.0, 1.0), "filling_share": (0.0, 1.0),
                 "bleu": (0.0, 100.0), "distinct": (0.0, math.inf), "n": (0.0, math.inf)}  # fmt: skip


@dataclass
class RunRecord:
    path: Path
    status: str
    config: dict
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # run.json
    run_dir: Path | None = None  # the directory the record was read from (a skipped job's, not its twin's)
    _flat: dict | None = field(default=None, repr=False)
    _node: Any = field(default=None, repr=False)

    def value(self, key: str):
        """A config key (dotted), a run.json field for `lineage.*` / `figures.*` keys, or a key of a
        referenced run (`adapt_run.objective.name`)."""
        if key == "stage":
            return self.config.get("stage")
        if key == "template.name" and self.info.get("template"):  # its own name if its text was overridden
            return self.info["template"]
        if key.startswith(("lineage.", "figures.")):
            section, _, name = key.partition(".")
            return self.info.get(section, {}).get(name)
        if self._node is None:
            self._node = OmegaConf.create(self.config)
        value = OmegaConf.select(self._node, key, default=None, throw_on_resolution_failure=False)
        if value is None and key.split(".")[0] in REFERENCES:
            value = self.comparable().get(key)
        return value

    def comparable(self) -> dict[str, Any]:
        """The flat config this run is compared on: seeds and run-management keys left out, the runs it
        names replaced by their own comparable configs."""
        if self._flat is None:
            self._flat = comparable_config(self.config, self.info.get("lineage") or {})
        return self._flat


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: "{}"}
    if isinstance(node, list):
        return {prefix[:-1]: json.dumps(node, sort_keys=True, default=str)}
    return {prefix[:-1]: node}


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def comparable_config(config: dict, lineage: dict, depth: int = 0) -> dict[str, Any]:
    """`config` flattened, less IGNORED_KEYS; a REFERENCES key becomes the referenced run's comparable
    config under that prefix (found through run.json's lineage, else the key's value as a path)."""
    flat = {k: v for k, v in _flatten(config).items() if not _ignored(k)}
    for ref, lineage_key in REFERENCES.items():
        target = lineage.get(lineage_key) or flat.get(ref)
        if not target:
            continue
        target_dir = Path(str(target))
        cfg_path = target_dir / ".hydra" / "config.yaml"
        if depth >= 3 or not cfg_path.is_file():
            continue  # the path itself stays the value compared
        flat.pop(ref, None)
        sub_info = read_json(target_dir / RUN_FILE) if (target_dir / RUN_FILE).is_file() else {}
        sub = comparable_config(yaml.safe_load(cfg_path.read_text()) or {}, sub_info.get("lineage") or {},
                                depth + 1)  # fmt: skip
        flat.update({f"{ref}.{k}": v for k, v in sub.items()})
    return flat


def find_runs(paths: list[str]) -> list[Path]:
    """Every run directory (holding run.json) at or under `paths`."""
    found = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise MtoError(f"report: {path} does not exist")
        found += [path] if (path / RUN_FILE).is_file() else [p.parent for p in sorted(path.rglob(RUN_FILE))]
    return sorted(set(found))


def load_record(run_dir: Path) -> RunRecord:
    info = read_json(run_dir / RUN_FILE)
    source = Path(info["twin"]) if info.get("status") == "skipped" and info.get("twin") else run_dir
    config_path = run_dir / ".hydra" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.is_file() else {}
    status = info.get("status", "unknown")
    metrics = {}
    if status in ("completed", "skipped") and (source / "metrics.json").is_file():
        metrics = read_json(source / "metrics.json")
        metrics.update({k: v for k, v in read_json(source / RUN_FILE).get("figures", {}).items()
                        if k not in metrics and isinstance(v, (int, float))})  # fmt: skip
    if status == "skipped" and (source / RUN_FILE).is_file():
        info = {**info, "lineage": read_json(source / RUN_FILE).get("lineage", {})}
    return RunRecord(path=source.resolve(), status=status, config=config, metrics=metrics, info=info,
                     run_dir=run_dir)  # fmt: skip


def gather(paths: list[str]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(runs with metrics, deduplicated by the run that computed them; runs without: failed, running...)"""
    done: dict[Path, RunRecord] = {}
    other = []
    for run_dir in find_runs(paths):
        record = load_record(run_dir)
        if record.metrics:
            done.setdefault(record.path, record)
        else:
            other.append(record)
    return list(done.values()), other


# ------------------------------------------------------------------ averaging only like runs


def _sort_key(key: tuple) -> tuple:
    """Numbers in numeric order (8 before 32), then text, then None (full data) last."""
    return tuple((v is None, not _number(v), v if _number(v) else str(v)) for v in key)


def group(records: list[RunRecord], keys: list[str]) -> dict[tuple, list[RunRecord]]:
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(tuple(record.value(k) for k in keys), []).append(record)
    return {k: groups[k] for k in sorted(groups, key=_sort_key)}


def differing_keys(records: list[RunRecord], keys: list[str]) -> dict[str, set[str]]:
    """Config keys (beyond `keys` and the seeds) whose values differ between runs that `keys` put
    together, each with the values seen."""
    differ: dict[str, set[str]] = {}
    for members in group(records, keys).values():
        flats = [m.comparable() for m in members]
        for key in sorted(set().union(*flats)):
            if key in keys:
                continue
            values = {str(f.get(key)) for f in flats}  # absent reads as null, the schema's default
            if len(values) > 1:
                differ.setdefault(key, set()).update(values)
    return differ


def keys_to_split(records: list[RunRecord], keys: list[str], differ: dict[str, set[str]]) -> list[str]:
    """A few keys that, added to `keys`, leave only like runs together (greedy: the key after which the
    fewest keys still differ; config-group names such as `tuning.method` win ties)."""
    added: list[str] = []
    while differ and len(added) < 8:
        ranked = [
            (len(differing_keys(records, [*keys, *added, key])), key not in PREFERRED,
             not key.endswith((".name", ".method")), len(values), key)
            for key, values in differ.items()
        ]  # fmt: skip
        added.append(min(ranked)[-1])
        differ = differing_keys(records, [*keys, *added])
    return added


def _short(key: str) -> str:
    return next((short for short, full in SHORT_KEYS.items() if full == key), key)


def check_alike(records: list[RunRecord], keys: list[str], pool: bool, option: str) -> str | None:
    """Refuse (MtoError) to average runs that `keys` put together but that differ in more than the seed;
    with `pool`, warn instead. Returns the note on what was pooled (None: only seeds were)."""
    differ = differing_keys(records, keys)
    if not differ:
        return None
    split = keys_to_split(records, keys, differ) if not pool else []
    shown = [*split, *sorted(k for k in differ if k not in split)]
    listed = "; ".join(
        f"{k} ({', '.join(sorted(differ[k])[:4])}{', ...' if len(differ[k]) > 4 else ''})" for k in shown[:6]
    )
    if len(shown) > 6:
        listed += f"; and {len(shown) - 6} more keys"
    if pool:
        note = f"pooled runs that differ in more than the seed: {listed}"
        print(f"mto report: warning: {note}", file=sys.stderr)
        return note
    suggestion = ",".join(_short(k) for k in [*keys, *split])
    raise MtoError(
        f"runs averaged together differ in more than the seed: {listed}; add keys to {option}= "
        f"(e.g. {option}={suggestion}) or pass pool=true to average them anyway"
    )


# ------------------------------------------------------------------ tables


def summarise(records: list[RunRecord], by: list[str], metric: str) -> list[dict]:
    """One row per distinct value of the `by` keys: mean and sample standard deviation of `metric`."""
    rows = []
    for key, members in group([r for r in records if _number(r.metrics.get(metric))], by).items():
        values = [float(m.metrics[metric]) for m in members]
        rows.append({
            **dict(zip(by, key, strict=True)), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": len(values),
            "members": members,
        })  # fmt: skip
    return rows


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_csv(rows: list[dict], by: list[str], metric: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*by, f"{metric}_mean", f"{metric}_std", "runs"])
    for row in rows:
        writer.writerow([row[k] for k in by] + [row["mean"], row["std"], row["runs"]])
    return out.getvalue()


def to_markdown(rows: list[dict], by: list[str], metric: str, other: list[RunRecord],
                notes: list[str] = ()) -> str:  # fmt: skip
    lines = [f"| {' | '.join(by)} | {metric} (mean ± std) | runs |", "|" + "---|" * (len(by) + 2)]
    for row in rows:
        keys = " | ".join(str(row[k]) for k in by)
        lines.append(f"| {keys} | {row['mean']:.4f} ± {row['std']:.4f} | {row['runs']} |")
    if notes:
        lines += ["", *[f"Warning: {n}" for n in notes]]
    if other:
        lines += ["", "Runs without results:", ""]
        lines += [f"- `{r.path}`: {r.status}" for r in other]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ plots


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


def _plt():
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
    records = [r for r in records if _number(r.metrics.get(metric))]
    if not records:
        return None
    plt = _plt()
    bounds = metric_range(metric)
    series = _series(records, lines_by)
    sizes = sorted({r.value(FEWSHOT_KEY) for r in records}, key=lambda x: math.inf if x is None else x)
    label = label or " / ".join(_short(k) for k in lines_by)
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
    plt = _plt()
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
    ax.legend(title=label or " / ".join(_short(k) for k in lines_by), fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    _plt().close(fig)
    return buffer.getvalue()


def _constant(records: list[RunRecord], keys: list[str]) -> list[str]:
    return [k for k in keys if len({str(r.value(k)) for r in records}) == 1]


# ------------------------------------------------------------------ HTML


def _lineage_text(record: RunRecord) -> str:
    lineage = record.info.get("lineage") or {}
    parts = [f"{k}: {v}" for k, v in lineage.items() if v]
    return "; ".join(parts) or "-"


def to_html(rows: list[dict], by: list[str], metric: str, other: list[RunRecord], plots: dict[str, bytes],
            notes: list[str], sources: list[str]) -> str:  # fmt: skip
    """One self-contained page: the table, the plots as base64 PNGs, each row's runs and their lineage."""
    esc = html.escape
    head = "".join(f"<th>{esc(_short(k))}</th>" for k in by)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f"<td>{esc(str(row[k]))}</td>" for k in by)
        body.append(f'<tr id="row-{i}">{cells}<td class="num">{row["mean"]:.4f} ± {row["std"]:.4f}</td>'
                    f'<td class="num">{row["runs"]}</td></tr>')  # fmt: skip
    figures = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{esc(name)}</figcaption></figure>"
        for name, data in plots.items()
    )
    groups = []
    for row in rows:
        label = ", ".join(f"{_short(k)}={row[k]}" for k in by)
        runs = "".join(
            f"<tr><td><code>{esc(str(m.run_dir or m.path))}</code></td><td>{esc(str(m.value('seed')))}</td>"
            f'<td class="num">{m.metrics[metric]:.4f}</td><td>{esc(_lineage_text(m))}</td></tr>'
            for m in row["members"]
        )
        groups.append(
            f"<details open><summary>{esc(label)} ({row['runs']} runs)</summary><table>"
            f"<tr><th>run</th><th>seed</th><th>{esc(metric)}</th><th>lineage</th></tr>{runs}</table></details>"
        )
    missing = "".join(f"<li><code>{esc(str(r.path))}</code>: {esc(r.status)}</li>" for r in other)
    warnings = "".join(f'<p class="warning">Warning: {esc(n)}</p>' for n in notes)
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}td.num{text-align:right}"
        "figure{display:inline-block;margin:1em}img{max-width:100%}.warning{color:#a40}"
        "summary{cursor:pointer;margin-top:.5em}"
    )
    when = _dt.datetime.now().isoformat("T", "seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>mto report: {esc(metric)}</title><style>{style}</style></head><body>"
        f"<h1>{esc(metric)}: mean ± std over seeds</h1>"
        f"<p>Runs from {esc(', '.join(sources))}; generated {esc(when)}.</p>{warnings}"
        f'<table id="summary"><tr>{head}<th>{esc(metric)} (mean ± std)</th><th>runs</th></tr>{"".join(body)}'
        f"</table><h2>Plots</h2>{figures or '<p>No plots.</p>'}"
        f"<h2>Runs and their lineage</h2>{''.join(groups)}"
        + (f"<h2>Runs without results</h2><ul>{missing}</ul>" if missing else "")
        + "</body></html>\n"
    )


# ------------------------------------------------------------------ the command


def report(
    paths: list[str], by: list[str] | None = None, metric: str = "rougeL", out: str | None = None,
    lines: list[str] | None = None, pool: bool = False, html_page: bool = False,
) -> Path:  # fmt: skip
    """Write report.csv, report.md, the plots (and with `html_page` report.html) into `out` (default
    outputs/report/<date>/<time>). `lines` are the keys whose values make the lines of the few-shot
    plot (default: the `by` keys that vary, but the few-shot size). Runs averaged together must differ
    only in the seed unless `pool`."""
    by = [SHORT_KEYS.get(k, k) for k in (by or DEFAULT_BY)]
    records, other = gather(paths)
    if not records and not other:
        raise MtoError(f"report: no run directories under {', '.join(paths)}")
    scored = [r for r in records if _number(r.metrics.get(metric))]
    if records and not scored:
        names = sorted({k for r in records for k, v in r.metrics.items() if _number(v)})
        raise MtoError(f"report: no run has metric={metric} (they have: {', '.join(names)})")
    notes = [n for n in [check_alike(scored, by, pool, "by")] if n]
    if lines:
        lines_by = [SHORT_KEYS.get(k, k) for k in lines]
        line_option = "lines"
    else:
        lines_by = [k for k in by if k != FEWSHOT_KEY and k not in _constant(scored, [k])]
        line_option = "by"
    if lines:  # the plots' groups are not the table's: they must hold like runs too
        note = check_alike(scored, [*lines_by, FEWSHOT_KEY], pool, line_option)
        notes += [note] if note and note not in notes else []
    # What every plotted run shares, for the plots' subtitle: the `by` keys and usual settings held constant.
    shared = [*by, *(k for k in ("stage", "data.name", "model.name_or_path", "tuning.method") if k not in by)]
    constant = [k for k in _constant(scored, shared) if k != FEWSHOT_KEY] if scored else []
    context = ", ".join(f"{_short(k)}={scored[0].value(k)}" for k in constant)
    rows = summarise(records, by, metric)
    now = _dt.datetime.now()
    out_dir = (
        Path(out)
        if out
        else Path("outputs") / "report" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.csv").write_text(to_csv(rows, by, metric))
    (out_dir / "report.md").write_text(to_markdown(rows, by, metric, other, notes))
    plots: dict[str, bytes] = {}
    label = " / ".join(lines or [_short(k) for k in lines_by]) or "all runs"
    fewshot = fewshot_figure(scored, metric, lines_by, label, context)
    if fewshot is not None:
        if len({r.value(FEWSHOT_KEY) for r in scored}) > 1:
            name = f"{metric}_vs_fewshot.png"
        else:  # no few-shot axis: a bar per line
            name = f"{metric}_by_{label.replace(' / ', '_').replace(' ', '-')}.png"
        plots[name] = _png(fewshot)
    relations = relation_figure(scored, lines_by, label, context)
    if relations is not None:
        plots["rougeL_per_relation.png"] = _png(relations)
    if plot_runs(scored + other, lines_by, out_dir / "curves.png", metric):  # mto/curves.py
        plots["curves.png"] = (out_dir / "curves.png").read_bytes()
    for name, data in plots.items():
        (out_dir / name).write_bytes(data)
    files = ["report.csv", "report.md", *plots]
    if html_page:
        (out_dir / "report.html").write_text(to_html(rows, by, metric, other, plots, notes, paths))
        files.append("report.html")
    show(rows, by, metric, other)
    Console().print(f"report: {out_dir} ({', '.join(files)})")
    return out_dir


def show(rows: list[dict], by: list[str], metric: str, other: list[RunRecord]) -> None:
    table = Table(title=f"{metric}: mean ± std over runs")
    for key in by:
        table.add_column(key)
    table.add_column(metric, justify="right")
    table.add_column("runs", justify="right")
    for row in rows:
        table.add_row(*(str(row[k]) for k in by), f"{row['mean']:.4f} ± {row['std']:.4f}", str(row["runs"]))
    console = Console()
    console.print(table)
    for record in other:
        console.print(f"[yellow]{record.status}[/yellow]: {record.path}")
