"""The training loop shared by `mto train` and `mto adapt`: tokenised pairs in, a trained model out.

Written by hand rather than with `Seq2SeqTrainer` because the runner needs control the Trainer does
not give cheaply on a CPU: length-grouped batches from pre-tokenised features, bf16 autocast chosen per
device, exact step counts, deterministic data order from the run's seed, and rich progress bars.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mto.errors import Interrupted

log = logging.getLogger("mto")


# ---------------------------------------------------------------- runtime: threads, seeds, precision
def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads, or as many as the cores this process may run on."""
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_supports_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPUs where bf16 autocast is faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, dev: torch.device) -> str:
    """`auto` -> `bf16` where the device runs it fast, else `fp32`."""
    precision = getattr(precision, "value", precision)
    if precision != "auto":
        return precision
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(precision: str, dev: torch.device):
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return nullcontext()


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        transient=False,
    )


# ---------------------------------------------------------------- data: tokenise, batch, collate
def tokenize_pairs(tokenizer, pairs: list[tuple[str, str]], max_source: int, max_target: int) -> list[dict]:
    """Token ids of (source, target) pairs, truncated to the configured lengths (targets end with EOS)."""
    sources = tokenizer([s for s, _ in pairs], truncation=True, max_length=max_source)["input_ids"]
    targets = tokenizer(text_target=[t for _, t in pairs], truncation=True, max_length=max_target)[
        "input_ids"
    ]
    return [{"input_ids": s, "labels": t} for s, t in zip(sources, targets, strict=True)]


def length_grouped_batches(features: list[dict], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then sorted by length within windows of 50 batches so each batch
    pads little, then the batches shuffled again (the mega-batches of `group_by_length` in transformers).

    transformers sorts by the input length only; a seq2seq batch pads its targets too, and on short-target
    tasks (ATOMIC tails) most padding is in the targets. So the sort key is (source, target) length or
    (target, source) length, whichever pads fewer tokens over this epoch's windows.
    """
    order = list(range(len(features)))
    rng.shuffle(order)
    window = batch_size * 50
    src = [len(f["input_ids"]) for f in features]
    tgt = [len(f["labels"]) for f in features]

    def batches_by(first: list[int], second: list[int]) -> list[list[int]]:
        out = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: (-first[i], -second[i]))
            out.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
        return out

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * (max(src[i] for i in b) + max(tgt[i] for i in b)) for b in batches)

    batches = min(batches_by(src, tgt), batches_by(tgt, src), key=padded)
    rng.shuffle(batches)
    return batches


def random_batches(n: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of uniformly random batches (the Trainer's random sampler; the last may be short)."""
    order = list(range(n))
    rng.shuffle(order)
    return [order[j : j + batch_size] for j in range(0, n, batch_size)][::-1]


def epoch_batches(features: list[dict], batch_size: int, rng: random.Random, group_by_length: bool):
    """One epoch of batches, in the order the loop pops them (from the end)."""
    if group_by_length:
        return length_grouped_batches(features, batch_size, rng)
    return random_batches(len(features), batch_size, rng)


def collate(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest in the batch; label padding is -100 so the loss ignores it."""
    src_len = max(len(f["input_ids"]) for f in features)
    tgt_len = max(len(f["labels"]) for f in features)
    input_ids = torch.full((len(features), src_len), pad_id, dtype=torch.long)
    labels = torch.full((len(features), tgt_len), -100, dtype=torch.long)
    for row, f in enumerate(features):
        input_ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        labels[row, : len(f["labels"])] = torch.tensor(f["labels"])
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}


# Bump when the way features are computed or stored changes: old cache entries are then ignored.
FEATURES_VERSION = 1


def tokenizer_fingerprint(tokenizer) -> str:
    """What determines a tokenizer's output: its class, its full serialised state where it has one (the
    `tokenizers` backend: vocabulary, scores/merges, normaliser, pre-tokeniser, post-processor with the
    EOS, added tokens such as soft-prompt tokens), else its vocabulary, and the truncation side."""
    import hashlib
    import json

    digest = hashlib.sha256(f"{type(tokenizer).__module__}.{type(tokenizer).__name__}".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    extra = {
        "special": {str(k): str(v) for k, v in getattr(tokenizer, "special_tokens_map", {}).items()},
        "truncation_side": getattr(tokenizer, "truncation_side", "right"),
    }
    digest.update(json.dumps(extra, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def pairs_fingerprint(pairs: list[tuple[str, str]]) -> str:
    """sha256 of the (source, target) texts, length-prefixed so no two lists of pairs collide."""
    import hashlib

    digest = hashlib.sha256()
    for source, target in pairs:
        for text in (source, target):
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def cached_features(
    tokenizer, pairs: list[tuple[str, str]], max_source: int, max_target: int
) -> tuple[list[dict], bool]:
    """`tokenize_pairs(...)`, computed once per (tokenizer, pairs, lengths) and then read from the project
    cache (`<cache>/features/<key>/`: flat int32 ids and offsets as .npy, no pickle), so the jobs of a
    sweep over the same data and template tokenise once. Returns (features, whether the cache had them)."""
    from mto.cache import cached_dir, fingerprint

    key = fingerprint({
        "tokenizer": tokenizer_fingerprint(tokenizer), "pairs": pairs_fingerprint(pairs),
        "max_source": int(max_source), "max_target": int(max_target), "version": FEATURES_VERSION,
    })  # fmt: skip
    built = False

    def build(folder: Path) -> None:
        nonlocal built
        built = True
        features = tokenize_pairs(tokenizer, pairs, max_source, max_target)
        for name in ("input_ids", "labels"):
            rows = [f[name] for f in features]
            offsets = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum([len(r) for r in rows], out=offsets[1:])
            flat = np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(offsets[-1]))
            np.save(folder / f"{name}.npy", flat)
            np.save(folder / f"{name}.offsets.npy", offsets)

    folder = cached_dir("features", key, build)
    columns = {}
    for name in ("input_ids", "labels"):
        flat = np.load(folder / f"{name}.npy", allow_pickle=False).tolist()
        offsets = np.load(folder / f"{name}.offsets.npy", allow_pickle=False).tolist()
        columns[name] = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    if len(columns["input_ids"]) != len(pairs):
        raise RuntimeError(f"cached features in {folder} do not match the {len(pairs)} pairs")
    sources, targets = columns["input_ids"], columns["labels"]
    log.info("%s %d tokenised examples (%s)", "cached" if built else "read", len(pairs), folder)
    return [{"input_ids": s, "labels": t} for s, t in zip(sources, targets, strict=True)], not built


# ---------------------------------------------------------------- the loop
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


def make_optimizer(model: torch.nn.Module, cfg, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Prompt and adapter methods (mto/tuning) train only their own parameters, usually with a much larger
    # step than full fine-tuning: `tuning.lr`, which `apply_tuning` leaves on the model as `mto_lr`.
    lr = getattr(model, "mto_lr", None) or cfg.lr
    # Fused AdamW (one kernel for all tensors; what the Trainer uses by default too) where torch has it.
    fused = bool(params) and params[0].device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=fused)
    warmup = int(cfg.warmup_steps)
    scheduler_kind = getattr(cfg.scheduler, "value", cfg.scheduler)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler_kind == "constant":
            return 1.0
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class StopSignals:
    """Turns SIGTERM, SIGUSR1 and SIGUSR2 (what SLURM sends before preemption or the time limit;
    submitit asks SLURM for USR2) into a flag the loop reads between steps, so a checkpoint is only
    ever taken of a consistent state. After the checkpoint, the previous handler (e.g. submitit's,
    which requeues the job) gets the signal."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("received signal %d: checkpointing at the end of this step", signum)
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        """Hand the received signal to the handler that was there before us, or stop."""
        handler = self.previous.get(self.received)
        if callable(handler):
            handler(self.received, None)
        raise Interrupted(f"stopped by signal {self.received} after a checkpoint")


class Checkpoint:
    """`<run dir>/checkpoint/`: the trainable weights (safetensors), optimiser and scheduler states,
    RNG states and the data position (remaining batches of the epoch and the sampler's state), written
    to a temporary folder and renamed over the previous checkpoint, so a kill never leaves half of one.
    Everything but the weights is loaded with `torch.load(weights_only=True)`."""

    def __init__(self, folder: Path, every: int = 0):
        self.folder = Path(folder)
        self.every = every

    def exists(self) -> bool:
        return (self.folder / "state.pt").is_file()

    def save(self, model, optimizer, scheduler, state: dict) -> None:
        from safetensors.torch import save_file

        tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=self.folder.parent))
        try:
            weights = {
                n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
            }
            save_file(weights, str(tmp / "trainable.safetensors"))
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    **state,
                },
                tmp / "state.pt",
            )
            old = self.folder.with_name(".checkpoint-old")
            if self.folder.exists():
                os.replace(self.folder, old)
            os.replace(tmp, self.folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("checkpoint at step %d -> %s", state["step"], self.folder)

    def load(self, model, optimizer, scheduler) -> dict:
        from safetensors.torch import load_file

        weights = load_file(str(self.folder / "trainable.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        state = torch.load(self.folder / "state.pt", weights_only=True)
        optimizer.load_state_dict(state.pop("optimizer"))
        scheduler.load_state_dict(state.pop("scheduler"))
        torch.set_rng_state(state.pop("torch_rng"))
        cuda_rng = state.pop("cuda_rng")
        if cuda_rng:
            torch.cuda.set_rng_state_all(cuda_rng)
        return state


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


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
) -> TrainResult:
    """Train `model` in place on `features` for the configured number of steps.

    With `resample`, epoch e >= 1 trains on `resample(e)` instead of `features` (epoch 0): an objective's
    random choices (span-corruption masks, prefix-LM cuts) are drawn afresh each pass over the data, as
    T5's on-the-fly pipeline does, instead of the same masks being memorised epoch after epoch.
    `resample(e)` must be deterministic in e, so a resumed run rebuilds the features it was training on.

    With `checkpoint`, the loop resumes from it when one exists, saves one every `checkpoint.every`
    steps, and on SIGTERM/SIGUSR1 saves one and stops (`Interrupted`). A resumed run ends with the same
    weights as an uninterrupted one: the data order, RNG and optimiser states all continue.
    """
    if not features:
        raise ValueError("no training examples")
    dev = device()
    model.to(dev).train()
    steps = total_steps(cfg, len(features))
    optimizer, scheduler = make_optimizer(model, cfg, steps)
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
        _set_rng_state(rng, state["sampler_rng"])
        features = features_of(epoch)
        log.info("resuming %s from the checkpoint at step %d", description, first_step)

    def save(step: int) -> None:
        checkpoint.save(model, optimizer, scheduler, {
            "step": step, "epoch": epoch, "batches": batches, "recent": recent,
            "sampler_rng": _rng_state(rng),
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
            if checkpoint is not None and step + 1 < steps:
                if signals.received is not None:
                    save(step + 1)
                    signals.forward()
                if checkpoint.every and (step + 1) % checkpoint.every == 0:
                    save(step + 1)
    seconds = max(time.perf_counter() - start, 1e-9)
    model.eval()
    return TrainResult(
        steps=steps,
        final_loss=sum(recent) / len(recent),
        seconds=seconds,
        examples_per_s=n_examples / seconds,
        tokens_per_s=n_tokens / seconds,
    )


# ---------------------------------------------------------------- decoding
# Generation settings that add a logits processor or stopping rule to greedy decoding in `generate()`:
# with any of them set, `greedy_generate` would differ, so callers fall back to `model.generate`.
_GREEDY_CHANGERS = (
    "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "suppress_tokens",
    "begin_suppress_tokens", "sequence_bias", "min_new_tokens", "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty", "stop_strings", "guidance_scale", "watermarking_config",
)  # fmt: skip


def supports_greedy_generate(model) -> bool:
    """Whether `greedy_generate` gives what `model.generate(num_beams=1, do_sample=False)` gives: a plain
    T5 (not wrapped by PEFT) whose generation config adds nothing to argmax decoding."""
    from transformers import T5ForConditionalGeneration

    if not isinstance(model, T5ForConditionalGeneration):
        return False
    gen = model.generation_config
    if any(getattr(gen, name, None) not in (None, [], {}) for name in _GREEDY_CHANGERS):
        return False
    if (getattr(gen, "min_length", 0) or 0) > 0:
        return False
    return getattr(gen, "encoder_repetition_penalty", None) in (None, 1.0)


@torch.inference_mode()
def greedy_generate(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int
) -> list[list[int]]:
    """Greedy decoding of an encoder-decoder model, as `model.generate(num_beams=1, do_sample=False,
    max_new_tokens=...)` does it, with less work per step: no logits processors or stopping-criteria
    objects, and rows that have emitted EOS leave the batch (their encoder states, mask and key/value
    cache rows are dropped once an eighth of the batch has finished), so a batch no longer runs at the
    pace of its longest output. Returns per row [decoder start, tokens..., EOS] (no trailing padding)."""
    gen = model.generation_config
    start = gen.decoder_start_token_id
    if start is None:
        start = model.config.decoder_start_token_id
    eos = gen.eos_token_id if gen.eos_token_id is not None else model.config.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
    n = input_ids.shape[0]
    sequences = [[start] for _ in range(n)]
    rows = list(range(n))  # batch position -> example
    finished = [False] * n  # per batch position
    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask
    tokens = torch.full((n, 1), start, dtype=torch.long, device=input_ids.device)
    past = None
    for _ in range(max_new_tokens):
        out = model(
            encoder_outputs=(hidden,),
            attention_mask=mask,
            decoder_input_ids=tokens,
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        next_tokens = out.logits[:, -1, :].argmax(-1)
        n_done = 0
        for pos, token in enumerate(next_tokens.tolist()):
            if not finished[pos]:
                sequences[rows[pos]].append(token)
                finished[pos] = token in eos_ids
            n_done += finished[pos]
        if n_done == len(rows):
            break
        if n_done * 8 >= len(rows) and hasattr(past, "reorder_cache"):
            keep = [pos for pos in range(len(rows)) if not finished[pos]]
            index = torch.tensor(keep, device=hidden.device)
            hidden, mask, next_tokens = hidden[index], mask[index], next_tokens[index]
            past.reorder_cache(index)
            rows = [rows[pos] for pos in keep]
            finished = [False] * len(rows)
        tokens = next_tokens[:, None]
    return sequences
