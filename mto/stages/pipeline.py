"""`mto run`: the whole method with one config: match -> adapt -> train -> eval.

Each stage runs as its own `mto <stage>` process with the same overrides, in its own run directory
inside this one (`1_match/`, `2_adapt/`, ...), linked by lineage: adapt reads the match decisions
(`objective=auto`), train starts from the adapted model (`adapt_run=`) with the aligned template
(`template=auto`), eval scores the trained model (`run=`). A separate process per stage keeps every
stage's run directory, `.hydra/` and log exactly what `mto <stage>` alone would write.

    mto run data=atomic data.path=... model=t5-base data.n_train=32
    mto run pipeline.stages=[adapt,train,eval] objective=span_corruption template=masked_prompting
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mto.config import typed
from mto.errors import MtoError
from mto.runs import RUN_FILE, Run, read_json
from mto.stages import steps

log = logging.getLogger("mto")



def user_overrides() -> list[str]:
    """The command line's task overrides, less the pipeline's own keys."""
    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("pipeline.")]


def stage_arguments(stage: str, dirs: dict[str, Path], user_set: set[str]) -> list[str]:
    """The links a stage gets from the stages before it (unless the user chose otherwise)."""
    args = []
    if "match" in dirs and stage in ("adapt", "train"):
        args.append(f"match_run={dirs['match']}")
        key = "objective" if stage == "adapt" else "template"
        if key not in user_set:
            args.append(f"{key}=auto")
    if stage == "train":
        if "adapt" in dirs:
            args.append(f"adapt_run={dirs['adapt']}")
        args.append("eval.after_train=false")
    if stage == "eval" and "train" in dirs:
        args.append(f"run={dirs['train']}")
    return args


def run_stage(stage: str, overrides: list[str], run_dir: Path) -> None:
    cmd = [sys.executable, "-m", "mto.cli", stage, *overrides, f"hydra.run.dir={run_dir}"]
    log.info("pipeline: %s", " ".join(cmd[2:]))
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise MtoError(f"pipeline stage {stage} failed (exit {proc.returncode}); see {run_dir}")


@steps.stage_main
def main(cfg: DictConfig) -> dict:
    out_dir = steps.job_dir()
    stages = typed(cfg).pipeline.stages  # every value checked before the first stage starts
    overrides = user_overrides()
    user_set = {o.split("=", 1)[0].lstrip("+~").split(".")[0] for o in overrides}
    dirs: dict[str, Path] = {}
    # signals=False: a stage's own process handles its signals (stopping this one would kill it).
    with Run(out_dir, cfg, signals=False) as run:
        run.record(data_fingerprint=steps.data_fingerprint(cfg))  # what a twin of the pipeline must share
        for number, stage in enumerate(stages, start=1):
            stage_dir = (out_dir / f"{number}_{stage}").resolve()
            run_stage(stage, overrides + stage_arguments(stage, dirs, user_set), stage_dir)
            dirs[stage] = stage_dir
            run.record(lineage={s: str(d) for s, d in dirs.items()})
        figures = read_json(dirs[stages[-1]] / RUN_FILE)["figures"]
        run.figures(**figures)
    return figures
