"""The real `mto` entry point, end to end, in a subprocess: train -> eval, sweeps, config errors,
bad data, run directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import SMALL, mto, read_json, run_dirs

from mto.metrics import normalize

RUN_LEAF = re.compile(r"^\d{2}-\d{2}-\d{2}-\d{6}(_.*)?$")  # HH-MM-SS-ffffff[_overrides]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One small train run (with its after-train eval) shared by the tests below."""
    cwd = tmp_path_factory.mktemp("train")
    mto("train", *SMALL, "seed=3", cwd=cwd)
    (run,) = run_dirs(cwd / "outputs" / "train")
    return run


def test_train_run_directory_layout(trained: Path):
    assert trained.parent.parent.name == "train"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", trained.parent.name)
    assert RUN_LEAF.match(trained.name) and "seed-3" in trained.name
    info = read_json(trained / "run.json")
    assert info["status"] == "completed"
    assert info["stage"] == "train" and info["seed"] == 3
    assert info["start_time"] <= info["end_time"]
    assert set(info["git"]) == {"commit", "dirty"}
    assert info["packages"]["torch"] and info["packages"]["transformers"]
    assert len(info["data_fingerprint"]) == 16
    assert info["figures"]["train_steps"] == 30 and info["figures"]["train_loss"] > 0
    assert info["figures"]["train_packed"] is True  # train.packing=null: packed, the tiny T5 fine-tuned fully
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "train.log",
        "metrics.json",
        "predictions.jsonl",
        "model/config.json",
        "model/model.safetensors",
    ):
        assert (trained / name).is_file(), name


def test_predictions_and_metrics_agree(trained: Path):
    metrics = read_json(trained / "metrics.json")
    lines = (trained / "predictions.jsonl").read_text().splitlines()
    assert metrics["n"] == len(lines) == 24
    rows = [json.loads(line) for line in lines]
    assert {"input", "prediction", "references", "exact_match", "rougeL"} <= set(rows[0])
    assert all("<extra_id_0>" in r["input"] for r in rows)  # masked_prompting is the default template
    em = sum(r["exact_match"] for r in rows) / len(rows)
    assert em == pytest.approx(metrics["exact_match"])
    assert metrics["distinct"] == len({normalize(r["prediction"]) for r in rows})


@pytest.mark.slow
def test_eval_of_train_run_reproduces_after_train_metrics(trained: Path, tmp_path: Path):
    mto("eval", f"run={trained}", cwd=tmp_path)
    (run,) = run_dirs(tmp_path / "outputs" / "eval")
    info = read_json(run / "run.json")
    assert info["status"] == "completed"
    assert info["lineage"]["train_run"] == str(trained.resolve())
    # The run= path is not spelled into the directory name.
    assert RUN_LEAF.match(run.name) and "/" not in run.name
    after_train, evaluated = read_json(trained / "metrics.json"), read_json(run / "metrics.json")
    for key in ("exact_match", "rougeL", "bleu", "distinct", "n"):
        assert evaluated[key] == after_train[key], key
    assert (run / "predictions.jsonl").read_text() == (trained / "predictions.jsonl").read_text()


def test_same_config_and_seed_give_same_metrics(trained: Path, tmp_path: Path):
    mto("train", *SMALL, "seed=3", cwd=tmp_path)
    (again,) = run_dirs(tmp_path / "outputs" / "train")
    first, second = read_json(trained / "metrics.json"), read_json(again / "metrics.json")
    assert (
        read_json(again / "run.json")["figures"]["train_loss"]
        == read_json(trained / "run.json")["figures"]["train_loss"]
    )
    for key in ("exact_match", "rougeL", "bleu", "distinct"):
        assert first[key] == second[key], key
    # The second run read the first one's tokenised features from the cache instead of tokenising.
    figures = read_json(again / "run.json")["figures"]
    assert figures["train_features_cached"] is True
    assert f"read {figures['train_examples']} tokenised examples" in (again / "train.log").read_text()


def test_multirun_sweep_with_flag_after_overrides(tmp_path: Path):
    # `-m` after the overrides (hydra issue 3053) and a 2-value sweep: two run directories.
    mto(
        "train",
        "template=mapping,masked_prompting",
        *SMALL,
        "train.steps=2",
        "eval.after_train=false",
        "-m",
        "seed=1",
        cwd=tmp_path,
    )
    runs = run_dirs(tmp_path / "outputs" / "multirun" / "train")
    assert len(runs) == 2
    assert sorted(r.name.split("_")[0] for r in runs) == ["0", "1"]
    assert {read_json(r / "run.json")["status"] for r in runs} == {"completed"}
    overrides = [yaml.safe_load((r / ".hydra" / "overrides.yaml").read_text()) for r in runs]
    assert sorted(o for ov in overrides for o in ov if o.startswith("template=")) == [
        "template=mapping",
        "template=masked_prompting",
    ]


@pytest.mark.slow
def test_cfg_job_prints_the_composed_config(tmp_path: Path):
    proc = mto("train", "template=mapping", "train.lr=0.5", "--cfg", "job", cwd=tmp_path)
    assert "source: '{relation}: {head}'" in proc.stdout
    assert "lr: 0.5" in proc.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1", "Key 'lrr' not in 'TrainConfig'"),
        ("train.lr=fast", "train.lr"),
        ("model=nope", "Available options in 'model'"),
        ("precision=fp16", "expected one of [auto, fp32, bf16]"),
    ],
)
def test_bad_override_is_refused_before_any_run(tmp_path: Path, override: str, expected: str):
    proc = mto("train", override, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_malformed_atomic_file_fails_cleanly(tmp_path: Path):
    data = tmp_path / "atomic"
    data.mkdir()
    (data / "train.tsv").write_text("PersonX eats\txIntent\tto be full\nPersonX runs\txIntent\n")
    (data / "dev.tsv").write_text("PersonX sings\txWant\tto rest\n")
    (data / "test.tsv").write_text("PersonX reads\txNeed\ta book\n")
    proc = mto("train", "data=atomic", f"data.path={data}", *SMALL, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()
    assert len(message) == 1, proc.stderr
    assert f"{data / 'train.tsv'}:2" in message[0] and "3" in message[0]
    (run,) = run_dirs(tmp_path / "outputs")
    assert read_json(run / "run.json")["status"] == "failed"
    assert "train.tsv:2" in (run / "train.log").read_text()
    assert not (run / "metrics.json").exists() and not (run / "model").exists()


@pytest.mark.slow
def test_missing_data_folder_is_named(tmp_path: Path):
    missing = [f"data.path={tmp_path / 'nowhere'}", "eval.allow_untrained=true"]  # not refused for no run=
    proc = mto("eval", "data=atomic", *missing, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "nowhere" in proc.stderr and "Traceback" not in proc.stderr


def test_stage_help_and_top_level_help(tmp_path: Path):
    top = mto("--help", cwd=tmp_path)
    for stage in ("adapt", "train", "eval"):
        assert stage in top.stdout
    stage_help = mto("train", "--help", cwd=tmp_path)
    assert "model: " in stage_help.stdout and "tiny" in stage_help.stdout
