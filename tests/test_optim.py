"""train.optimizer=adafactor (transformers' Adafactor as the references set it) and epoch-based training
with the MTO code's epoch doubling for few heads (docs/reference-protocol.md 6a, 6b)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SMALL, compose_train, mto, read_json, run_dirs

from mto.config import TrainConfig, effective_train
from mto.training.loop import make_optimizer, total_steps


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 2))


def one_step(optimizer, net) -> list[torch.Tensor]:
    # a gradient of rank > 1: on a rank-1 one, Adafactor's factored moments are exact and its first step
    # equals AdamW's
    inputs = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    loss = net(inputs).pow(2).sum()
    loss.backward()
    optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


def test_adafactor_is_transformers_with_the_references_settings():
    from transformers.optimization import Adafactor

    net = tiny_net()
    optimizer, _ = make_optimizer(net, TrainConfig(optimizer="adafactor", lr=1e-2, warmup_steps=0), steps=10)
    assert isinstance(optimizer, Adafactor)
    settings = optimizer.defaults
    assert settings["lr"] == 1e-2 and settings["eps"] == (1e-30, 1e-3) and settings["clip_threshold"] == 1.0
    assert settings["decay_rate"] == -0.8 and settings["beta1"] is None
    assert not (settings["relative_step"] or settings["scale_parameter"] or settings["warmup_init"])
    after = one_step(optimizer, net)
    reference_net = tiny_net()
    reference = Adafactor(reference_net.parameters(), lr=1e-2, eps=(1e-30, 1e-3), clip_threshold=1.0,
                          decay_rate=-0.8, beta1=None, relative_step=False, scale_parameter=False,
                          warmup_init=False)  # fmt: skip
    expected = one_step(reference, reference_net)
    adamw_net = tiny_net()
    adamw, _ = make_optimizer(adamw_net, TrainConfig(lr=1e-2, warmup_steps=0), steps=10)
    assert all(torch.allclose(a, b) for a, b in zip(after, expected, strict=True))
    assert not all(torch.allclose(a, b) for a, b in zip(after, one_step(adamw, adamw_net), strict=True))


def test_epochs_win_over_steps_when_set():
    assert total_steps(TrainConfig(steps=600, epochs=2, batch_size=4), n_features=10) == 6  # 2 x ceil(10/4)
    assert total_steps(TrainConfig(steps=600, batch_size=4), n_features=10) == 600
    assert total_steps(TrainConfig(steps=600, epochs=0.5, batch_size=4), n_features=10) == 2


@pytest.mark.parametrize(("n_train", "up_to", "epochs"), [(10, 10, 6), (5, 10, 6), (11, 10, 3),
                                                          (None, 10, 3), (5, None, 3)])  # fmt: skip
def test_epochs_double_for_few_heads_only_when_the_protocol_says_so(n_train, up_to, epochs):
    overrides = ["train.epochs=3", f"data.n_train={'null' if n_train is None else n_train}"]
    if up_to is not None:
        overrides.append(f"train.double_epochs_up_to={up_to}")
    assert effective_train(compose_train(*overrides)).epochs == epochs


@pytest.mark.slow
def test_train_runs_the_doubled_epochs_with_adafactor(tmp_path):
    mto("train", *SMALL, "data.n_train=2", "train.epochs=1", "train.double_epochs_up_to=10",
        "train.optimizer=adafactor", "train.lr=1e-2", "eval.after_train=false", cwd=tmp_path)  # fmt: skip
    (run,) = run_dirs(tmp_path / "outputs" / "train")
    figures = read_json(run / "run.json")["figures"]
    assert figures["train_epochs"] == 2
    from mto.protocol import stamp

    same = ["data.n_train=2", "train.epochs=1", "train.double_epochs_up_to=10", "train.optimizer=adafactor"]
    assert read_json(run / "run.json")["protocol"] == stamp(compose_train(*SMALL, *same, "train.lr=1e-2"))
    assert figures["train_steps"] == 2 * math.ceil(figures["train_examples"] / 16)  # SMALL: batch 16
