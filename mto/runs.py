"""Run directories: `run.json` (status, times, code version, packages, seed, data, figures, lineage),
atomic writes, and the record of a stage's success or failure.

A run directory is created by Hydra (`hydra.run.dir`); this module owns what goes into it. Every JSON
file is written to a temporary file, fsynced and renamed, so a kill at any moment never leaves a
truncated file, and a run only says `completed` once everything it promised is on disk. One process at
a time writes a run directory (mto/runlock.py): in a job of several processes, rank 0 (mto/world.py).
Files and folders get the permissions the umask gives (as `open` and `mkdir` would), not mkstemp's
private 0600/0700.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mto import world
from mto.cache import fingerprint
from mto.errors import Interrupted, MtoError
from mto.runlock import lock_run_dir, unlock_run_dir
from mto.signals import StopSignals

log = logging.getLogger("mto")

RUN_FILE = "run.json"
PACKAGES = ("mto", "torch", "transformers", "datasets", "peft", "hydra-core", "omegaconf", "sentencepiece")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """Make file `path`'s bytes, or folder `path`'s entries (a rename into it), survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new temporary folder in `parent`, with the permissions `mkdir` would give (mkdtemp's are 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def follow_umask(folder: Path) -> None:
    """Give everything under `folder` the permissions `open`/`mkdir` would (libraries such as
    safetensors write their files 0600, unreadable to the group of a shared cluster)."""
    mask = _umask()
    for path in Path(folder).rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, fsync and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the group
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def git_state() -> dict:
    """The commit of the code that runs, and whether the checkout had uncommitted changes."""
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# Keys that say how a run is carried out or reported, not what it computes: twins may differ in them
# (`log`: where the per-step figures are also sent; `optimized_metric`: what a sweeper reads back).
NOT_HASHED = ("resume", "skip_completed", "checkpoint", "outputs", "log", "optimized_metric")


def config_hash(cfg: DictConfig) -> str:
    """Identifies a run's resolved job config (the hydra node and NOT_HASHED excluded): twins share it."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return fingerprint({k: v for k, v in resolved.items() if k not in NOT_HASHED})


def completed_twins(roots: list[Path], stage: str, digest: str) -> list[tuple[Path, dict]]:
    """Completed runs of `stage` with config hash `digest` under `roots` (only there), with their
    run.json, in path order."""
    found: dict[Path, tuple[Path, dict]] = {}
    for root in roots:
        for path in sorted(root.rglob(RUN_FILE)) if root.is_dir() else ():
            try:
                info = read_json(path)
            except (OSError, ValueError):
                continue
            same = info.get("stage") == stage and info.get("config_hash") == digest
            if same and info.get("status") == "completed":
                found.setdefault(path.parent.resolve(), (path.parent, info))
    return list(found.values())


def _to_log_files(message: str) -> None:
    """Write `message` to the run's log file only (Hydra's file handler), not to the console."""
    record = logging.LogRecord("mto", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def log_traceback(err: BaseException) -> None:
    """The traceback of `err` into the run's log (the console gets one line)."""
    _to_log_files("".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip())


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# Space kept next to run.json from the start of a run, given back only to write its status when the
# disk is full (ENOSPC): a run never stays `running` because its failure could not be recorded.
RESERVE_FILE, RESERVE_BYTES = ".run.json.reserve", 256 * 1024


class Run:
    """One stage's run directory. Use as a context manager around the stage's work:

        with Run(out_dir, cfg) as run:
            ...; run.record(data_fingerprint=...); run.figures(loss=...)

    On entry the directory is locked (one writer) and `run.json` says `running`; on a clean exit
    `completed`; on `Interrupted` (a signal, after a checkpoint) `interrupted`; on any other exception
    `failed`, with the error in `run.json` and in the log, and the exception re-raised. In between,
    SIGTERM/SIGUSR1/SIGUSR2/SIGINT stop the run (mto/signals.py) unless `signals=False`.
    """

    def __init__(self, out_dir: Path, cfg: DictConfig, signals: bool = True):
        self.dir = Path(out_dir)
        self.cfg = cfg
        # In a job of several processes rank 0 alone writes; the others keep `info` and their signals.
        self.writer = world.is_main()
        self._signals: StopSignals | None = StopSignals(immediate=True) if signals else None
        previous = read_json(self.path) if self.path.is_file() else {}
        self.info: dict[str, Any] = {
            "stage": cfg.stage,
            "status": "running",
            "attempt": previous.get("attempt", 0) + 1,  # > 1: resumed or requeued in this directory
            "start_time": _now(),
            "end_time": None,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "host": platform.node(),
            "seed": cfg.seed,
            "config_hash": config_hash(cfg),
            "git": git_state(),
            "packages": package_versions(),
            "data_fingerprint": None,
            "lineage": {},
            "figures": {},
        }

    @property
    def path(self) -> Path:
        return self.dir / RUN_FILE

    def save(self) -> None:
        if not self.writer:
            return
        try:
            atomic_write_json(self.path, self.info)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._give_back_reserve():
                raise
            log.warning("disk full: writing %s into the space reserved for it", self.path)
            atomic_write_json(self.path, self.info)

    def _reserve(self) -> None:
        path = self.dir / RESERVE_FILE
        with open(path, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
            except OSError:  # a file system without fallocate: real zeros take the space too
                f.write(bytes(RESERVE_BYTES))
            f.flush()
            os.fsync(f.fileno())

    def _give_back_reserve(self) -> bool:
        path = self.dir / RESERVE_FILE
        if not path.exists():
            return False
        path.unlink()
        return True

    def record(self, **fields: Any) -> None:
        """Set top-level fields of run.json (e.g. data_fingerprint, lineage) and save."""
        self.info.update(fields)
        self.save()

    def figures(self, **figures: Any) -> None:
        """Add the stage's key figures (loss, metrics, timings) and save."""
        self.info["figures"].update(figures)
        self.save()

    def __enter__(self) -> Run:
        if self.writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock_run_dir(self.dir)
        try:
            if self.writer:
                self._reserve()
            if self._signals is not None:
                self._signals.__enter__()
            self.save()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        signals = self._signals
        try:
            with signals.deferred() if signals is not None else contextlib.nullcontext():
                self._finish(exc, signals)
        finally:
            self._release()
        return False

    def _finish(self, exc: BaseException | None, signals: StopSignals | None) -> None:
        self.info["end_time"] = _now()
        signalled = signals is not None and signals.received is not None
        if exc is None:
            self.info["status"] = "completed"
        elif isinstance(exc, Interrupted) or (signalled and isinstance(exc, SystemExit)):
            self.info["status"] = "interrupted"  # a checkpoint is there (SystemExit: submitit requeues)
            if self.writer:
                log.warning("run interrupted: resume with `mto %s resume=%s`", self.info["stage"], self.dir)
            else:  # the job's other processes say where they stopped (rank 0's run.json says it for all)
                log.warning("interrupted: %s", exc)
        else:
            self.info["status"] = "failed"
            self.info["error"] = f"{type(exc).__name__}: {exc}"
            log.error("run failed: %s", self.info["error"])
            log.debug("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        try:
            self.save()
        except OSError as err:
            cause = f" after: {self.info['error']}" if "error" in self.info else ""
            status = self.info["status"]
            raise MtoError(f"{self.path}: cannot record status {status!r} ({err}){cause}") from err
        if exc is None and self.writer:
            announce(self.dir, self.info["stage"])

    def _release(self) -> None:
        if self.writer:
            self._give_back_reserve()
        if self._signals is not None:
            self._signals.__exit__(None, None, None)
        if self.writer:
            unlock_run_dir(self.dir)


# What a user does next with a completed run of a stage (shown with its directory).
NEXT_STEP = {
    "train": "mto eval run={}",
    "adapt": "mto train adapt_run={}",
    "match": "mto train template=auto match_run={}",
}


def announce(run_dir: Path, stage: str) -> None:
    """Print where a completed run is (relative to the working directory when inside it) as the last
    line of the stage's output, after the next step it allows. Plain print, not rich: a path must
    never be wrapped, so it can be pasted back (`mto eval run=<dir>`)."""
    path = Path(run_dir).resolve()
    try:
        shown = path.relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    if stage in NEXT_STEP:
        print(f"next: {NEXT_STEP[stage].format(shown)}")
    print(f"run directory: {shown}", flush=True)


def load_run(run_dir: str | Path) -> tuple[dict, DictConfig]:
    """The run.json and the resolved config of a finished run directory (for eval, lineage)."""
    from mto.errors import ConfigError

    path = Path(run_dir)
    info_path, cfg_path = path / RUN_FILE, path / ".hydra" / "config.yaml"
    if not info_path.is_file() or not cfg_path.is_file():
        raise ConfigError(f"run={run_dir}: not a run directory (expected {RUN_FILE} and .hydra/config.yaml)")
    info = read_json(info_path)
    if info.get("status") != "completed":
        raise ConfigError(f"run={run_dir}: status is {info.get('status')!r}, expected 'completed'")
    return info, OmegaConf.load(cfg_path)
