"""Which process of a job this is: its rank among the processes that train one run together, read from
the environment the launcher gave it (torchrun and torch's elastic agent, which `train.devices=N` uses,
set RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; a SLURM job's tasks get them from submitit,
mto/stages/launch.py). No torch import: the run directory's writers (mto/runs.py, mto/tracking.py) ask
it before anything heavy is loaded.

One rule follows from it everywhere: only the process of rank 0 writes the run directory (run.json,
model/, checkpoints, metrics, predictions, the per-step log); the others compute and log warnings.
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else default


def rank() -> int:
    """This process's rank in the job (0 when it runs alone)."""
    return _env_int("RANK", 0)


def world_size() -> int:
    """How many processes train this run together (1 when this one runs alone)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def local_rank() -> int:
    """This process's rank on its machine: the GPU it takes."""
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    """How many processes of the job share this machine (its cores and GPUs)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", world_size()))


def is_main() -> bool:
    """Whether this process writes the run directory (rank 0)."""
    return rank() == 0


def started_by_torchrun() -> bool:
    """Started by `torchrun` (or `python -m torch.distributed.run`) as one of several processes, outside
    mto's own `train.devices=N` workers (which never go through the command line)."""
    return world_size() > 1 and bool(os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_ADDR"))


def submitit_tasks() -> int:
    """The tasks of this job when submitit started it (hydra.launcher.tasks_per_node x nodes), else 1."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return 1
    import submitit

    try:
        return int(submitit.JobEnvironment().num_tasks)
    except RuntimeError:  # not inside a submitit job after all (a stray variable)
        return 1
