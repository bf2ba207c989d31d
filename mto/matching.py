"""What `mto match` decides and what the other stages make of it: the two families (Filling, Mapping),
the decision rules, `match.json` read back, and the `auto` settings derived from it (`template=auto`
for `mto train`, `objective=auto` for `mto adapt`).

`mto/stages/match.py` is the stage that scores the templates and writes `match.json`; everything here
is pure or reads a finished match run, so any stage may use it without importing another stage.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
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


# `match.method=rules`: the MTO code's decision rules (docs/reference-protocol.md section 1), without a model.
# Knowledge relations, `Atomic.temp_flex` (attempt/data/tasks.py L1776-1781): these relations get the
# masked natural template (unsup-nat, Filling), every other relation the natural one (sup-nat, Mapping).
TEMP_FLEX_FILLING = frozenset({
    "ObjectUse", "AtLocation", "MadeUpOf", "HasProperty", "CapableOf", "Desires", "NotDesires",
    "xAttr", "xReact", "oReact", "isFilledBy",
})  # fmt: skip
# Multiple-choice QA, `QA.temp_len` (tasks.py L1175-1187): the masked answer template only for a question
# with a "?" whose choices are short (mean length in single-space-separated words below this).
TEMP_LEN_MAX_WORDS = 4
# Which rule decides a group: per relation (temp_flex) or per example (temp_len).
RULE_OF = {"relation": "temp_flex", "choices": "temp_len"}


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


def temp_flex(relation: str) -> str:
    """The MTO code's rule for a knowledge relation: Filling for the listed relations, else Mapping."""
    return FILLING if relation in TEMP_FLEX_FILLING else MAPPING


def temp_len(question: str, choices: list[str]) -> str:
    """The MTO code's rule for one multiple-choice question: Filling when the question has a "?" and
    the choices' mean length (`len(choice.split(" "))`, single spaces, as the code counts) is below
    TEMP_LEN_MAX_WORDS, else Mapping. Decided per example: the code decided once per task object, from
    its first example, and reused that for every later one (reference trap 4), which we do not copy."""
    mean_words = sum(len(choice.split(" ")) for choice in choices) / len(choices)
    return FILLING if "?" in question and mean_words < TEMP_LEN_MAX_WORDS else MAPPING


def rule_of(example: dict) -> str:
    """The name of the rule that decides `example` (temp_flex | temp_len); ConfigError for a task the
    reference has no rule for."""
    for field_name, rule in RULE_OF.items():
        if field_name in example:
            return rule
    raise ConfigError(
        "match.method=rules: the reference rules decide knowledge relations (temp_flex) and "
        "multiple-choice questions (temp_len) only; use match.method=zero_shot for this task"
    )


def rule_decision(example: dict) -> str:
    """The rule-based choice for one example (`match.method=rules`): temp_flex on its relation, or
    temp_len on its question (the question alone, `stem`, as the code reads `question_stem`/`question`)."""
    if rule_of(example) == "temp_flex":
        return temp_flex(str(example["relation"]))
    return temp_len(str(example.get("stem", example["question"])), [str(c) for c in example["choices"]])


@dataclass
class PerExampleTemplate:
    """`template=auto` for a group the rules decide per example (QA's temp_len): each example rendered
    with the filling template when the rule says Filling, with the mapping template otherwise."""

    mapping: Template
    filling: Template
    name: str = "auto"
    objective: str = "mixed"

    def choose(self, example) -> Template:
        return self.filling if rule_decision(dict(example)) == FILLING else self.mapping

    @property
    def uses_mask(self) -> bool:
        return self.mapping.uses_mask or self.filling.uses_mask

    @property
    def n_soft(self) -> int:
        return max(self.mapping.n_soft, self.filling.n_soft)

    def check(self, available, task: str, relations=()) -> None:
        self.mapping.check(available, task, relations)
        self.filling.check(available, task, relations)

    def render(self, example, sentinel, soft=None) -> tuple[str, str]:
        return self.choose(example).render(example, sentinel, soft)


def bootstrap_mi(
    ranks_mapping: list[float | None], ranks_filling: list[float | None], resamples: int, confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile bootstrap interval of MI over the examples both templates scored (paired: the same
    examples are resampled for both means), with `resamples` draws from `random.Random(seed)`."""
    both = zip(ranks_mapping, ranks_filling, strict=True)
    pairs = [(m, f) for m, f in both if m is not None and f is not None]
    rng = random.Random(seed)
    k = len(pairs)
    values = []
    for _ in range(resamples):
        drawn = [pairs[rng.randrange(k)] for _ in range(k)]
        mean_m = sum(m for m, _ in drawn) / k
        values.append(maskability_index(mean_m, sum(f for _, f in drawn) / k))
    values.sort()
    tail = (1 - confidence) / 2
    low = values[min(resamples - 1, int(tail * resamples))]
    high = values[max(0, math.ceil((1 - tail) * resamples) - 1)]
    return low, high


def decide(
    scores: dict[str, dict[str, dict]], pair: tuple[str, str], threshold: float, resamples: int = 0,
    confidence: float = 0.95, fallback: str = "point", seed: int = 0,
) -> dict[str, dict]:
    """Per-group MI and decision from the per-template scores. With `resamples`, each MI carries a
    bootstrap interval (`mi_ci`, from the per-example ranks); a group whose interval holds the threshold
    is `uncertain` and takes `fallback` (point: the MI itself decides; mapping | filling)."""
    out = {}
    for group, by_template in scores.items():
        mapping, filling = by_template[pair[0]], by_template[pair[1]]
        mi = maskability_index(mapping["rank"], filling["rank"])
        decision = FILLING if mi >= threshold else MAPPING
        result = {"templates": by_template, "mi": mi, "decision": decision}
        if resamples and "ranks" in mapping and "ranks" in filling:
            low, high = bootstrap_mi(mapping["ranks"], filling["ranks"], resamples, confidence, seed)
            uncertain = low < threshold <= high
            if uncertain and fallback != "point":
                decision = fallback
            result.update(mi_ci=[low, high], uncertain=uncertain, decision=decision)
        out[group] = result
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
    """`template=auto`: the template of the objective `mto match` chose, per relation where they differ
    (per example in the groups the rules decide per example, `per_example` in match.json)."""
    match = read_match(cfg.match_run)
    chosen = {
        g: match["filling_template"] if d == FILLING else match["mapping_template"]
        for g, d in match["decisions"].items()
    }
    per_example = set(match.get("per_example", []))
    log.info("template=auto from %s: %s (per example: %s)", cfg.match_run, chosen, sorted(per_example))
    if per_example:
        pair = PerExampleTemplate(load_template(match["mapping_template"], cfg.phrases),
                                  load_template(match["filling_template"], cfg.phrases))  # fmt: skip
        return GroupedTemplate({
            g: pair if g in per_example else load_template(name, cfg.phrases) for g, name in chosen.items()
        })  # fmt: skip
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
