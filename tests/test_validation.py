"""The loop's steering (mto/training/loop.py, validation.py) on the tiny model: transformers' schedules
under our names, validation every N steps with the best weights kept and early stopping (figures scripted
so each case is known), what the loop reports per step, and a resume in the middle of it all."""

from __future__ import annotations

import copy
import math
import signal

import pytest
import torch
from conftest import compose_train

from mto.config import Scheduler, TrainConfig
from mto.errors import Interrupted
from mto.stages import steps
from mto.training.checkpoint import Checkpoint
from mto.training.features import tokenize_pairs
from mto.training.loop import make_optimizer, train_model
from mto.training.validation import Validation


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


# ------------------------------------------------------------------------------ validation
class Recorder:
    """A StepLog that keeps what the loop reports."""

    def __init__(self):
        self.starts: list[int] = []
        self.lines: list[tuple[int, dict]] = []

    def start(self, step: int) -> None:
        self.starts.append(step)

    def log(self, step: int, figures: dict) -> None:
        self.lines.append((step, figures))


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[n], b[n]) for n in a)


def run(world, values, patience=None, mode="max", keep_best=True, steps_=24, checkpoint=None,
        done=0, interrupt_at=None, step_log=None):  # fmt: skip
    """Train with validation every 3 steps whose k-th evaluation (counting `done` earlier ones) gives
    `values[k]`; returns the model, the weights each evaluation saw, and the result."""
    tokenizer, built, features = world
    model = copy.deepcopy(built)
    seen: list[dict] = []

    def evaluate() -> dict:
        seen.append(weights(model))
        k = done + len(seen) - 1
        if k == interrupt_at:
            signal.raise_signal(signal.SIGUSR1)  # as SLURM would, in the middle of a step
        return {"dev_rougeL": values[k], "dev_exact_match": 0.0}

    validation = Validation(every=3, evaluate=evaluate, monitor="dev_rougeL", mode=mode, patience=patience,
                            keep_best=keep_best)  # fmt: skip
    result = train_model(model, tokenizer, features, train_cfg(steps=steps_), "fp32", 7,
                         checkpoint=checkpoint, validation=validation, step_log=step_log)  # fmt: skip
    return model, seen, result


def test_a_run_that_keeps_improving_trains_to_the_end_with_its_last_weights(world):
    log = Recorder()
    model, seen, result = run(world, [0.1 * k for k in range(1, 9)], patience=1, step_log=log)
    assert not result.stopped_early and result.steps == 24 and result.evaluations == 8
    assert result.best_step == 24 and result.weights_step == 24 and same(weights(model), seen[-1])
    # The loop reports loss, lr and tokens/s every log_every (4) steps, each evaluation's figures every 3.
    assert log.starts == [0]
    assert [s for s, f in log.lines if "loss" in f] == [4, 8, 12, 16, 20, 24]
    assert [s for s, f in log.lines if "dev_rougeL" in f] == [3, 6, 9, 12, 15, 18, 21, 24]
    assert all(set(f) == {"loss", "lr", "tokens_per_s"} for _, f in log.lines if "loss" in f)
    assert [f["dev_rougeL"] for _, f in log.lines if "dev_rougeL" in f] == [0.1 * k for k in range(1, 9)]


def test_a_run_whose_dev_figure_stops_improving_stops_and_keeps_its_best_weights(world):
    values = [0.1, 0.4, 0.3, 0.35, 0.9, 0.9, 0.9, 0.9]  # best at the 2nd evaluation (step 6)
    model, seen, result = run(world, values, patience=2)
    assert result.stopped_early and result.steps == 12 and result.evaluations == 4  # 2 without improvement
    assert result.best_step == 6 and result.weights_step == 6 and result.best_figures["dev_rougeL"] == 0.4
    assert same(weights(model), seen[1]) and not same(weights(model), seen[3])
    # The same run keeping the last weights, and one that never stops (patience null): all 24 steps.
    last, seen_last, result_last = run(world, values, patience=2, keep_best=False)
    assert result_last.steps == 12 and result_last.weights_step == 12 and same(weights(last), seen_last[3])
    assert same(seen_last[1], seen[1])  # the same training up to there
    _, _, patient = run(world, values)
    assert not patient.stopped_early and patient.steps == 24 and patient.best_step == 15


def test_lower_is_better_with_monitor_mode_min(world):
    _, _, result = run(world, [0.5, 0.4, 0.45, 0.6, 0.1, 0.1, 0.1, 0.1], patience=2, mode="min")
    assert result.stopped_early and result.steps == 12 and result.best_step == 6


def test_a_resumed_run_watches_as_an_uninterrupted_one(world, tmp_path):
    values = [0.1, 0.4, 0.3, 0.35, 0.9, 0.9, 0.9, 0.9]
    straight, _, expected = run(world, values, patience=2)
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with pytest.raises(Interrupted):  # stopped by a signal during the 3rd evaluation (step 9)
            run(world, values, patience=2, checkpoint=checkpoint, interrupt_at=2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    log = Recorder()
    resumed, seen, result = run(world, values, patience=2, checkpoint=checkpoint, done=3, step_log=log)
    assert log.starts == [9] and len(seen) == 1  # one more evaluation (step 12) and the patience ran out
    assert (result.steps, result.best_step, result.stopped_early) == (expected.steps, 6, True)
    assert same(weights(resumed), weights(straight))  # the best weights came back from the checkpoint
