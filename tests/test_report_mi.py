"""`mto report`'s MI-vs-n view (mto/reporting/mi.py): the maskability index of a template and its masked
twin, from the runs' gold DepthRank (eval.gold_scores), per relation and overall, against data.n_train."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import fake_run, mto

THRESHOLD = {"match": {"threshold": 0.3}}


def depth_ranks(per_group: dict[str, float], overall: float) -> dict:
    return {"depth_rank": overall, "depth_rank_per_group": per_group}


def mi_sweep(root: Path, masked_steps: int = 30) -> Path:
    """prompting and masked_prompting at n=5 (two seeds) and n=20 (one seed), and a mapping arm with no
    masked twin. `masked_steps`: masked_prompting's train.steps at n=20 (30: alike)."""
    runs = [
        # template, n, seed, DR per relation, DR overall
        ("prompting", 5, 1, {"xIntent": 10, "xAttr": 20}, 15),
        ("prompting", 5, 2, {"xIntent": 14, "xAttr": 20}, 17),
        ("masked_prompting", 5, 1, {"xIntent": 9, "xAttr": 5}, 7),
        ("masked_prompting", 5, 2, {"xIntent": 9, "xAttr": 7}, 8),
        ("prompting", 20, 1, {"xIntent": 4, "xAttr": 10}, 7),
        ("masked_prompting", 20, 1, {"xIntent": 5, "xAttr": 2}, 3.5),
        ("mapping", 5, 1, {"xIntent": 1, "xAttr": 1}, 1),
    ]
    for i, (template, n, seed, per_group, overall) in enumerate(runs):
        steps = masked_steps if (template, n) == ("masked_prompting", 20) else 30
        extra = {**THRESHOLD, "train": {"steps": steps}}
        fake_run(root / str(i), "completed", template, n, seed, 0.5, extra=extra,
                 metrics=depth_ranks(per_group, overall))  # fmt: skip
    return root


def test_report_tabulates_and_plots_mi_against_the_fewshot_size(tmp_path):
    sweep = mi_sweep(tmp_path / "sweep")
    proc = mto("report", str(sweep), "by=template,data.n_train", f"out={tmp_path / 'r'}", "html=true",
               cwd=tmp_path)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "r" / "mi.csv").open()))
    table = {(r["relation"], int(r["data.n_train"])): float(r["mi"]) for r in rows}
    assert {(r["mapping"], r["filling"]) for r in rows} == {("prompting", "masked_prompting")}  # not mapping
    # n=5: DR means over the two seeds: xIntent 12 vs 9, xAttr 20 vs 6, overall 16 vs 7.5
    # n=20: one seed: xIntent 4 vs 5 (a sentinel that hurts: negative MI), xAttr 10 vs 2, overall 7 vs 3.5
    expected = {("xAttr", 5): 0.7, ("xIntent", 5): 0.25, ("overall", 5): 0.53125,
                ("xAttr", 20): 0.8, ("xIntent", 20): -0.25, ("overall", 20): 0.5}  # fmt: skip
    assert table == pytest.approx(expected)
    first = next(r for r in rows if r["relation"] == "xIntent" and r["data.n_train"] == "5")
    assert float(first["depth_rank_mapping"]) == 12 and float(first["depth_rank_filling"]) == 9
    assert (first["runs_mapping"], first["runs_filling"]) == ("2", "2")

    markdown = (tmp_path / "r" / "report.md").read_text()
    section = markdown.split("## Maskability index against the few-shot size")[1]
    assert "Filling when MI >= 0.3" in section
    assert "| relation | n=5 | n=20 |" in section
    assert "| xAttr | 0.700 | 0.800 |" in section and "| xIntent | 0.250 | -0.250 |" in section
    assert section.index("| xIntent") < section.index("| overall")  # relations, then overall
    assert "maskability index: prompting vs masked_prompting" in proc.stdout
    assert (tmp_path / "r" / "mi_vs_fewshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "r" / "report.html").read_text()
    assert '<table class="mi">' in page and 'alt="mi_vs_fewshot.png"' in page


def test_the_mi_plot_draws_one_line_per_relation_and_the_threshold(tmp_path):
    from mto.reporting.mi import mi_rows, panels
    from mto.reporting.plots import mi_figure
    from mto.reporting.records import gather

    records, _ = gather([str(mi_sweep(tmp_path / "sweep"))])
    setting, rows, notes = mi_rows(records, ["template.name", "data.n_train"])
    assert setting == [] and notes == []
    ((title, panel),) = panels(setting, rows).items()
    ax = mi_figure(title, panel, 0.3).axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines["xAttr"] == pytest.approx([0.7, 0.8]) and lines["overall"] == pytest.approx([0.53125, 0.5])
    assert lines["threshold 0.3"] == [0.3, 0.3]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "20"]


def test_mi_of_unlike_runs_is_left_out_or_refused(tmp_path):
    sweep = mi_sweep(tmp_path / "sweep", masked_steps=60)  # at n=20 the twins trained for different steps
    proc = mto("report", str(sweep), "by=template,data.n_train", f"out={tmp_path / 'r'}", cwd=tmp_path)
    assert "warning: MI of prompting vs masked_prompting at data.n_train=20: the runs differ" in proc.stderr
    assert "train.steps (30, 60)" in proc.stderr
    rows = list(csv.DictReader((tmp_path / "r" / "mi.csv").open()))
    assert {r["data.n_train"] for r in rows} == {"5"}  # the like runs at n=5 still give their MI

    named = mto("report", str(sweep), "by=template,data.n_train", "mi=prompting,masked_prompting",
                f"out={tmp_path / 'named'}", cwd=tmp_path, check=False)  # fmt: skip
    assert named.returncode == 2
    (line,) = named.stderr.strip().splitlines()
    assert line.startswith("mto report: error: MI of prompting vs masked_prompting at data.n_train=20")
    assert "train.steps (30, 60)" in line and not (tmp_path / "named").exists()


@pytest.mark.slow
def test_mi_options(tmp_path):
    sweep = mi_sweep(tmp_path / "sweep")
    mto("report", str(sweep), "by=template,data.n_train", "mi=false", f"out={tmp_path / 'off'}", cwd=tmp_path)
    assert not (tmp_path / "off" / "mi.csv").exists()
    assert not (tmp_path / "off" / "mi_vs_fewshot.png").exists()
    # a pair named explicitly: the mapping arm against the masked template
    mto("report", str(sweep), "by=template,data.n_train", "mi=mapping,masked_prompting",
        f"out={tmp_path / 'named'}", cwd=tmp_path)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "named" / "mi.csv").open()))
    assert {(r["mapping"], r["data.n_train"]) for r in rows} == {("mapping", "5")}
    assert float(next(r["mi"] for r in rows if r["relation"] == "xAttr")) == pytest.approx((1 - 6) / 1)
    for bad, expected in (
        ("mi=prompting", "mi=prompting: expected <mapping template>,<filling template>"),
        ("mi=prompting,masked_answer", "mi=prompting,masked_answer: no run of template masked_answer has a "
                                       "depth_rank figure"),
    ):  # fmt: skip
        proc = mto("report", str(sweep), bad, f"out={tmp_path / 'bad'}", cwd=tmp_path, check=False)
        assert proc.returncode == 2 and proc.stderr.strip().startswith(f"mto report: error: {expected}")
    # runs from before gold scores (no depth_rank): no MI view, and the report still works
    fake_run(tmp_path / "old" / "0", "completed", "prompting", 5, 1, 0.4)
    fake_run(tmp_path / "old" / "1", "completed", "masked_prompting", 5, 1, 0.6)
    mto("report", str(tmp_path / "old"), "by=template", f"out={tmp_path / 'old-r'}", cwd=tmp_path)
    assert (tmp_path / "old-r" / "report.csv").is_file() and not (tmp_path / "old-r" / "mi.csv").exists()
