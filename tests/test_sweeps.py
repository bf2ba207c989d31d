"""Sweeps at scale: multirun with the basic and submitit launchers, skip-completed, SIGTERM -> resume,
`mto report`, and (marked `slurm`) a real single-node SLURM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, mto, read_json, run_dirs

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


def test_submitit_local_multirun(tmp_path):
    mto("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "seed=1,2", *TINY,
        cwd=tmp_path)  # fmt: skip
    (jobs,) = sweep_jobs(tmp_path).values()
    assert len(jobs) == 2
    assert {read_json(j / "run.json")["status"] for j in jobs} == {"completed"}
    assert all((j / "metrics.json").is_file() for j in jobs)


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


# ---------------------------------------------------------------- mto report


def fake_run(folder: Path, status: str, template: str, n_train, seed: int, rouge: float | None,
             per_group: dict | None = None, twin: Path | None = None) -> Path:  # fmt: skip
    (folder / ".hydra").mkdir(parents=True)
    config = {"stage": "train", "seed": seed, "template": {"name": template}, "data": {"name": "synthetic",
              "n_train": n_train}, "model": {"name_or_path": "tiny"}}  # fmt: skip
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    info = {"stage": "train", "status": status, "figures": {}}
    if twin is not None:
        info["twin"] = str(twin)
    (folder / "run.json").write_text(json.dumps(info))
    if rouge is not None:
        per_group = per_group or {"xIntent": rouge}
        metrics = {"rougeL": rouge, "exact_match": rouge / 2, "rougeL_per_group": per_group}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


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


# ---------------------------------------------------------------- a real SLURM


@pytest.fixture(scope="module")
def slurm():
    """A single-node SLURM on localhost (scripts/slurm-local.sh); skipped where it cannot start."""
    script = ROOT / "scripts" / "slurm-local.sh"
    if os.geteuid() != 0 or shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("a local SLURM needs root and apt-get")
    up = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True, timeout=600)
    if up.returncode == 3:
        pytest.skip(f"local SLURM cannot start here: {up.stderr.strip()}")
    assert up.returncode == 0, up.stderr
    yield
    subprocess.run(["bash", str(script), "down"], capture_output=True, text=True, timeout=120)


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
