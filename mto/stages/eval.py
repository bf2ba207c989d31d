"""`mto eval`: generate for a split and score it.

    mto eval run=<train run dir>             # the run's model, data and template
    mto eval model=t5-small                  # a checkpoint, with this config's data and template
    mto eval model.name_or_path=<dir|hub> model.build=null
    mto eval eval.allow_untrained=true       # the default `tiny`, untrained: a from-scratch baseline

Decoding is greedy by default (`eval.num_beams=1`, no sampling, no repetition penalty), with
`eval.max_new_tokens` capping the output; the settings are passed explicitly so a model's own
`generation_config` cannot change them behind the user's back.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from mto import world
from mto.config import MtoConfig, typed
from mto.errors import ConfigError
from mto.metrics import figures, score
from mto.protocol import stamp
from mto.runs import Run, atomic_write_json, atomic_write_text
from mto.stages import gold, steps
from mto.stages.inherit import inherit_from_run
from mto.templates import Template, decode_answer
from mto.training.decoding import generate

log = logging.getLogger("mto")


def wants_dev_figures(cfg: MtoConfig) -> bool:
    """Whether the dev sample is scored after training: for what a sweep optimises (`-m`, or
    `optimized_metric` named) and when validation watched it (`eval.every`); a single run skips the cost."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return bool(sweep or cfg.optimized_metric or cfg.eval.every)


def evaluate_all(
    model, tokenizer, task, template, cfg: MtoConfig, out_dir: Path, precision: str, run
) -> dict:
    """`eval.split` (metrics.json, predictions.jsonl), then each of `eval.extra_splits`
    (metrics_<split>.json, predictions_<split>.jsonl, figures prefixed `<split>_` in run.json), then,
    unless already scored, the dev sample (`eval.dev_max_examples`, see `wants_dev_figures`): the `dev_*`
    figures sweeps optimise."""
    metrics = evaluate(model, tokenizer, task, template, cfg, out_dir, precision)
    run.figures(**headline(metrics))
    extra_splits = list(cfg.eval.extra_splits)
    dev_sample = "dev" not in extra_splits and has_split(task, "dev") and wants_dev_figures(cfg)
    if cfg.eval.split == "dev":  # the dev figures are the main ones
        run.figures(**{f"dev_{k}": v for k, v in headline(metrics).items()})
        metrics.update({f"dev_{k}": v for k, v in headline(metrics).items()})
        dev_sample = False
    for split in extra_splits + (["dev"] if dev_sample else []):
        size = cfg.eval.dev_max_examples if split == "dev" and dev_sample else None
        extra = evaluate(model, tokenizer, task, template, cfg, out_dir, precision, split, max_examples=size)
        run.figures(**{f"{split}_{k}": v for k, v in headline(extra).items()})
        metrics.update({f"{split}_{k}": v for k, v in headline(extra).items()})
    return metrics


def has_split(task, split: str) -> bool:
    return split not in getattr(task, "unavailable", {}) and bool(getattr(task, split, None))


def dev_scorer(model, tokenizer, task, template, cfg: MtoConfig, precision: str):
    """Validation during training: a function giving the `dev_*` figures of `model` as it is now, on the
    dev sample (`eval.dev_max_examples`), without writing or printing anything."""

    def score() -> dict:
        summary = evaluate(model, tokenizer, task, template, cfg, None, precision, split="dev",
                           max_examples=cfg.eval.dev_max_examples)  # fmt: skip
        return {f"dev_{k}": summary[k] for k in summary["figures"]}

    return score


def evaluate(
    model, tokenizer, task, template: Template, cfg: MtoConfig, out_dir: Path | None, precision: str,
    split: str | None = None, max_examples: int | None = None,
) -> dict:  # fmt: skip
    """Score one split (default `eval.split`) on its first `max_examples` examples (default
    `eval.max_examples`); write predictions.jsonl and metrics.json (suffixed with the split's name when
    it is not `eval.split`) into `out_dir` (None: write and show nothing); return the metrics (generation:
    exact match, ROUGE-L, BLEU, distinct; choice: accuracy, unmatched share; with `eval.gold_scores`, the
    gold targets' NLL and DepthRank, mto/stages/gold.py). Run by every process of a job: each decodes its
    share of the batches (`generate`), and all score the gathered outputs."""
    split = split or cfg.eval.split
    suffix = "" if split == cfg.eval.split else f"_{split}"
    examples = task.split(split)
    max_examples = max_examples or cfg.eval.max_examples
    if max_examples:
        examples = examples[:max_examples]
    pairs = steps.render(template, examples, tokenizer)
    start = time.perf_counter()
    outputs = generate(
        model, tokenizer, [s for s, _ in pairs], cfg.eval, precision, cfg.train.max_source_length
    )
    seconds = time.perf_counter() - start
    predictions = [decode_answer(ids, tokenizer) for ids in outputs]
    # the task's own scorer (TaskData.metric) and eval.metrics, from the registry mto.metrics.METRICS
    summary, per_example = score(predictions, examples, task.metric, cfg.eval)
    summary["eval_examples_per_s"] = len(examples) / seconds
    summary["metric"] = task.metric
    summary["figures"] = figures(task.metric, cfg.eval)  # shown in the table and kept in run.json
    if cfg.eval.gold_scores:  # the gold targets, teacher-forced: NLL and DepthRank (mto/stages/gold.py)
        gold_summary, gold_rows = gold.score_golds(model, tokenizer, template, examples, cfg, precision)
        summary.update(gold_summary)
        summary["figures"] += gold.figures(gold_summary)
        for row, extra in zip(per_example, gold_rows, strict=True):
            row.update(extra)
    if out_dir is None or not world.is_main():  # several processes: each scored all, rank 0 writes
        return summary
    lines = []
    for ex, (source, _), pred, scores in zip(examples, pairs, predictions, per_example, strict=True):
        lines.append(
            json.dumps(
                {
                    "id": ex.get("id"),
                    "group": ex.get("group"),
                    "input": source,
                    "prediction": pred,
                    "references": ex.get("tails", [ex.get("answer")]),
                    **scores,
                },
                ensure_ascii=False,
            )
        )
    atomic_write_text(out_dir / f"predictions{suffix}.jsonl", "\n".join(lines) + "\n")
    # metrics.json holds only what the config and seed determine (no timings): reruns compare equal.
    scores = {k: v for k, v in summary.items() if k not in ("eval_examples_per_s", "metric", "figures")}
    atomic_write_json(out_dir / f"metrics{suffix}.json", {"split": split, **scores})
    show_metrics(summary, title=f"{template.name} on {cfg.data.name} ({split})")
    return summary


def headline(summary: dict) -> dict:
    """The key figures of a metrics summary (and the decoding speed) for run.json."""
    return {
        **{k: summary[k] for k in summary["figures"]},
        "eval_examples_per_s": summary["eval_examples_per_s"],
    }


def show_metrics(summary: dict, title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in summary["figures"]:
        value = summary[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for group, value in summary.get("rougeL_per_group", {}).items():
        table.add_row(f"  rougeL {group}", f"{value:.4f}")
    Console().print(table)


def check_something_trained(cfg: MtoConfig) -> None:
    """Refuse to score random weights by accident: `run=` given empty (a shell glob that matched nothing),
    or no run, adapter or checkpoint, only a model built from scratch (`model.build`: the default `tiny`),
    unless `eval.allow_untrained=true` asks for that baseline."""
    if cfg.run is not None and not str(cfg.run).strip():
        raise ConfigError("run= is empty (a pattern that matched no directory?): expected a train run")
    untrained = cfg.run is None and not cfg.tuning.adapter and cfg.model.build is not None
    if untrained and not cfg.eval.allow_untrained:
        raise ConfigError(
            f"nothing trained to evaluate: model={cfg.model.name_or_path} is built from scratch "
            "(model.build) and no run= is given. Evaluate a run (run=<train run dir>) or a checkpoint "
            "(model=t5-small, model.name_or_path=<dir> model.build=null), or score the untrained model as "
            "a baseline with eval.allow_untrained=true"
        )


def splits_to_read(cfg: MtoConfig) -> list[str]:
    """The splits evaluation scores, and train only where a tokenizer is built from scratch here (a run's
    model folder holds its tokenizer): evaluating test.tsv needs no train.tsv or dev.tsv."""
    scored = [cfg.eval.split, *cfg.eval.extra_splits]
    builds = cfg.model.build is not None and not cfg.tuning.adapter
    return scored + ["train"] if builds else scored


@steps.stage_main
def main(cfg: DictConfig) -> dict:
    out_dir = steps.job_dir()
    with Run(out_dir, cfg) as run:
        if cfg.run is not None and str(cfg.run).strip():
            cfg, parent = inherit_from_run(cfg, cfg.run)
            run.record(
                lineage={
                    "train_run": str(Path(cfg.run).resolve()),
                    "train_config_hash": parent.get("config_hash"),
                }
            )
        cfg = typed(cfg)
        check_something_trained(cfg)
        precision = steps.setup(cfg)
        task = steps.get_task(cfg, splits_to_read(cfg))
        run.record(data_fingerprint=task.fingerprint, protocol=stamp(cfg))  # mto/protocol.py
        template = steps.get_template(cfg, task)  # refused before the model loads
        run.record(template=template.name)  # its own name when its text was overridden
        tokenizer, model = steps.get_model(cfg, task)
        metrics = evaluate_all(model, tokenizer, task, template, cfg, out_dir, precision, run)
    return metrics
