"""Optuna sweeps (hydra-optuna-sweeper): every stage returns the figure named by `optimized_metric` (a dev
figure by default), so `hydra/sweeper=mto_optuna` searches on the tiny model and picks its best trial."""

from __future__ import annotations

import pytest
import yaml
from conftest import mto, read_json, run_dirs

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed")

TINY = ["data.n_heads=40", "data.relations=[xIntent,xNeed]", "train.steps=20", "train.batch_size=16",
        "eval.max_examples=6", "eval.max_new_tokens=4", "eval.dev_max_examples=16", "threads=1",
        "precision=fp32"]  # fmt: skip


@pytest.mark.slow
def test_a_three_trial_optuna_search_completes_and_its_best_trial_is_the_best_of_the_three(tmp_path):
    mto("train", "-m", "hydra/sweeper=mto_optuna", "hydra.sweeper.n_trials=3", *TINY, cwd=tmp_path)
    (sweep,) = (tmp_path / "outputs" / "multirun" / "train").glob("*/*")
    jobs = run_dirs(sweep)
    assert len(jobs) == 3 and {read_json(j / "run.json")["status"] for j in jobs} == {"completed"}
    figures = {job: read_json(job / "run.json")["figures"]["dev_rougeL"] for job in jobs}
    assert len(set(figures.values())) > 1  # the trials differ, so picking the best one means something
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(figures.values())
    best = max(figures, key=figures.get)
    saved = yaml.safe_load((best / ".hydra" / "overrides.yaml").read_text())
    overrides = dict(o.split("=", 1) for o in saved)
    assert float(overrides["train.lr"]) == results["best_params"]["train.lr"]
    assert int(overrides["train.warmup_steps"]) == results["best_params"]["train.warmup_steps"]
    assert 1e-4 <= results["best_params"]["train.lr"] <= 1e-2  # the preset's search space


@pytest.mark.slow
def test_a_misspelt_optimized_metric_fails_the_sweep_naming_the_figures(tmp_path):
    proc = mto("train", "-m", "optimized_metric=dev_rogueL", "train.steps=2", *TINY[:2],
               "eval.max_examples=2", "eval.dev_max_examples=2", "threads=1", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "optimized_metric=dev_rogueL: not a figure of this train run (" in proc.stderr
    assert "dev_rougeL, " in proc.stderr.split("not a figure of this train run (")[1]


def test_the_prompt_tuning_preset_searches_the_prompt_length_and_its_learning_rate(tmp_path):
    proc = mto("train", "hydra/sweeper=mto_optuna_prompt", "tuning=prompt", "--cfg", "hydra", cwd=tmp_path)
    sweeper = yaml.safe_load(proc.stdout)["hydra"]["sweeper"]
    assert sweeper["storage"] is None and sweeper["direction"] == "maximize"
    assert set(sweeper["params"]) == {"tuning.lr", "tuning.peft.num_virtual_tokens", "train.warmup_steps"}
