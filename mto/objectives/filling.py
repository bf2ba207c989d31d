"""Filling: a sentinel marks each gap in the input and the target restores it. Two forms:

- tail filling (records): "{head} {phrase} <extra_id_0>" -> "<extra_id_0> {tail}", the form of the
  masked-prompting template (a task's own filling template for other records: `Material.pair`), so the
  adapted model sees the fine-tuning format.
- span corruption (texts), exactly as T5/seqio define it (`t5.data.preprocessors.span_corruption` with
  `random_spans_noise_mask`, `noise_span_to_unique_sentinel`, `random_spans_helper`):
    * noise = round(L x noise_density) clipped to [1, L-1]; spans = max(1, round(noise / mean_span));
      rounding is half-to-even in float32, as seqio's mask computes it (seqio's length helper rounds in
      float64 and so disagrees with its own mask at exact ties, e.g. L=190 at 0.15);
    * noise and non-noise lengths each split uniformly at random into `spans` non-empty segments
      (seqio's `_random_segmentation`); segments alternate starting with non-noise, so the last is noise;
    * inputs: kept tokens with one sentinel per noise span, then EOS; targets: sentinel + span, repeated,
      then EOS; sentinels `<extra_id_0>`, `<extra_id_1>`, ... left to right (the highest ids first).
  Documents are tokenised without special tokens and concatenated with no separator, as T5 does
  (`reduce_concat_tokens`), in the order given; the stream is cut into blocks of T raw tokens, the largest
  T whose corrupted input, EOS included, fits `input_length` (568 -> 512 inputs / 114 targets). The last,
  shorter block is kept and corrupted at its own length, as T5 does (`split_tokens` keeps it; its padding
  is left to the collator); a block of one token has nothing to corrupt and is dropped.

Options beyond T5 (all off by default): `pack: false` corrupts each document on its own (cut into blocks
of at most T); `random_roll` rolls the noise mask by a uniform offset (seqio's option), so the last span
is no longer always noise; `random_noise_count` draws the noise count from Binomial(L, noise_density)
instead of rounding, so answers on short single-fact texts do not all have one length. With a roll a
noise span can wrap around into two, so T leaves room for one more sentinel; with a random count, T is
sized for the fewest noise tokens (one), so every draw fits and the count is not biased.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mto.errors import ConfigError
from mto.models import sentinel
from mto.objectives import OBJECTIVES, Material, encode_plain, sentences
from mto.objectives.mapping import pair_features
from mto.templates import load_template

if TYPE_CHECKING:
    from mto.config import ObjectiveConfig


@dataclass(frozen=True)
class SpanLengths:
    """Block size and the lengths of a full block's corrupted input and target (EOS included)."""

    raw: int
    inputs: int
    targets: int


@OBJECTIVES.register("filling", "span_corruption")
class FillingObjective:
    """Tail filling for records, T5 span corruption for texts (`form`: auto | tail | span)."""

    def __init__(self, cfg: ObjectiveConfig) -> None:
        self.name = cfg.name
        self.form = "span" if cfg.name == "span_corruption" else cfg.form
        self.noise_density = cfg.noise_density
        self.mean_noise_span_length = cfg.mean_noise_span_length
        self.input_length = cfg.input_length
        self.pack = cfg.pack
        self.random_roll = cfg.random_roll
        self.random_noise_count = cfg.random_noise_count
        self.lengths = self.validate(cfg)

    @staticmethod
    def validate(cfg: ObjectiveConfig) -> SpanLengths:
        """Refuse what cannot corrupt a text; the block and corrupted lengths of the settings."""
        if cfg.name == "span_corruption" and cfg.form == "tail":
            raise ConfigError("objective.form=tail contradicts objective.name=span_corruption (use filling)")
        if cfg.input_length < 3:
            raise ConfigError(f"objective.input_length={cfg.input_length}: expected an integer >= 3")
        return span_lengths(
            cfg.input_length,
            cfg.noise_density,
            cfg.mean_noise_span_length,
            cfg.random_roll,
            cfg.random_noise_count,
        )

    def features(self, material: Material, tokenizer: Any, rng: random.Random) -> list[dict]:
        records, texts = list(material.records), list(material.texts)
        if self.form == "tail" and texts:
            raise ConfigError(
                "objective.form=tail fills the tails of knowledge records, but the material has raw texts "
                "(use objective.form=span or auto)"
            )
        features: list[dict] = []
        if self.form == "span":
            # Span corruption over records corrupts their full statements.
            texts = sentences(material) + texts
        elif records:
            features += tail_filling_features(material, tokenizer)
        if texts:
            features += self.span_corruption(texts, tokenizer, rng)
        return features

    def span_corruption(self, texts: list[str], tokenizer: Any, rng: random.Random) -> list[dict]:
        """T5 span corruption of `texts` (see the module docstring)."""
        docs = encode_plain(tokenizer, texts)
        if self.pack:
            docs = [[tid for doc in docs for tid in doc]]
        size = self.lengths.raw
        blocks = [doc[i : i + size] for doc in docs for i in range(0, len(doc), size)]
        blocks = [b for b in blocks if len(b) >= 2]
        masks = [self.noise_mask(len(b), rng) for b in blocks]
        sentinels = sentinel_ids(tokenizer, max((count_spans(m) for m in masks), default=0))
        eos = tokenizer.eos_token_id
        features = []
        for block, mask in zip(blocks, masks, strict=True):
            inputs, targets = corrupt(block, mask, sentinels, eos)
            self.check(block, mask, inputs, targets)
            features.append({"input_ids": inputs, "labels": targets})
        return features

    def noise_mask(self, length: int, rng: random.Random) -> list[bool]:
        """The noise mask of one block of `length` tokens (True = noise)."""
        if self.random_noise_count:
            drawn = sum(rng.random() < self.noise_density for _ in range(length))
            noise = min(max(drawn, 1), length - 1)
            spans = noise_spans(noise, length, self.mean_noise_span_length)
        else:
            noise, spans = noise_counts(length, self.noise_density, self.mean_noise_span_length)
        return random_spans_mask(length, noise, spans, rng, self.random_roll)

    def check(
        self, block: list[int], mask: list[bool], inputs: list[int], targets: list[int]
    ) -> None:
        """Refuse corrupted examples whose lengths differ from what the definition says (a bug if hit).

        Like the length check of transformers' T5 MLM collator: every full block of the default setting
        must give exactly `lengths.inputs` and `lengths.targets`; any block must fit `input_length`.
        """
        noise, runs = sum(mask), count_spans(mask)
        want_inputs, want_targets = len(block) - noise + runs + 1, noise + runs + 1
        exact = len(block) == self.lengths.raw and not (self.random_roll or self.random_noise_count)
        if exact:
            want_inputs, want_targets = self.lengths.inputs, self.lengths.targets
        if len(inputs) != want_inputs or len(targets) != want_targets or len(inputs) > self.input_length:
            raise RuntimeError(
                f"span corruption of a {len(block)}-token block gave {len(inputs)} inputs / {len(targets)} "
                f"targets, expected {want_inputs} / {want_targets} (input_length {self.input_length})"
            )


def tail_filling_features(material: Material, tokenizer: Any) -> list[dict]:
    """Each record as "{head} {phrase} <extra_id_0>" -> "<extra_id_0> {tail}": the filling template of
    `material.pair` (masked_prompting for triples, masked_text2text or masked_answer for other tasks)."""
    template = load_template(material.pair[1], material.phrases)
    if not template.uses_mask:
        raise ConfigError(f"template {template.name}: tail filling needs a sentinel ({{mask}}) to fill")
    pairs = [template.render(r, lambda i: sentinel(tokenizer, i)) for r in material.records]
    return pair_features(tokenizer, pairs)


# --- T5 span corruption, by definition ---------------------------------------------------------------


def _rint32(x: float) -> int:
    """Round half to even in float32, as `tf.round` on seqio's float32 tensors does."""
    return int(np.rint(np.float32(x)))


def noise_spans(noise: int, length: int, mean_noise_span_length: float) -> int:
    """max(1, round(noise / mean)), and no more spans than there are non-noise tokens to separate them
    (seqio's segmentation would fail there; only reachable with densities above 0.5)."""
    spans = max(1, _rint32(np.float32(noise) / np.float32(mean_noise_span_length)))
    return min(spans, length - noise)


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a block of `length` >= 2 tokens."""
    noise = _rint32(np.float32(length) * np.float32(noise_density))
    noise = min(max(noise, 1), length - 1)
    return noise, noise_spans(noise, length, mean_noise_span_length)


def span_lengths(
    input_length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    random_roll: bool = False,
    random_noise_count: bool = False,
) -> SpanLengths:
    """The largest raw block T with kept(T) + spans(T) + 1 <= input_length, and its input/target lengths.

    seqio's `random_spans_helper` (extra tokens per span 1 in inputs and targets, one EOS each). With
    `random_roll` one more sentinel is budgeted: a rolled mask can split a noise span in two. With
    `random_noise_count` the budget is the worst case, one noise token in one span, so that every draw
    fits without biasing the count upwards; the lengths given are then those of the rounded count.
    """
    extra = 1 if random_roll else 0

    def lengths(raw: int) -> tuple[int, int]:
        noise, spans = noise_counts(raw, noise_density, mean_noise_span_length)
        if random_noise_count:  # the longest input any draw gives: one noise token, one span
            return raw - 1 + 1 + 1, noise + spans + 1
        return raw - noise + spans + 1, noise + spans + 1

    if lengths(2)[0] + extra > input_length:
        raise ConfigError(f"objective.input_length={input_length}: too short for span corruption")
    raw = 2
    # kept + spans grows by 0 or 1 per token, so the first overflow ends the search.
    while lengths(raw + 1)[0] + extra <= input_length:
        raw += 1
    noise, spans = noise_counts(raw, noise_density, mean_noise_span_length)
    return SpanLengths(raw=raw, inputs=raw - noise + spans + 1, targets=noise + spans + 1)


def random_segmentation(num_items: int, num_segments: int, rng: random.Random) -> list[int]:
    """`num_items` split into `num_segments` non-empty segments, uniformly over all such splits.

    seqio shuffles `num_items - 1` boundary flags of which `num_segments - 1` are set; choosing the set
    positions as a uniform sample is the same distribution.
    """
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"cannot split {num_items} items into {num_segments} non-empty segments")
    cuts = sorted(rng.sample(range(1, num_items), num_segments - 1))
    bounds = [0, *cuts, num_items]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def random_spans_mask(
    length: int, noise: int, spans: int, rng: random.Random, random_roll: bool = False
) -> list[bool]:
    """seqio's `random_spans_noise_mask` for given counts: non-noise/noise segments alternating, non-noise
    first; with `random_roll`, rolled right by an offset uniform in [0, length) (`tf.roll`)."""
    noise_lengths = random_segmentation(noise, spans, rng)
    kept_lengths = random_segmentation(length - noise, spans, rng)
    mask: list[bool] = []
    for kept, noisy in zip(kept_lengths, noise_lengths, strict=True):
        mask += [False] * kept + [True] * noisy
    if random_roll:
        offset = rng.randrange(length)
        mask = mask[length - offset :] + mask[: length - offset]
    return mask


def count_spans(mask: Sequence[bool]) -> int:
    """How many runs of noise the mask has."""
    return sum(1 for i, noisy in enumerate(mask) if noisy and (i == 0 or not mask[i - 1]))


def corrupt(
    tokens: Sequence[int], mask: Sequence[bool], sentinels: Sequence[int], eos: int
) -> tuple[list[int], list[int]]:
    """Inputs: kept tokens with sentinel i for the i-th noise span, then EOS; targets: sentinel i + the
    span, repeated, then EOS (seqio's `noise_span_to_unique_sentinel` / `nonnoise_span_to_unique_sentinel`
    for masks that start with non-noise; a rolled mask keeps sentinel i on noise span i in both)."""
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for i, (tid, noisy) in enumerate(zip(tokens, mask, strict=True)):
        if not noisy:
            inputs.append(tid)
            continue
        if i == 0 or not mask[i - 1]:
            span += 1
            inputs.append(sentinels[span])
            targets.append(sentinels[span])
        targets.append(tid)
    return inputs + [eos], targets + [eos]


def merge_back(
    inputs: Sequence[int], targets: Sequence[int], sentinels: Collection[int], eos: int
) -> list[int]:
    """The original tokens of a corrupted example: each sentinel of the input replaced by its target span."""
    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for tid in targets:
        if tid == eos:
            break
        if tid in sentinels:
            current = spans.setdefault(tid, [])
        elif current is None:
            raise ValueError("target does not start with a sentinel")
        else:
            current.append(tid)
    merged: list[int] = []
    for tid in inputs:
        if tid == eos:
            break
        if tid not in sentinels:
            merged.append(tid)
        elif tid in spans:
            merged.extend(spans.pop(tid))
        else:
            raise ValueError(f"input sentinel {tid} has no span in the target")
    if spans:
        raise ValueError(f"target spans without a sentinel in the input: {sorted(spans)}")
    return merged


def sentinel_ids(tokenizer: Any, n: int) -> list[int]:
    """Ids of `<extra_id_0>` ... `<extra_id_{n-1}>`; ConfigError naming the objective if there are too few."""
    try:
        return [tokenizer.convert_tokens_to_ids(sentinel(tokenizer, i)) for i in range(n)]
    except ConfigError as err:
        raise ConfigError(f"objective: span corruption needs {n} sentinel tokens per block ({err})") from None
