"""`mto train`: fine-tune a model on a task with a template, save it, and (by default) evaluate it.

mto train data=atomic data.path=... model=t5-base template=masked_prompting train.steps=2000
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from mto import tuning
from mto.config import typed
from mto.runs import Run
from mto.stages import steps
from mto.stages.eval import evaluate_all
from mto.stages.inherit import start_from_adapt_run
from mto.training.features import cached_features
from mto.training.loop import train_model

log = logging.getLogger("mto")


@steps.stage_main
def main(cfg: DictConfig) -> dict:
    out_dir = steps.job_dir()
    with Run(out_dir, cfg) as run:
        if cfg.adapt_run:
            cfg, lineage = start_from_adapt_run(cfg)
            run.record(lineage=lineage)
        if cfg.match_run:
            run.record(lineage={**run.info["lineage"], "match_run": str(Path(cfg.match_run).resolve())})
        cfg = typed(cfg)
        precision = steps.setup(cfg)
        task = steps.get_task(cfg)
        run.record(data_fingerprint=task.fingerprint)
        tokenizer, model = steps.get_model(cfg, task)
        template = steps.get_template(cfg, task)
        # tuning != full: the base frozen, the method's parameters added (soft: the tokenizer's soft tokens)
        model, tokenizer, state = tuning.apply_tuning(model, tokenizer, cfg, template, task)

        pairs = steps.render(template, task.train, tokenizer)
        features, cached = cached_features(
            tokenizer, pairs, cfg.train.max_source_length, cfg.train.max_target_length
        )
        checkpoint = steps.checkpoint_for(cfg)
        result = train_model(
            model, tokenizer, features, cfg.train, precision, cfg.seed, checkpoint=checkpoint,
            lr=tuning.learning_rate(state, cfg.train.lr),
        )  # fmt: skip
        steps.save_model(model, tokenizer, out_dir / "model", state)
        run.figures(
            train_loss=result.final_loss,
            train_steps=result.steps,
            train_examples=len(features),
            train_features_cached=cached,  # tokenised by an earlier run over the same data and template
            train_seconds=result.seconds,
            train_tokens_per_s=result.tokens_per_s,
            precision=precision,
            parameters=sum(p.numel() for p in model.parameters()),
            **tuning.figures(model, out_dir / "model", state),  # tuned: trainable share, adapter size
        )
        metrics: dict = {"train_loss": result.final_loss}
        if cfg.eval.after_train:
            metrics.update(evaluate_all(model, tokenizer, task, template, cfg, out_dir, precision, run))
    return metrics
