"""Runs that start from other runs: `mto eval run=<train run>` takes the run's model and, unless
overridden, its data, template and decoding settings; `adapt_run=<adapt run>` (train, match) starts
from the model `mto adapt` wrote. Both return the lineage the new run records."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mto import tuning
from mto.errors import ConfigError
from mto.runs import load_run

# Sections an evaluation takes from the train run it evaluates (decoding settings included), unless
# overridden on the command line.
INHERITED = ("data", "template", "phrases", "objective", "tuning", "train", "eval", "match_run", "protocol")


def overridden_keys() -> set[str]:
    """Top-level keys the user set on the command line (`data.n_train=16` -> `data`)."""
    keys = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~").split("@")[0]
        keys.add(key.split(".")[0].split("/")[0])
    return keys


def start_from_adapt_run(cfg: DictConfig) -> tuple[DictConfig, dict]:
    """`cfg` whose model is the one `mto adapt` wrote in `cfg.adapt_run`, and that run's lineage."""
    info, _ = load_run(cfg.adapt_run)
    model_dir = Path(cfg.adapt_run) / "model"
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"adapt_run={cfg.adapt_run}: has no model/ folder")
    cfg = OmegaConf.merge(cfg, {"model": {"name_or_path": str(model_dir.resolve()), "build": None}})
    objective = (info.get("figures", {}).get("objective") or {}).get("name")
    lineage = {"adapt_run": str(Path(cfg.adapt_run).resolve()), "adapt_objective": objective,
               **info.get("lineage", {})}  # fmt: skip
    return cfg, lineage


def inherit_from_run(cfg: DictConfig, run_dir: str) -> tuple[DictConfig, dict]:
    """`cfg` with the model of `run_dir` and, unless overridden here, its data and template settings."""
    info, run_cfg = load_run(run_dir)
    model_dir = Path(run_dir) / "model"
    adapter = tuning.is_adapter_dir(model_dir)
    if not adapter and not (model_dir / "config.json").is_file():
        raise ConfigError(f"run={run_dir}: has no model/ folder to evaluate")
    run_cfg = OmegaConf.to_container(run_cfg, resolve=True)
    user_set = overridden_keys()
    patch = {key: run_cfg[key] for key in (*INHERITED, "model") if key not in user_set and key in run_cfg}
    if adapter:  # the base model the adapter names (as a full run's model/ folder, whatever `model=` says)
        patch.setdefault("tuning", {})["adapter"] = str(model_dir.resolve())
        patch.setdefault("model", {}).update(tuning.base_model_config(model_dir))
    else:
        patch.setdefault("model", {}).update(name_or_path=str(model_dir.resolve()), build=None)
    return OmegaConf.merge(cfg, patch), info
