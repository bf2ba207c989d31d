"""One run as several processes, whichever way they were started, with one run directory:

- `train.devices=N`: the stage's own process starts N workers with torch's elastic agent (what torchrun
  runs; `elastic_launch`) and waits for them. It keeps the run's lock; the workers run the stage in the same
  directory, rank 0 writing it, and hand their result back. A signal to it (SIGTERM, SIGUSR1/2, Ctrl-C)
  goes on to the workers, which checkpoint at the same step.
- SLURM with `hydra.launcher.tasks_per_node > 1` (conf/hydra/launcher/slurm_gpu_ddp.yaml): every task is
  a Hydra job in the same directory; each one reads its rank from the job (submitit's
  `TorchDistributedEnvironment`) and joins the others.
- `torchrun --nproc_per_node N -m mto.cli train hydra.run.dir=<dir>`: every process is a Hydra job; the
  run directory must be given (`check_torchrun`), or each process would make its own.

In every case rank 0 takes the lock and decides whether a completed twin makes the job unnecessary, and
tells the others (`distributed.broadcast`); only rank 0 writes; other ranks log warnings only
(`quiet_other_ranks`).
`train`, `adapt` and `eval` run on several processes; `match` and `run` in one (`run` hands
train.devices to its stages).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import multiprocessing
import os
import signal
import uuid
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.distributed.elastic.multiprocessing.errors import record

from mto import world
from mto.errors import ConfigError, Interrupted, MtoError, exit_report
from mto.runlock import PARENT_LOCK_ENV
from mto.training import distributed
from mto.training.runtime import device

log = logging.getLogger("mto")

MULTI_PROCESS_STAGES = ("train", "adapt", "eval")
# The stop signals `train.devices`' own process hands on to its workers (mto/signals.py).
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def mode(cfg: DictConfig) -> str:
    """`member`: this process is one rank of a job started as several (torchrun, SLURM tasks);
    `spawn`: it starts `train.devices` workers itself; `single`: it runs the stage alone."""
    if world.world_size() > 1 or world.submitit_tasks() > 1:
        return "member"
    if int(cfg.train.devices) > 1 and cfg.stage in MULTI_PROCESS_STAGES:
        return "spawn"
    if int(cfg.train.devices) > 1:
        log.info("mto %s runs in one process; train.devices=%s is for train, adapt and eval", cfg.stage,
                 cfg.train.devices)  # fmt: skip
    return "single"


def check_torchrun(overrides: list[str], multirun: bool) -> None:
    """Under torchrun, the run directory every process shares must be given: `hydra.run.dir` (with -m:
    `hydra.sweep.dir`); otherwise each process would name its own from the clock. Refused on the command
    line, before any directory exists (`resume=` names it)."""
    if not world.started_by_torchrun():
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(o.lstrip("+").split("=", 1)[0] == key for o in overrides):
        return
    raise ConfigError(
        f"started as {world.world_size()} processes by torchrun: give them one run directory with "
        f"{key}=<dir> (without it each process would make its own)"
    )


def join_job(cfg: DictConfig) -> None:
    """This process is one rank of the job: read the rank from SLURM (submitit) when the launcher did not
    set it, check that the stage and the split of the batch fit, and join the other processes."""
    if world.world_size() == 1:  # a SLURM task: its rank comes from the job's environment
        from submitit.helpers import TorchDistributedEnvironment

        # Every task sees all of the node's GPUs and takes the one of its local rank (accelerate's way).
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    n = world.world_size()
    if cfg.stage not in MULTI_PROCESS_STAGES:
        raise ConfigError(
            f"mto {cfg.stage} runs in one process, not {n}: start it without torchrun or tasks_per_node "
            "(mto run hands train.devices on to train, adapt and eval)"
        )
    if int(cfg.train.devices) > 1:
        raise ConfigError(f"train.devices={cfg.train.devices}: this job already runs as {n} processes "
                          "(torchrun or hydra.launcher.tasks_per_node); leave train.devices=1")  # fmt: skip
    distributed.check_split(cfg.train, n)
    distributed.join(device())
    quiet_other_ranks()


def quiet_other_ranks() -> None:
    """Ranks other than 0 log warnings only, to the console, tagged with their rank: the run's log file is
    rank 0's."""
    if world.is_main():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
        else:
            handler.setFormatter(logging.Formatter(f"[rank {world.rank()}][%(levelname)s] - %(message)s"))
    for logger in (root, logging.getLogger("mto")):
        logger.setLevel(logging.WARNING)


# ---------------------------------------------------------------------------- train.devices=N


def spawn(cfg: DictConfig, fn) -> dict:
    """Run the stage function `fn` (a stage's undecorated `main`) in `train.devices` workers started with
    torch's elastic agent, and return rank 0's figures. The workers inherit this process's hold on the run
    directory's lock (mto/runlock.py); an error or interruption of theirs is raised here as one line.

    SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 to this process go on to the workers, which checkpoint at the same
    step and return. The agent's own handling of them is turned off: it would stop reading the workers'
    results, which they wait for before they exit, and kill them after its timeout."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from mto.stages.steps import job_dir

    n, dev = int(cfg.train.devices), device()
    distributed.check_split(cfg.train, n)  # refused here, before N processes start only to refuse it
    if dev.type == "mps":
        raise ConfigError(f"train.devices={n}: Apple's MPS is one device; set train.devices=1")
    if dev.type == "cuda" and n > (count := distributed.cuda_count()):
        raise ConfigError(f"train.devices={n}: this machine has {count} GPU(s)")
    options: dict[str, Any] = dict(
        min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=f"mto-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
        start_method="spawn",
    )  # fmt: skip
    if "signals_to_handle" in {f.name for f in dataclasses.fields(LaunchConfig)}:  # newer torch
        options["signals_to_handle"] = "SIGHUP,SIGQUIT"
    log.info("train.devices=%d: starting %d processes (%s)", n, n, "nccl" if dev.type == "cuda" else "gloo")
    received: list[int] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        for child in multiprocessing.active_children():  # the workers the agent started
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    saved = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    os.environ[PARENT_LOCK_ENV] = f"{os.getpid()}:{job_dir().resolve()}"
    try:
        hydra_cfg = HydraConfig.instance().cfg
        results = elastic_launch(LaunchConfig(**options), worker)(fn.__module__, cfg, hydra_cfg)
    except ChildFailedError as err:
        rank, failure = min(err.failures.items())
        lines = str(getattr(failure, "message", "") or "").strip().splitlines()
        cause = lines[0] if lines else f"exit code {failure.exitcode}"
        raise MtoError(f"process {rank} of {n} failed: {cause}") from None
    finally:
        for sig, handler in saved.items():  # the agent leaves its own handlers installed
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        os.environ.pop(PARENT_LOCK_ENV, None)
    previous = saved.get(received[0]) if received else None
    if callable(previous) and previous is not signal.default_int_handler:
        previous(received[0], None)  # what was there before: submitit's handler requeues the job
    failed = [results[rank] for rank in sorted(results) if "error" in results[rank]]
    if failed:
        raise (Interrupted if failed[0]["code"] == 3 else MtoError)(failed[0]["error"])
    if received:
        log.warning("received signal %d after the last step: the run completed all the same", received[0])
    return results[0]["figures"]


@record  # a worker that dies of an unexpected error leaves its message for the agent (ChildFailedError)
def worker(module: str, cfg: DictConfig, hydra_cfg: DictConfig) -> dict:
    """One of the `train.devices` processes: the Hydra job's settings and logging as in the parent, the
    process group joined, then the stage. Errors every rank meets alike (a config refusal, a stop signal)
    come back as {"error": line, "code": exit code}; any other one ends the process, and the agent then
    stops the others."""
    from hydra.core.utils import configure_log

    HydraConfig.instance().set_config(hydra_cfg)
    configure_log(hydra_cfg.hydra.job_logging, hydra_cfg.hydra.verbose)
    fn = importlib.import_module(module).main.__wrapped__
    try:
        distributed.join(device())
        quiet_other_ranks()
        return {"figures": fn(cfg)}
    except Exception as err:
        from mto.runs import log_traceback

        report = exit_report(err, one_line=True)
        if report is None or err.__cause__ is not None:  # as stage_main: a known error says all in its line
            log_traceback(err)
        if report is None:
            raise
        return {"error": report[0].removeprefix("error: "), "code": report[1]}
