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

Options are read from the `objective` config with `getattr` and defaults, so a DictConfig, a
SimpleNamespace or any object with attributes works.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mto.errors import ConfigError
from mto.templates import Template

# Every objective name `get_objective` knows; `mixed` may route to all but itself.
NAMES = ("mapping", "filling", "span_corruption", "prefix_lm", "mixed")
BASE_NAMES = tuple(n for n in NAMES if n != "mixed")
# Default raw-token budget of one example's input (the tiny default's `train.max_source_length`).
DEFAULT_INPUT_LENGTH = 64


@dataclass
class Material:
    """What an objective adapts on: knowledge records with their relation phrases, and raw texts."""

    records: list[dict] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    phrases: dict[str, str] = field(default_factory=dict)


class Objective(Protocol):
    """Turns material into features `{"input_ids": [...], "labels": [...]}` (labels end with EOS)."""

    name: str

    def features(self, material: Material, tokenizer: Any, rng: random.Random) -> list[dict]: ...


def get_objective(cfg: Any) -> Objective:
    """The objective the `objective` config names (`cfg.name`); ConfigError for an unknown name."""
    name = objective_name(cfg)
    # Imported here: the submodules import the helpers of this package.
    if name == "mapping":
        from mto.objectives.mapping import MappingObjective

        return MappingObjective(cfg)
    if name in ("filling", "span_corruption"):
        from mto.objectives.filling import FillingObjective

        return FillingObjective(cfg)
    if name == "prefix_lm":
        from mto.objectives.prefix_lm import PrefixLMObjective

        return PrefixLMObjective(cfg)
    if name == "mixed":
        from mto.objectives.mixed import MixedObjective

        return MixedObjective(cfg)
    raise ConfigError(f"objective.name={name!r} is not an objective; valid names: {', '.join(NAMES)}")


def objective_name(cfg: Any) -> str:
    """`cfg.name`, or a ConfigError when it is not set."""
    try:
        name = getattr(cfg, "name", None)
    except MissingMandatoryValue:
        name = None
    if not name:
        raise ConfigError(f"objective.name is not set (expected one of: {', '.join(NAMES)})")
    return str(name)


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


# --- helpers shared by the objectives --------------------------------------------------------------


def option(cfg: Any, key: str, default: Any) -> Any:
    """`cfg.key`, or `default` when the key is absent or null."""
    try:
        value = getattr(cfg, key, None)
    except MissingMandatoryValue:
        value = None
    return default if value is None else value


def mapping_option(cfg: Any, key: str) -> dict[str, Any] | None:
    """`cfg.key` as a plain dict (None when unset); ConfigError when it is not a mapping."""
    value = option(cfg, key, None)
    if value is None:
        return None
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping):
        raise ConfigError(f"objective.{key}: expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def int_option(cfg: Any, key: str, default: int, minimum: int) -> int:
    """An integer option of at least `minimum`."""
    value = option(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"objective.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def bool_option(cfg: Any, key: str, default: bool) -> bool:
    value = option(cfg, key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"objective.{key}: expected true or false, got {value!r}")
    return value


def float_option(cfg: Any, key: str, default: float, low: float, high: float, high_open: bool) -> float:
    """A number in [low, high) (or [low, high] when not `high_open`)."""
    value = option(cfg, key, default)
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ConfigError(f"objective.{key}: expected a number in {bound}, got {value!r}")
    return float(value)


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
