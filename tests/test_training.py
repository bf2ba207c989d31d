"""The training loop's own parts (mto/training/) on the tiny model: the tokenised-feature cache, batches,
per-epoch resampling of an objective's random choices (and resuming in the middle of it), and greedy
decoding against `model.generate`."""

from __future__ import annotations

import copy
import os
import random
import signal

import pytest
import torch
from conftest import compose_train

from mto.config import ObjectiveConfig, TrainConfig
from mto.errors import Interrupted
from mto.objectives import Material, get_objective
from mto.objectives.filling import merge_back, sentinel_ids
from mto.stages import steps
from mto.stages.adapt import epoch_features
from mto.training.checkpoint import Checkpoint
from mto.training.decoding import greedy_generate, supports_greedy_generate
from mto.training.features import (
    cached_features,
    collate,
    epoch_batches,
    length_grouped_batches,
    tokenize_pairs,
)
from mto.training.loop import train_model


@pytest.fixture(scope="module")
def world(tiny_world):
    """The tiny world with its training pairs rendered by the default template."""
    task, tokenizer, model = tiny_world
    pairs = steps.render(steps.get_template(compose_train(), task), task.train, tokenizer)
    return task, tokenizer, model, pairs


def train_cfg(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(steps=12, batch_size=8, warmup_steps=0, log_every=4), **changes})


# ------------------------------------------------------------------------------ the feature cache
def test_cached_features_are_the_tokenisation_and_a_second_call_reads_them(world, tmp_path, monkeypatch):
    _, tokenizer, _, pairs = world
    monkeypatch.setenv("MTO_CACHE_DIR", str(tmp_path))
    pairs = pairs[:200]
    plain = tokenize_pairs(tokenizer, pairs, 10, 4)
    first, hit = cached_features(tokenizer, pairs, 10, 4)
    assert first == plain and not hit
    # Truncation took effect and was kept.
    assert any(len(f["input_ids"]) == 10 for f in plain) and any(len(f["labels"]) == 4 for f in plain)
    (entry,) = (tmp_path / "features").iterdir()
    assert {p.name for p in entry.iterdir()} == {
        "input_ids.npy", "input_ids.offsets.npy", "labels.npy", "labels.offsets.npy",
    }  # fmt: skip

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr("mto.training.features.tokenize_pairs", no_tokenising)
    second, hit = cached_features(tokenizer, pairs, 10, 4)
    assert second == plain and hit
    # Other lengths, other texts or another tokenizer are other entries: each would tokenise anew.
    other_tokenizer = copy.deepcopy(tokenizer)
    other_tokenizer.add_tokens(["<soft_0>"])
    changed = [pairs[:199] + [(pairs[199][0], pairs[199][1] + "!")]]
    for args in ((tokenizer, pairs, 11, 4), (tokenizer, pairs, 10, 5), (tokenizer, *changed, 10, 4),
                 (other_tokenizer, pairs, 10, 4)):  # fmt: skip
        with pytest.raises(AssertionError, match="tokenised again"):
            cached_features(*args)


# ------------------------------------------------------------------------------ batches
def test_length_grouped_batches_cover_each_example_once_with_little_padding(world):
    _, tokenizer, _, pairs = world
    features = tokenize_pairs(tokenizer, pairs, 64, 32)
    n = len(features)
    batches = length_grouped_batches(features, 16, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert all(len(b) == 16 for b in batches[:-1]) or sum(len(b) < 16 for b in batches) == 1

    def padding(groups):
        return sum(max(len(features[i]["input_ids"]) for i in b) * len(b) for b in groups)

    order = list(range(n))
    random.Random(0).shuffle(order)
    shuffled = [order[j : j + 16] for j in range(0, n, 16)]
    assert padding(batches) < padding(shuffled)
    again = length_grouped_batches(features, 16, random.Random(0))
    assert again == batches and length_grouped_batches(features, 16, random.Random(1)) != batches


def test_default_batches_are_uniformly_random_and_grouping_is_opt_in(world):
    _, tokenizer, _, pairs = world
    features = tokenize_pairs(tokenizer, pairs, 64, 32)
    assert compose_train().train.group_by_length is False
    plain = epoch_batches(features, 16, random.Random(0), group_by_length=False)
    assert sorted(i for b in plain for i in b) == list(range(len(features)))
    assert [len(b) for b in plain[1:]] == [16] * (len(plain) - 1)  # the short batch is popped last
    grouped = epoch_batches(features, 16, random.Random(0), group_by_length=True)
    assert grouped == length_grouped_batches(features, 16, random.Random(0))

    def spread(groups):  # mean within-batch range of source lengths
        lengths = [[len(features[i]["input_ids"]) for i in b] for b in groups]
        return sum(max(x) - min(x) for x in lengths) / len(lengths)

    assert spread(grouped) < spread(plain) / 3


# ------------------------------------------------------------------------------ resampling per epoch
def span_corruption_setup(world):
    task, tokenizer, _, _ = world
    objective = get_objective(ObjectiveConfig(name="span_corruption", input_length=32))
    phrases = dict(compose_train().phrases)
    material = Material(records=list(task.train)[:300], phrases=phrases)
    return objective, material, tokenizer


def test_each_epoch_draws_new_span_masks_over_the_same_text(world):
    objective, material, tokenizer = span_corruption_setup(world)
    features = epoch_features(objective, material, tokenizer, seed=5)
    sentinels = set(sentinel_ids(tokenizer, 100))
    eos = tokenizer.eos_token_id
    epochs = [features(e) for e in range(3)]
    assert epochs[0] == objective.features(material, tokenizer, random.Random(5))  # epoch 0: the run's seed
    assert features(1) == epochs[1]  # deterministic per epoch (a resumed run rebuilds the same)
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    texts = [[merge_back(f["input_ids"], f["labels"], sentinels, eos) for f in feats] for feats in epochs]
    assert texts[0] == texts[1] == texts[2]  # the same blocks of text, other masks


def signal_at(epoch_to_stop: int, inner):
    """A resample function that sends SIGUSR1 to this process when the loop enters `epoch_to_stop`."""

    def resample(epoch: int):
        if epoch == epoch_to_stop:
            os.kill(os.getpid(), signal.SIGUSR1)
        return inner(epoch)

    return resample


def test_training_uses_each_epochs_features_and_resumes_within_a_resampled_epoch(world, tmp_path):
    objective, material, tokenizer = span_corruption_setup(world)
    _, _, built, _ = world
    features = epoch_features(objective, material, tokenizer, seed=5)
    first = features(0)
    n_batches = -(-len(first) // 8)
    cfg = train_cfg(steps=3 * n_batches + 2)  # into the fourth epoch

    seen: list[int] = []

    def recording(epoch: int):
        seen.append(epoch)
        return features(epoch)

    straight = copy.deepcopy(built)
    result = train_model(straight, tokenizer, first, cfg, "fp32", 7, resample=recording)
    assert seen == [1, 2, 3]
    assert result.steps == cfg.steps

    # Without resampling the same steps end elsewhere: the later epochs really trained on other masks.
    fixed = copy.deepcopy(built)
    train_model(fixed, tokenizer, first, cfg, "fp32", 7)
    assert not torch.equal(fixed.shared.weight, straight.shared.weight)

    # Stopped by a signal in epoch 2, resumed from its checkpoint: the very same weights at the end.
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    previous = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        interrupted = copy.deepcopy(built)
        with pytest.raises(Interrupted):
            train_model(interrupted, tokenizer, first, cfg, "fp32", 7, checkpoint=checkpoint,
                                 resample=signal_at(2, features))  # fmt: skip
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert checkpoint.exists()
    resumed = copy.deepcopy(built)
    seen.clear()
    train_model(resumed, tokenizer, first, cfg, "fp32", 7, checkpoint=checkpoint, resample=recording)
    assert seen == [2, 3]  # rebuilt the epoch it stopped in, then went on
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------ greedy decoding
def strip_padding(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def test_greedy_generate_gives_what_generate_gives(world):
    _, tokenizer, built, pairs = world
    model = copy.deepcopy(built)
    # A little training, so that outputs differ by input and rows end (EOS) at different steps.
    features = tokenize_pairs(tokenizer, pairs, 64, 32)
    train_model(model, tokenizer, features, train_cfg(steps=150, batch_size=16), "fp32", 0)
    assert supports_greedy_generate(model)
    sources = [s for s, _ in pairs[::19][:40]]  # many heads and relations
    batch = collate(
        [{"input_ids": ids, "labels": [0]} for ids in tokenizer(sources)["input_ids"]], tokenizer.pad_token_id
    )
    eos = tokenizer.eos_token_id
    for max_new_tokens in (4, 12):
        ours = greedy_generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens)
        theirs = model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=1,
            do_sample=False, max_new_tokens=max_new_tokens,
        ).tolist()  # fmt: skip
        assert ours == [strip_padding(row, eos) for row in theirs]
    lengths = sorted(len(row) for row in ours)
    # Rows ended (EOS) at several steps, so finished rows left the batch mid-way.
    assert len(set(lengths)) >= 3 and sum(row[-1] == eos for row in ours) >= len(ours) // 4


def test_greedy_generate_is_not_used_where_it_would_differ(world):
    _, _, built, _ = world
    model = copy.deepcopy(built)
    model.generation_config.min_new_tokens = 3
    assert not supports_greedy_generate(model)
