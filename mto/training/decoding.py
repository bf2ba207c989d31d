"""Decoding: `generate` for a list of sources (what `mto eval` scores), and the greedy path it takes for
a T5 (plain, or with a LoRA or prefix-tuning adapter), which gives `model.generate`'s tokens with less
work per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mto.training import distributed
from mto.training.features import collate
from mto.training.runtime import autocast, device, progress_bar

# Generation settings that add a logits processor or stopping rule to `model.generate()`'s greedy decoding:
# with any of them set, `greedy_generate` would differ, so callers fall back to `model.generate`.
_GREEDY_CHANGERS = (
    "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "suppress_tokens",
    "begin_suppress_tokens", "sequence_bias", "min_new_tokens", "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty", "stop_strings", "guidance_scale", "watermarking_config",
)  # fmt: skip


def _decoder(model) -> tuple[Any, Callable[[int], Any] | None] | None:
    """(the T5 that `greedy_generate` steps, the function giving the cache decoding `n` rows starts from,
    or None: an empty one) for a model whose greedy decoding it reproduces; None for any other.

    A PEFT model's T5 is its base: LoRA's layers sit inside it, and prefix tuning's trained keys and values
    are the cache decoding starts from (as in `model.generate`, mto/tuning/prefix.py). Prompt tuning, whose
    vectors go in front of the encoder's input, is left to `model.generate`."""
    from transformers import T5ForConditionalGeneration

    start = None
    peft = getattr(model, "active_peft_config", None)
    if peft is not None:
        if peft.peft_type not in ("LORA", "PREFIX_TUNING"):
            return None
        if peft.peft_type == "PREFIX_TUNING":
            start = model.get_prompt
        model = model.get_base_model()
    return (model, start) if isinstance(model, T5ForConditionalGeneration) else None


def supports_greedy_generate(model) -> bool:
    """Whether `greedy_generate` gives what `model.generate(num_beams=1, do_sample=False)` gives: a T5
    (plain, or under a PEFT LoRA or prefix adapter) whose generation config adds nothing to argmax
    decoding."""
    decoder = _decoder(model)
    if decoder is None:
        return False
    gen = decoder[0].generation_config
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
    pace of its longest output. Returns per row [decoder start, tokens..., EOS] (no trailing padding).
    `model` is one that `supports_greedy_generate` accepts."""
    decoder = _decoder(model)
    if decoder is None:
        raise TypeError(f"greedy_generate cannot decode a {type(model).__name__}: use model.generate")
    model, start_cache = decoder
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
    cache = start_cache(n) if start_cache is not None else None
    for _ in range(max_new_tokens):
        out = model(
            encoder_outputs=(hidden,),
            attention_mask=mask,
            decoder_input_ids=tokens,
            cache=cache,
            use_cache=True,
        )
        cache = out.cache
        next_tokens = out.logits[:, -1, :].argmax(-1)
        n_done = 0
        for pos, token in enumerate(next_tokens.tolist()):
            if not finished[pos]:
                sequences[rows[pos]].append(token)
                finished[pos] = token in eos_ids
            n_done += finished[pos]
        if n_done == len(rows):
            break
        if n_done * 8 >= len(rows) and hasattr(cache, "reorder_cache"):
            keep = [pos for pos in range(len(rows)) if not finished[pos]]
            index = torch.tensor(keep, device=hidden.device)
            hidden, mask, next_tokens = hidden[index], mask[index], next_tokens[index]
            cache.reorder_cache(index)
            rows = [rows[pos] for pos in keep]
            finished = [False] * len(rows)
        tokens = next_tokens[:, None]
    return sequences


def generate(
    model, tokenizer, sources: list[str], cfg, precision: str, max_source_length: int
) -> list[list[int]]:
    """Generated token ids for each source, batched longest-first so batches pad little. In a job of
    several processes each decodes a consecutive share of the same batches and every process gets all
    outputs back: the batches are those of one process, so the outputs are too."""
    dev = device()
    encoded = tokenizer(sources, truncation=True, max_length=max_source_length)["input_ids"]
    order = sorted(range(len(sources)), key=lambda i: -len(encoded[i]))
    batches = distributed.shard([order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)])
    outputs: list[list[int]] = [[] for _ in sources]
    pad = tokenizer.pad_token_id
    model.eval()
    greedy = cfg.num_beams == 1 and supports_greedy_generate(model)
    with progress_bar() as progress, torch.inference_mode():
        task = progress.add_task("eval", total=sum(map(len, batches)), info="")
        for idx in batches:
            batch = collate([{"input_ids": encoded[i], "labels": [pad]} for i in idx], pad)
            with autocast(precision, dev):
                if greedy:  # same tokens as model.generate, less work per step (see greedy_generate)
                    out = greedy_generate(
                        model, batch["input_ids"].to(dev), batch["attention_mask"].to(dev), cfg.max_new_tokens
                    )
                else:
                    out = model.generate(
                        input_ids=batch["input_ids"].to(dev),
                        attention_mask=batch["attention_mask"].to(dev),
                        num_beams=cfg.num_beams,
                        do_sample=False,
                        max_new_tokens=cfg.max_new_tokens,
                        repetition_penalty=1.0,
                        length_penalty=1.0,
                        no_repeat_ngram_size=0,
                    ).tolist()
            for row, i in enumerate(idx):
                outputs[i] = out[row]
            progress.advance(task, len(idx))
    if distributed.size() > 1:
        mine = {i: outputs[i] for idx in batches for i in idx}
        for share in distributed.all_gather(mine):
            for i, out in share.items():
                outputs[i] = out
    return outputs
