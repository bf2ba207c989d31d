"""Training curves from the runs' own per-step logs (`metrics_steps.jsonl`, mto/tracking.py): the
training loss and a dev figure against the step, one line per run, one colour per group of runs, so a
sweep can be looked at without any tracker installed. `mto report` draws them (`curves.png`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mto.tracking import read_steps


@dataclass
class Curve:
    run: Path
    group: str
    loss: tuple[list[int], list[float]] = field(default_factory=lambda: ([], []))
    dev: tuple[list[int], list[float]] = field(default_factory=lambda: ([], []))


def dev_key(metric: str) -> str:
    """The per-step figure a report metric is watched by: `rougeL` -> `dev_rougeL` (`dev_*` as it is)."""
    return metric if metric.startswith("dev_") else f"dev_{metric}"


def read_curves(groups: dict[str, list[Path]], metric: str = "rougeL") -> list[Curve]:
    """The loss and `dev_key(metric)` series of each run (runs without a per-step log are left out)."""
    key = dev_key(metric)
    curves = []
    for group, runs in sorted(groups.items()):
        for run in runs:
            curve = Curve(Path(run), group)
            for record in read_steps(run):
                for name, series in (("loss", curve.loss), (key, curve.dev)):
                    if isinstance(record.get(name), int | float):
                        series[0].append(int(record["step"]))
                        series[1].append(float(record[name]))
            if curve.loss[0] or curve.dev[0]:
                curves.append(curve)
    return curves


def plot_curves(groups: dict[str, list[Path]], path: Path, metric: str = "rougeL", title: str = "") -> bool:
    """Training loss (left) and the dev figure (right) against the step, one line per run, coloured by
    group (the legend names the groups); False when no run has a per-step log."""
    curves = read_curves(groups, metric)
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_dev = any(c.dev[0] for c in curves)
    fig, axes = plt.subplots(1, 2 if with_dev else 1, figsize=(10 if with_dev else 5.5, 3.8), squeeze=False)
    colours = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(c.group for c in curves))}
    labelled: set[str] = set()
    for curve in curves:
        label = None if curve.group in labelled else curve.group
        labelled.add(curve.group)
        style = {"color": colours[curve.group], "alpha": 0.8, "linewidth": 1.2}
        axes[0][0].plot(*curve.loss, label=label, **style)
        if with_dev and curve.dev[0]:
            axes[0][1].plot(*curve.dev, marker="o", markersize=3, **style)
    axes[0][0].set_ylabel("training loss")
    axes[0][0].legend(fontsize="small")
    if with_dev:
        axes[0][1].set_ylabel(dev_key(metric))
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_runs(records, by: list[str], path: Path, metric: str = "rougeL") -> bool:
    """`plot_curves` for report records (anything with `.path` and `.value(key)`), grouped by the values
    of the `by` keys; a run listed twice (a skipped job and its twin) is drawn once."""
    groups: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    for record in records:
        if Path(record.path) not in seen:
            seen.add(Path(record.path))
            groups.setdefault(" / ".join(str(record.value(k)) for k in by), []).append(Path(record.path))
    return plot_curves(groups, path, metric, title=f"one line per run, coloured by {' / '.join(by)}")
