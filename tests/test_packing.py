"""Packed batches give the unpacked batch's loss and gradient (fp32 tolerance), per example too, on the
tiny and on t5-small shapes, with sdpa and eager attention; a broken mask makes the same checks fail."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from mto.errors import ConfigError
from mto.training import packing as packing_module
from mto.training.features import collate
from mto.training.packing import (
    assign_rows,
    check_supported,
    decide,
    pack,
    packed_forward,
    row_lengths,
    segment_masks,
)

PAD, EOS, START = 0, 1, 0
SHAPES = {
    "tiny": dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2),
    "t5-small": dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6, num_decoder_layers=6),
}


def model_of(shape: str, attn: str) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(vocab_size=200, dropout_rate=0.0, decoder_start_token_id=START, pad_token_id=PAD,
                      eos_token_id=EOS, feed_forward_proj="relu", **SHAPES[shape])  # fmt: skip
    model = T5ForConditionalGeneration(config).train()
    model.config._attn_implementation = attn
    return model


def batch(n: int, seed: int = 0) -> list[dict]:
    """Random examples of ATOMIC-like, very uneven lengths (sources 3-30, targets 2-12 tokens)."""
    rng = random.Random(seed)
    return [
        {"input_ids": [rng.randrange(2, 200) for _ in range(rng.randint(2, 29))] + [EOS],
         "labels": [rng.randrange(2, 200) for _ in range(rng.randint(1, 11))] + [EOS]}
        for _ in range(n)
    ]  # fmt: skip


def per_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none"
    ).view(labels.shape)


def unpacked(model, features):
    b = collate(features, PAD)
    out = model(**b)
    return out.loss, per_example_losses(out.logits, b["labels"]).sum(1)


def packed(model, features, breaks_mask: bool = False):
    p = pack(features, PAD, START)
    if breaks_mask:  # the control: one segment per row, as if every example saw its row-mates
        p = {**p, "encoder_segments": (p["encoder_segments"] > 0).long(),
             "decoder_segments": (p["decoder_segments"] > 0).long()}  # fmt: skip
    out = packed_forward(model, p)
    token_losses = per_example_losses(out.logits, p["labels"])
    rows = assign_rows([len(f["input_ids"]) for f in features], [len(f["labels"]) for f in features],
                       p["input_ids"].shape[1], p["labels"].shape[1])  # fmt: skip
    sums = torch.zeros(len(features))
    for r, members in enumerate(rows):
        for k, i in enumerate(members, start=1):
            sums[i] = token_losses[r][pack(features, PAD, START)["decoder_segments"][r] == k].sum()
    return out.loss, sums, p


def grads(model, loss) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("shape", ["tiny", pytest.param("t5-small", marks=pytest.mark.slow)])
def test_packed_loss_and_gradient_equal_the_unpacked_ones(shape, attn):
    model, features = model_of(shape, attn), batch(16 if shape == "tiny" else 8)
    loss_u, each_u = unpacked(model, features)
    g_u = grads(model, loss_u)
    loss_p, each_p, p = packed(model, features)
    g_p = grads(model, loss_p)
    assert p["input_ids"].shape[0] < len(features)  # fewer rows: something was packed
    assert torch.allclose(each_p, each_u.detach(), rtol=1e-5, atol=1e-5)
    assert abs(float(loss_p.detach()) - float(loss_u.detach())) <= 1e-5 * abs(float(loss_u.detach()))
    assert float((g_p - g_u).norm() / g_u.norm()) < 1e-5

    loss_b, each_b, _ = packed(model, features, breaks_mask=True)
    assert not torch.allclose(each_b, each_u.detach(), rtol=1e-3, atol=1e-3)
    assert float((grads(model, loss_b) - g_u).norm() / g_u.norm()) > 1e-3


def test_rows_hold_whole_examples_within_the_bucketed_lengths():
    features = batch(32, seed=3)
    p = pack(features, PAD, START, multiple=8)
    assert p["input_ids"].shape[1] % 8 == 0 and p["labels"].shape[1] % 8 == 0
    # every example's tokens, in order, exactly once; the decoder input is the labels shifted per segment
    seen = sorted(tuple(f["labels"]) for f in features)
    got = []
    for r in range(p["labels"].shape[0]):
        for k in range(1, int(p["decoder_segments"][r].max()) + 1):
            at = p["decoder_segments"][r] == k
            labels, dec_in = p["labels"][r][at].tolist(), p["decoder_input_ids"][r][at].tolist()
            assert dec_in == [START, *labels[:-1]]
            got.append(tuple(labels))
    assert sorted(got) == seen
    def padding(src: torch.Tensor, labels: torch.Tensor) -> float:  # share of computed positions
        return float(((src == PAD).sum() + (labels == -100).sum()) / (src.numel() + labels.numel()))

    plain = collate(features, PAD)
    assert padding(p["input_ids"], p["labels"]) < 0.75 * padding(plain["input_ids"], plain["labels"])


def test_longer_rows_are_chosen_when_they_compute_fewer_positions(monkeypatch):
    rng = random.Random(0)
    lengths = [([rng.randint(4, 24) for _ in range(32)], [rng.randint(2, 10) for _ in range(32)])
               for _ in range(50)]  # fmt: skip

    def computed(src: list[int], tgt: list[int], cap_src: int, cap_tgt: int) -> int:
        return len(assign_rows(src, tgt, cap_src, cap_tgt)) * (cap_src + cap_tgt)

    def padding_share() -> float:
        shares = []
        for src, tgt in lengths:
            cap_src, cap_tgt = row_lengths(src, tgt, 8)
            assert cap_src % 8 == 0 and cap_tgt % 8 == 0 and cap_src >= max(src) and cap_tgt >= max(tgt)
            shares.append(1 - (sum(src) + sum(tgt)) / computed(src, tgt, cap_src, cap_tgt))
        return sum(shares) / len(shares)

    chosen = padding_share()
    monkeypatch.setattr(packing_module, "WIDEST", 1)  # the control: rows only as long as the longest example
    shortest = padding_share()
    assert chosen < 0.7 * shortest, (chosen, shortest)  # here 0.14 against 0.23


def test_masks_keep_segments_apart():
    enc, dec, cross = segment_masks(torch.tensor([[1, 1, 2, 0]]), torch.tensor([[1, 2, 2, 0]]))
    assert enc[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1]]
    assert dec[0, 0].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]]
    assert cross[0, 0].tolist() == [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1]]


def test_packing_is_refused_where_it_would_not_be_exact_and_by_default_used_where_it_is():
    model = model_of("tiny", "sdpa")
    check_supported(model, "lora")
    assert decide(None, model, "full") and decide(None, model, "lora") and decide(True, model, "full")
    assert not decide(False, model, "full")
    assert not decide(None, model, "prefix") and not decide(None, model, "full", "fsdp")  # null: unpacked
    with pytest.raises(ConfigError, match="not with tuning=prefix"):
        decide(True, model, "prefix")
    model.config.model_type = "bart"
    assert not decide(None, model, "full")
    with pytest.raises(ConfigError, match="only for T5 models"):
        check_supported(model, "full")


def test_a_packed_run_trains_like_an_unpacked_one(tiny_world):
    """train.packing=true through the real loop, in float64 so that rounding cannot hide a difference: after
    30 steps the same loss and the same weights as without packing (same examples per step; only the
    summation order differs). In fp32 the two trajectories drift apart by rounding alone, which is why the
    benchmark's held-out losses of the two arms are not identical."""
    import copy

    from conftest import compose_train

    from mto.stages import steps
    from mto.training.features import tokenize_pairs
    from mto.training.loop import train_model

    task, tokenizer, built = tiny_world
    results, weights = {}, {}
    for packing in (False, True):
        cfg = compose_train(f"train.packing={packing}", "train.steps=30", "train.batch_size=16")
        pairs = steps.render(steps.get_template(cfg, task), task.train, tokenizer)
        features = tokenize_pairs(tokenizer, pairs, cfg.train.max_source_length, cfg.train.max_target_length)
        model = copy.deepcopy(built).double()
        results[packing] = train_model(model, tokenizer, features, cfg.train, "fp32", cfg.seed)
        weights[packing] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert results[True].steps == results[False].steps == 30
    assert results[True].final_loss == pytest.approx(results[False].final_loss, rel=1e-10)
    start = torch.cat([p.detach().flatten() for p in built.parameters()]).double()
    moved = float((weights[False] - start).norm())
    assert moved > 1.0  # training changed the weights, so equal weights are not trivially equal
    assert float((weights[True] - weights[False]).norm()) < 1e-9 * moved
