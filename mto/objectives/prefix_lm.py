"""Prefix LM (T5's `prefix_lm` with seqio's `random_prefix_noise_mask` at noise density 0.5).

A text of L tokens is cut at a point drawn uniformly from [1, L-1]: the prefix is the input, the rest the
target, each framed by the tokenizer's special tokens (T5: + EOS). A record counts as the text of its
full statement "{head} {phrase} {tail}" (a text-to-text example: "{source} {target}"). Texts longer than
`objective.input_length` are first split into nearly equal chunks that fit (T5 cuts fixed-size segments
and keeps a short last one; equal chunks leave no one-token remainder that could not be cut); chunks of
fewer than 2 tokens cannot be cut and are skipped.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from mto.errors import ConfigError
from mto.objectives import OBJECTIVES, Material, encode_plain, sentences, special_frame

if TYPE_CHECKING:
    from mto.config import ObjectiveConfig


@OBJECTIVES.register("prefix_lm")
class PrefixLMObjective:
    """Prefix -> continuation at a uniform random split point."""

    name = "prefix_lm"

    def __init__(self, cfg: ObjectiveConfig) -> None:
        self.input_length = cfg.input_length

    @staticmethod
    def validate(cfg: ObjectiveConfig) -> None:
        """Nothing beyond ObjectiveConfig's own ranges: the frame of special tokens that must fit the
        input is the tokenizer's, known only in `features`."""

    def features(self, material: Material, tokenizer: Any, rng: random.Random) -> list[dict]:
        texts = sentences(material) + list(material.texts)
        before, after = special_frame(tokenizer)
        # The longest chunk whose longest prefix (L-1 tokens) still fits the input with its specials.
        max_chunk = self.input_length - len(before) - len(after) + 1
        if max_chunk < 2:
            raise ConfigError(
                f"objective.input_length={self.input_length}: too short for a prefix and the "
                f"{len(before) + len(after)} special tokens around it"
            )
        features = []
        for ids in encode_plain(tokenizer, texts):
            for chunk in equal_chunks(ids, max_chunk):
                if len(chunk) < 2:
                    continue
                cut = rng.randint(1, len(chunk) - 1)
                features.append(
                    {"input_ids": before + chunk[:cut] + after, "labels": before + chunk[cut:] + after}
                )
        return features


def equal_chunks(ids: list[int], max_len: int) -> list[list[int]]:
    """`ids` split into the fewest chunks of at most `max_len`, their lengths differing by at most one."""
    if not ids:
        return []
    n = math.ceil(len(ids) / max_len)
    size, extra = divmod(len(ids), n)
    chunks, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        chunks.append(ids[start:end])
        start = end
    return chunks
