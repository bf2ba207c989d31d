"""Shared test fixtures: an isolated cache, the real `mto` entry point in a subprocess, small configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_ATOMIC = ROOT.parent / "shared" / "data" / "atomic2020"

# Shrinks the embedded default so a train + eval takes seconds (the demo itself uses the full default).
SMALL = [
    "data.n_heads=60",
    "train.steps=30",
    "train.batch_size=16",
    "train.log_every=10",
    "eval.max_examples=24",
    "eval.max_new_tokens=8",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session (synthetic worlds, tokenizers), never the user's."""
    path = tmp_path_factory.mktemp("mto-cache")
    os.environ["MTO_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("MTO_CACHE_DIR", str(cache_dir))


# The synthetic world and tiny model at their smallest, on one thread, in fp32: for in-process tests.
TINY_WORLD = ["data.n_heads=60", "threads=1", "precision=fp32"]


def compose_train(*overrides: str):
    """The `train` config composed with Hydra (TINY_WORLD, then `overrides`) and turned into the typed
    dataclasses (validated), as a stage reads it."""
    from hydra import compose, initialize_config_dir

    from mto.config import conf_dir, typed

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return typed(compose(config_name="train", overrides=[*TINY_WORLD, *overrides]))


@pytest.fixture(scope="module")
def tiny_world(cache_dir):
    """(task, tokenizer, model): the synthetic task and the tiny T5 built from scratch (seed 42), built once
    per test module and shared read-only (tests that train deep-copy the model)."""
    from mto.stages import steps
    from mto.training.runtime import set_threads

    cfg = compose_train()
    set_threads(1)
    task = steps.get_task(cfg)
    tokenizer, model = steps.get_model(cfg, task)
    return task, tokenizer, model


def data_config(shipped: str | None = None, **values):
    """A `data` config as a stage reads it (typed, validated): conf/data/<shipped>.yaml with `seed=7`
    resolved, then `values` over it."""
    from omegaconf import OmegaConf

    from mto.config import DataConfig, conf_dir

    base = {}
    if shipped:
        yaml = OmegaConf.load(conf_dir() / "data" / f"{shipped}.yaml")
        base = OmegaConf.to_container(OmegaConf.merge({"seed": 7, "data": yaml}), resolve=True)["data"]
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), base, values))


def mto(*args: str, cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `mto` command line (console script of the installed package) in `cwd`."""
    exe = Path(sys.executable).with_name("mto")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "mto.cli"]), *args]
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mto {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


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


def run_dirs(root: Path) -> list[Path]:
    """Every run directory (one holding run.json) under `root`, sorted."""
    return sorted(p.parent for p in Path(root).rglob("run.json"))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- fake runs for `mto report`


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def fake_run(folder: Path, status: str, template: str, n_train, seed: int, rouge: float | None,
             per_group: dict | None = None, twin: Path | None = None, extra: dict | None = None,
             lineage: dict | None = None, stage: str = "train",
             metrics: dict | None = None) -> Path:  # fmt: skip
    """A run directory as a stage writes it (for `mto report`); `extra` is merged into its config,
    `lineage` into run.json, `metrics` into metrics.json."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"stage": stage, "seed": seed, "template": {"name": template}, "data": {"name": "synthetic",
              "n_train": n_train, "sample_seed": "${seed}"}, "model": {"name_or_path": "tiny"},
              "tuning": {"method": "full"}, "train": {"steps": 30}, "threads": None}  # fmt: skip
    _merge(config, extra or {})
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    info = {"stage": stage, "status": status, "figures": {}, "lineage": lineage or {}}
    if twin is not None:
        info["twin"] = str(twin)
    (folder / "run.json").write_text(json.dumps(info))
    if rouge is not None:
        per_group = per_group or {"xIntent": rouge}
        scores = {"rougeL": rouge, "exact_match": rouge / 2, "rougeL_per_group": per_group, **(metrics or {})}
        (folder / "metrics.json").write_text(json.dumps(scores))
    return folder
