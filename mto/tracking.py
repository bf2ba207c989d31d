"""Per-step figures of a training run: the run's own `metrics_steps.jsonl`, and the trackers `log.to` names.

    mto train log.to=[tensorboard,mlflow,wandb]

Every run writes `metrics_steps.jsonl` (one JSON object a line: `step` with `loss`, `lr`, `tokens_per_s`,
or with the `dev_*` figures of an evaluation), which `mto report` plots without any tracker installed.
The trackers, each an optional extra (`pip install 'mto[tensorboard]'`), receive the same figures
(`train/loss`, `dev/rougeL`, ...), the resolved config as hyperparameters, the run directory as the run's
name and its lineage (adapt_run, match_run, ...) as tags, and the final figures at the end:

- TensorBoard: event files in `<run>/tensorboard/` (`tensorboard --logdir outputs/`);
- MLflow: `log.mlflow_uri`, by default `sqlite:///<outputs root>/mlflow.db` (MLflow 3 refuses a plain
  file store unless MLFLOW_ALLOW_FILE_STORE=true); experiment `log.project`;
- W&B: project `log.project`, files in `<run>/wandb/`; `log.wandb_mode` or WANDB_MODE (offline works
  without an account; online needs `wandb login`).

The libraries are used directly (accelerate's trackers wrap the same calls, and would need the run's
ids kept across resumes all the same).
Only the process of rank 0 writes. A resumed run goes on in the same TensorBoard folder (events after
the checkpoint's step purged), the same MLflow run and the same W&B run (ids kept in `trackers.json`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mto import world
from mto.config import MtoConfig, plain
from mto.errors import ConfigError
from mto.runs import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger("mto")

STEPS_FILE = "metrics_steps.jsonl"
IDS_FILE = "trackers.json"


def read_steps(run_dir: Path) -> list[dict]:
    """The per-step records of a run (empty when it wrote none)."""
    path = Path(run_dir) / STEPS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tag(key: str, section: str = "train") -> str:
    """A figure's name in the trackers: `dev_rougeL` -> `dev/rougeL`, `loss` -> `train/loss`; the final
    figures (section `final`) keep their names: `final/rougeL`, `final/dev_rougeL`."""
    if key.startswith("dev_") and section != "final":
        return "dev/" + key[4:]
    return f"{section}/{key}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys (`train.lr`); lists and None as their text."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    value = tree if isinstance(tree, bool | int | float | str) else str(tree)
    return {prefix[:-1]: value}


def numbers(figures: dict) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def runs_root(run_dir: Path) -> Path:
    """The folder the runs live under (MLflow's default store goes there, run names are relative to it):
    the nearest `outputs/` above the run, else the parent of `multirun/`, else <root>/<stage>/<date>/<run>."""
    run_dir = Path(run_dir).resolve()
    for parent in run_dir.parents:
        if parent.name == "outputs":
            return parent
    for parent in run_dir.parents:
        if parent.name == "multirun":
            return parent.parent
    return run_dir.parents[2] if len(run_dir.parents) > 2 else run_dir.parent


class TensorBoard:
    def __init__(self, run_dir: Path, config: dict, tags: dict, first_step: int):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_step or None)
        if not first_step:
            for summary in hparams({**flatten(config), **tags}, {}):  # the HParams dashboard's record
                self.writer.file_writer.add_summary(summary)

    def log(self, step: int, figures: dict[str, float], section: str) -> None:
        for key, value in figures.items():
            self.writer.add_scalar(tag(key, section), value, step)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.close()


class MLflow:
    STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(self, uri: str, project: str, name: str, config: dict, tags: dict, run_id: str | None):
        from mlflow import MlflowClient
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        self.client = client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            experiment = client.get_experiment_by_name(project)
            if experiment is None:
                try:
                    experiment_id = client.create_experiment(project)
                except MlflowException:  # another job of the sweep created it meanwhile
                    experiment_id = client.get_experiment_by_name(project).experiment_id
            else:
                experiment_id = experiment.experiment_id
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(run_id, params=params[start : start + 100])
        else:
            client.update_run(run_id, status="RUNNING")
            client.log_batch(run_id, tags=[RunTag("mto.attempt", tags.get("mto.attempt", ""))])
        self.run_id = run_id

    def log(self, step: int, figures: dict[str, float], section: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag(k, section), v, now, step) for k, v in figures.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=self.STATUS.get(status, "FAILED"))


class WandB:
    def __init__(self, run_dir: Path, project: str, name: str, config: dict, tags: dict, mode: str | None,
                 run_id: str | None):  # fmt: skip
        import wandb

        labels = [f"{k.removeprefix('mto.')}:{Path(v).name}"[:64] for k, v in tags.items()
                  if k not in ("mto.run_dir", "mto.attempt")]  # fmt: skip
        try:
            self.run = wandb.init(
                project=project, name=name, dir=str(run_dir), config={**config, "mto": tags}, tags=labels,
                mode=mode, id=run_id, resume="allow" if run_id else None,
                settings=wandb.Settings(console="off"),
            )  # fmt: skip
        except wandb.errors.UsageError as err:
            raise ConfigError(f"log.to=wandb: {err} (or run offline: log.wandb_mode=offline)") from None
        self.run_id = self.run.id

    def log(self, step: int, figures: dict[str, float], section: str) -> None:
        if section == "final":
            self.run.summary.update({tag(k, section): v for k, v in figures.items()})
        else:
            self.run.log({tag(k, section): v for k, v in figures.items()}, step=step)

    def finish(self, status: str) -> None:
        if status == "interrupted":
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if status == "completed" else 1)


class Tracking:
    """The run's per-step log and its trackers, as one context manager around training:

        with Tracking(run_dir, cfg, run.info) as tracking:
            train_model(..., step_log=tracking); tracking.finish(run.info["figures"])

    `start(step)` (called by the loop once it knows where it resumes) opens the trackers; `log(step,
    figures)` writes a line and sends the figures on; leaving the block closes them with the run's status.
    """

    def __init__(self, run_dir: Path, cfg: MtoConfig, info: dict | None = None):
        self.dir = Path(run_dir)
        self.cfg = cfg
        self.info = info or {}  # run.json: lineage, attempt
        self.rank0 = world.is_main()
        self.trackers: list = []
        self.last_step = 0

    def start(self, step: int) -> None:
        """Open the per-step file (dropping lines after `step`, from before a resume) and the trackers."""
        if not self.rank0:
            return
        self.last_step = step
        kept = [r for r in read_steps(self.dir) if r.get("step", 0) <= step] if step else []
        atomic_write_text(self.dir / STEPS_FILE, "".join(json.dumps(r) + "\n" for r in kept))
        ids_path = self.dir / IDS_FILE
        ids = read_json(ids_path) if step and ids_path.is_file() else {}
        root = runs_root(self.dir)
        try:
            name = str(self.dir.resolve().relative_to(root))
        except ValueError:
            name = self.dir.name
        tags = {"mto.stage": self.cfg.stage, "mto.run_dir": str(self.dir.resolve()),
                "mto.attempt": str(self.info.get("attempt", 1)),
                **{f"mto.{k}": str(v) for k, v in self.info.get("lineage", {}).items() if v}}  # fmt: skip
        config = plain(self.cfg)
        for tracker in self.cfg.log.to:
            if tracker == "tensorboard":
                self.trackers.append(TensorBoard(self.dir, config, tags, step))
            elif tracker == "mlflow":
                uri = self.cfg.log.mlflow_uri or f"sqlite:///{root / 'mlflow.db'}"
                self.trackers.append(MLflow(uri, self.cfg.log.project, name, config, tags, ids.get("mlflow")))
            elif tracker == "wandb":
                self.trackers.append(WandB(self.dir, self.cfg.log.project, name, config, tags,
                                           self.cfg.log.wandb_mode, ids.get("wandb")))  # fmt: skip
        ids = {t: getattr(o, "run_id", None) for t, o in zip(self.cfg.log.to, self.trackers, strict=True)}
        if any(ids.values()):
            atomic_write_json(ids_path, ids)
        log.info("per-step figures: %s%s", STEPS_FILE, "".join(f", {t}" for t in self.cfg.log.to))

    def log(self, step: int, figures: dict) -> None:
        if not self.rank0:
            return
        values = numbers(figures)
        with open(self.dir / STEPS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        self.last_step = step
        for tracker in self.trackers:
            tracker.log(step, values, "train")

    def finish(self, figures: dict) -> None:
        """The run's final figures (test metrics, best validation), once, at the last step."""
        values = numbers(figures)
        for tracker in self.trackers:
            tracker.log(self.last_step, values, "final")

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from mto.errors import Interrupted

        status = "completed" if exc is None else "interrupted" if isinstance(exc, Interrupted) else "failed"
        for tracker in self.trackers:
            try:
                tracker.finish(status)
            except Exception as err:  # a tracker that fails to close must not hide the run's own error
                log.warning("closing %s failed: %s", type(tracker).__name__, err)
        return False
