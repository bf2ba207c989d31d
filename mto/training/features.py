"""Training data as the loop reads it: (source, target) pairs tokenised into features, one epoch's batches
(uniformly random, or grouped by length), padded batches, and the tokenised-feature cache."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("mto")


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
