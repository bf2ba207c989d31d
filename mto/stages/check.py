"""`mto report <sweep dirs> check=match_run=<dir>`: the chooser checked against reality.

For each relation `mto match` decided, the finished sweep says which template actually scored best
(`<metric>_per_group` of each run's metrics.json, mean over the runs of a template, e.g. its seeds). The
check prints, per relation, the chooser's family, the winning template and its family, and the score lost
against that oracle choice by taking the chooser's template instead (match.json's mapping_template or
filling_template; if the sweep did not run it, the best swept template of the chosen family). Agreement
is the share of relations where the winner is of the chosen family. No reference does this.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from mto.errors import MtoError
from mto.matching import read_match
from mto.runs import RUN_FILE, atomic_write_json, read_json

CHECK_FILE = "check.json"


def sweep_scores(paths: list[str | Path], metric: str) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """(template -> group -> mean `metric` over its completed runs, template -> objective family)."""
    values: dict[str, dict[str, list[float]]] = {}
    families: dict[str, str] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise MtoError(f"report: {path} does not exist")
        files = [path / RUN_FILE] if (path / RUN_FILE).is_file() else sorted(path.rglob(RUN_FILE))
        for file in files:
            run = file.parent
            info = read_json(file)
            if info.get("status") not in ("completed", "skipped"):
                continue
            source = Path(info["twin"]) if info.get("status") == "skipped" and info.get("twin") else run
            config_path = run / ".hydra" / "config.yaml"
            if not (source / "metrics.json").is_file() or not config_path.is_file():
                continue
            config = OmegaConf.load(config_path)
            metrics = read_json(source / "metrics.json")
            per_group = metrics.get(f"{metric}_per_group")
            if per_group is None and isinstance(metrics.get(metric), (int, float)):  # QA: one group, the task
                per_group = {str(OmegaConf.select(config, "data.name")): metrics[metric]}
            name = str(OmegaConf.select(config, "template.name"))
            if not per_group or name == "auto":
                continue
            families[name] = str(OmegaConf.select(config, "template.objective"))
            for group, value in per_group.items():
                values.setdefault(name, {}).setdefault(group, []).append(float(value))
    means = {t: {g: statistics.fmean(v) for g, v in groups.items()} for t, groups in values.items()}
    return means, families


def check_match(paths: list[str | Path], match_run: str | Path, metric: str = "rougeL",
                out: str | Path | None = None) -> dict:  # fmt: skip
    """Compare the decisions of `match_run` with the winners of the sweep under `paths`; print the
    table, write check.json into `out` (when given) and return the summary."""
    match = read_match(match_run)
    scores, families = sweep_scores(paths, metric)
    rows = []
    for group, decision in sorted(match["decisions"].items()):
        per_template = {t: s[group] for t, s in scores.items() if group in s}
        if not per_template:
            continue
        winner = max(per_template, key=per_template.__getitem__)
        chosen = match.get(f"{decision}_template")
        if chosen not in per_template:
            same_family = [t for t in per_template if families[t] == decision]
            chosen = max(same_family, key=per_template.__getitem__) if same_family else None
        rows.append({
            "group": group, "decision": decision, "winner": winner, "winner_family": families[winner],
            "agree": families[winner] == decision, "oracle": per_template[winner], "chosen": chosen,
            "chosen_score": None if chosen is None else per_template[chosen],
            "lost": None if chosen is None else per_template[winner] - per_template[chosen],
        })  # fmt: skip
    if not rows:
        raise MtoError(
            f"report check: no relation of {match_run} has `{metric}_per_group` scores in the runs under "
            f"{', '.join(map(str, paths))}"
        )
    losses = [r["lost"] for r in rows if r["lost"] is not None]
    summary = {
        "match_run": str(Path(match_run).resolve()), "metric": metric, "relations": len(rows),
        "agreement": statistics.fmean(r["agree"] for r in rows),
        "mean_lost": statistics.fmean(losses) if losses else None, "rows": rows,
    }  # fmt: skip
    show(summary)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / CHECK_FILE, summary)
    return summary


def show(summary: dict) -> None:
    metric = summary["metric"]
    table = Table(title=f"chooser vs sweep ({metric}): agreement {summary['agreement']:.0%}")
    for column in ("relation", "chosen family", "winner", "winner family", f"oracle {metric}", "lost"):
        table.add_column(column)
    for r in summary["rows"]:
        lost = "-" if r["lost"] is None else f"{r['lost']:.4f}"
        mark = "" if r["agree"] else " (x)"
        oracle = f"{r['oracle']:.4f}"
        table.add_row(r["group"], r["decision"] + mark, r["winner"], r["winner_family"], oracle, lost)
    console = Console()
    console.print(table)
    mean_lost = summary["mean_lost"]
    console.print(
        f"agreement {summary['agreement']:.2%} over {summary['relations']} relations; mean {metric} lost "
        f"against the oracle choice: {'-' if mean_lost is None else f'{mean_lost:.4f}'}"
    )
