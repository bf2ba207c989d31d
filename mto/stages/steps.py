"""The named steps every stage is made of: setup, get_task, get_model, get_template, render, save_model."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import mto.config  # noqa: F401  (registers the resolvers a worker needs before configs resolve)
from mto import tuning, world
from mto.config import MtoConfig, TrainConfig, conf_dir, effective_train
from mto.errors import ConfigError, Interrupted, MtoError, exit_report
from mto.matching import auto_template
from mto.models import load_tokenizer_and_model, sentinel
from mto.runlock import locked
from mto.runs import (
    RUN_FILE,
    atomic_write_json,
    completed_twins,
    config_hash,
    follow_umask,
    log_traceback,
    make_temp_dir,
    read_json,
)
from mto.signals import test_hook
from mto.stages import launch
from mto.tasks import SPLITS, TaskData, load_task
from mto.templates import GroupedTemplate, Template, fill
from mto.training import distributed, packing
from mto.training.checkpoint import CHECKPOINTS, Checkpoint
from mto.training.runtime import device, resolve_precision, seed_everything, set_threads
from mto.tuning.soft import render_soft

log = logging.getLogger("mto")


def stage_main(fn: Callable[[DictConfig], dict]) -> Callable[[DictConfig], float]:
    """Wrap a stage's Hydra task function: one run directory per job whatever runs it (one process,
    `train.devices` workers it starts, or the ranks of torchrun or of a SLURM job: mto/stages/launch.py),
    one writer per run directory (rank 0, holding its lock), completed twins skipped, the checkpoint
    dropped once the run is completed, and every failure ending a single run as one line on stderr (the
    traceback in the run's log) and exit code 2 (3: interrupted, resumable). In a multirun the error is
    re-raised for Hydra, which goes on with the other jobs and reports the failure at the end. The
    stage's figures become the one float a sweeper optimises (`optimized_value`)."""

    @functools.wraps(fn)
    def task(cfg: DictConfig) -> float:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        # A full disk must not turn every log line into a logging traceback: the run's error says it.
        logging.raiseExceptions = False
        try:
            how = launch.mode(cfg)
            if how == "member":
                launch.join_job(cfg)
            main = world.is_main()
            with locked(job_dir()) if main else contextlib.nullcontext():
                skip_completed = cfg.skip_completed
                if skip_completed is None:  # on in a sweep, off for one run
                    skip_completed = multirun
                twin = distributed.broadcast(find_completed_twin(cfg) if skip_completed and main else None)
                if twin is not None:
                    return optimized_value(cfg, distributed.broadcast(skip(cfg, twin) if main else None))
                result = launch.spawn(cfg, fn) if how == "spawn" else fn(cfg)
                distributed.barrier()
                if main:
                    drop_checkpoint(cfg)
                return optimized_value(cfg, result)
        except Exception as err:
            report_failure(cfg, err, multirun)

    return task


# The figure each stage returns to a sweeper unless `optimized_metric` names one: the first one present.
OPTIMIZED = {"train": ("dev_rougeL", "dev_accuracy"), "eval": ("dev_rougeL", "dev_accuracy"),
             "adapt": ("adapt_loss",), "match": ("filling_share",)}  # fmt: skip


def optimized_value(cfg: DictConfig, figures: dict) -> float:
    """`figures[optimized_metric]` as a float: what `hydra/sweeper=optuna` maximises or minimises (Hydra's
    basic sweeper ignores it). When the figure is missing: in a sweep that named it, a ConfigError (a typo
    fails the first trial, not the whole search silently); otherwise NaN and a warning."""
    stage = cfg.pipeline.stages[-1] if cfg.stage == "run" else cfg.stage
    names = [cfg.optimized_metric] if cfg.optimized_metric else list(OPTIMIZED.get(stage, ()))
    for name in names:
        value = figures.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    known = ", ".join(sorted(k for k, v in figures.items() if isinstance(v, int | float)))
    message = f"optimized_metric={' or '.join(names)}: not a figure of this {cfg.stage} run ({known})"
    sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    if cfg.optimized_metric and sweep:
        raise ConfigError(message)
    log.log(logging.WARNING if sweep or cfg.optimized_metric else logging.DEBUG, "%s; returning NaN", message)
    return math.nan


def report_failure(cfg: DictConfig, err: Exception, multirun: bool) -> NoReturn:
    """End the job on `err`: one line on stderr and its exit code (re-raised in a multirun)."""
    known = isinstance(err, (MtoError, OmegaConfBaseException, Interrupted))
    if known:
        message, code = exit_report(err, one_line=True)
    else:  # not ours (a runtime or OS error): its type and first line; the traceback goes to the log
        lines = str(err).strip().splitlines()
        message, code = f"error: {type(err).__name__}: {lines[0] if lines else ''}".rstrip(": "), 2
        message += f" (traceback in {job_dir() / HydraConfig.get().job.name}.log)"
    if not known or err.__cause__ is not None:  # a plain MtoError says all in its line
        log_traceback(err)
    if multirun:
        if known:
            raise err
        raise MtoError(message.removeprefix("error: ")) from err
    if not world.is_main():  # the job's other processes: rank 0 says what they all met
        if not known:
            sys.stderr.write(f"mto {cfg.stage} (rank {world.rank()}): {message}\n")
        raise SystemExit(code) from None
    if isinstance(err, Interrupted):
        message += f"; resume with `mto {cfg.stage} resume={job_dir()}`"
    sys.stderr.write(f"mto {cfg.stage}: {message}\n")
    raise SystemExit(code) from None


def twin_roots(cfg: DictConfig) -> list[Path]:
    """Where completed twins are looked for: the configured outputs root (`outputs`), and a sweep's
    own folder when `hydra.sweep.dir` puts it elsewhere. Nothing above them is searched."""
    hydra = HydraConfig.get()
    cwd = Path(hydra.runtime.cwd)
    roots = [(cwd / str(cfg.outputs)).resolve()]
    if hydra.mode == RunMode.MULTIRUN:
        sweep = (cwd / str(hydra.sweep.dir)).resolve()
        if not sweep.is_relative_to(roots[0]):
            roots.append(sweep)
    return roots


def find_completed_twin(cfg: DictConfig) -> Path | None:
    """A completed run of the same stage, config hash and data fingerprint (this job's own directory
    included: a requeued job that had completed is not run again)."""
    twins = completed_twins(twin_roots(cfg), cfg.stage, config_hash(cfg))
    data = data_fingerprint(cfg) if twins else None  # the data is read only when a twin may exist
    for folder, info in twins:
        if data is not None and info.get("data_fingerprint") == data:
            return folder
    if twins:
        log.info("the completed twins of this %s read other data (or none could be read): running", cfg.stage)
    return None


def data_fingerprint(cfg: DictConfig) -> str | None:
    """The fingerprint of the data this job reads (after `run=` inheritance), or None if unreadable."""
    from mto.config import typed

    try:
        if cfg.get("run"):
            from mto.stages.inherit import inherit_from_run

            cfg, _ = inherit_from_run(cfg, cfg.run)
        return load_task(typed(cfg).data).fingerprint
    except Exception as err:  # noqa: BLE001 - the stage itself reports it when it reads the data
        log.info("data fingerprint unavailable (%s)", err)
        return None


def skip(cfg: DictConfig, twin: Path) -> dict:
    """Record in this job's directory that its completed twin makes it unnecessary."""
    info = read_json(twin / RUN_FILE)
    if twin.resolve() == job_dir().resolve():
        log.info("%s already completed in %s: nothing to do", cfg.stage, twin)
        return info.get("figures", {})
    log.info("skipping %s: a completed twin with the same config and data exists at %s", cfg.stage, twin)
    atomic_write_json(job_dir() / RUN_FILE, {
        "stage": cfg.stage, "status": "skipped", "twin": str(twin), "config_hash": info["config_hash"],
        "data_fingerprint": info.get("data_fingerprint"), "seed": cfg.seed,
        "figures": info.get("figures", {}), "template": info.get("template"),
    })  # fmt: skip
    return info.get("figures", {})


def checkpoint_for(cfg: MtoConfig) -> Checkpoint:
    """This job's checkpoints; `resume=` must point at this very directory (the CLI sees to it)."""
    checkpoint = Checkpoint(job_dir() / CHECKPOINTS, cfg.checkpoint.every)
    if cfg.resume and Path(cfg.resume).resolve() != job_dir().resolve():
        raise ConfigError(
            f"resume={cfg.resume}: expected the run directory itself (this job runs in {job_dir()})"
        )
    if cfg.resume and not checkpoint.exists():
        log.warning("resume=%s: no checkpoint there; training starts from the beginning", cfg.resume)
    return checkpoint


def drop_checkpoint(cfg: DictConfig) -> None:
    """A completed run needs no checkpoint (its model is saved) unless `checkpoint.keep`. Removed only
    once run.json says completed: a signal during the final save or evaluation resumes from it."""
    folder = job_dir() / CHECKPOINTS
    if not cfg.checkpoint.keep and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def job_dir() -> Path:
    """This job's run directory (created by Hydra)."""
    return Path(HydraConfig.get().runtime.output_dir)


def quiet_libraries() -> None:
    """Our progress bars and log lines only: no tqdm bars from transformers, no rouge-score chatter."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.WARNING)


def setup(cfg: MtoConfig) -> str:
    """Threads, seeds and precision for this process; returns the precision in effect (bf16 | fp32)."""
    quiet_libraries()
    threads = set_threads(cfg.threads)
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device())
    log.info("device %s, %d threads, precision %s", device(), threads, precision)
    return precision


def get_task(cfg: MtoConfig, splits: Sequence[str] = SPLITS) -> TaskData:
    """The task of `cfg.data`, the files of `splits` only (the others stay unread and unavailable)."""
    task = load_task(cfg.data, splits)
    log.info(
        "task %s: %d train / %d dev / %d test examples (data %s)",
        task.name,
        len(task.train),
        len(task.dev),
        len(task.test),
        task.fingerprint,
    )
    return task


def tokenizer_corpus(cfg: MtoConfig, task: TaskData) -> list[str]:
    """Text a tokenizer built offline (`model.build`) learns from: the task's training text plus the words
    any template may add (relation names, phrases), so templates never render into `<unk>`. Dev and test
    text never: a held-out name the tokenizer learnt as one piece is an answer the model can copy. It does
    not depend on the chosen template, so runs that differ only in template share one tokenizer."""
    relations = sorted({ex["relation"] for ex in task.train if "relation" in ex})
    words = [f"{r}: {p}" for r, p in cfg.phrases.items()] + [f"{r}:" for r in relations]
    for path in sorted((conf_dir() / "template").glob("*.yaml")):  # template wording, e.g. "Answer:"
        shipped = OmegaConf.load(path)
        words += [fill(str(shipped[k]), lambda _: "") for k in ("source", "target")]
    return task.texts() + [w for w in words if w]


def get_model(cfg: MtoConfig, task: TaskData | None):
    """(tokenizer, model) of `cfg.model`; with `cfg.tuning.adapter`, that base with the adapter on it."""
    if cfg.tuning.adapter:
        tokenizer, model, _ = tuning.load_tuned(cfg)  # evaluated, never saved: its state is not needed
    else:
        corpus = (lambda: tokenizer_corpus(cfg, task)) if task is not None else None
        tokenizer, model = load_tokenizer_and_model(cfg.model, corpus=corpus, seed=cfg.seed)
    model.to(device())
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2fM parameters", cfg.model.name_or_path, n_params / 1e6)
    return tokenizer, model


def train_settings(cfg: MtoConfig, model, tuning_method: str = "full") -> TrainConfig:
    """`train` as it runs for `model` (tuned by `tuning_method`): epochs as the protocol adjusts them
    (`effective_train`), and `packing` decided, true or false (null: wherever it is exact for this model)."""
    train = effective_train(cfg)
    packed = packing.decide(train.packing, model, tuning_method, train.strategy)
    return dataclasses.replace(train, packing=packed)


def get_template(cfg: MtoConfig, task: TaskData) -> Template | GroupedTemplate:
    """The configured template, refused here (before training) if it names a field the task lacks."""
    if cfg.template.name == "auto":
        template = auto_template(cfg)
    else:
        template = Template.from_config(cfg.template, cfg.phrases)
    examples = task.train or task.test or task.dev  # eval may read one split only
    relations = {ex["relation"] for ex in task.train + task.dev + task.test if "relation" in ex}
    template.check(examples[0].keys(), task.name, relations)
    return template


def render(template: Template, examples: list[dict], tokenizer) -> list[tuple[str, str]]:
    soft = render_soft(tokenizer)  # `{soft:N}`: the soft tokens the tokenizer holds
    return [template.render(ex, lambda i: sentinel(tokenizer, i), soft) for ex in examples]


def save_model(model, tokenizer, path: Path, state: tuning.TuningState | None = None) -> None:
    """`save_pretrained` (safetensors) into a temporary folder, then rename: never half a model.
    A tuned model (tuning != full: `state` from `apply_tuning`) saves its adapter only (mto/tuning)."""
    path = Path(path)
    if not world.is_main():
        return
    test_hook("save-model")
    tmp = make_temp_dir(path.parent, ".model-")
    try:
        if state is not None:
            tuning.save_tuned(model, tokenizer, tmp, state)
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        follow_umask(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
