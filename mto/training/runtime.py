"""What a process runs with: torch threads, seeds, the device, the precision (`auto` resolved per device),
autocast, and the progress bar the loop and decoding share."""

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


def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads, or as many as the cores this process may run on."""
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    )
