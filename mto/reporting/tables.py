"""The report's table of one metric (mean +- std over like runs), in each of its forms: CSV, Markdown,
the console and the self-contained HTML page (with the plots as base64 PNGs and each row's runs)."""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import statistics

from rich.console import Console
from rich.table import Table

from mto.reporting.records import RunRecord, group, is_number, short_key


def summarise(records: list[RunRecord], by: list[str], metric: str) -> list[dict]:
    """One row per distinct value of the `by` keys: mean and sample standard deviation of `metric`."""
    rows = []
    for key, members in group([r for r in records if is_number(r.metrics.get(metric))], by).items():
        values = [float(m.metrics[metric]) for m in members]
        rows.append({
            **dict(zip(by, key, strict=True)), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": len(values),
            "members": members,
        })  # fmt: skip
    return rows


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


def _lineage_text(record: RunRecord) -> str:
    lineage = record.info.get("lineage") or {}
    parts = [f"{k}: {v}" for k, v in lineage.items() if v]
    return "; ".join(parts) or "-"


def to_html(rows: list[dict], by: list[str], metric: str, other: list[RunRecord], plots: dict[str, bytes],
            notes: list[str], sources: list[str], extra: str = "") -> str:  # fmt: skip
    """One self-contained page: the table, the plots as base64 PNGs, each row's runs and their lineage;
    `extra` (HTML, e.g. the MI tables) after the plots."""
    esc = html.escape
    head = "".join(f"<th>{esc(short_key(k))}</th>" for k in by)
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
        label = ", ".join(f"{short_key(k)}={row[k]}" for k in by)
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
        f"</table><h2>Plots</h2>{figures or '<p>No plots.</p>'}{extra}"
        f"<h2>Runs and their lineage</h2>{''.join(groups)}"
        + (f"<h2>Runs without results</h2><ul>{missing}</ul>" if missing else "")
        + "</body></html>\n"
    )


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


def show_mi(panels: dict[str, dict]) -> None:
    """The MI tables of mto/reporting/mi.py on the console: per setting x pair, relations by few-shot size."""
    console = Console()
    for title, panel in panels.items():
        sizes = sorted({x for by_size in panel.values() for x in by_size}, key=lambda x: (x is None, x or 0))
        console.print(f"maskability index: {title}", soft_wrap=True)  # a table's title wraps to its width
        table = Table()
        table.add_column("relation")
        for x in sizes:
            table.add_column("n=full" if x is None else f"n={x}", justify="right")
        for relation, by_size in panel.items():
            table.add_row(relation, *(f"{by_size[x]['mi']:.3f}" if x in by_size else "-" for x in sizes))
        console.print(table)
