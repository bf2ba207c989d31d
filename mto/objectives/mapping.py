"""Mapping: input -> output with no sentinel, the LM-style objective family.

A record becomes its statement prefix -> its tail ("PersonX buys a ticket because PersonX intended" ->
"to see a movie"; a text-to-text example its source -> its target: the mapping template of its task);
raw texts have no input/output split of their own, so they go to prefix_lm, the LM-style form of mapping
on running text.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from mto.objectives import OBJECTIVES, Material, encode_with_specials, statements
from mto.objectives.prefix_lm import PrefixLMObjective

if TYPE_CHECKING:
    from mto.config import ObjectiveConfig


@OBJECTIVES.register("mapping")
class MappingObjective:
    """Records: "{head} {phrase}" -> "{tail}" (the task's mapping template); texts: prefix LM."""

    name = "mapping"

    def __init__(self, cfg: ObjectiveConfig) -> None:
        self.prefix_lm = PrefixLMObjective(cfg)

    @staticmethod
    def validate(cfg: ObjectiveConfig) -> None:
        PrefixLMObjective.validate(cfg)  # its raw texts go to prefix_lm

    def features(self, material: Material, tokenizer: Any, rng: random.Random) -> list[dict]:
        features = pair_features(tokenizer, statements(material))
        if material.texts:
            features += self.prefix_lm.features(Material(texts=list(material.texts)), tokenizer, rng)
        return features


def pair_features(tokenizer: Any, pairs: list[tuple[str, str]]) -> list[dict]:
    """(source, target) texts tokenised as in fine-tuning (with the model's special tokens), untruncated."""
    sources = encode_with_specials(tokenizer, [s for s, _ in pairs])
    targets = encode_with_specials(tokenizer, [t for _, t in pairs])
    return [{"input_ids": s, "labels": t} for s, t in zip(sources, targets, strict=True)]
