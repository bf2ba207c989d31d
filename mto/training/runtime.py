"""What a process runs with: torch threads, seeds, the device, the precision (`auto` resolved per device),
autocast, and the progress bar the loop and decoding share (shown by rank 0 only)."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mto import world


def cores_per_process() -> int:
    """This process's share of the cores: under SLURM the cores of its task (SLURM_CPUS_PER_TASK), else the
    cores it may run on divided among the job's processes on this machine (2 processes x all cores each
    ran 2.4x slower than 1 thread each on a 2-core CPU: they fight over the cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0:
        return max(1, min(cores, int(per_task)))
    return max(1, cores // world.local_world_size())


def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads, or this process's share of the cores (`cores_per_process`)."""
    torch.set_num_threads(max(1, int(threads or cores_per_process())))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def device() -> torch.device:
    """The GPU of this process's local rank, else Apple's MPS, else the CPU (what accelerate picks too)."""
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank() % torch.cuda.device_count())
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPUs where bf16 autocast is faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, dev: torch.device) -> str:
    """`auto` -> `bf16` where the device runs it fast, else `fp32`."""
    precision = str(precision)
    if precision != "auto":
        return precision
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "mps":
        return "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(precision: str, dev: torch.device):
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return nullcontext()


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        transient=False,
        disable=not world.is_main(),  # one bar per job, not one per process
    )
