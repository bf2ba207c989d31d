"""One writer per run directory: an exclusive fcntl lock on `<run dir>/.lock`, held by the process that
writes the run (a stage, or `mto <stage> resume=<dir>` from before Hydra touches the directory) and
released by the kernel when that process ends, however it ends. A second writer (a sweep launched twice
into one folder, a resume while the job still runs) is refused in one line naming the holder's pid and
host. Written by hand: fcntl is the whole mechanism; what is ours is reentrancy within one process."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
from collections.abc import Iterator
from pathlib import Path

from mto.errors import MtoError

LOCK_FILE = ".lock"
_LOCKS: dict[Path, list] = {}  # run directory -> [open lock file, how many holders in this process]
# "<pid>:<run dir>": set by a stage for the workers it starts (`train.devices=N`, mto/stages/launch.py): the
# process <pid> holds that directory's lock for them, so a worker whose parent it is writes without taking it.
PARENT_LOCK_ENV = "MTO_RUN_LOCKED_BY"


def lock_run_dir(run_dir: Path) -> None:
    """Take the run directory's exclusive lock for this process (reentrant), or refuse in one line
    naming the process that holds it. The lock goes with the process: a kill releases it."""
    key = Path(run_dir).resolve()
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        return
    if os.environ.get(PARENT_LOCK_ENV) == f"{os.getppid()}:{key}":
        _LOCKS[key] = [None, 1]  # held by the parent that started this worker
        return
    key.mkdir(parents=True, exist_ok=True)
    handle = open(key / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held until unlock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise MtoError(f"{key} is in use by {holder} (lock {key / LOCK_FILE}); wait for it to end") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on host {platform.node()}\n")
    handle.flush()
    _LOCKS[key] = [handle, 1]


def unlock_run_dir(run_dir: Path) -> None:
    key = Path(run_dir).resolve()
    held = _LOCKS.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _LOCKS[key]
        if held[0] is not None:
            held[0].close()  # closing the file releases the lock


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    lock_run_dir(run_dir)
    try:
        yield
    finally:
        unlock_run_dir(run_dir)
