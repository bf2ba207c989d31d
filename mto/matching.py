"""What `mto match` decides and what the other stages make of it: the two families (Filling, Mapping),
the decision rules, `match.json` read back, and the `auto` settings derived from it (`template=auto`
for `mto train`, `objective=auto` for `mto adapt`).

`mto/stages/match.py` is the stage that scores the templates and writes `match.json`; everything here
is pure or reads a finished match run, so any stage may use it without importing another stage.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mto.config import MtoConfig, ObjectiveConfig
from mto.errors import ConfigError
from mto.runs import read_json
from mto.templates import GroupedTemplate, Template, load_template

if TYPE_CHECKING:
    from mto.tasks import TaskData

log = logging.getLogger("mto")

MATCH_FILE = "match.json"
FILLING, MAPPING = "filling", "mapping"
# The (mapping, filling) template pair of each record shape (TaskData.shape): what `mto match` compares
# and what `mto adapt` renders records with, unless `match.mapping_template` / `match.filling_template`
# name others.
DEFAULT_PAIRS = {
    "knowledge": ("prompting", "masked_prompting"),
    "qa": ("answer", "masked_answer"),
    "text2text": ("text2text", "masked_text2text"),
}


def maskability_index(rank_mapping: float, rank_filling: float) -> float:
    """MI = (R_mapping - R_filling) / R_mapping: the share of the gold rank a sentinel removes."""
    return (rank_mapping - rank_filling) / rank_mapping


def rule_decision(example: dict, phrases) -> str:
    """The rule-based choice (`match.method=rules`), for when no model can be scored: an answer that
    continues a natural sentence (a relation with a natural-language phrase, a QA answer after
    "Answer:") is Filling, which T5's span-corruption pre-training suits; a bare relation name is Mapping."""
    if "relation" in example:
        return FILLING if example["relation"] in phrases else MAPPING
    return FILLING


def template_pair(cfg: MtoConfig, task: TaskData) -> tuple[str, str]:
    """The names of the (mapping, filling) templates for `task`: `match.*_template`, else its shape's."""
    default = DEFAULT_PAIRS[task.shape]
    return cfg.match.mapping_template or default[0], cfg.match.filling_template or default[1]


def pair_templates(cfg: MtoConfig, task: TaskData) -> tuple[Template, Template]:
    """The (mapping, filling) templates of `template_pair`, refused before any model is loaded when one
    names a field the task lacks, or the mapping one has a `{mask}` or the filling one none."""
    names = template_pair(cfg, task)
    templates = tuple(load_template(name, cfg.phrases) for name in names)
    examples = task.train or task.test or task.dev
    relations = {ex["relation"] for ex in task.train if "relation" in ex}
    for key, template, masked in zip(("mapping", "filling"), templates, (False, True), strict=True):
        template.check(examples[0].keys(), task.name, relations)
        if template.uses_mask != masked:
            rule = "fills a sentinel ({mask})" if masked else "has no sentinel ({mask})"
            raise ConfigError(f"match.{key}_template={template.name}: a {key} template {rule}")
    return templates[0], templates[1]


def decide(scores: dict[str, dict[str, dict]], pair: tuple[str, str], threshold: float) -> dict[str, dict]:
    """Per-group MI and decision from the per-template scores."""
    out = {}
    for group, by_template in scores.items():
        mi = maskability_index(by_template[pair[0]]["rank"], by_template[pair[1]]["rank"])
        out[group] = {"templates": by_template, "mi": mi, "decision": FILLING if mi >= threshold else MAPPING}
    return out


def read_match(match_run: str | Path | None) -> dict:
    """The `match.json` of a match run: `decisions` (group -> filling | mapping) and the template pair."""
    if not match_run:
        raise ConfigError("match_run: not set; `auto` needs the directory of a `mto match` run")
    path = Path(match_run) / MATCH_FILE
    if not path.is_file():
        raise ConfigError(f"match_run={match_run}: no {MATCH_FILE} there (run `mto match` first)")
    return read_json(path)


def auto_template(cfg: MtoConfig) -> Template | GroupedTemplate:
    """`template=auto`: the template of the objective `mto match` chose, per relation where they differ."""
    match = read_match(cfg.match_run)
    chosen = {
        g: match["filling_template"] if d == FILLING else match["mapping_template"]
        for g, d in match["decisions"].items()
    }
    log.info("template=auto from %s: %s", cfg.match_run, chosen)
    if len(set(chosen.values())) == 1:
        return load_template(next(iter(chosen.values())), cfg.phrases)
    return GroupedTemplate({g: load_template(name, cfg.phrases) for g, name in chosen.items()})


def auto_objective(cfg: MtoConfig) -> ObjectiveConfig:
    """`objective=auto`: the mixed objective with the per-relation decisions of `mto match` (the other
    objective options as configured)."""
    decisions = read_match(cfg.match_run)["decisions"]
    families = set(decisions.values())
    if len(families) == 1:
        return dataclasses.replace(cfg.objective, name=FILLING if families == {FILLING} else MAPPING)
    return dataclasses.replace(cfg.objective, name="mixed", by_group=dict(decisions), default=FILLING)
