"""`mto train`: fine-tune a model on a task with a template, save it, and (by default) evaluate it.

mto train data=atomic data.path=... model=t5-base template=masked_prompting train.steps=2000
mto train eval.every=50 train.patience=3 log.to=[tensorboard]   # validation, early stopping, curves
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

from omegaconf import DictConfig

from mto import tuning
from mto.config import MtoConfig, typed
from mto.errors import ConfigError
from mto.metrics import figures
from mto.protocol import stamp
from mto.runs import Run
from mto.stages import steps
from mto.stages.eval import dev_scorer, evaluate_all, has_split
from mto.stages.inherit import start_from_adapt_run
from mto.tracking import Tracking
from mto.training.features import cached_features
from mto.training.loop import TrainResult, train_model
from mto.training.validation import Validation

log = logging.getLogger("mto")


def validation(cfg: MtoConfig, task, score) -> Validation | None:
    """Validation during training as configured (`eval.every`, `train.monitor`, ...), refused before
    training when the task has no dev split or the monitored figure is not one validation gives."""
    if not cfg.eval.every:
        return None
    if not has_split(task, "dev"):
        raise ConfigError(f"eval.every={cfg.eval.every}: the task has no dev split to validate on")
    given = [f"dev_{k}" for k in figures(task.metric, cfg.eval) if k != "n"]
    monitor = cfg.train.monitor or {"generation": "dev_rougeL", "choice": "dev_accuracy"}[task.metric]
    if monitor not in given:
        raise ConfigError(f"train.monitor={monitor}: expected one of {', '.join(given)}")
    return Validation(every=cfg.eval.every, evaluate=score, monitor=monitor, mode=str(cfg.train.monitor_mode),
                      patience=cfg.train.patience, keep_best=str(cfg.train.keep) == "best")  # fmt: skip


def validation_figures(watch: Validation, result: TrainResult) -> dict:
    """run.json: which weights model/ holds (the best evaluation's or the last step's) and what
    validation saw."""
    best = watch.keep_best and result.best_step is not None
    return {"model_weights": "best" if best else "last", "model_step": result.weights_step,
            "monitor": watch.monitor, f"best_{watch.monitor}": result.best_figures.get(watch.monitor),
            "best_step": result.best_step, "stopped_early": result.stopped_early,
            "evaluations": result.evaluations}  # fmt: skip


@steps.stage_main
def main(cfg: DictConfig) -> dict:
    out_dir = steps.job_dir()
    with Run(out_dir, cfg) as run, ExitStack() as trackers:  # the trackers close first
        if cfg.adapt_run:
            cfg, lineage = start_from_adapt_run(cfg)
            run.record(lineage=lineage)
        if cfg.match_run:
            run.record(lineage={**run.info["lineage"], "match_run": str(Path(cfg.match_run).resolve())})
        cfg = typed(cfg)
        precision = steps.setup(cfg)
        task = steps.get_task(cfg)
        run.record(data_fingerprint=task.fingerprint, protocol=stamp(cfg))  # mto/protocol.py
        template = steps.get_template(cfg, task)  # refused before the model is built or loaded
        run.record(template=template.name)  # its own name when its text was overridden
        tokenizer, model = steps.get_model(cfg, task)
        # tuning != full: the base frozen, the method's parameters added (soft: the tokenizer's soft tokens)
        model, tokenizer, state = tuning.apply_tuning(model, tokenizer, cfg, template, task)
        train_cfg = steps.train_settings(cfg, model, cfg.tuning.method)  # refused here if it cannot run

        pairs = steps.render(template, task.train, tokenizer)
        features, cached = cached_features(
            tokenizer, pairs, cfg.train.max_source_length, cfg.train.max_target_length
        )
        checkpoint = steps.checkpoint_for(cfg)
        watch = validation(cfg, task, dev_scorer(model, tokenizer, task, template, cfg, precision))
        tracking = trackers.enter_context(Tracking(out_dir, cfg, run.info))
        result = train_model(
            model, tokenizer, features, train_cfg, precision, cfg.seed, checkpoint=checkpoint,
            lr=tuning.learning_rate(state, cfg.train.lr), validation=watch, step_log=tracking,
        )  # fmt: skip
        steps.save_model(model, tokenizer, out_dir / "model", state)
        if watch is not None:
            run.figures(**validation_figures(watch, result))
        run.figures(
            train_loss=result.final_loss,
            train_steps=result.steps,
            train_epochs=train_cfg.epochs,
            train_examples=len(features),
            train_features_cached=cached,  # tokenised by an earlier run over the same data and template
            train_seconds=result.seconds,
            train_tokens_per_s=result.tokens_per_s,
            train_packed=train_cfg.packing,  # train.packing as decided for this model (null: where exact)
            precision=precision,
            parameters=sum(p.numel() for p in model.parameters()),
            **tuning.figures(model, out_dir / "model", state),  # tuned: trainable share, adapter size
        )
        metrics: dict = {"train_loss": result.final_loss}
        if cfg.eval.after_train:
            metrics.update(evaluate_all(model, tokenizer, task, template, cfg, out_dir, precision, run))
        tracking.finish(run.info["figures"])
    return metrics
