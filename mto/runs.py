"""Run directories: `run.json` (status, times, code version, packages, seed, data, figures, lineage),
atomic writes, and the record of a stage's success or failure.

A run directory is created by Hydra (`hydra.run.dir`); this module owns what goes into it. Every JSON
file is written to a temporary file and renamed, so a kill at any moment never leaves a truncated
file, and a run only says `completed` once everything it promised is on disk.
"""

from __future__ import annotations

import datetime as _dt
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

from mto.cache import fingerprint
from mto.errors import Interrupted

log = logging.getLogger("mto")

RUN_FILE = "run.json"
PACKAGES = ("mto", "torch", "transformers", "datasets", "peft", "hydra-core", "omegaconf", "sentencepiece")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


# Keys that say how a run is carried out, not what it computes: twins may differ in them.
NOT_HASHED = ("resume", "skip_completed", "checkpoint")


def config_hash(cfg: DictConfig) -> str:
    """Identifies a run's resolved job config (the hydra node and NOT_HASHED excluded): twins share it."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return fingerprint({k: v for k, v in resolved.items() if k not in NOT_HASHED})


def outputs_root(run_dir: Path) -> Path:
    """The folder all runs live under: the parent of `multirun/`, else `<root>/<stage>/<date>/<run>`."""
    run_dir = Path(run_dir).resolve()
    for parent in run_dir.parents:
        if parent.name == "multirun":
            return parent.parent
    return run_dir.parents[2] if len(run_dir.parents) > 2 else run_dir.parent


def find_twin(root: Path, stage: str, digest: str, exclude: Path) -> Path | None:
    """A completed run of `stage` under `root` with config hash `digest` (not `exclude` itself)."""
    if not root.is_dir():
        return None
    for path in sorted(root.rglob(RUN_FILE)):
        if path.parent.resolve() == exclude.resolve():
            continue
        try:
            info = read_json(path)
        except (OSError, ValueError):
            continue
        same = info.get("stage") == stage and info.get("config_hash") == digest
        if same and info.get("status") == "completed":
            return path.parent
    return None


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class Run:
    """One stage's run directory. Use as a context manager around the stage's work:

        with Run(out_dir, cfg) as run:
            ...; run.record(data_fingerprint=...); run.figures(loss=...)

    On entry `run.json` says `running`; on a clean exit `completed`; on an exception `failed`, with
    the error in `run.json` and in the log, and the exception re-raised.
    """

    def __init__(self, out_dir: Path, cfg: DictConfig):
        self.dir = Path(out_dir)
        self.cfg = cfg
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
        atomic_write_json(self.path, self.info)

    def record(self, **fields: Any) -> None:
        """Set top-level fields of run.json (e.g. data_fingerprint, lineage) and save."""
        self.info.update(fields)
        self.save()

    def figures(self, **figures: Any) -> None:
        """Add the stage's key figures (loss, metrics, timings) and save."""
        self.info["figures"].update(figures)
        self.save()

    def __enter__(self) -> Run:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.info["end_time"] = _now()
        if exc is None:
            self.info["status"] = "completed"
        elif isinstance(exc, Interrupted):  # a checkpoint is there
            self.info["status"] = "interrupted"
            log.warning("run interrupted: resume with `mto %s resume=%s`", self.info["stage"], self.dir)
        else:
            self.info["status"] = "failed"
            self.info["error"] = f"{type(exc).__name__}: {exc}"
            log.error("run failed: %s", self.info["error"])
            log.debug("".join(traceback.format_exception(exc_type, exc, tb)))
        self.save()
        if exc is None:
            announce(self.dir, self.info["stage"])
        return False


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
