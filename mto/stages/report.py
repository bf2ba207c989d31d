"""`mto report`: gather runs into one table (mean +- std over seeds), CSV, Markdown and plots.

    mto report outputs/multirun/train/2026-11-22 by=template.name,data.n_train metric=rougeL

It reads each run's own `run.json`, `metrics.json` and `.hydra/config.yaml`, so it works on a sweep that
is still running (unfinished runs are listed apart, with failed ones). A `skipped` job (its completed
twin made it unnecessary) counts through its twin, once. Config keys are dotted paths; `template` is
short for `template.name`, `model` for `model.name_or_path`, `data` for `data.name`; `lineage.*` and
`figures.*` keys read run.json (`adaptation` is `lineage.adapt_objective`: how the model was adapted).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from mto.curves import plot_runs
from mto.errors import MtoError
from mto.runs import RUN_FILE, read_json

SHORT_KEYS = {"template": "template.name", "model": "model.name_or_path", "data": "data.name",
              "objective": "objective.name", "tuning": "tuning.method",
              "adaptation": "lineage.adapt_objective"}  # fmt: skip
DEFAULT_BY = ("stage", "data.name", "model.name_or_path", "template.name", "data.n_train")


@dataclass
class RunRecord:
    path: Path
    status: str
    config: dict
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # run.json

    def value(self, key: str):
        """A config key (dotted), or a run.json field for `lineage.*` / `figures.*` keys."""
        if key == "stage":
            return self.config.get("stage")
        if key.startswith(("lineage.", "figures.")):
            section, _, name = key.partition(".")
            return self.info.get(section, {}).get(name)
        node = OmegaConf.create(self.config)
        return OmegaConf.select(node, key, default=None, throw_on_resolution_failure=False)


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
    return RunRecord(path=source.resolve(), status=status, config=config, metrics=metrics, info=info)


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


def summarise(records: list[RunRecord], by: list[str], metric: str) -> list[dict]:
    """One row per distinct value of the `by` keys: mean and sample standard deviation of `metric`."""
    groups: dict[tuple, list[float]] = {}
    for record in records:
        value = record.metrics.get(metric)
        if isinstance(value, (int, float)):
            groups.setdefault(tuple(record.value(k) for k in by), []).append(float(value))
    rows = []
    for key in sorted(groups, key=lambda k: tuple((v is None, str(v)) for v in k)):
        values = groups[key]
        rows.append({
            **dict(zip(by, key, strict=True)), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": len(values),
        })  # fmt: skip
    return rows


def to_csv(rows: list[dict], by: list[str], metric: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*by, f"{metric}_mean", f"{metric}_std", "runs"])
    for row in rows:
        writer.writerow([row[k] for k in by] + [row["mean"], row["std"], row["runs"]])
    return out.getvalue()


def to_markdown(rows: list[dict], by: list[str], metric: str, other: list[RunRecord]) -> str:
    lines = [f"| {' | '.join(by)} | {metric} (mean ± std) | runs |", "|" + "---|" * (len(by) + 2)]
    for row in rows:
        keys = " | ".join(str(row[k]) for k in by)
        lines.append(f"| {keys} | {row['mean']:.4f} ± {row['std']:.4f} | {row['runs']} |")
    if other:
        lines += ["", "Runs without results:", ""]
        lines += [f"- `{r.path}`: {r.status}" for r in other]
    return "\n".join(lines) + "\n"


def _x(value) -> float:
    return math.inf if value is None else float(value)


def plot_fewshot(records: list[RunRecord], metric: str, path: Path, lines_by: list[str]) -> bool:
    """`metric` against the few-shot size (data.n_train; full data at the right), one line per value of
    the `lines_by` keys (the template by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, dict[float, list[float]]] = {}
    for r in records:
        if isinstance(r.metrics.get(metric), (int, float)):
            x = _x(r.value("data.n_train"))
            name = " / ".join(str(r.value(k)) for k in lines_by)
            lines.setdefault(name, {}).setdefault(x, []).append(r.metrics[metric])
    if not lines:
        return False
    finite = sorted({x for pts in lines.values() for x in pts if x != math.inf})
    full_at = finite[-1] * 2 if finite else 1.0
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in sorted(lines.items()):
        xs = sorted(points)
        means = [statistics.fmean(points[x]) for x in xs]
        stds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
        plot_xs = [full_at if x == math.inf else x for x in xs]
        ax.errorbar(plot_xs, means, yerr=stds, marker="o", capsize=3, label=name)
    if len(finite) > 1:
        ax.set_xscale("log")
    ax.set_xlabel("training heads per relation (data.n_train; rightmost: full data)")
    ax.set_ylabel(metric)
    ax.legend(title=" / ".join(lines_by), fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_relations(records: list[RunRecord], path: Path) -> bool:
    """A bar chart of ROUGE-L per relation, one bar per template (mean over its runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for group, value in (r.metrics.get("rougeL_per_group") or {}).items():
            per.setdefault(str(r.value("template.name")), {}).setdefault(group, []).append(value)
    if not per:
        return False
    groups = sorted({g for d in per.values() for g in d})
    width = 0.8 / len(per)
    fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.8), 4))
    for i, (name, values) in enumerate(sorted(per.items())):
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, [statistics.fmean(values.get(g, [0.0])) for g in groups], width, label=name)
    ax.set_xticks(
        [j + width * (len(per) - 1) / 2 for j in range(len(groups))], groups, rotation=45, ha="right"
    )
    ax.set_ylabel("ROUGE-L")
    ax.legend(title="template")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report(
    paths: list[str], by: list[str] | None = None, metric: str = "rougeL", out: str | None = None,
    lines: list[str] | None = None,
) -> Path:  # fmt: skip
    """Write report.csv, report.md and the plots into `out` (default outputs/report/<date>/<time>);
    `lines` are the keys whose values make the lines of the few-shot plot (default: the template)."""
    by = [SHORT_KEYS.get(k, k) for k in (by or DEFAULT_BY)]
    lines = [SHORT_KEYS.get(k, k) for k in (lines or ["template"])]
    records, other = gather(paths)
    if not records and not other:
        raise MtoError(f"report: no run directories under {', '.join(paths)}")
    rows = summarise(records, by, metric)
    now = _dt.datetime.now()
    out_dir = (
        Path(out)
        if out
        else Path("outputs") / "report" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.csv").write_text(to_csv(rows, by, metric))
    (out_dir / "report.md").write_text(to_markdown(rows, by, metric, other))
    plots = []
    if plot_fewshot(records, metric, out_dir / f"{metric}_vs_fewshot.png", lines):
        plots.append(f"{metric}_vs_fewshot.png")
    if plot_relations(records, out_dir / "rougeL_per_relation.png"):
        plots.append("rougeL_per_relation.png")
    if plot_runs(records + other, lines, out_dir / "curves.png", metric):  # mto/curves.py
        plots.append("curves.png")
    show(rows, by, metric, other)
    Console().print(f"report: {out_dir} ({', '.join(['report.csv', 'report.md', *plots])})")
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
