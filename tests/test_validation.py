"""The loop's schedules (mto/training/loop.py): transformers' `get_scheduler` under our names."""

from __future__ import annotations

import copy
import math

import pytest
from conftest import compose_train

from mto.config import Scheduler, TrainConfig
from mto.stages import steps
from mto.training.features import tokenize_pairs
from mto.training.loop import make_optimizer


@pytest.fixture(scope="module")
def world(tiny_world):
    task, tokenizer, model = tiny_world
    pairs = steps.render(steps.get_template(compose_train(), task), task.train, tokenizer)
    return tokenizer, model, tokenize_pairs(tokenizer, pairs[:200], 32, 16)


def train_cfg(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(steps=24, batch_size=8, warmup_steps=0, log_every=4), **changes})


# ------------------------------------------------------------------------------ schedules
BASE, STEPS, WARMUP = 1e-2, 20, 4


def learning_rates(model, name: str) -> list[float]:
    """The learning rate each of STEPS optimiser steps uses under schedule `name`."""
    cfg = train_cfg(lr=BASE, warmup_steps=WARMUP, scheduler=Scheduler(name))
    optimizer, scheduler = make_optimizer(copy.deepcopy(model), cfg, STEPS)
    rates = []
    for _ in range(STEPS):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    ("name", "after_warmup"),
    [
        ("linear", lambda s: (STEPS - s) / (STEPS - WARMUP)),
        ("cosine", lambda s: 0.5 * (1 + math.cos(math.pi * (s - WARMUP) / (STEPS - WARMUP)))),
        ("constant", lambda s: 1.0),  # our old name: the warm-up is kept (transformers' constant_with_warmup)
        ("constant_with_warmup", lambda s: 1.0),
        ("inverse_sqrt", lambda s: math.sqrt(WARMUP / s)),  # T5: 1/sqrt(step), timescale = warm-up
    ],
)
def test_each_schedule_warms_up_linearly_then_follows_its_curve(world, name, after_warmup):
    _, model, _ = world
    rates = learning_rates(model, name)
    # transformers' warm-up starts at 0 (the hand-written one started at 1/warmup)
    assert rates[:WARMUP] == pytest.approx([BASE * s / WARMUP for s in range(WARMUP)])
    assert rates[WARMUP:] == pytest.approx([BASE * after_warmup(s) for s in range(WARMUP, STEPS)])
