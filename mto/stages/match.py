"""`mto match`: choose the objective a task suits, per relation, from how well the model already
"knows" the task under each template.

For every relation (or the whole task, for QA), on a sample of `match.n` training examples, each
candidate template is scored zero-shot by the mean gold-token negative log-likelihood and the mean
gold-token rank in the model's output distribution (only the answer's tokens count: not sentinels,
not EOS). The maskability index of a relation is

    MI = (R_mapping - R_filling) / R_mapping

with R the mean gold rank under the mapping template (default `prompting`) and the filling template
(default `masked_prompting`). Relations with MI >= `match.threshold` are Filling, the others Mapping.
`match.method=zero_shot` is this scoring (`model` is its former name); `match.method=rules` decides without
a model with the MTO code's rules (`mto.matching`: temp_flex per relation, temp_len per question; a group
decided per example shows its Filling share, and `template=auto` applies the rule to each example).

`match.method=depth_rank` follows the Maskability paper: a fresh copy of the model per template is
fine-tuned on the sample (the `train.*` settings; protocol=maskability: Adafactor 1e-4, batch 8, 3 epochs),
then DepthRank (the same mean 1-based gold-token rank) is measured on the held-out queries of
`match.heldout_split`, one example per gold tail. With `match.bootstrap` resamples (paired, per example)
every MI carries a confidence interval (`mi_ci`); a relation whose interval holds the threshold is
`uncertain` and takes `match.fallback`.

`mto train template=auto match_run=<dir>` and `mto adapt objective=auto match_run=<dir>` read the
decisions from `match.json`.
"""

from __future__ import annotations

import copy
import logging
import random

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from mto.config import typed
from mto.errors import ConfigError
from mto.matching import (
    FILLING,
    MAPPING,
    MATCH_FILE,
    decide,
    pair_templates,
    rule_decision,
    rule_of,
    template_pair,
)
from mto.protocol import stamp
from mto.runs import Run, atomic_write_json
from mto.stages import steps
from mto.stages.inherit import start_from_adapt_run
from mto.templates import load_template
from mto.training.features import tokenize_pairs
from mto.training.loop import train_model
from mto.training.scoring import gold_scores

log = logging.getLogger("mto")


def sample_by_group(examples: list[dict], n: int, seed: int) -> dict[str, list[dict]]:
    """`n` examples per group (relation), drawn with `seed`, groups in sorted order."""
    groups: dict[str, list[dict]] = {}
    for ex in examples:
        groups.setdefault(str(ex.get("group", "all")), []).append(ex)
    rng = random.Random(seed)
    return {g: rng.sample(items, min(n, len(items))) for g, items in sorted(groups.items())}


def score_pairs(model, tokenizer, pairs: list[tuple[str, str]], cfg, precision: str) -> dict:
    """Mean gold-token NLL and mean gold-token rank (DepthRank, 1 = the model's top token) over the answer
    tokens of `pairs` (mto/training/scoring.py); each example weighs the same (its own token mean first)."""
    scores = gold_scores(model, tokenizer, pairs, cfg.train.max_source_length, cfg.train.max_target_length,
                         cfg.match.batch_size, precision)  # fmt: skip
    nlls = [s.answer_nll for s in scores]  # per example (None: no answer token to score)
    ranks = [s.depth_rank for s in scores]
    kept = [(x, r) for x, r in zip(nlls, ranks, strict=True) if r is not None]
    if not kept:
        raise ConfigError("match: no example has answer tokens to score")
    n = len(kept)
    return {"nll": sum(x for x, _ in kept) / n, "rank": sum(r for _, r in kept) / n, "n": n,
            "nlls": nlls, "ranks": ranks}  # fmt: skip


def heldout(task, split: str) -> dict[str, list[dict]]:
    """The held-out queries of `split` by group, one example per gold tail (DepthRank scores each
    (head, tail) pair, as the reference does)."""
    groups: dict[str, list[dict]] = {}
    for query in task.split(split):
        for tail in query.get("tails") or [query["tail"]]:
            groups.setdefault(str(query.get("group", "all")), []).append({**query, "tail": tail})
    return groups


def depth_rank_scores(model, tokenizer, task, templates, sample, cfg, precision) -> dict:
    """`match.method=depth_rank` (the Maskability paper): for each template, a fresh copy of the model
    fine-tuned on the few-shot sample (all groups pooled; the train.* settings), then DepthRank (mean
    1-based rank of the gold answer tokens, sentinels and specials excluded) and NLL on the held-out
    queries of `match.heldout_split`."""
    examples = [ex for exs in sample.values() for ex in exs]
    held = heldout(task, cfg.match.heldout_split)
    scores: dict[str, dict] = {group: {} for group in held}
    train_cfg = steps.train_settings(cfg, model)  # packing decided once: every copy is the same model
    for name, template in templates.items():
        tuned = copy.deepcopy(model)
        features = tokenize_pairs(tokenizer, steps.render(template, examples, tokenizer),
                                  cfg.train.max_source_length, cfg.train.max_target_length)  # fmt: skip
        train_model(tuned, tokenizer, features, train_cfg, precision, cfg.seed,
                    description=f"depth_rank {name}")  # fmt: skip
        for group, exs in held.items():
            pairs = steps.render(template, exs, tokenizer)
            scores[group][name] = score_pairs(tuned, tokenizer, pairs, cfg, precision)
        del tuned
    return scores


def show(results: dict[str, dict], templates: list[str], threshold: float) -> None:
    table = Table(title=f"objective matching (Filling when MI >= {threshold})")
    table.add_column("group")
    for name in templates:
        table.add_column(f"{name}\nNLL", justify="right")
        table.add_column(f"{name}\nrank", justify="right")
    table.add_column("MI", justify="right")
    table.add_column("decision")
    for group, res in results.items():
        cells = []
        for name in templates:
            score = res.get("templates", {}).get(name)
            cells += [f"{score['nll']:.3f}", f"{score['rank']:.1f}"] if score else ["-", "-"]
        mi = res.get("mi")
        decision = res["decision"]
        if "filling_share" in res:  # decided per example: the majority, with the Filling share
            decision += f" ({res['filling_share']:.0%} of examples filling)"
        if res.get("uncertain"):
            decision += " (uncertain)"
        shown = "-" if mi is None else f"{mi:.3f}"
        if "mi_ci" in res:
            shown += f" [{res['mi_ci'][0]:.2f}, {res['mi_ci'][1]:.2f}]"
        table.add_row(group, *cells, shown, decision)
    Console().print(table)


def rules(examples: list[dict]) -> dict:
    """The rule-based decision of one group: temp_flex decides the relation; temp_len decides each
    question, and the group shows the majority with the Filling share."""
    rule = rule_of(examples[0])
    choices = [rule_decision(ex) for ex in examples]
    share = choices.count(FILLING) / len(choices)
    decision = FILLING if share >= 0.5 else MAPPING
    return {"decision": decision, "rule": rule, **({"filling_share": share} if rule == "temp_len" else {})}


def templates_to_score(cfg: DictConfig, pair: tuple[str, str]) -> list[str]:
    names = list(cfg.match.templates or [])
    return names + [n for n in pair if n not in names]


@steps.stage_main
def main(cfg: DictConfig) -> dict:
    out_dir = steps.job_dir()
    with Run(out_dir, cfg) as run:
        if cfg.adapt_run:  # score an adapted model
            cfg, lineage = start_from_adapt_run(cfg)
            run.record(lineage=lineage)
        cfg = typed(cfg)
        precision = steps.setup(cfg)
        task = steps.get_task(cfg)
        run.record(data_fingerprint=task.fingerprint, protocol=stamp(cfg))  # mto/protocol.py
        sample = sample_by_group(task.train, cfg.match.n, cfg.seed)
        pair = template_pair(cfg, task)  # the pair of the task's shape unless match.* names one
        pair_templates(cfg, task)  # refused here when they do not fit the task
        names = templates_to_score(cfg, pair)
        templates = {name: load_template(name, cfg.phrases) for name in names}
        relations = {ex["relation"] for ex in task.train if "relation" in ex}
        for template in templates.values():
            template.check(task.train[0].keys(), task.name, relations)
        if cfg.match.method == "rules":
            results = {g: rules(exs) for g, exs in sample.items()}
        else:
            tokenizer, model = steps.get_model(cfg, task)
            if cfg.match.method == "depth_rank":
                scores = depth_rank_scores(model, tokenizer, task, templates, sample, cfg, precision)
            else:
                scores = {
                    group: {
                        name: score_pairs(model, tokenizer, steps.render(t, exs, tokenizer), cfg, precision)
                        for name, t in templates.items()
                    }
                    for group, exs in sample.items()
                }
            m = cfg.match
            results = decide(scores, pair, m.threshold, m.bootstrap, m.confidence, m.fallback, cfg.seed)
        decisions = {g: r["decision"] for g, r in results.items()}
        share = sum(d == FILLING for d in decisions.values()) / len(decisions)
        atomic_write_json(
            out_dir / MATCH_FILE,
            {
                "method": cfg.match.method,
                "model": cfg.model.name_or_path,
                "threshold": cfg.match.threshold,
                "mapping_template": pair[0],
                "filling_template": pair[1],
                "n_per_group": cfg.match.n,
                "bootstrap": cfg.match.bootstrap,
                "confidence": cfg.match.confidence,
                "fallback": cfg.match.fallback,
                "uncertain": sorted(g for g, r in results.items() if r.get("uncertain")),
                "groups": results,
                "decisions": decisions,
                # groups whose examples the rules decide one by one (template=auto follows each)
                "per_example": sorted(g for g, r in results.items() if r.get("rule") == "temp_len"),
            },
        )
        show(results, names, cfg.match.threshold)
        run.figures(
            filling_share=share, decisions=decisions, mi={g: r["mi"] for g, r in results.items() if "mi" in r}
        )
    return {"decisions": decisions, "filling_share": share}
