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
from mto.errors import Interrupted, MtoError
from mto.runs import RUN_FILE, Run, read_json
from mto.signals import StopSignals
from mto.stages import steps

log = logging.getLogger("mto")


def user_overrides() -> list[str]:
    """The command line's task overrides, less the pipeline's own keys (and `resume=`: the pipeline's)."""
    own = ("pipeline.", "resume=")
    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(own)]


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
    """Run one stage as its own process in `run_dir`; one that an earlier, interrupted attempt of this
    pipeline (`mto run resume=<dir>`) left there is resumed (its own settings are replayed from it).

    A stop signal sent to this process (SLURM's, a user's `kill`) is passed on to the stage, which
    checkpoints and stops; then this run stops too (`Interrupted`, after the handler that was there
    before, e.g. submitit's requeue, got the signal)."""
    started = (run_dir / RUN_FILE).is_file()
    args = [f"resume={run_dir}"] if started else [*overrides, f"hydra.run.dir={run_dir}"]
    cmd = [sys.executable, "-m", "mto.cli", stage, *args]
    log.info("pipeline: %s", " ".join(cmd[2:]))
    proc = subprocess.Popen(cmd)
    with StopSignals() as stop:  # inside the pipeline's run: its handlers, flagging instead of stopping
        stop.relay = proc.send_signal
        try:
            code = proc.wait()
        finally:
            stop.relay = None
        if stop.received is not None:
            stop.forward(f" while stage {stage} ran (it stopped with exit {code})")
    if code == 3:
        raise Interrupted(f"pipeline stage {stage} was interrupted")
    if code != 0:
        raise MtoError(f"pipeline stage {stage} failed (exit {code}); see {run_dir}")


DONE = ("completed", "skipped")


@steps.stage_main
def main(cfg: DictConfig) -> dict:
    out_dir = steps.job_dir()
    stages = typed(cfg).pipeline.stages  # every value checked before the first stage starts
    overrides = user_overrides()
    user_set = {o.split("=", 1)[0].lstrip("+~").split(".")[0] for o in overrides}
    dirs: dict[str, Path] = {}
    # A signal between stages stops the pipeline at once; during a stage it is passed on (run_stage).
    with Run(out_dir, cfg) as run:
        run.record(data_fingerprint=steps.data_fingerprint(cfg))  # what a twin of the pipeline must share
        for number, stage in enumerate(stages, start=1):
            stage_dir = (out_dir / f"{number}_{stage}").resolve()
            done = (stage_dir / RUN_FILE).is_file() and read_json(stage_dir / RUN_FILE)["status"] in DONE
            if done:  # by an earlier attempt of this pipeline (resumed)
                log.info("pipeline: stage %s is done in %s", stage, stage_dir)
            else:
                run_stage(stage, overrides + stage_arguments(stage, dirs, user_set), stage_dir)
            dirs[stage] = stage_dir
            run.record(lineage={s: str(d) for s, d in dirs.items()})
        figures = read_json(dirs[stages[-1]] / RUN_FILE)["figures"]
        run.figures(**figures)
    return figures
