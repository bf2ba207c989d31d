"""`mto match`: choose the objective a task suits, per relation, from how well the model already
"knows" the task under each template.

For every relation (or the whole task, for QA), on a sample of `match.n` training examples, each
candidate template is scored zero-shot by the mean gold-token negative log-likelihood and the mean
gold-token rank in the model's output distribution (only the answer's tokens count: not sentinels,
not EOS). The maskability index of a relation is

    MI = (R_mapping - R_filling) / R_mapping

with R the mean gold rank under the mapping template and the filling template (by default the pair of the
task's shape, `mto.matching.DEFAULT_PAIRS`: `prompting` and `masked_prompting` for knowledge triples,
`answer` and `masked_answer` for QA, `text2text` and `masked_text2text` for text-to-text). Relations
with MI >= `match.threshold` are Filling, the others Mapping. `match.method=rules` decides without a
model (see `mto.matching.rule_decision`).

`mto train template=auto match_run=<dir>` and `mto adapt objective=auto match_run=<dir>` read the
decisions from `match.json`.
"""

from __future__ import annotations

import logging
import random

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from mto.config import typed
from mto.errors import ConfigError
from mto.matching import FILLING, MATCH_FILE, decide, pair_templates, rule_decision, template_pair
from mto.runs import Run, atomic_write_json
from mto.stages import steps
from mto.stages.inherit import start_from_adapt_run
from mto.templates import load_template, sentinel_token_ids
from mto.training.features import collate, tokenize_pairs
from mto.training.runtime import autocast, device

log = logging.getLogger("mto")


def sample_by_group(examples: list[dict], n: int, seed: int) -> dict[str, list[dict]]:
    """`n` examples per group (relation), drawn with `seed`, groups in sorted order."""
    groups: dict[str, list[dict]] = {}
    for ex in examples:
        groups.setdefault(str(ex.get("group", "all")), []).append(ex)
    rng = random.Random(seed)
    return {g: rng.sample(items, min(n, len(items))) for g, items in sorted(groups.items())}


def score_pairs(model, tokenizer, pairs: list[tuple[str, str]], cfg, precision: str) -> dict:
    """Mean gold-token NLL and mean gold-token rank (1 = the model's top token) over the answer tokens
    of `pairs`; each example weighs the same (its own token mean first)."""
    features = tokenize_pairs(tokenizer, pairs, cfg.train.max_source_length, cfg.train.max_target_length)
    not_answer = set(tokenizer.all_special_ids) | set(sentinel_token_ids(tokenizer))
    dev = device()
    nll_sum, rank_sum, n = 0.0, 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(features), cfg.match.batch_size):
            batch = collate(features[start : start + cfg.match.batch_size], tokenizer.pad_token_id)
            batch = {k: v.to(dev) for k, v in batch.items()}
            with autocast(precision, dev):
                logits = model(**batch).logits.float()
            labels = batch["labels"]
            answer = labels != -100
            for tid in not_answer:
                answer &= labels != tid
            gold = labels.clamp(min=0).unsqueeze(-1)
            gold_logit = logits.gather(-1, gold)
            ranks = (logits > gold_logit).sum(-1) + 1
            nll = -torch.log_softmax(logits, -1).gather(-1, gold).squeeze(-1)
            counts = answer.sum(-1)
            for row in range(labels.shape[0]):
                if counts[row] == 0:
                    continue
                mask = answer[row]
                nll_sum += float(nll[row][mask].mean())
                rank_sum += float(ranks[row][mask].float().mean())
                n += 1
    if n == 0:
        raise ConfigError("match: no example has answer tokens to score")
    return {"nll": nll_sum / n, "rank": rank_sum / n, "n": n}


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
        table.add_row(group, *cells, "-" if mi is None else f"{mi:.3f}", res["decision"])
    Console().print(table)


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
        run.record(data_fingerprint=task.fingerprint)
        sample = sample_by_group(task.train, cfg.match.n, cfg.seed)
        pair = template_pair(cfg, task)  # the pair of the task's shape unless match.* names one
        pair_templates(cfg, task)  # refused here when they do not fit the task
        names = templates_to_score(cfg, pair)
        templates = {name: load_template(name, cfg.phrases) for name in names}
        relations = {ex["relation"] for ex in task.train if "relation" in ex}
        for template in templates.values():
            template.check(task.train[0].keys(), task.name, relations)
        if cfg.match.method == "rules":
            results = {g: {"decision": rule_decision(exs[0], cfg.phrases)} for g, exs in sample.items()}
        elif cfg.match.method == "model":
            tokenizer, model = steps.get_model(cfg, task)
            scores = {
                group: {
                    name: score_pairs(model, tokenizer, steps.render(t, exs, tokenizer), cfg, precision)
                    for name, t in templates.items()
                }
                for group, exs in sample.items()
            }
            results = decide(scores, pair, cfg.match.threshold)
        else:
            raise ConfigError(f"match.method={cfg.match.method}: expected model or rules")
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
                "groups": results,
                "decisions": decisions,
            },
        )
        show(results, names, cfg.match.threshold)
        run.figures(
            filling_share=share, decisions=decisions, mi={g: r["mi"] for g, r in results.items() if "mi" in r}
        )
    return {"decisions": decisions, "filling_share": share}
