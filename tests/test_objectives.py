"""Tests for mto.objectives: T5 span corruption by its definition, tail filling, mapping, prefix LM, mixed."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mto.config import ObjectiveConfig
from mto.errors import ConfigError
from mto.models import load_or_train_tokenizer
from mto.objectives import Material, get_objective, triple_sentence
from mto.objectives.filling import (
    SpanLengths,
    count_spans,
    merge_back,
    noise_counts,
    random_segmentation,
    random_spans_mask,
    span_lengths,
)
from mto.objectives.prefix_lm import equal_chunks
from mto.tasks.synthetic import generate_world, world_sentences
from mto.templates import Template

CONF = Path(__file__).resolve().parents[1] / "conf"
PHRASES = {k: str(v) for k, v in OmegaConf.load(CONF / "phrases" / "mto.yaml").items()}
TICKET = {
    "head": "PersonX buys a ticket",
    "relation": "xIntent",
    "tail": "to see a movie",
    "group": "xIntent",
}
STATEMENT = "PersonX buys a ticket because PersonX intended"


@pytest.fixture(scope="module")
def world() -> list[str]:
    """About a thousand one-fact sentences (~22k tokens) of a small synthetic world."""
    triples = [t for split in generate_world(60, 0).values() for t in split]
    return world_sentences(triples)


@pytest.fixture(scope="module")
def tok(world, tmp_path_factory):
    """A tiny T5 tokenizer trained on the world's sentences, cached in a private folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTO_CACHE_DIR", str(tmp_path_factory.mktemp("objectives-cache")))
        extra = [f"{STATEMENT} to see a movie", "PersonX buys a ticket before PersonX, to see a movie"]
        return load_or_train_tokenizer(world + extra, 400)


def cfg(name: str, **options) -> ObjectiveConfig:
    return ObjectiveConfig(name=name, **options)


def sentinel_ids(tok, n: int = 100) -> list[int]:
    return [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(n)]


def plain(tok, texts: list[str]) -> list[list[int]]:
    return tok(texts, add_special_tokens=False)["input_ids"]


def span_stats(features: list[dict], sentinels: set[int]) -> tuple[int, int, int]:
    """(raw tokens, noise tokens, noise spans) over corrupted features."""
    raw = noise = spans = 0
    for f in features:
        n_spans = sum(t in sentinels for t in f["labels"])
        n_noise = len(f["labels"]) - n_spans - 1
        raw += len(f["input_ids"]) - n_spans - 1 + n_noise
        noise += n_noise
        spans += n_spans
    return raw, noise, spans


# --- span corruption: lengths ------------------------------------------------------------------------


def test_span_lengths_are_t5s():
    assert span_lengths(512) == SpanLengths(raw=568, inputs=512, targets=114)
    assert span_lengths(256) == SpanLengths(raw=284, inputs=256, targets=58)
    # The default: 70 x 0.15 = 10.5 rounds half-to-even to 10 noise tokens in 3 spans: 60 + 3 + 1 = 64;
    # 71 tokens would give 11 noise in 4 spans: 60 + 4 + 1 = 65 > 64.
    assert span_lengths(64) == SpanLengths(raw=70, inputs=64, targets=14)
    assert get_objective(cfg("span_corruption")).lengths == SpanLengths(70, 64, 14)
    # A roll may split the last span in two: room for one more sentinel.
    assert span_lengths(64, random_roll=True).raw == 69
    assert span_lengths(3) == SpanLengths(raw=2, inputs=3, targets=3)  # the smallest: 1 kept, 1 noise
    with pytest.raises(ConfigError, match="objective.input_length=3: too short"):
        get_objective(cfg("span_corruption", input_length=3, random_roll=True))
    with pytest.raises(ConfigError, match="objective.input_length"):
        get_objective(cfg("span_corruption", input_length=2))


@pytest.mark.parametrize("input_length", [64, 256, 512])
def test_full_blocks_have_exact_lengths(tok, world, input_length):
    objective = get_objective(cfg("span_corruption", input_length=input_length))
    features = objective.features(Material(texts=world), tok, random.Random(0))
    want = objective.lengths
    total = sum(len(ids) for ids in plain(tok, world))
    assert len(features) == -(-total // want.raw)  # every token is in a block, blocks of T raw tokens
    for f in features[:-1]:
        assert (len(f["input_ids"]), len(f["labels"])) == (want.inputs, want.targets)
    # T5 keeps the shorter last block, corrupted at its own length.
    assert len(features[-1]["input_ids"]) <= input_length


def test_noise_counts_round_as_seqios_mask():
    assert noise_counts(2, 0.15, 3.0) == (1, 1)  # at least one noise and one kept token, one span
    assert noise_counts(10, 0.15, 3.0) == (2, 1)  # 1.5 -> 2, 2 / 3 -> 1
    assert noise_counts(70, 0.15, 3.0) == (10, 3)  # 10.5 -> 10 (half to even)
    # seqio's mask rounds in float32: 190 x 0.15 is 28.500002 there (29), 28.5 in float64 (28).
    assert noise_counts(190, 0.15, 3.0) == (29, 10)
    # More spans than kept tokens cannot alternate: capped (seqio would fail here).
    assert noise_counts(10, 0.9, 1.0) == (9, 1)


def test_length_check_refuses_wrong_lengths():
    objective = get_objective(cfg("span_corruption"))
    block = list(range(3, 73))  # a full block of 70 tokens: 10 noise tokens in 3 spans
    mask = [False] * 20 + [True] * 3 + [False] * 20 + [True] * 3 + [False] * 20 + [True] * 4
    objective.check(block, mask, [0] * 64, [0] * 14)
    with pytest.raises(RuntimeError, match="expected 64 / 14"):
        objective.check(block, mask, [0] * 63, [0] * 14)
    with pytest.raises(RuntimeError, match="expected 64 / 14"):
        objective.check(block, mask, [0] * 64, [0] * 15)


# --- span corruption: the definition -------------------------------------------------------------------


@pytest.mark.parametrize("input_length", [256, 512])
def test_noise_share_and_span_length_match_the_settings(tok, world, input_length):
    features = []
    for seed in range(3):
        objective = get_objective(cfg("span_corruption", input_length=input_length))
        features += objective.features(Material(texts=world), tok, random.Random(seed))
    raw, noise, spans = span_stats(features, set(sentinel_ids(tok)))
    assert abs(noise / raw - 0.15) <= 0.01
    assert abs(noise / spans - 3.0) <= 0.3


def test_other_settings_are_followed(tok, world):
    objective = get_objective(
        cfg("filling", form="span", noise_density=0.3, mean_noise_span_length=5.0, input_length=256)
    )
    raw, noise, spans = span_stats(
        objective.features(Material(texts=world), tok, random.Random(0)), set(sentinel_ids(tok))
    )
    assert abs(noise / raw - 0.3) <= 0.01
    assert abs(noise / spans - 5.0) <= 0.5


def test_the_default_block_is_noised_by_the_definition(tok, world):
    """64 -> 70-token blocks with 10 noise tokens in 3 spans: share 0.143, mean span 3.33 (T5's rounding)."""
    features = get_objective(cfg("span_corruption")).features(Material(texts=world), tok, random.Random(0))
    raw, noise, spans = span_stats(features[:-1], set(sentinel_ids(tok)))
    assert (noise, spans) == (10 * len(features[:-1]), 3 * len(features[:-1]))
    assert abs(noise / raw - 0.15) <= 0.01


def test_random_segmentation_is_uniform_over_non_empty_splits():
    rng = random.Random(0)
    draws = [random_segmentation(10, 3, rng) for _ in range(6000)]
    assert all(sum(d) == 10 and len(d) == 3 and min(d) >= 1 for d in draws)
    # Uniform over the C(9, 2) = 36 compositions: each appears about 6000 / 36 = 167 times.
    counts = Counter(tuple(d) for d in draws)
    assert len(counts) == 36
    assert max(counts.values()) < 240 and min(counts.values()) > 100
    for i in range(3):
        assert abs(sum(d[i] for d in draws) / len(draws) - 10 / 3) < 0.1


def test_masks_alternate_from_non_noise_and_end_in_noise():
    rng = random.Random(0)
    for _ in range(200):
        mask = random_spans_mask(70, 10, 3, rng)
        assert len(mask) == 70 and sum(mask) == 10 and count_spans(mask) == 3
        assert not mask[0] and mask[-1]
    rolled = [random_spans_mask(70, 10, 3, rng, random_roll=True) for _ in range(200)]
    assert all(sum(m) == 10 and count_spans(m) in (3, 4) for m in rolled)
    assert any(m[0] for m in rolled) and any(not m[-1] for m in rolled)


def test_sentinels_are_in_order_and_everything_merges_back(tok, world):
    sentinels = sentinel_ids(tok)
    eos = tok.eos_token_id
    for input_length in (64, 512):
        objective = get_objective(cfg("span_corruption", input_length=input_length))
        features = objective.features(Material(texts=world), tok, random.Random(1))
        merged = []
        for f in features:
            inputs, labels = f["input_ids"], f["labels"]
            assert inputs[-1] == eos and labels[-1] == eos
            in_sentinels = [t for t in inputs if t in sentinels]
            assert in_sentinels == sentinels[: len(in_sentinels)]
            assert [t for t in labels if t in sentinels] == in_sentinels
            assert labels[0] == sentinels[0]
            merged += merge_back(inputs, labels, set(sentinels), eos)
        # Documents are concatenated without separators, in order.
        assert merged == [t for ids in plain(tok, world) for t in ids]


def test_unpacked_texts_are_corrupted_one_by_one(tok, world):
    texts = world[:50]
    objective = get_objective(cfg("span_corruption", pack=False))
    features = objective.features(Material(texts=texts), tok, random.Random(0))
    sentinels = set(sentinel_ids(tok))
    assert len(features) == len(texts)
    for f, ids in zip(features, plain(tok, texts), strict=True):
        assert merge_back(f["input_ids"], f["labels"], sentinels, tok.eos_token_id) == ids
        assert f["input_ids"][-2] in sentinels  # without a roll the last span is always noise


def test_roll_and_random_noise_count_vary_short_texts(tok, world):
    texts = world[:300]
    sentinels = set(sentinel_ids(tok))
    fixed = get_objective(cfg("span_corruption", pack=False)).features(
        Material(texts=texts), tok, random.Random(0)
    )
    varied = get_objective(cfg("span_corruption", pack=False, random_roll=True, random_noise_count=True))
    features = varied.features(Material(texts=texts), tok, random.Random(0))
    by_length: dict[int, set[int]] = {}
    for f, ids in zip(features, plain(tok, texts), strict=True):
        assert merge_back(f["input_ids"], f["labels"], sentinels, tok.eos_token_id) == ids
        assert len(f["input_ids"]) <= 64
        by_length.setdefault(len(ids), set()).add(len(f["labels"]))
    assert any(len(lengths) > 1 for lengths in by_length.values())  # noise counts vary per text length
    assert any(f["input_ids"][-2] not in sentinels for f in features)  # the gap is not always last
    assert all(f["input_ids"][-2] in sentinels for f in fixed)


def test_random_noise_count_keeps_the_density(tok, world):
    objective = get_objective(cfg("span_corruption", input_length=256, random_noise_count=True))
    features = []
    for seed in range(3):
        features += objective.features(Material(texts=world), tok, random.Random(seed))
    raw, noise, spans = span_stats(features, set(sentinel_ids(tok)))
    assert abs(noise / raw - 0.15) <= 0.01
    assert all(len(f["input_ids"]) <= 256 for f in features)


# --- records: tail filling, mapping, prefix LM -----------------------------------------------------------


def test_triple_sentence():
    assert triple_sentence(TICKET, PHRASES) == (STATEMENT, "to see a movie")
    after = {**TICKET, "relation": "isAfter"}
    assert triple_sentence(after, {"isAfter": "before {head}, PersonX"}) == (
        "before PersonX buys a ticket, PersonX",
        "to see a movie",
    )
    with pytest.raises(ConfigError, match="phrases.xIntent"):
        triple_sentence(TICKET, {})


def test_tail_filling_is_the_masked_prompting_format(tok):
    [f] = get_objective(cfg("filling")).features(
        Material(records=[TICKET], phrases=PHRASES), tok, random.Random(0)
    )
    s0, eos = tok.convert_tokens_to_ids("<extra_id_0>"), tok.eos_token_id
    assert f["input_ids"][-2:] == [s0, eos]
    assert tok.decode(f["input_ids"][:-2]) == STATEMENT
    assert f["labels"][0] == s0 and f["labels"][-1] == eos
    assert tok.decode(f["labels"][1:], skip_special_tokens=True) == "to see a movie"
    # Exactly what fine-tuning with template=masked_prompting feeds the model.
    template = Template.from_config(OmegaConf.load(CONF / "template" / "masked_prompting.yaml"), PHRASES)
    source, target = template.render(TICKET, lambda i: f"<extra_id_{i}>")
    assert f == {"input_ids": tok(source)["input_ids"], "labels": tok(target)["input_ids"]}


def test_mapping_record(tok):
    [f] = get_objective(cfg("mapping")).features(
        Material(records=[TICKET], phrases=PHRASES), tok, random.Random(0)
    )
    assert tok.decode(f["input_ids"], skip_special_tokens=True) == STATEMENT
    assert tok.decode(f["labels"], skip_special_tokens=True) == "to see a movie"
    assert f["input_ids"][-1] == f["labels"][-1] == tok.eos_token_id
    assert not set(f["input_ids"] + f["labels"]) & set(sentinel_ids(tok))


def test_mapping_texts_are_prefix_lm(tok, world):
    material = Material(texts=world[:20])
    mapped = get_objective(cfg("mapping")).features(material, tok, random.Random(5))
    assert mapped == get_objective(cfg("prefix_lm")).features(material, tok, random.Random(5))


def test_prefix_lm_record_splits_within_range_and_merges_back(tok):
    objective = get_objective(cfg("prefix_lm"))
    full = plain(tok, [f"{STATEMENT} to see a movie"])[0]
    eos = tok.eos_token_id
    cuts = set()
    for seed in range(300):
        [f] = objective.features(Material(records=[TICKET], phrases=PHRASES), tok, random.Random(seed))
        assert f["input_ids"][-1] == f["labels"][-1] == eos
        prefix, rest = f["input_ids"][:-1], f["labels"][:-1]
        assert prefix + rest == full
        cuts.add(len(prefix))
    assert cuts == set(range(1, len(full)))  # uniform over [1, L-1]: every point seen, none outside
    assert tok.decode(full) == f"{STATEMENT} to see a movie"


def test_prefix_lm_cuts_long_texts_to_fit(tok, world):
    text = " ".join(world[:40])
    ids = plain(tok, [text])[0]
    features = get_objective(cfg("prefix_lm", input_length=64)).features(
        Material(texts=[text]), tok, random.Random(0)
    )
    assert len(features) == -(-len(ids) // 64)
    assert all(len(f["input_ids"]) <= 64 and len(f["labels"]) <= 64 for f in features)
    assert [t for f in features for t in f["input_ids"][:-1] + f["labels"][:-1]] == ids
    assert [len(c) for c in equal_chunks(list(range(10)), 4)] == [4, 3, 3]


def test_forms(tok, world):
    records = Material(records=[TICKET], phrases=PHRASES)
    with pytest.raises(ConfigError, match="objective.form=tail"):
        get_objective(cfg("filling", form="tail")).features(Material(texts=world[:3]), tok, random.Random(0))
    with pytest.raises(ConfigError, match="objective.form"):
        get_objective(cfg("filling", form="gaps"))
    with pytest.raises(ConfigError, match="span_corruption"):
        get_objective(cfg("span_corruption", form="tail"))
    # form=span corrupts a record's whole statement.
    [f] = get_objective(cfg("filling", form="span")).features(records, tok, random.Random(0))
    merged = merge_back(f["input_ids"], f["labels"], set(sentinel_ids(tok)), tok.eos_token_id)
    assert tok.decode(merged) == f"{STATEMENT} to see a movie"


# --- mixtures -----------------------------------------------------------------------------------------------


def records_of(relations: list[str], n: int) -> list[dict]:
    return [
        {**TICKET, "relation": rel, "group": rel, "tail": f"to see movie {i}"}
        for i in range(n)
        for rel in relations
    ]


def test_mixed_by_group_routes_each_relation(tok):
    records = records_of(["xIntent", "xNeed", "xAttr"], 4)
    config = cfg("mixed", by_group={"xIntent": "filling", "xNeed": "mapping"}, default="prefix_lm")
    got = get_objective(config).features(Material(records=records, phrases=PHRASES), tok, random.Random(7))

    def only(rel: str) -> Material:
        return Material(records=[r for r in records if r["relation"] == rel], phrases=PHRASES)

    rng = random.Random(7)  # routing by group draws nothing, so prefix_lm sees the same stream
    want = get_objective(cfg("filling")).features(only("xIntent"), tok, rng)
    want += get_objective(cfg("mapping")).features(only("xNeed"), tok, rng)
    want += get_objective(cfg("prefix_lm")).features(only("xAttr"), tok, rng)
    assert got == want


def test_mixed_by_rates_draws_about_the_rates(tok):
    records = records_of(["xIntent"], 1000)
    config = cfg("mixed", rates={"filling": 0.7, "mapping": 0.3})
    features = get_objective(config).features(
        Material(records=records, phrases=PHRASES), tok, random.Random(0)
    )
    s0 = tok.convert_tokens_to_ids("<extra_id_0>")
    filled = sum(f["labels"][0] == s0 for f in features)
    assert len(features) == 1000 and abs(filled / 1000 - 0.7) < 0.05


def test_mixed_config_errors(tok, world):
    with pytest.raises(ConfigError, match="objective=mixed needs objective.by_group"):
        get_objective(cfg("mixed"))
    with pytest.raises(ConfigError, match="objective.by_group.xIntent='mixed'"):
        get_objective(cfg("mixed", by_group={"xIntent": "mixed"}))
    with pytest.raises(ConfigError, match="objective.rates.mlm"):
        get_objective(cfg("mixed", rates={"mlm": 1.0}))
    with pytest.raises(ConfigError, match="objective.rates.filling"):
        get_objective(cfg("mixed", rates={"filling": -1}))
    only_groups = get_objective(cfg("mixed", by_group={"xIntent": "filling"}))
    with pytest.raises(ConfigError, match="raw texts"):
        only_groups.features(Material(texts=world[:2]), tok, random.Random(0))


# --- all objectives -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        cfg("mapping"),
        cfg("filling"),
        cfg("span_corruption", random_roll=True, random_noise_count=True),
        cfg("prefix_lm"),
        cfg("mixed", rates={"filling": 1, "span_corruption": 1, "prefix_lm": 1}),
    ],
    ids=lambda c: c.name,
)
def test_same_seed_same_features(tok, world, config):
    # Records and texts: filling (auto) fills the records' tails and corrupts the texts.
    material = Material(records=records_of(["xIntent", "xNeed"], 10), texts=world[:60], phrases=PHRASES)
    first = get_objective(config).features(material, tok, random.Random(11))
    assert first and first == get_objective(config).features(material, tok, random.Random(11))
    assert all(f["labels"][-1] == tok.eos_token_id for f in first)
    assert first != get_objective(config).features(material, tok, random.Random(12))


def test_unknown_or_missing_name():
    with pytest.raises(
        ConfigError, match=r"objective.name: unknown objective 'mlm'.*filling, mapping, mixed, prefix_lm, s"
    ):
        get_objective(cfg("mlm"))
    with pytest.raises(ConfigError, match="objective.name is not set"):
        get_objective(ObjectiveConfig())
