"""The maskability index against the few-shot size, from finished runs (the MI-vs-n view of `mto report`).

A run evaluated with `eval.gold_scores` (the default) has its test queries' DepthRank in metrics.json:
`depth_rank` overall (the mean over relations) and `depth_rank_per_group` per relation
(mto/stages/gold.py). MI compares a Mapping template with its Filling twin at the same setting:

    MI(relation, n) = (DR_mapping - DR_filling) / DR_mapping

with DR the mean over the seeds of each template's runs at that setting and few-shot size n
(`data.n_train`): the share of the gold rank a sentinel removes, as `mto match` and the Maskability
paper define it (mto/matching.py), here after full training rather than a short fine-tune. `overall`
is MI of the runs' overall `depth_rank`.

The pairs: each template X swept with `masked_X` (prompting / masked_prompting, mapping /
masked_mapping, answer / masked_answer, ...), or the one pair `mi=<mapping>,<filling>` names. A setting
is every `by` key but the template and the few-shot size; the runs of one pair at one setting must
differ only in the template and the seed (else that pair is left out with a note, or refused when `mi=`
named it; `pool=true` pools them with a warning).
"""

from __future__ import annotations

import csv
import html
import io
from statistics import fmean

from mto.errors import MtoError
from mto.reporting.records import FEWSHOT_KEY, RunRecord, group, is_number, short_key

FIGURE = "depth_rank"
OVERALL = "overall"
FILLING_PREFIX = "masked_"


def template_pairs(names: set[str], pair: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """The (mapping, filling) template pairs among `names`: `pair` alone when given, else each X with
    `masked_X`."""
    if pair is not None:
        return [pair]
    return sorted((n, FILLING_PREFIX + n) for n in names if FILLING_PREFIX + n in names)


def unlike_keys(members: list[RunRecord]) -> dict[str, set[str]]:
    """Config keys (beyond the template's and the seeds) whose values differ between `members`."""
    flats = [m.comparable() for m in members]
    differ: dict[str, set[str]] = {}
    for key in sorted(set().union(*flats)):
        values = {str(f.get(key)) for f in flats}
        if not key.startswith("template.") and len(values) > 1:
            differ[key] = values
    return differ


def _dr(members: list[RunRecord], relation: str) -> float | None:
    """The mean DepthRank of `members` for `relation` (OVERALL: their `depth_rank`), None without one."""
    if relation == OVERALL:
        values = [m.metrics[FIGURE] for m in members]
    else:
        values = [m.metrics.get(f"{FIGURE}_per_group", {}).get(relation) for m in members]
    values = [float(v) for v in values if is_number(v)]
    return fmean(values) if values else None


def mi_rows(
    records: list[RunRecord], by: list[str], pair: tuple[str, str] | None = None, pool: bool = False
) -> tuple[list[str], list[dict], list[str]]:
    """(the setting keys, one row per setting x pair x relation x size, notes). A row holds the setting's
    values, `mapping`, `filling`, `relation`, the size, `depth_rank_mapping`, `depth_rank_filling`, `mi`
    and the runs of each side. `pair` names the one pair to use (refused when it cannot be computed)."""
    scored = [r for r in records if is_number(r.metrics.get(FIGURE))]
    setting = [k for k in by if not k.startswith("template.") and k != FEWSHOT_KEY]
    names = {str(r.value("template.name")) for r in scored}
    pairs = template_pairs(names, pair)
    if pair is not None and not set(pair) <= names:
        missing = ", ".join(n for n in pair if n not in names)
        raise MtoError(f"mi={','.join(pair)}: no run of template {missing} has a {FIGURE} figure "
                       "(evaluated with eval.gold_scores=true)")  # fmt: skip
    rows: list[dict] = []
    notes: list[str] = []
    for key, members in group(scored, [*setting, FEWSHOT_KEY]).items():
        by_template: dict[str, list[RunRecord]] = {}
        for m in members:
            by_template.setdefault(str(m.value("template.name")), []).append(m)
        where = ", ".join(f"{short_key(k)}={v}" for k, v in zip([*setting, FEWSHOT_KEY], key, strict=True))
        for mapping, filling in pairs:
            if mapping not in by_template or filling not in by_template:
                continue
            both = by_template[mapping] + by_template[filling]
            differ = unlike_keys(both)
            if differ:
                listed = "; ".join(f"{k} ({', '.join(sorted(v)[:4])})" for k, v in list(differ.items())[:6])
                text = f"MI of {mapping} vs {filling} at {where}: the runs differ in more than the template"
                if pair is not None and not pool:
                    raise MtoError(f"{text}: {listed}; add keys to by= or pass pool=true")
                if not pool:
                    notes.append(f"{text} ({listed}): left out; add keys to by= or pass pool=true")
                    continue
                notes.append(f"{text} ({listed}): pooled")
            relations = sorted({g for m in both for g in m.metrics.get(f"{FIGURE}_per_group", {})})
            for relation in [*relations, OVERALL]:
                dr_m, dr_f = _dr(by_template[mapping], relation), _dr(by_template[filling], relation)
                if dr_m is None or dr_f is None:
                    continue
                rows.append({
                    **dict(zip(setting, key[:-1], strict=True)), "mapping": mapping, "filling": filling,
                    "relation": relation, FEWSHOT_KEY: key[-1], "depth_rank_mapping": dr_m,
                    "depth_rank_filling": dr_f, "mi": (dr_m - dr_f) / dr_m,
                    "runs_mapping": len(by_template[mapping]), "runs_filling": len(by_template[filling]),
                })  # fmt: skip
    if pair is not None and not rows:
        raise MtoError(f"mi={','.join(pair)}: no setting has runs of both templates with {FIGURE}")
    return setting, rows, notes


COLUMNS = ("mapping", "filling", "relation", FEWSHOT_KEY, "depth_rank_mapping", "depth_rank_filling", "mi",
           "runs_mapping", "runs_filling")  # fmt: skip


def to_csv(setting: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*setting, *COLUMNS])
    for row in rows:
        writer.writerow([row[k] for k in [*setting, *COLUMNS]])
    return out.getvalue()


def _size(x) -> str:
    return "full" if x is None else str(x)


def panels(setting: list[str], rows: list[dict]) -> dict[str, dict]:
    """One panel per setting x pair (its title -> relation -> size -> row), for the wide tables and plots."""
    out: dict[str, dict] = {}
    for row in rows:
        title = ", ".join([f"{row['mapping']} vs {row['filling']}",
                           *(f"{short_key(k)}={row[k]}" for k in setting)])  # fmt: skip
        out.setdefault(title, {}).setdefault(row["relation"], {})[row[FEWSHOT_KEY]] = row
    order = lambda relation: (relation == OVERALL, relation)  # noqa: E731  (relations, then overall)
    return {title: {r: panel[r] for r in sorted(panel, key=order)} for title, panel in out.items()}


def sizes_of(panel: dict) -> list:
    sizes = {x for by_size in panel.values() for x in by_size}
    return sorted(sizes, key=lambda x: (x is None, x if x is not None else 0))


def to_markdown(setting: list[str], rows: list[dict], threshold: float | None) -> str:
    """A section for report.md: per setting x pair, MI per relation (rows) and few-shot size (columns)."""
    rule = f"; Filling when MI >= {threshold}" if threshold is not None else ""
    formula = f"MI = (DR_mapping - DR_filling) / DR_mapping, DR the mean gold DepthRank over seeds{rule}."
    lines = ["", "## Maskability index against the few-shot size", "", formula]
    for title, panel in panels(setting, rows).items():
        sizes = sizes_of(panel)
        lines += ["", f"### {title}", "", f"| relation | {' | '.join(f'n={_size(x)}' for x in sizes)} |",
                  "|" + "---|" * (len(sizes) + 1)]  # fmt: skip
        for relation, by_size in panel.items():
            cells = [f"{by_size[x]['mi']:.3f}" if x in by_size else "-" for x in sizes]
            lines.append(f"| {relation} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def to_html(setting: list[str], rows: list[dict]) -> str:
    """The same tables for report.html."""
    esc = html.escape
    parts = ["<h2>Maskability index against the few-shot size</h2>"]
    for title, panel in panels(setting, rows).items():
        sizes = sizes_of(panel)
        head = "".join(f"<th>n={esc(_size(x))}</th>" for x in sizes)
        body = "".join(
            f"<tr><td>{esc(relation)}</td>"
            + "".join(
                f'<td class="num">{by_size[x]["mi"]:.3f}</td>' if x in by_size else "<td>-</td>"
                for x in sizes
            )
            + "</tr>"
            for relation, by_size in panel.items()
        )
        parts.append(f'<h3>{esc(title)}</h3><table class="mi"><tr><th>relation</th>{head}</tr>{body}</table>')
    return "".join(parts)
