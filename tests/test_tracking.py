"""Watching runs: one tiny `mto train` with validation and all three trackers (offline), each read back
with its own tool; the run's own per-step log; a tracker asked for but not installed; early stopping
through the real command line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from conftest import SMALL, mto, read_json, run_dirs

from mto.tracking import STEPS_FILE, read_steps

INSTALLED = [t for t in ("tensorboard", "mlflow", "wandb") if __import__("importlib").util.find_spec(t)]
WATCHED = [*SMALL, "threads=1", "precision=fp32", "eval.every=10", "eval.dev_max_examples=12"]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, cache_dir):
    """(outputs folder, run directory) of a train run with every installed tracker, W&B offline, started
    from a `mto match` run (lineage)."""
    cwd = tmp_path_factory.mktemp("tracked")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(cwd),
           "WANDB_CONFIG_DIR": str(cwd / ".wandb-config"), "WANDB_CACHE_DIR": str(cwd / ".wandb-cache"),
           "WANDB_DATA_DIR": str(cwd / ".wandb-data"), "MTO_CACHE_DIR": str(cache_dir)}  # fmt: skip
    with mock.patch.dict(os.environ, env):
        mto("match", "match.method=rules", "data.n_heads=60", "hydra.run.dir=match", cwd=cwd)
        mto("train", *WATCHED, f"log.to=[{','.join(INSTALLED)}]", f"match_run={cwd / 'match'}", cwd=cwd)
    (run,) = run_dirs(cwd / "outputs" / "train")
    return cwd / "outputs", run


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in pairs], [v for _, v in pairs]


@pytest.mark.slow
def test_the_run_writes_its_own_per_step_log(tracked):
    _, run = tracked
    records = read_steps(run)
    assert (run / STEPS_FILE).is_file()
    assert series(records, "loss")[0] == [10, 20, 30] and series(records, "dev_rougeL")[0] == [10, 20, 30]
    assert all(r["lr"] >= 0 and r["tokens_per_s"] > 0 for r in records if "loss" in r)
    figures = read_json(run / "run.json")["figures"]
    best = max(series(records, "dev_rougeL")[1])
    assert figures["best_dev_rougeL"] == best and figures["model_weights"] == "best"
    # model/ holds the best weights: scoring it on the same dev sample after training gives the best figure
    assert figures["dev_rougeL"] == best and figures["model_step"] == figures["best_step"]


@pytest.mark.slow
def test_tensorboard_reads_back_the_curves_and_the_config(tracked):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, run = tracked
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    records = read_steps(run)
    for key, name in (("loss", "train/loss"), ("lr", "train/lr"), ("dev_rougeL", "dev/rougeL")):
        scalars = events.Scalars(name)
        assert [e.step for e in scalars] == series(records, key)[0]
        assert [e.value for e in scalars] == pytest.approx(series(records, key)[1], rel=1e-6)
    assert events.Scalars("final/rougeL")[0].value == pytest.approx(read_json(run / "metrics.json")["rougeL"])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(1e-3)
    assert hparams["mto.match_run"].string_value.endswith("match")


@pytest.mark.slow
def test_mlflow_reads_back_the_run_from_its_sqlite_store(tracked):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow import MlflowClient

    outputs, run = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("mto").experiment_id])
    assert found.info.status == "FINISHED"
    assert found.info.run_name == str(run.relative_to(outputs))
    assert found.data.params["train.lr"] == "0.001" and found.data.params["data.n_heads"] == "60"
    assert found.data.tags["mto.run_dir"] == str(run) and found.data.tags["mto.match_run"].endswith("match")
    records = read_steps(run)
    for key, name in (("loss", "train/loss"), ("dev_rougeL", "dev/rougeL")):
        history = client.get_metric_history(found.info.run_id, name)
        assert [(m.step, m.value) for m in history] == list(zip(*series(records, key), strict=True))
    assert found.data.metrics["final/rougeL"] == read_json(run / "metrics.json")["rougeL"]


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file: a 7-byte header, then LevelDB-log framing (32 KiB blocks;
    each chunk: CRC32, uint16 length, type 1 full | 2 first | 3 middle | 4 last) around protobuf Records.
    wandb 0.31 ships no Python reader for it (its datastore moved into the Go wandb-core)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunks, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunks))
            chunks = b""
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_the_curves_config_and_tags(tracked):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    outputs, run = tracked
    (path,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(path)
    (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert start.display_name == str(run.relative_to(outputs))
    assert any(tag.startswith("match_run:") for tag in start.tags)
    config = {item.key: json.loads(item.value_json) for item in start.config.update}
    assert config["train"]["lr"] == 1e-3 and config["mto"]["mto.run_dir"] == str(run)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]  # fmt: skip
    steps = read_steps(run)
    for key, name in (("loss", "train/loss"), ("dev_rougeL", "dev/rougeL")):
        expected_steps, expected_values = series(steps, key)
        assert [h["_step"] for h in history if name in h] == expected_steps
        assert [h[name] for h in history if name in h] == pytest.approx(expected_values)


def test_a_tracker_asked_for_but_not_installed_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['wandb'] = None; from mto.cli import main; "
            "sys.argv = ['mto', 'train', 'log.to=[tensorboard,wandb]']; main()")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=os.environ.copy())  # fmt: skip
    assert proc.returncode == 2
    expected = "log.to=wandb: wandb not installed; install the extra with `pip install 'mto[wandb]'`"
    assert proc.stderr.strip().splitlines() == [f"mto train: error: {expected}"]
    (run,) = run_dirs(tmp_path / "outputs")
    assert read_json(run / "run.json")["status"] == "failed" and not (run / STEPS_FILE).exists()


@pytest.mark.slow
def test_early_stopping_stops_a_diverging_run_and_not_a_patient_one(tmp_path):
    # lr 5 wrecks the tiny model within a step: its dev figure stops improving at once
    args = [*SMALL, "threads=1", "precision=fp32", "train.steps=30", "train.lr=5", "train.warmup_steps=0",
            "eval.every=5", "eval.dev_max_examples=8"]  # fmt: skip
    mto("train", *args, "train.patience=2", "hydra.run.dir=stopped", cwd=tmp_path)
    mto("train", *args, "hydra.run.dir=patient", cwd=tmp_path)
    stopped = read_json(tmp_path / "stopped" / "run.json")["figures"]
    patient = read_json(tmp_path / "patient" / "run.json")["figures"]
    # two evaluations without improvement after the best one, then the end
    assert stopped["stopped_early"] and stopped["train_steps"] == stopped["best_step"] + 10 < 30
    assert stopped["evaluations"] == stopped["best_step"] // 5 + 2
    assert stopped["model_step"] == stopped["best_step"]
    assert not patient["stopped_early"] and patient["train_steps"] == 30 and patient["evaluations"] == 6
    steps = read_steps(tmp_path / "stopped")
    assert [r["step"] for r in steps if "dev_rougeL" in r][-1] == stopped["train_steps"]
    assert [r["step"] for r in steps if "loss" in r][-1] == stopped["train_steps"]  # its last loss too
