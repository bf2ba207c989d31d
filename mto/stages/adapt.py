"""`mto adapt`: continue pre-training a model on a task's own text with the chosen objective.

    mto adapt objective=filling                          # tail filling on the task's triples
    mto adapt objective=span_corruption adapt.files=[corpus.txt]
    mto adapt objective=auto match_run=<mto match run>   # per relation, as `mto match` decided

The material comes from the task's training pool (never from dev/test heads unless
`adapt.include_test_heads=true`, which adds the test heads' facts and never the dev heads')
and/or raw text files (one document per line). A tiny model
(`model.build`) starts from scratch; any other model continues from its checkpoint. The adapted model is
saved in `model/`; `mto train adapt_run=<this run>` starts from it and records the lineage.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from omegaconf import DictConfig

from mto.config import MtoConfig, plain, typed
from mto.errors import DataError
from mto.matching import auto_objective, pair_templates
from mto.objectives import Material, get_objective
from mto.protocol import stamp
from mto.runs import Run
from mto.stages import steps
from mto.tasks import TaskData
from mto.tracking import Tracking
from mto.training.loop import train_model

log = logging.getLogger("mto")


def read_text_files(files: list[str]) -> list[str]:
    """Documents from raw text files, one per non-empty line."""
    texts = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"adapt.files: {path} not found; expected a text file with one document per line")
        texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if files and not texts:
        raise DataError(f"adapt.files: {', '.join(files)} hold no text")
    return texts


def adaptation_material(cfg: MtoConfig, task: TaskData) -> Material:
    """What the objective learns from: the task's records (training pool) and/or raw documents. Records
    are rendered with the (mapping, filling) template pair of the task's shape (`mto.matching.template_pair`:
    triples, QA or text-to-text examples), checked here, before any model is built."""
    mapping, filling = pair_templates(cfg, task)
    records: list[dict] = []
    source = cfg.adapt.source
    if source in ("task", "both"):
        pool = list(task.train)
        if cfg.adapt.include_test_heads:
            # Knowledge probing: the text states the test heads' facts, which fine-tuning never sees.
            # Dev heads stay out, as the control group whose facts the model cannot have read.
            pool += [answered(ex, tail) for ex in task.test for tail in ex.get("tails", [ex["tail"]])]
        if cfg.adapt.relations:
            keep = set(cfg.adapt.relations)
            pool = [ex for ex in pool if ex.get("relation", ex.get("group")) in keep]
        records = pool
    texts = read_text_files(list(cfg.adapt.files)) if source in ("files", "both") else []
    if cfg.adapt.n_examples:
        rng = random.Random(cfg.seed)
        records = rng.sample(records, min(cfg.adapt.n_examples, len(records)))
        texts = rng.sample(texts, min(cfg.adapt.n_examples, len(texts)))
    if not records and not texts:
        raise DataError("adapt: no adaptation material (check adapt.source, adapt.files, adapt.relations)")
    pair = (mapping.name, filling.name)
    return Material(records=records, texts=texts, phrases=dict(cfg.phrases), pair=pair)


def answered(example: dict, tail: str) -> dict:
    """`example` with `tail` as its answer (a text-to-text example's target too)."""
    return {**example, "tail": tail, **({"target": tail} if "target" in example else {})}


def epoch_features(objective, material: Material, tokenizer, seed: int) -> Callable[[int], list[dict]]:
    """The objective's features for each epoch: epoch 0 drawn with the run's seed, epoch e with a seed of
    its own, so span masks, prefix-LM cuts and mixed routing are fresh each pass (T5 corrupts on the fly)
    and the same again when a resumed run rebuilds them. An objective that draws no random numbers
    (mapping, tail filling) gives the same features every epoch: those are computed once."""
    fixed: list[list[dict]] = []

    def features(epoch: int) -> list[dict]:
        if fixed:
            return fixed[0]
        rng = random.Random(seed if epoch == 0 else f"{seed}/epoch{epoch}")
        before = rng.getstate()
        result = objective.features(material, tokenizer, rng)
        if rng.getstate() == before:
            fixed.append(result)
        return result

    return features


@steps.stage_main
def main(cfg: DictConfig) -> dict:
    out_dir = steps.job_dir()
    with Run(out_dir, cfg) as run, ExitStack() as trackers:  # the trackers close first
        if cfg.match_run:
            run.record(lineage={"match_run": str(Path(cfg.match_run).resolve())})
        cfg = typed(cfg)
        precision = steps.setup(cfg)
        task = steps.get_task(cfg)
        run.record(data_fingerprint=task.fingerprint, protocol=stamp(cfg))  # mto/protocol.py
        objective_cfg = auto_objective(cfg) if cfg.objective.name == "auto" else cfg.objective
        objective = get_objective(objective_cfg)
        material = adaptation_material(cfg, task)
        tokenizer, model = steps.get_model(cfg, task)
        train_cfg = steps.train_settings(cfg, model)  # train.packing decided for this model
        features_of = epoch_features(objective, material, tokenizer, cfg.seed)
        features = features_of(0)
        if not features:
            raise DataError(f"adapt: objective {objective.name} made no training examples from the material")
        log.info(
            "adapting with %s on %d records, %d texts -> %d examples",
            objective.name,
            len(material.records),
            len(material.texts),
            len(features),
        )
        checkpoint = steps.checkpoint_for(cfg)
        if cfg.eval.every:  # validation watches a task figure: it is train's (an adapt run has no dev text)
            log.info("adapt: eval.every=%d is for mto train; adaptation is not validated", cfg.eval.every)
        tracking = trackers.enter_context(Tracking(out_dir, cfg, run.info))
        result = train_model(
            model, tokenizer, features, train_cfg, precision, cfg.seed, "adapt",
            checkpoint=checkpoint, resample=features_of if cfg.adapt.resample else None, step_log=tracking,
        )  # fmt: skip
        steps.save_model(model, tokenizer, out_dir / "model")
        run.figures(
            adapt_loss=result.final_loss,
            adapt_steps=result.steps,
            adapt_examples=len(features),
            adapt_records=len(material.records),
            adapt_texts=len(material.texts),
            objective=plain(objective_cfg),
            adapt_seconds=result.seconds,
            adapt_packed=train_cfg.packing,
            precision=precision,
        )
        tracking.finish(run.info["figures"])
    return {"adapt_loss": result.final_loss}
