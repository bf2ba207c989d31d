"""Pre-training objectives: how adaptation material becomes training features for `mto adapt`.

Material is of two kinds (see `Material`): knowledge `records` (head, relation, tail) with the
natural-language `phrases` of their relations, and raw `texts` (one document each). An objective turns it
into features `{"input_ids": [...], "labels": [...]}` whose labels end with EOS (what `collate` batches).

    mapping          records: "{head} {phrase}" -> "{tail}";  texts: prefix_lm
    filling          records: "{head} {phrase} <extra_id_0>" -> "<extra_id_0> {tail}" (tail filling);
                     texts: T5 span corruption (`objective.form` picks one: auto | tail | span)
    span_corruption  filling with form=span (records are corrupted as their full sentences)
    prefix_lm        a text (or a record's full sentence) cut at a uniform point: prefix -> rest
    mixed            a mixture of the above, routed per example by group or drawn by rates

Each objective is a class registered in `OBJECTIVES` under its name(s), built from the typed `objective`
config (`mto.config.ObjectiveConfig`); its `validate(cfg)` refuses settings it cannot use when the config is
validated, before any work. A new objective is its module here plus its YAML in conf/objective/.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mto.config import is_set
from mto.errors import ConfigError
from mto.registry import Registry
from mto.templates import Template, load_template

if TYPE_CHECKING:
    from mto.config import ObjectiveConfig

# name -> objective class (`cls(cfg)` builds it; `cls.validate(cfg)` validates its options)
OBJECTIVES = Registry("objective", "mto.objectives")


@dataclass
class Material:
    """What an objective adapts on: task records (knowledge triples with their relation phrases, QA or
    text-to-text examples) and raw texts."""

    records: list[dict] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    phrases: dict[str, str] = field(default_factory=dict)
    # The (mapping, filling) templates of conf/template/ that records are rendered with: a record's statement
    # is the mapping template's source and target (split before the answer), its tail filling the filling
    # template. Knowledge triples by default; `mto adapt` sets the task's pair (mto.matching.template_pair).
    pair: tuple[str, str] = ("prompting", "masked_prompting")


class Objective(Protocol):
    """Turns material into features `{"input_ids": [...], "labels": [...]}` (labels end with EOS)."""

    name: str

    def features(self, material: Material, tokenizer: Any, rng: random.Random) -> list[dict]: ...


def get_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective the `objective` config names (`cfg.name`); ConfigError for an unknown name."""
    if not is_set(cfg.name):
        raise ConfigError(f"objective.name is not set (expected one of: {', '.join(OBJECTIVES.names())})")
    return OBJECTIVES.get(cfg.name, "objective.name")(cfg)


def triple_sentence(record: Mapping[str, Any], phrases: Mapping[str, str]) -> tuple[str, str]:
    """The natural statement of a knowledge triple, split before its tail.

    ("PersonX buys a ticket because PersonX intended", "to see a movie"). Rendered by the template
    language, so a phrase that embeds `{head}` ("before {head}, PersonX") does not repeat the head.
    """
    template = Template(name="statement", source="{head} {phrase}", target="{tail}", phrases=phrases)
    return template.render(record, _no_sentinel)


def full_sentence(record: Mapping[str, Any], phrases: Mapping[str, str]) -> str:
    """The whole statement of a triple: "{head} {phrase} {tail}"."""
    prefix, tail = triple_sentence(record, phrases)
    return f"{prefix} {tail}".strip()


def statements(material: Material) -> list[tuple[str, str]]:
    """Each record's statement split before its answer, by the mapping template of `material.pair`:
    ("PersonX buys a ticket because PersonX intended", "to see a movie") for a triple (`prompting`),
    (source, target) for a text-to-text example, ("question (A) .. (B) ..", "answer") for QA."""
    template = load_template(material.pair[0], material.phrases)
    if template.uses_mask:
        raise ConfigError(f"template {template.name}: a statement template (mapping) has no {{mask}}")
    return [template.render(record, _no_sentinel) for record in material.records]


def sentences(material: Material) -> list[str]:
    """Each record's whole statement (statement and answer), the running text span corruption and prefix
    LM see."""
    return [f"{prefix} {answer}".strip() for prefix, answer in statements(material)]


# --- helpers shared by the objectives --------------------------------------------------------------


def encode_plain(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (empty texts give [])."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_with_specials(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text with the model's special tokens (T5: ids + EOS), as in fine-tuning."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts)["input_ids"]]


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a text (T5: [] and [EOS]; BART: [BOS], [EOS]).

    transformers 5.x tokenizers no longer have `build_inputs_with_special_tokens`, so the frame is read
    off one probe text, encoded with and without special tokens. Ends with EOS in every case.
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    before, after = [], list(full)
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            before, after = full[:start], full[start + len(plain) :]
            break
    eos = tokenizer.eos_token_id
    if eos is not None and (not after or after[-1] != eos):
        after = [*after, eos]
    return list(before), list(after)


def _no_sentinel(i: int) -> str:
    raise AssertionError("a statement template has no {mask}")
