"""`mto <stage> resume=<run dir>`: continue a run in its own directory with the config it was started
with. Checked on the command line, before Hydra writes anything into the directory."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mto.config import MtoConfig, conf_dir
from mto.errors import ConfigError
from mto.runlock import lock_run_dir
from mto.runs import RUN_FILE, read_json

UNSET = "<unset>"

# What a resumed run may set differently from the run it continues: how it runs, not what it computes.
# (train.devices, train.grad_accum: a run checkpointed on N processes resumes on M; the global batch and the
# data position stay the same.)
RESUME_MAY_CHANGE = ("threads", "checkpoint", "train.log_every", "skip_completed", "resume", "outputs", "log",
                     "optimized_metric", "train.devices", "train.grad_accum")  # fmt: skip
# Never replayed from a run's files: enabling code is the user's own command line's alone.
NEVER_REPLAYED = ("resume", "model.trust_remote_code")


def resume_overrides(config_name: str, overrides: list[str], lock: bool = True) -> list[str]:
    """`resume=<run dir>` continues that run in that same directory, so the stage finds its checkpoint
    there and the run's config stays what it was:

    - the directory is locked first (`lock`), before Hydra writes into it: a run still going is refused;
    - a completed (or skipped) run is refused: there is nothing to resume;
    - the run's own task overrides are replayed from its `.hydra/overrides.yaml` through an allow-list
      (`replayable`): settings of the schema and config-group choices, never `hydra.*`, launcher,
      callback or sweeper groups, nor `model.trust_remote_code`;
    - the overrides given now may change only RESUME_MAY_CHANGE: any other difference between the
      config that results and the run's `.hydra/config.yaml` is refused, naming the keys; that folder
      is left as it is (the record of the run's config)."""
    resume = [o for o in overrides if o.startswith("resume=")]
    if not resume:
        return overrides
    run_dir = Path(resume[-1].split("=", 1)[1]).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file() or not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"{resume[-1]}: not a run directory (no .hydra/overrides.yaml and config.yaml)")
    if lock:
        lock_run_dir(run_dir)
    info = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).is_file() else {}
    if info.get("status") == "completed":
        raise ConfigError(f"{resume[-1]}: this run is completed; there is nothing to resume")
    if info.get("status") == "skipped":
        raise ConfigError(f"{resume[-1]}: this job was skipped; its completed twin is {info.get('twin')}")
    recorded = yaml.safe_load(saved.read_text()) or []
    replay = [o for o in recorded if isinstance(o, str) and replayable(o)]
    ignored = [o for o in recorded if o not in replay and not str(o).startswith("resume=")]
    if ignored:
        skipped = ", ".join(map(str, ignored))
        print(f"mto: resume: not replaying {skipped} (not settings of the run)", file=sys.stderr)
    rest = [o for o in overrides if not o.startswith("resume=")]
    # output_subdir=null: Hydra leaves the run's .hydra/ as it was, the record of the config the run was
    # started with (and what the next resume replays): a kill while Hydra rewrites it cannot tear it.
    result = [*replay, *rest, f"resume={run_dir}", f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
    check_unchanged(config_name, run_dir, result)
    return result


def replayable(override: str) -> bool:
    """Whether a recorded override is a run setting: a key of the schema or a config-group choice."""
    key = override.split("=", 1)[0].lstrip("~+").split("@")[0]
    top = re.split(r"[./]", key)[0]
    groups = {p.name for p in conf_dir().iterdir() if p.is_dir() and p.name != "hydra"}
    settings = {f.name for f in dataclasses.fields(MtoConfig)}
    return top in groups | settings and key not in NEVER_REPLAYED


def check_unchanged(config_name: str, run_dir: Path, overrides: list[str]) -> None:
    """ConfigError naming the settings in which `overrides` would make the run's config differ from the
    one it was started with (`.hydra/config.yaml`), other than RESUME_MAY_CHANGE."""
    before = _flat(OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True))
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        now = compose(config_name=config_name, overrides=overrides)
    after = _flat(OmegaConf.to_container(now, resolve=True))
    free = tuple(k + "." for k in RESUME_MAY_CHANGE)
    changed = [
        key for key in sorted(before.keys() | after.keys())
        if before.get(key, UNSET) != after.get(key, UNSET)
        and key not in RESUME_MAY_CHANGE and not key.startswith(free)
    ]  # fmt: skip
    if changed:
        diffs = "; ".join(f"{k}={after.get(k, UNSET)} (the run has {before.get(k, UNSET)})" for k in changed)
        raise ConfigError(
            f"resume={run_dir}: would change the result: {diffs}. A resumed run may change only "
            f"{', '.join(RESUME_MAY_CHANGE)}; start a new run for anything else"
        )


def _flat(node, prefix: str = "") -> dict:
    """A nested config as {dotted key: value} (lists compared whole)."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict = {}
    for key, value in node.items():
        nested = isinstance(value, dict) and value
        out.update(_flat(value, f"{prefix}{key}.") if nested else {f"{prefix}{key}": value})
    return out
