"""The training loop: tokenised features in, the model trained in place, a `TrainResult` out.

Written by hand rather than with `Seq2SeqTrainer` because the runner needs control the Trainer does
not give cheaply on a CPU: length-grouped batches from pre-tokenised features, bf16 autocast chosen per
device, exact step counts, deterministic data order from the run's seed, and rich progress bars.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mto.training.checkpoint import Checkpoint, StopSignals, rng_state, set_rng_state, test_hook
from mto.training.features import collate, epoch_batches
from mto.training.runtime import autocast, device, progress_bar

log = logging.getLogger("mto")


@dataclass
class TrainResult:
    steps: int
    final_loss: float  # mean loss over the last `log_every` steps
    seconds: float
    examples_per_s: float
    tokens_per_s: float  # source + target tokens (without padding)


def total_steps(cfg, n_features: int) -> int:
    """`steps` when set, else `epochs` over the data."""
    if cfg.steps:
        return int(cfg.steps)
    if cfg.epochs:
        return max(1, math.ceil(cfg.epochs * math.ceil(n_features / cfg.batch_size)))
    raise ValueError("train.steps or train.epochs must be set")


def make_optimizer(model: torch.nn.Module, cfg, steps: int, lr: float | None = None):
    """AdamW over the trainable parameters with step size `lr` (None: `cfg.lr`), and its schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Prompt and adapter methods (mto/tuning) train only their own parameters, usually with a much larger
    # step than full fine-tuning: `tuning.lr`, which the stage passes (mto.tuning.learning_rate).
    lr = cfg.lr if lr is None else lr
    # Fused AdamW (one kernel for all tensors; what the Trainer uses by default too) where torch has it.
    fused = bool(params) and params[0].device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=fused)
    warmup = int(cfg.warmup_steps)
    scheduler_kind = str(cfg.scheduler)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler_kind == "constant":
            return 1.0
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_model(
    model,
    tokenizer,
    features: list[dict],
    cfg,
    precision: str,
    seed: int,
    description: str = "train",
    checkpoint: Checkpoint | None = None,
    resample: Callable[[int], list[dict]] | None = None,
    lr: float | None = None,
) -> TrainResult:
    """Train `model` in place on `features` for the configured number of steps, with step size `lr`
    (None: `cfg.lr`).

    With `resample`, epoch e >= 1 trains on `resample(e)` instead of `features` (epoch 0): an objective's
    random choices (span-corruption masks, prefix-LM cuts) are drawn afresh each pass over the data, as
    T5's on-the-fly pipeline does, instead of the same masks being memorised epoch after epoch.
    `resample(e)` must be deterministic in e, so a resumed run rebuilds the features it was training on.

    With `checkpoint`, the loop resumes from it when one exists, saves one every `checkpoint.every`
    steps and after the last, and on SIGTERM/SIGUSR1/SIGUSR2/SIGINT saves one and stops (`Interrupted`).
    A resumed run ends with the same weights as an uninterrupted one: the data order, RNG and optimiser
    states all continue.
    """
    if not features:
        raise ValueError("no training examples")
    dev = device()
    model.to(dev).train()
    steps = total_steps(cfg, len(features))
    optimizer, scheduler = make_optimizer(model, cfg, steps, lr)
    rng = random.Random(seed)
    pad_id = tokenizer.pad_token_id
    first_features = features

    def features_of(epoch: int) -> list[dict]:
        return resample(epoch) if resample is not None and epoch >= 1 else first_features

    batches: list[list[int]] = []
    recent: list[float] = []
    first_step = n_examples = n_tokens = 0
    epoch = -1  # the epoch `batches` belong to
    if checkpoint is not None and checkpoint.exists():
        state = checkpoint.load(model, optimizer, scheduler)
        first_step, batches, recent = state["step"], state["batches"], state["recent"]
        epoch = int(state.get("epoch", 0))
        set_rng_state(rng, state["sampler_rng"])
        features = features_of(epoch)
        log.info("resuming %s from the checkpoint at step %d", description, first_step)

    def save(step: int) -> None:
        checkpoint.save(model, optimizer, scheduler, {
            "step": step, "epoch": epoch, "batches": batches, "recent": recent,
            "sampler_rng": rng_state(rng),
        })  # fmt: skip

    start = time.perf_counter()
    with progress_bar() as progress, StopSignals() as signals:
        task = progress.add_task(description, total=steps, completed=first_step, info="")
        for step in range(first_step, steps):
            if not batches:
                epoch += 1
                features = features_of(epoch)
                batches = epoch_batches(features, cfg.batch_size, rng, cfg.group_by_length)
            batch_ids = batches.pop()
            batch = {k: v.to(dev) for k, v in collate([features[i] for i in batch_ids], pad_id).items()}
            with autocast(precision, dev):
                loss = model(**batch).loss
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            recent.append(float(loss.detach()))
            recent = recent[-max(1, cfg.log_every) :]
            n_examples += len(batch_ids)
            n_tokens += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                mean = sum(recent) / len(recent)
                lr = scheduler.get_last_lr()[0]
                log.info("%s step %d/%d loss %.4f lr %.2e", description, step + 1, steps, mean, lr)
                progress.update(task, info=f"loss {mean:.3f}")
            progress.advance(task)
            test_hook(f"step-{step + 1}")
            if checkpoint is not None:
                # After the last step too: it stays until the run is completed, so a signal during the
                # final save or evaluation resumes without training again.
                due = checkpoint.every and (step + 1) % checkpoint.every == 0
                if due or step + 1 == steps or signals.received is not None:
                    save(step + 1)
                if signals.received is not None:
                    signals.forward(f" after the checkpoint at step {step + 1}")
    seconds = max(time.perf_counter() - start, 1e-9)
    model.eval()
    return TrainResult(
        steps=steps,
        final_loss=sum(recent) / len(recent),
        seconds=seconds,
        examples_per_s=n_examples / seconds,
        tokens_per_s=n_tokens / seconds,
    )
