"""`mto report`: gather runs into one table (mean +- std over seeds), CSV, Markdown, plots and HTML.

    mto report outputs/multirun/train/2026-11-22 by=template.name,data.n_train metric=rougeL

It reads each run's own `run.json`, `metrics.json` and `.hydra/config.yaml`, so it works on a sweep that
is still running (unfinished runs are listed apart, with failed ones). Only like runs are averaged: runs
in one row (or one point of a plot) must differ only in the seed, unless `pool=true`
(mto/reporting/records.py says how runs are compared). The parts, one job each, are in mto/reporting/:
records (gathering, like runs), tables (CSV, Markdown, console, HTML), plots.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

from rich.console import Console

from mto.curves import plot_runs
from mto.errors import MtoError
from mto.reporting import mi as mi_view
from mto.reporting.plots import fewshot_figure, mi_figure, png, relation_figure
from mto.reporting.records import (
    DEFAULT_BY,
    FEWSHOT_KEY,
    SHORT_KEYS,
    check_alike,
    constant_keys,
    gather,
    is_number,
    short_key,
)
from mto.reporting.tables import show, show_mi, summarise, to_csv, to_html, to_markdown


def mi_option(value: str | None) -> tuple[str, str] | None | bool:
    """`mi=`: None (auto, or unset: find the pairs), False (false: no MI view), or the named pair."""
    text = (value or "auto").strip()
    if text.lower() in ("auto", "true", "yes", "1"):
        return None
    if text.lower() in ("false", "no", "0", "off"):
        return False
    names = [n.strip() for n in text.split(",")]
    if len(names) != 2 or not all(names):
        raise MtoError(f"mi={value}: expected <mapping template>,<filling template>, auto or false")
    return names[0], names[1]


def mi_threshold(records) -> float | None:
    """The decision threshold the runs were configured with (`match.threshold`), if they agree on one."""
    values = {r.value("match.threshold") for r in records}
    if len(values) != 1:
        return None
    (value,) = values
    return float(value) if is_number(value) else None


def report(
    paths: list[str], by: list[str] | None = None, metric: str = "rougeL", out: str | None = None,
    lines: list[str] | None = None, pool: bool = False, html_page: bool = False, mi: str | None = None,
) -> Path:  # fmt: skip
    """Write report.csv, report.md, the plots (and with `html_page` report.html) into `out` (default
    outputs/report/<date>/<time>). `lines` are the keys whose values make the lines of the few-shot
    plot (default: the `by` keys that vary, but the few-shot size). Runs averaged together must differ
    only in the seed unless `pool`. Where runs of a Mapping template and its Filling twin have DepthRank
    figures, the MI-vs-n view too (mi.csv, a section of report.md, mi_vs_fewshot*.png; mto/reporting/mi.py):
    `mi` None or `auto` finds the pairs, `<mapping>,<filling>` names one, `false` leaves the view out."""
    pair = mi_option(mi)
    by = [SHORT_KEYS.get(k, k) for k in (by or DEFAULT_BY)]
    records, other = gather(paths)
    if not records and not other:
        raise MtoError(f"report: no run directories under {', '.join(paths)}")
    scored = [r for r in records if is_number(r.metrics.get(metric))]
    if records and not scored:
        names = sorted({k for r in records for k, v in r.metrics.items() if is_number(v)})
        raise MtoError(f"report: no run has metric={metric} (they have: {', '.join(names)})")
    notes = [n for n in [check_alike(scored, by, pool, "by")] if n]
    if lines:
        lines_by = [SHORT_KEYS.get(k, k) for k in lines]
        line_option = "lines"
    else:
        lines_by = [k for k in by if k != FEWSHOT_KEY and k not in constant_keys(scored, [k])]
        line_option = "by"
    if lines:  # the plots' groups are not the table's: they must hold like runs too
        note = check_alike(scored, [*lines_by, FEWSHOT_KEY], pool, line_option)
        notes += [note] if note and note not in notes else []
    # What every plotted run shares, for the plots' subtitle: the `by` keys and usual settings held constant.
    shared = [*by, *(k for k in ("stage", "data.name", "model.name_or_path", "tuning.method") if k not in by)]
    constant = [k for k in constant_keys(scored, shared) if k != FEWSHOT_KEY] if scored else []
    context = ", ".join(f"{short_key(k)}={scored[0].value(k)}" for k in constant)
    rows = summarise(records, by, metric)
    setting, mi_table, mi_notes = [], [], []
    if pair is not False:  # the MI-vs-n view, where runs of a template pair have DepthRank figures
        setting, mi_table, mi_notes = mi_view.mi_rows(records, by, pair, pool)
    for note in mi_notes:
        print(f"mto report: warning: {note}", file=sys.stderr)
    notes += mi_notes
    threshold = mi_threshold(records)
    now = _dt.datetime.now()
    out_dir = (
        Path(out)
        if out
        else Path("outputs") / "report" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.csv").write_text(to_csv(rows, by, metric))
    markdown = to_markdown(rows, by, metric, other, notes)
    files = ["report.csv", "report.md"]
    if mi_table:
        (out_dir / "mi.csv").write_text(mi_view.to_csv(setting, mi_table))
        markdown += mi_view.to_markdown(setting, mi_table, threshold)
        files.append("mi.csv")
    (out_dir / "report.md").write_text(markdown)
    plots: dict[str, bytes] = {}
    label = " / ".join(lines or [short_key(k) for k in lines_by]) or "all runs"
    fewshot = fewshot_figure(scored, metric, lines_by, label, context)
    if fewshot is not None:
        if len({r.value(FEWSHOT_KEY) for r in scored}) > 1:
            name = f"{metric}_vs_fewshot.png"
        else:  # no few-shot axis: a bar per line
            name = f"{metric}_by_{label.replace(' / ', '_').replace(' ', '-')}.png"
        plots[name] = png(fewshot)
    relations = relation_figure(scored, lines_by, label, context)
    if relations is not None:
        plots["rougeL_per_relation.png"] = png(relations)
    if plot_runs(scored + other, lines_by, out_dir / "curves.png", metric):  # mto/curves.py
        plots["curves.png"] = (out_dir / "curves.png").read_bytes()
    mi_panels = mi_view.panels(setting, mi_table)
    for i, (title, panel) in enumerate(mi_panels.items()):
        figure = mi_figure(title, panel, threshold)
        if figure is not None:
            plots["mi_vs_fewshot.png" if len(mi_panels) == 1 else f"mi_vs_fewshot_{i + 1}.png"] = png(figure)
    for name, data in plots.items():
        (out_dir / name).write_bytes(data)
    files += list(plots)
    if html_page:
        extra = mi_view.to_html(setting, mi_table) if mi_table else ""
        (out_dir / "report.html").write_text(to_html(rows, by, metric, other, plots, notes, paths, extra))
        files.append("report.html")
    show(rows, by, metric, other)
    if mi_table:
        show_mi(mi_panels)
    Console().print(f"report: {out_dir} ({', '.join(files)})")
    return out_dir
