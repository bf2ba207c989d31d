"""The gold targets' scores of an evaluation (`eval.gold_scores`, on by default): for each test query,
its gold answers fed to the model by teacher forcing (mto/training/scoring.py), beside what it generated.

Each gold of a query (its `tails`: ATOMIC's tails, text2text's targets, QA's one answer) is scored: one
(source, target) pair per gold, as `mto match match.method=depth_rank` and the authors' code score each
(head, tail) pair; renderings that come out the same (a template that says no gold, e.g. `{label}`)
are scored once. A record of predictions.jsonl gets
  - `gold_nll`: the mean per-token NLL of the gold target, every target token counted (the sentinel and
    EOS too): the query's training loss; `gold_nll_sum`: its sum over the target's tokens;
  - `depth_rank`: the mean 1-based rank of the gold answer tokens (sentinels and special tokens
    excluded); null when no gold has an answer token;
each the mean over the query's golds, and `gold_targets`, how many were scored. metrics.json gets
`gold_nll`, `gold_nll_sum` and `depth_rank`: the mean over the (query, gold) pairs of each relation,
then over relations (`*_per_group` per relation); and `gold_targets`, the pairs in all.

The maskability index compares a Mapping run with the Filling run of the same setting; `mto report`
computes it from these figures (mto/reporting/mi.py).
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean

from mto.stages import steps
from mto.training.scoring import GoldScore, gold_scores

FIGURES = ("gold_nll", "depth_rank")  # the headline figures (run.json, the eval table, dev_* in training)


# The fields a record holds its (first) gold answer in, by task: `tail` (all), `target` (text2text),
# `answer` (QA); a template's target names one of them.
GOLD_FIELDS = ("tail", "target", "answer")


def with_gold(example: dict, gold: str) -> dict:
    """`example` with `gold` in place of its first gold answer, in each field of GOLD_FIELDS holding it."""
    first = example.get("tail")
    return {**example, **{k: gold for k in GOLD_FIELDS if k in example and example[k] == first}}


def gold_targets(template, examples: list[dict], tokenizer) -> tuple[list[tuple[str, str]], list[int]]:
    """One rendered (source, target) pair per gold of each example (its `tails`; the example as it is
    without them), the same rendering once per example; and the example index of each pair."""
    variants, owners = [], []
    for i, ex in enumerate(examples):
        for gold in ex.get("tails") or [None]:
            variants.append(ex if gold is None else with_gold(ex, gold))
            owners.append(i)
    pairs, kept = [], []
    seen: set[tuple[int, tuple[str, str]]] = set()
    for owner, pair in zip(owners, steps.render(template, variants, tokenizer), strict=True):
        if (owner, pair) not in seen:
            seen.add((owner, pair))
            pairs.append(pair)
            kept.append(owner)
    return pairs, kept


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return fmean(kept) if kept else None


def score_golds(
    model, tokenizer, template, examples: list[dict], cfg, precision: str
) -> tuple[dict, list[dict]]:
    """(summary for metrics.json, one row per example for predictions.jsonl): see the module's text."""
    pairs, owners = gold_targets(template, examples, tokenizer)
    scores = gold_scores(model, tokenizer, pairs, cfg.train.max_source_length, cfg.train.max_target_length,
                         cfg.eval.batch_size, precision)  # fmt: skip
    by_example: dict[int, list[GoldScore]] = defaultdict(list)
    by_group: dict[str, list[GoldScore]] = defaultdict(list)
    for owner, score in zip(owners, scores, strict=True):
        by_example[owner].append(score)
        by_group[str(examples[owner].get("group", "all"))].append(score)
    rows = [
        {
            "gold_nll": fmean(s.nll for s in by_example[i]),
            "gold_nll_sum": fmean(s.nll_sum for s in by_example[i]),
            "depth_rank": _mean([s.depth_rank for s in by_example[i]]),
            "gold_targets": len(by_example[i]),
        }
        for i in range(len(examples))
    ]
    summary: dict = {"gold_targets": len(pairs)}
    for name, value in (("gold_nll", lambda s: s.nll), ("gold_nll_sum", lambda s: s.nll_sum),
                        ("depth_rank", lambda s: s.depth_rank)):  # fmt: skip
        per_group = {g: _mean([value(s) for s in by_group[g]]) for g in sorted(by_group)}
        per_group = {g: v for g, v in per_group.items() if v is not None}
        summary[name] = fmean(per_group.values()) if per_group else None
        summary[f"{name}_per_group"] = per_group
    return summary, rows


def figures(summary: dict) -> list[str]:
    """The headline gold figures `summary` has a value for."""
    return [name for name in FIGURES if summary.get(name) is not None]
