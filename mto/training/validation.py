"""Validation during training: evaluate every N steps, keep the best weights, stop early.

The loop knows nothing of tasks or decoding: the stage hands it a `Validation` whose `evaluate()` scores
the model as it is now (e.g. ROUGE-L on a dev sample) and returns figures; `Watch` keeps the state the
loop needs (best figure, its step and weights, evaluations without improvement), which also travels in
the checkpoint so a resumed run watches exactly as an uninterrupted one. Written by hand: the loop is not
the Trainer, whose EarlyStoppingCallback and `load_best_model_at_end` need it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger("mto")


@dataclass
class Validation:
    """Evaluate every `every` steps (and after the last one); watch `figures[monitor]` (`mode` max: higher
    is better); stop after `patience` evaluations without improvement (None: never); end with the best
    weights (`keep_best`) or the last."""

    every: int
    evaluate: Callable[[], dict]  # the figures of the model as it is now, e.g. {"dev_rougeL": 0.41, ...}
    monitor: str
    mode: str = "max"
    patience: int | None = None
    keep_best: bool = True


class Watch:
    """The loop's view of a `Validation`: when to evaluate, what was best, when to stop."""

    def __init__(self, validation: Validation | None):
        self.validation = validation
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_figures: dict = {}
        self.best_weights: dict[str, torch.Tensor] = {}
        self.bad = 0  # evaluations since the last improvement
        self.evaluations = 0
        self.last_figures: dict = {}
        self.last_step: int | None = None

    def due(self, step: int, steps: int) -> bool:
        """Whether to evaluate after `step` steps (of `steps`)."""
        v = self.validation
        return v is not None and v.every > 0 and (step % v.every == 0 or step == steps)

    def improved(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        return value > self.best if str(self.validation.mode) == "max" else value < self.best

    def evaluate(self, model, step: int) -> dict:
        """Score the model after `step` steps, keep its weights if they are the best, and return the
        figures. The model is left in training mode."""
        v = self.validation
        figures = v.evaluate()
        model.train()
        if v.monitor not in figures:
            raise KeyError(f"validation gave no {v.monitor!r} (it gave {', '.join(sorted(figures))})")
        value = float(figures[v.monitor])
        self.evaluations += 1
        self.last_figures, self.last_step = figures, step
        if self.improved(value):
            self.best, self.best_step, self.best_figures, self.bad = value, step, figures, 0
            if v.keep_best:
                self.best_weights = {
                    n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
                }
        else:
            self.bad += 1
        log.info("validation at step %d: %s %.4f (best %.4f at step %d)", step, v.monitor, value,
                 self.best if self.best is not None else math.nan, self.best_step or 0)  # fmt: skip
        return figures

    @property
    def should_stop(self) -> bool:
        v = self.validation
        return v is not None and v.patience is not None and self.bad >= v.patience

    def state(self) -> dict:
        """What a checkpoint keeps of the watch (tensors and plain values: `weights_only` loads it)."""
        if self.validation is None:
            return {}
        return {"watch": {
            "best": self.best, "best_step": self.best_step, "best_figures": self.best_figures,
            "bad": self.bad, "evaluations": self.evaluations, "last_figures": self.last_figures,
            "last_step": self.last_step,
        }, "best_weights": self.best_weights}  # fmt: skip

    def load(self, state: dict) -> None:
        saved = state.get("watch")
        if saved is None or self.validation is None:
            return
        for key, value in saved.items():
            setattr(self, key, value)
        self.best_weights = state.get("best_weights", {})

    def restore_best(self, model) -> bool:
        """Put the best weights back into `model` (when kept and not the current ones); whether it did."""
        if not self.best_weights or self.best_step == self.last_step:
            return False
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_weights.items():
                params[name].copy_(value)
        log.info("model: the best weights (%s %.4f at step %d)", self.validation.monitor, self.best,
                 self.best_step)  # fmt: skip
        return True
