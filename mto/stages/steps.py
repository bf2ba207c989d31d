"""The named steps every stage is made of: setup, get_task, get_model, get_template, render, save_model."""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import mto.config  # noqa: F401  (registers the resolvers a worker needs before configs resolve)
from mto import tuning
from mto.config import MtoConfig, conf_dir
from mto.errors import ConfigError, Interrupted, MtoError, exit_report
from mto.matching import auto_template
from mto.models import load_tokenizer_and_model, sentinel
from mto.runs import RUN_FILE, atomic_write_json, config_hash, find_twin, outputs_root, read_json
from mto.tasks import SPLITS, TaskData, load_task
from mto.templates import GroupedTemplate, Template, fill
from mto.training.checkpoint import Checkpoint
from mto.training.runtime import device, resolve_precision, seed_everything, set_threads

log = logging.getLogger("mto")


def stage_main(fn: Callable[[DictConfig], dict]) -> Callable[[DictConfig], float]:
    """Wrap a stage's Hydra task function so a user error in a single run ends as one line on
    stderr and exit code 2. In a multirun the error is re-raised for Hydra, which goes on with the
    other jobs and reports the failure at the end. The stage's figures become the one float a sweeper
    optimises (`optimized_value`)."""

    @functools.wraps(fn)
    def task(cfg: DictConfig) -> float:
        skip_completed = cfg.skip_completed
        if skip_completed is None:  # on in a sweep, off for one run
            skip_completed = HydraConfig.get().mode == RunMode.MULTIRUN
        if skip_completed:
            twin = find_twin(outputs_root(job_dir()), cfg.stage, config_hash(cfg), job_dir())
            if twin is not None:
                return optimized_value(cfg, skip(cfg, twin))
        try:
            return optimized_value(cfg, fn(cfg))
        except (MtoError, OmegaConfBaseException, Interrupted) as err:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            message, code = exit_report(err, one_line=True)
            if isinstance(err, Interrupted):
                message += f"; resume with `mto {cfg.stage} resume={job_dir()}`"
            sys.stderr.write(f"mto {cfg.stage}: {message}\n")
            raise SystemExit(code) from None

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
    log.log(logging.WARNING if sweep or cfg.optimized_metric else logging.INFO, "%s; returning NaN", message)
    return math.nan


def skip(cfg: DictConfig, twin: Path) -> dict:
    """Record in this job's directory that its completed twin makes it unnecessary."""
    log.info("skipping %s: a completed twin with the same config exists at %s", cfg.stage, twin)
    info = read_json(twin / RUN_FILE)
    atomic_write_json(job_dir() / RUN_FILE, {
        "stage": cfg.stage, "status": "skipped", "twin": str(twin), "config_hash": info["config_hash"],
        "seed": cfg.seed, "figures": info.get("figures", {}), "template": info.get("template"),
    })  # fmt: skip
    return info.get("figures", {})


def checkpoint_for(cfg: MtoConfig) -> Checkpoint:
    """This job's checkpoint folder; `resume=` must point at this very directory (the CLI sees to it)."""
    folder = job_dir() / "checkpoint"
    if cfg.resume and Path(cfg.resume).resolve() != job_dir().resolve():
        raise ConfigError(
            f"resume={cfg.resume}: expected the run directory itself (this job runs in {job_dir()})"
        )
    if cfg.resume and not (folder / "state.pt").is_file():
        log.warning("resume=%s: no checkpoint there; training starts from the beginning", cfg.resume)
    return Checkpoint(folder, cfg.checkpoint.every)


def drop_checkpoint(cfg: MtoConfig, checkpoint: Checkpoint) -> None:
    """A completed run needs no checkpoint (its model is saved) unless `checkpoint.keep`."""
    if not cfg.checkpoint.keep:
        shutil.rmtree(checkpoint.folder, ignore_errors=True)


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
    soft = tuning.soft.render_soft(tokenizer)  # `{soft:N}`: the soft tokens the tokenizer holds
    return [template.render(ex, lambda i: sentinel(tokenizer, i), soft) for ex in examples]


def save_model(model, tokenizer, path: Path, state: tuning.TuningState | None = None) -> None:
    """`save_pretrained` (safetensors) into a temporary folder, then rename: never half a model.
    A tuned model (tuning != full: `state` from `apply_tuning`) saves its adapter only (mto/tuning)."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=path.parent))
    try:
        if state is not None:
            tuning.save_tuned(model, tokenizer, tmp, state)
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
