"""The training loop: tokenised features in, the model trained in place, a `TrainResult` out.

Written by hand rather than with `Seq2SeqTrainer` because the runner needs control the Trainer does
not give cheaply on a CPU: length-grouped batches from pre-tokenised features, bf16 autocast chosen per
device, exact step counts, deterministic data order from the run's seed, and rich progress bars. The
devices are accelerate's (`Accelerator`: DDP, FSDP, DeepSpeed, gradient accumulation, autocast); the
split of a global batch over processes and micro-batches is in mto/training/distributed.py.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from mto.training import distributed
from mto.training.checkpoint import Checkpoint, StopSignals, rng_state, set_rng_state, test_hook
from mto.training.features import collate, epoch_batches
from mto.training.packing import pack, packed_forward
from mto.training.runtime import device, progress_bar
from mto.training.validation import Validation, Watch

log = logging.getLogger("mto")


@dataclass
class TrainResult:
    steps: int
    final_loss: float  # mean loss over the last `log_every` steps
    seconds: float
    examples_per_s: float
    tokens_per_s: float  # source + target tokens (without padding)
    stopped_early: bool = False  # validation: patience ran out before the last step
    weights_step: int = 0  # the step whose weights the model holds (the best evaluation's, or the last)
    best_step: int | None = None  # validation: the step of the best evaluation
    best_figures: dict = field(default_factory=dict)  # validation: the figures of that evaluation
    evaluations: int = 0


class StepLog(Protocol):
    """Where the loop reports per-step figures (mto.tracking.Tracking: the run's metrics_steps.jsonl and
    the trackers)."""

    def start(self, step: int) -> None:
        """Training (re)starts after `step` steps: whatever was logged after that step is void."""

    def log(self, step: int, figures: dict) -> None: ...


def total_steps(cfg, n_features: int) -> int:
    """`epochs` over the data when set (batches per epoch rounded up), else `steps`."""
    if cfg.epochs:
        return max(1, math.ceil(cfg.epochs * math.ceil(n_features / cfg.batch_size)))
    if cfg.steps:
        return int(cfg.steps)
    raise ValueError("train.steps or train.epochs must be set")


# train.scheduler -> transformers' name; ours keep the warm-up for `constant` (transformers' ignores it).
SCHEDULES = {"constant": "constant_with_warmup"}


def make_optimizer(model: torch.nn.Module, cfg, steps: int, lr: float | None = None):
    """AdamW over the trainable parameters with step size `lr` (None: `cfg.lr`), and its schedule
    (transformers' `get_scheduler`: linear warm-up from 0 over `cfg.warmup_steps`, then `cfg.scheduler`)."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Prompt and adapter methods (mto/tuning) train only their own parameters, usually with a much larger
    # step than full fine-tuning: `tuning.lr`, which the stage passes (mto.tuning.learning_rate).
    lr = cfg.lr if lr is None else lr
    if str(cfg.optimizer) == "adafactor":
        optimizer = adafactor(groups, lr)
    else:
        # Fused AdamW (one kernel for all tensors; what the Trainer uses by default too) where torch has it.
        fused = bool(params) and params[0].device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(groups, lr=lr, fused=fused)
    name = SCHEDULES.get(str(cfg.scheduler), str(cfg.scheduler))
    warmup = int(cfg.warmup_steps)
    return optimizer, get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def adafactor(groups: list[dict], lr: float):
    """transformers' Adafactor with a fixed step size `lr`, set as the MTO code sets it (run.py
    L2192-2300; docs/reference-protocol.md 6a), which is also what the Maskability paper describes."""
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=lr, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                     relative_step=False, scale_parameter=False, warmup_init=False)  # fmt: skip


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
    validation: Validation | None = None,
    step_log: StepLog | None = None,
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
    states all continue. The data position is the global batch's, so a run checkpointed on 2 processes
    resumes on 1 and vice versa.

    Run by every process of a job (mto/stages/launch.py), each training on its micro-batches of every
    global batch (`cfg.batch_size`, split into `cfg.grad_accum` x processes); a signal reaching any of
    them stops all at the same step.

    With `validation`, the model is evaluated every `validation.every` steps and after the last one; the
    loop stops early when the watched figure stops improving, and ends with the best weights unless told
    to keep the last. `step_log` receives loss, learning rate and tokens/s every `log_every` steps, and
    each evaluation's figures.
    """
    if not features:
        raise ValueError("no training examples")
    dev = device()
    acc = distributed.make_accelerator(cfg, precision, dev)
    processes, rank, accum = acc.num_processes, acc.process_index, cfg.grad_accum
    distributed.check_split(cfg, processes)
    shards = distributed.sharded(acc)
    # FSDP and DeepSpeed rebuild the module they train: a copy trains, `model` gets its weights at the end.
    net = copy.deepcopy(model) if shards else model
    if shards:
        model.to("cpu")
    net.to(acc.device).train()
    steps = total_steps(cfg, len(features))
    optimizer, scheduler = make_optimizer(net, cfg, steps, lr)
    rng = random.Random(seed)
    pad_id = tokenizer.pad_token_id
    start_id = net.config.decoder_start_token_id
    compute_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    first_features = features

    def features_of(epoch: int) -> list[dict]:
        return resample(epoch) if resample is not None and epoch >= 1 else first_features

    batches: list[list[int]] = []
    recent: list[float] = []
    first_step = n_examples = n_tokens = 0
    epoch = -1  # the epoch `batches` belong to
    watch = Watch(validation)
    resuming = checkpoint is not None and checkpoint.exists()
    state: dict = checkpoint.load(net, optimizer, scheduler) if resuming and not shards else {}
    wrapped, optimizer = acc.prepare(net, optimizer)
    if resuming and shards:
        state = checkpoint.load(net, optimizer, scheduler, accelerator=acc)
    if state:
        first_step, batches, recent = state["step"], state["batches"], state["recent"]
        epoch = int(state.get("epoch", 0))
        set_rng_state(rng, state["sampler_rng"])
        watch.load(state)
        features = features_of(epoch)
        log.info("resuming %s from the checkpoint at step %d", description, first_step)
    if step_log is not None:
        step_log.start(first_step)

    def save(step: int) -> None:
        checkpoint.save(net, optimizer, scheduler, {
            "step": step, "epoch": epoch, "batches": batches, "recent": recent,
            "sampler_rng": rng_state(rng), **watch.state(),
        }, accelerator=acc)  # fmt: skip

    def forward(micro: list[dict]) -> torch.Tensor:
        """The mean token loss of a micro-batch."""
        with acc.autocast():
            if cfg.packing:  # as steps.train_settings decided: the same examples in fewer rows
                packed = {k: v.to(acc.device) for k, v in pack(micro, pad_id, start_id).items()}
                return packed_forward(net, packed, compute_dtype, call=wrapped).loss
            return wrapped(**{k: v.to(acc.device) for k, v in collate(micro, pad_id).items()}).loss

    def optimiser_step(step: int, batch: list[int], n_total: int) -> torch.Tensor:
        """This process's micro-batches of global batch `batch` (`n_total` label tokens), accumulated, then
        one optimiser step; returns the label-token-summed loss of its micro-batches."""
        parts = distributed.micro_batches(batch, processes * accum)
        loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        for g in range(accum):
            index = g * processes + rank
            ids = parts[index]
            # An empty micro-batch (an epoch's short last batch) still runs, weighted 0: every process
            # takes part in every gradient exchange.
            micro = [features[i] for i in ids] or [features[batch[0]]]
            n = sum(len(f["labels"]) for f in micro) if ids else 0
            torch.manual_seed(distributed.micro_seed(seed, step, index))
            with acc.accumulate(wrapped):
                mean = forward(micro)
                acc.backward(mean * distributed.token_weight(n, n_total, processes * accum))
            loss_sum += mean.detach().to(torch.float64) * n
        if cfg.grad_clip:
            acc.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()  # not prepared: once per optimiser step, however many processes
        optimizer.zero_grad(set_to_none=True)
        return loss_sum

    start = window_start = time.perf_counter()
    window_tokens, eval_seconds = 0, 0.0
    stopped_early = False
    with progress_bar() as progress, StopSignals() as signals:
        task = progress.add_task(description, total=steps, completed=first_step, info="")
        for step in range(first_step, steps):
            if not batches:
                epoch += 1
                features = features_of(epoch)
                batches = epoch_batches(features, cfg.batch_size, rng, cfg.group_by_length)
            batch_ids = batches.pop()
            n_labels = sum(len(features[i]["labels"]) for i in batch_ids)
            loss_sum = optimiser_step(step, batch_ids, n_labels)
            test_hook(f"step-{step + 1}")
            n_examples += len(batch_ids)
            tokens = sum(len(features[i]["input_ids"]) + len(features[i]["labels"]) for i in batch_ids)
            n_tokens += tokens
            window_tokens += tokens
            stop = False
            if watch.due(step + 1, steps):
                eval_start = time.perf_counter()
                figures = watch.evaluate(net, step + 1)
                spent = time.perf_counter() - eval_start
                eval_seconds, window_start = eval_seconds + spent, window_start + spent  # tokens/s: training
                if step_log is not None:
                    step_log.log(step + 1, figures)
                stop = watch.should_stop and step + 1 < steps
            # The step's loss over the global batch, and any stop signal received until now (during the
            # evaluation too): the same on every process.
            total, stop_signal = distributed.step_figures(acc, loss_sum, signals.received)
            if stop_signal and signals.received is None:  # another process received it
                signals.received = stop_signal
            recent.append(total / n_labels)
            recent = recent[-max(1, cfg.log_every) :]
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps or stop:
                mean = sum(recent) / len(recent)
                lr = scheduler.get_last_lr()[0]
                log.info("%s step %d/%d loss %.4f lr %.2e", description, step + 1, steps, mean, lr)
                progress.update(task, info=f"loss {mean:.3f}")
                now = time.perf_counter()
                if step_log is not None:
                    speed = window_tokens / max(now - window_start, 1e-9)
                    step_log.log(step + 1, {"loss": mean, "lr": lr, "tokens_per_s": speed})
                window_start, window_tokens = now, 0
            if stop:
                log.info("%s: early stop at step %d, %s did not improve for %d evaluations", description,
                         step + 1, validation.monitor, watch.bad)  # fmt: skip
                stopped_early, steps = True, step + 1
                break
            progress.advance(task)
            if checkpoint is not None:
                # After the last step too: it stays until the run is completed, so a signal during the
                # final save or evaluation resumes without training again.
                due = checkpoint.every and (step + 1) % checkpoint.every == 0
                if due or step + 1 == steps or stop_signal:
                    save(step + 1)
                if stop_signal:
                    distributed.barrier()  # the checkpoint is complete before any process stops
                    signals.forward(f" after the checkpoint at step {step + 1}")
    seconds = max(time.perf_counter() - start, 1e-9)
    if shards:
        model.load_state_dict(distributed.full_weights(acc, wrapped))
        model.to(dev)
    else:
        acc.unwrap_model(wrapped, keep_fp32_wrapper=False)  # takes accelerate's autocast off model.forward
    acc.free_memory()
    best = validation is not None and validation.keep_best and watch.restore_best(model)
    model.eval()
    return TrainResult(
        steps=steps,
        final_loss=sum(recent) / len(recent),
        seconds=seconds,
        examples_per_s=n_examples / max(seconds - eval_seconds, 1e-9),
        tokens_per_s=n_tokens / max(seconds - eval_seconds, 1e-9),
        stopped_early=stopped_early,
        weights_step=watch.best_step if best else steps,
        best_step=watch.best_step,
        best_figures=watch.best_figures,
        evaluations=watch.evaluations,
    )
