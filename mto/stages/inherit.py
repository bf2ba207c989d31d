"""Runs that start from other runs: `mto eval run=<train run>` takes the run's model and, unless
overridden, its data, template and decoding settings; `adapt_run=<adapt run>` (train, match) starts
from the model `mto adapt` wrote. Both return the lineage the new run records.

A run directory may come from someone else, so nothing in it may decide that code runs: the keys of
`CODE_KEYS` come from the user's own command line (and the shipped configs), never from the run's
`.hydra/config.yaml` or its model folder."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mto import tuning
from mto.errors import ConfigError
from mto.runs import load_run

# Sections an evaluation takes from the train run it evaluates (decoding settings included), unless
# overridden on the command line.
INHERITED = ("data", "template", "phrases", "objective", "tuning", "train", "eval", "match_run", "protocol")
# Keys that let a model folder's own Python files run (`auto_map`), or choose which files load: the
# evaluating user's value, never the evaluated run's.
CODE_KEYS = ("model.trust_remote_code", "tuning.adapter")


# `${name:...}`: an OmegaConf resolver call (`${oc.env:HOME}`), as opposed to a reference `${seed}`.
RESOLVER_CALL = re.compile(r"\$\{\s*[\w.\-]+\s*:")


def refuse_resolver_calls(node: Any, where: str, key: str = "") -> None:
    """ConfigError for a value of a run's config that calls a resolver: resolving it here would read this
    machine's environment (`${oc.env:...}`) into the evaluation; a run's config may only refer to its own
    keys (`sample_seed: ${seed}`), which is all mto writes."""
    if isinstance(node, dict):
        for name, value in node.items():
            refuse_resolver_calls(value, where, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            refuse_resolver_calls(value, where, f"{key}[{i}]")
    elif isinstance(node, str) and RESOLVER_CALL.search(node):
        raise ConfigError(
            f"{where}: {key}={node[:60]!r} calls a resolver; a run's config may only refer to its own keys"
        )


def command_line() -> tuple[set[str], dict[str, list[str]]]:
    """What the user set on the command line: the sections chosen whole (`data=atomic`, `match_run=...`)
    and, per section, the dotted keys set inside it (`data.path=...` -> {"data": ["data.path"]})."""
    whole: set[str] = set()
    dotted: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        key = override.key_or_group
        section = key.split(".")[0].split("/")[0]
        if "." in key:
            dotted.setdefault(section, []).append(key)
        else:
            whole.add(section)
    return whole, dotted


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
    """`cfg` with the model of `run_dir` and its data, template and decoding settings, except what the
    command line sets: a section named whole (`data=atomic`) is the user's, a key set inside one
    (`data.path=...`, `data.files.test=dev`) changes that key of the run's section and keeps the rest."""
    info, run_cfg = load_run(run_dir)
    model_dir = Path(run_dir) / "model"
    adapter = tuning.is_adapter_dir(model_dir)
    if not adapter and not (model_dir / "config.json").is_file():
        raise ConfigError(f"run={run_dir}: has no model/ folder to evaluate")
    where = f"run={run_dir}: .hydra/config.yaml"
    refuse_resolver_calls(OmegaConf.to_container(run_cfg, resolve=False), where)
    run_cfg = OmegaConf.to_container(run_cfg, resolve=True)
    whole, dotted = command_line()
    sections = {}
    for section in (*INHERITED, "model"):
        if section in whole or section not in run_cfg:
            continue
        value = OmegaConf.create({section: run_cfg[section]})
        for key in dotted.get(section, []):
            OmegaConf.update(value, key, OmegaConf.select(cfg, key), merge=False)
        sections[section] = value[section]
    code = {key: OmegaConf.select(cfg, key) for key in CODE_KEYS}
    cfg = copy.deepcopy(cfg)
    for section, value in sections.items():  # the run's section as a whole, not merged into the default
        schema = OmegaConf.get_type(cfg, section)
        if dataclasses.is_dataclass(schema):
            value = OmegaConf.merge(OmegaConf.structured(schema), value)
        cfg[section] = value
    for key, value in code.items():
        OmegaConf.update(cfg, key, value, merge=False)
    if adapter:  # the base model the adapter names (as a full run's model/ folder, whatever `model=` says)
        OmegaConf.update(cfg, "tuning.adapter", str(model_dir.resolve()))
        OmegaConf.update(cfg, "model", tuning.base_model_config(model_dir), merge=True)
    else:
        model = {"name_or_path": str(model_dir.resolve()), "build": None, "revision": None}
        OmegaConf.update(cfg, "model", model, merge=True)
    return cfg, info
