"""Sweeps at scale: multirun with the basic and submitit launchers, skip-completed, SIGTERM -> resume,
`mto report`, and (marked `slurm`) a real single-node SLURM."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import fake_run, mto, read_json, run_dirs

from mto.tracking import read_steps

TINY = ["data.n_heads=40", "data.relations=[xIntent,xNeed]", "train.steps=3", "eval.max_examples=6",
        "eval.max_new_tokens=4"]  # fmt: skip
GRID = ["template=mapping,masked_prompting", "seed=1,2"]


def sweep_jobs(cwd: Path) -> dict[str, list[Path]]:
    """Job directories per sweep directory, in sweep order."""
    sweeps: dict[str, list[Path]] = {}
    for job in run_dirs(cwd / "outputs" / "multirun" / "train"):
        sweeps.setdefault(str(job.parent), []).append(job)
    return dict(sorted(sweeps.items()))


def overrides(job: Path) -> list[str]:
    """The job's swept overrides (template, seed)."""
    saved = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return [o for o in saved if o.startswith(("template=", "seed="))]


@pytest.mark.slow
def test_basic_multirun_grid_then_skip_completed(tmp_path):
    mto("train", "-m", *GRID, *TINY, cwd=tmp_path)
    (first,) = sweep_jobs(tmp_path).values()
    assert [j.name.split("_")[0] for j in first] == ["0", "1", "2", "3"]
    assert {read_json(j / "run.json")["status"] for j in first} == {"completed"}
    assert sorted(tuple(sorted(overrides(j))) for j in first) == sorted(
        tuple(sorted([f"template={t}", f"seed={s}"])) for t in ("mapping", "masked_prompting") for s in (1, 2)
    )
    # One job failed: a rerun of the same grid redoes it and skips the three completed twins.
    failed = first[2]
    info = read_json(failed / "run.json")
    (failed / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    time.sleep(0.01)
    mto("train", "-m", *GRID, *TINY, cwd=tmp_path)
    _, second = sweep_jobs(tmp_path).values()
    statuses = {tuple(sorted(overrides(j))): read_json(j / "run.json") for j in second}
    by_overrides = {tuple(sorted(overrides(j))): j for j in first}
    for key, job_info in statuses.items():
        if by_overrides[key] == failed:
            assert job_info["status"] == "completed"
        else:
            assert job_info["status"] == "skipped"
            assert job_info["twin"] == str(by_overrides[key])
    skipped = next(j for j in second if read_json(j / "run.json")["status"] == "skipped")
    assert "skipping train: a completed twin" in (skipped / "train.log").read_text()
    assert not (skipped / "model").exists()


@pytest.mark.slow
def test_submitit_local_multirun(tmp_path):
    mto("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "seed=1,2", *TINY,
        cwd=tmp_path)  # fmt: skip
    (jobs,) = sweep_jobs(tmp_path).values()
    assert len(jobs) == 2
    assert {read_json(j / "run.json")["status"] for j in jobs} == {"completed"}
    assert all((j / "metrics.json").is_file() for j in jobs)


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_same_metrics(tmp_path):
    args = ["data.n_heads=60", "train.steps=80", "train.log_every=10", "checkpoint.every=0",
            "eval.max_examples=16", "eval.max_new_tokens=6", "hydra.run.dir=interrupted"]  # fmt: skip
    # SIGTERM at step 30 exactly, raised by the run itself through the test-only hook (mto/signals.py),
    # so the test never races the clock of a loaded machine.
    env = {**os.environ, "MTO_TEST_SIGNAL_AT": "step-30:TERM"}
    exe = Path(sys.executable).with_name("mto")
    proc = subprocess.run([str(exe), "train", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=600)  # fmt: skip
    run = tmp_path / "interrupted"
    assert proc.returncode == 3, proc.stderr
    assert "resume with `mto train resume=" in proc.stderr
    assert read_json(run / "run.json")["status"] == "interrupted"
    assert (run / "checkpoints" / "step-30" / "state.pt").is_file() and not (run / "metrics.json").exists()
    assert "train step 40/80" not in (run / "train.log").read_text()

    mto("train", f"resume={run}", cwd=tmp_path)
    resumed = read_json(run / "run.json")
    assert resumed["status"] == "completed" and resumed["attempt"] == 2
    assert "resuming train from the checkpoint at step 30" in (run / "train.log").read_text()
    assert not (run / "checkpoints").exists()  # dropped once the run completed

    mto("train", *args[:-1], "hydra.run.dir=straight", cwd=tmp_path)
    straight = tmp_path / "straight"
    assert read_json(straight / "run.json")["figures"]["train_loss"] == resumed["figures"]["train_loss"]
    assert read_json(straight / "metrics.json") == read_json(run / "metrics.json")
    assert (straight / "predictions.jsonl").read_text() == (run / "predictions.jsonl").read_text()
    # The per-step log too: what the first attempt logged after its checkpoint was dropped on resuming.
    steps = [(r["step"], r["loss"], r["lr"]) for r in read_steps(run)]
    assert steps == [(r["step"], r["loss"], r["lr"]) for r in read_steps(straight)]
    assert [s for s, _, _ in steps] == list(range(10, 81, 10))


# ---------------------------------------------------------------- mto report


def test_report_on_a_sweep_with_a_failed_run(tmp_path):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", "completed", "mapping", 16, 1, 0.30, {"xIntent": 0.2, "xNeed": 0.4})
    fake_run(sweep / "1", "completed", "mapping", 16, 2, 0.50, {"xIntent": 0.4, "xNeed": 0.6})
    fake_run(sweep / "2", "completed", "masked_prompting", 16, 1, 0.60)
    twin = fake_run(sweep / "3", "completed", "masked_prompting", 16, 2, 0.70)
    fake_run(sweep / "4", "failed", "mapping", 64, 1, None)
    fake_run(tmp_path / "rerun" / "0", "skipped", "masked_prompting", 16, 2, None, twin=twin)  # counts once
    fake_run(sweep / "5", "completed", "mapping", 64, 2, 0.90)
    proc = mto("report", str(sweep), str(tmp_path / "rerun"), "by=template,data.n_train", "metric=rougeL",
               f"out={tmp_path / 'report'}", cwd=tmp_path)  # fmt: skip
    rows = (tmp_path / "report" / "report.csv").read_text().splitlines()
    assert rows[0] == "template.name,data.n_train,rougeL_mean,rougeL_std,runs"
    table = {tuple(r.split(",")[:2]): [float(x) for x in r.split(",")[2:]] for r in rows[1:]}
    # mapping, 16: mean(0.3, 0.5) = 0.4; sample std = sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.141421...
    assert table[("mapping", "16")] == pytest.approx([0.4, 0.1414213562, 2])
    # masked_prompting, 16: mean(0.6, 0.7) = 0.65, std 0.0707106781; the skipped twin is not counted again
    assert table[("masked_prompting", "16")] == pytest.approx([0.65, 0.0707106781, 2])
    assert table[("mapping", "64")] == pytest.approx([0.9, 0.0, 1])  # the failed run is not averaged
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| mapping | 16 | 0.4000 ± 0.1414 | 2 |" in markdown
    assert "4`: failed" in markdown and "failed" in proc.stdout
    for name in ("rougeL_vs_fewshot.png", "rougeL_per_relation.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        height, width, _ = matplotlib.image.imread(tmp_path / "report" / name).shape
        assert height > 100 and width > 100


def mixed_methods(root: Path) -> Path:
    """The issue's folder: one template, full and LoRA tuning at 30 and 600 steps, two seeds each."""
    i = 0
    for method, steps, base in (("full", 30, 0.1), ("full", 600, 0.8), ("lora", 30, 0.0), ("lora", 600, 0.5)):
        for seed in (1, 2):
            extra = {"tuning": {"method": method, **({"r": 8} if method == "lora" else {})},
                     "train": {"steps": steps}}  # fmt: skip
            fake_run(root / str(i), "completed", "mapping", None, seed, base + 0.01 * seed, extra=extra)
            i += 1
    return root


@pytest.mark.slow
def test_report_refuses_to_average_runs_that_differ_in_more_than_the_seed(tmp_path):
    runs = mixed_methods(tmp_path / "sweep")
    proc = mto("report", str(runs), "by=template", f"out={tmp_path / 'r'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("mto report: error: runs averaged together differ in more than the seed")
    assert "tuning.method (full, lora)" in line and "train.steps (30, 600)" in line
    assert "tuning.r" in line  # LoRA's own key, absent from the full runs
    assert "by=template,tuning,train.steps" in line and "pool=true" in line
    assert not (tmp_path / "r").exists()

    # Split by what differs: one row per (method, steps), each the mean of its two seeds.
    mto("report", str(runs), "by=template,tuning,train.steps", f"out={tmp_path / 'r'}", cwd=tmp_path)
    rows = list(csv.DictReader((tmp_path / "r" / "report.csv").open()))
    table = {(r["tuning.method"], r["train.steps"]): (float(r["rougeL_mean"]), int(r["runs"])) for r in rows}
    assert table == {("full", "30"): (pytest.approx(0.115), 2), ("full", "600"): (pytest.approx(0.815), 2),
                     ("lora", "30"): (pytest.approx(0.015), 2), ("lora", "600"): (pytest.approx(0.515), 2)}

    # pool=true averages them anyway, and says so on stderr and in report.md.
    proc = mto("report", str(runs), "by=template", "pool=true", f"out={tmp_path / 'p'}", cwd=tmp_path)
    assert "warning: pooled runs that differ in more than the seed" in proc.stderr
    assert "tuning.method (full, lora)" in proc.stderr
    (row,) = list(csv.DictReader((tmp_path / "p" / "report.csv").open()))
    assert int(row["runs"]) == 8 and float(row["rougeL_mean"]) == pytest.approx(0.365)
    assert "Warning: pooled runs that differ" in (tmp_path / "p" / "report.md").read_text()
    bad = mto("report", str(runs), "pool=maybe", cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "mto report: error: pool=maybe: expected true or false"


@pytest.mark.slow
def test_report_compares_runs_through_the_runs_they_started_from(tmp_path):
    # Two adaptations, each run with two seeds; train runs name their adapt run in config and lineage.
    adapt = {}
    for objective in ("filling", "span_corruption"):
        for seed in (1, 2):
            adapt[objective, seed] = fake_run(
                tmp_path / "adapt" / f"{objective}-{seed}", "completed", "mapping", None, seed, None,
                stage="adapt", extra={"objective": {"name": objective}},
            )  # fmt: skip
    for i, ((objective, seed), run) in enumerate(sorted(adapt.items())):
        fake_run(tmp_path / "train" / str(i), "completed", "mapping", 16, seed, 0.2 + 0.1 * i,
                 extra={"adapt_run": str(run)}, lineage={"adapt_run": str(run), "adapt_objective": objective})
    # Seeds of one arm are alike although their adapt runs are two directories (they differ in the seed).
    proc = mto("report", str(tmp_path / "train"), "by=template", f"out={tmp_path / 'r'}", cwd=tmp_path,
               check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "adapt_run.objective.name (filling, span_corruption)" in proc.stderr
    assert "by=template,adapt_run.objective.name" in proc.stderr
    for by in ("template,adapt_run.objective.name", "template,adaptation"):
        mto("report", str(tmp_path / "train"), f"by={by}", f"out={tmp_path / by}", cwd=tmp_path)
        rows = list(csv.DictReader((tmp_path / by / "report.csv").open()))
        assert [(int(r["runs"]), round(float(r["rougeL_mean"]), 4)) for r in rows] == [(2, 0.25), (2, 0.45)]


def _records(root: Path):
    from mto.reporting.records import gather

    records, _ = gather([str(root)])
    return records


def _texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def test_fewshot_plot_says_what_it_shows(tmp_path):
    from mto.reporting.plots import fewshot_figure

    for i, (template, n_train, seed, rouge) in enumerate([
        ("mapping", 16, 1, 0.0), ("mapping", 16, 2, 0.4), ("mapping", 64, 1, 0.5), ("mapping", 64, 2, 0.5),
        ("masked_prompting", 16, 1, 0.6), ("masked_prompting", 64, 1, 0.7), ("masked_prompting", 64, 2, 0.9),
    ]):  # fmt: skip
        fake_run(tmp_path / "a" / str(i), "completed", template, n_train, seed, rouge)
    fig = fewshot_figure(_records(tmp_path / "a"), "exact_match", ["template.name"], "template")
    (ax,) = fig.axes
    assert _texts(ax.get_xticklabels()) == ["16", "64"]  # the sizes, not 2x10^1; no 'full' without full data
    assert "full" not in ax.get_xlabel() and "data.n_train" in ax.get_xlabel()
    assert ax.get_ylabel() == "exact_match"
    assert ax.get_title().startswith("exact_match vs few-shot size\nmean ± std over seeds")
    legend = ["mapping (n=2 per point)", "masked_prompting (n=1-2 per point)"]
    assert _texts(ax.get_legend().get_texts()) == legend
    # exact_match of mapping at 16: 0.0 and 0.2 -> mean 0.1, std 0.14; the bar stops at 0, not at -0.04.
    bars = [seg for c in ax.containers for coll in c.lines[2] for seg in coll.get_segments()]
    assert min(y for seg in bars for _, y in seg) == pytest.approx(0.0)
    assert max(y for seg in bars for _, y in seg) <= 1.0

    # With full-data runs: the rightmost tick says so.
    fake_run(tmp_path / "a" / "full", "completed", "mapping", None, 1, 0.8)
    ax = fewshot_figure(_records(tmp_path / "a"), "rougeL", ["template.name"]).axes[0]
    assert _texts(ax.get_xticklabels()) == ["16", "64", "full"]
    assert "full: all training data" in ax.get_xlabel()


def test_without_a_fewshot_axis_the_report_draws_bars(tmp_path):
    from mto.reporting.plots import fewshot_figure

    for i, (template, seed, rouge) in enumerate([("mapping", 1, 0.3), ("mapping", 2, 0.5),
                                                 ("masked_prompting", 1, 0.7)]):  # fmt: skip
        fake_run(tmp_path / "runs" / str(i), "completed", template, None, seed, rouge)
    ax = fewshot_figure(_records(tmp_path / "runs"), "rougeL", ["template.name"], "template").axes[0]
    # One bar per template (mean over its seeds), not a point at x=1.0.
    assert [round(p.get_height(), 4) for p in ax.patches] == [0.4, 0.7]
    assert _texts(ax.get_xticklabels()) == ["mapping\n(n=2)", "masked_prompting\n(n=1)"]
    assert ax.get_title().startswith("rougeL by template (full training data)")
    mto("report", str(tmp_path / "runs"), "by=template", f"out={tmp_path / 'r'}", cwd=tmp_path)
    assert (tmp_path / "r" / "rougeL_by_template.png").is_file()
    assert not (tmp_path / "r" / "rougeL_vs_fewshot.png").exists()


def test_per_relation_plot_says_what_it_pools(tmp_path):
    from mto.reporting.plots import relation_figure

    for i, (template, n_train, seed, groups) in enumerate([
        ("mapping", 16, 1, {"xIntent": 0.9, "xNeed": 0.9}),  # a smaller size: not in the plot
        ("mapping", 64, 1, {"xIntent": 0.2, "xNeed": 0.4}),
        ("mapping", 64, 2, {"xIntent": 0.4, "xNeed": 0.6}),
        ("masked_prompting", 64, 1, {"xIntent": 0.5, "xNeed": 0.7}),
    ]):  # fmt: skip
        fake_run(tmp_path / "runs" / str(i), "completed", template, n_train, seed, 0.5, per_group=groups)
    fig = relation_figure(_records(tmp_path / "runs"), ["template.name"], "template", "model=tiny")
    (ax,) = fig.axes
    assert ax.get_title() == ("ROUGE-L per relation, data.n_train=64 (the largest size)\n"
                              "mean ± std over seeds; model=tiny")  # fmt: skip
    assert ax.get_xlabel() == "relation" and ax.get_ylabel() == "ROUGE-L (F1)"
    assert _texts(ax.get_xticklabels()) == ["xIntent", "xNeed"]
    assert _texts(ax.get_legend().get_texts()) == ["mapping (n=2)", "masked_prompting (n=1)"]
    from matplotlib.container import BarContainer

    mapping = next(c for c in ax.containers if isinstance(c, BarContainer))
    assert [round(p.get_height(), 4) for p in mapping.patches] == [0.3, 0.5]
    # Error bars: mapping's two seeds differ by 0.2 -> std 0.1414 either side of each bar.
    segments = mapping.errorbar.lines[2][0].get_segments()
    assert [round(seg[1][1] - seg[0][1], 4) for seg in segments] == [0.2828, 0.2828]


def test_report_html_page_renders_in_a_browser(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the HTML page cannot be rendered")
    adapt = fake_run(tmp_path / "adapt", "completed", "mapping", None, 1, None, stage="adapt")
    for i, (template, n_train, seed, rouge) in enumerate([
        ("mapping", 16, 1, 0.3), ("mapping", 16, 2, 0.5), ("mapping", 64, 1, 0.6),
        ("masked_prompting", 16, 1, 0.6), ("masked_prompting", 64, 1, 0.8), ("masked_prompting", 64, 2, 0.9),
    ]):  # fmt: skip
        fake_run(tmp_path / "sweep" / str(i), "completed", template, n_train, seed, rouge,
                 {"xIntent": rouge, "xNeed": rouge / 2}, extra={"adapt_run": str(adapt)},
                 lineage={"adapt_run": str(adapt)})  # fmt: skip
    fake_run(tmp_path / "sweep" / "9", "failed", "mapping", 64, 2, None)
    mto("report", str(tmp_path / "sweep"), "by=template,data.n_train", "html=true", f"out={tmp_path / 'r'}",
        cwd=tmp_path)  # fmt: skip
    page = (tmp_path / "r" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    assert re.findall(r'<img [^>]*src="([^"]{0,22})', page) == ["data:image/png;base64,"] * 2

    # Opened from disk by a real browser; a probe script (added to a copy) records how the images decoded.
    probe = tmp_path / "r" / "probe.html"
    script = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-decoded', "
              "[...document.images].map(i => i.complete ? i.naturalWidth + 'x' + i.naturalHeight : 'broken')"
              ".join(',')));</script>")  # fmt: skip
    probe.write_text(page.replace("</body>", script + "</body>"))
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000", "--dump-dom"]
    proc = subprocess.run([browser, *flags, probe.as_uri()], capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0 and "<table" in dom, proc.stderr[-2000:]
    decoded = re.search(r'data-decoded="([^"]*)"', dom).group(1).split(",")
    assert len(decoded) == 2
    for size in decoded:
        width, height = (int(v) for v in size.split("x"))
        assert width > 300 and height > 200
    summary = dom.split('id="summary"')[1].split("</table>")[0]
    rows = [re.sub(r"<[^>]+>", "|", row) for row in re.findall(r'<tr id="row-\d+">.*?</tr>', summary)]
    cells = [[c for c in row.split("|") if c] for row in rows]
    assert cells == [["mapping", "16", "0.4000 ± 0.1414", "2"], ["mapping", "64", "0.6000 ± 0.0000", "1"],
                     ["masked_prompting", "16", "0.6000 ± 0.0000", "1"],
                     ["masked_prompting", "64", "0.8500 ± 0.0707", "2"]]  # fmt: skip
    assert dom.count(f"adapt_run: {adapt}") == 6  # each run's lineage, under its group
    assert "9</code>: failed" in dom


# ---------------------------------------------------------------- a real SLURM


SLURM = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
         "hydra.launcher.timeout_min=10"]  # fmt: skip


@pytest.mark.slurm
def test_slurm_grid_runs_as_a_job_array(slurm, tmp_path):
    mto("train", "-m", *SLURM, *GRID, *TINY, cwd=tmp_path, timeout=900)
    (jobs,) = sweep_jobs(tmp_path).values()
    assert len(jobs) == 4
    assert {read_json(j / "run.json")["status"] for j in jobs} == {"completed"}
    submitit_logs = list((jobs[0].parent / ".submitit").rglob("*_log.out"))
    assert submitit_logs, "the jobs ran through submitit on SLURM"


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hydra.launcher.partition=nosuchpartition", "invalid partition"),
        ("hydra.launcher.mem_gb=100000", "Memory specification can not be satisfied"),
    ],
)
def test_slurm_refuses_impossible_requests_at_once(slurm, tmp_path, override, message):
    start = time.time()
    proc = mto("train", "-m", *SLURM, override, "seed=1,2", *TINY, cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "the scheduler refused the jobs" in proc.stderr
    assert time.time() - start < 60
