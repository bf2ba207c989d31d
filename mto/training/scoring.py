"""Teacher-forced scores of gold targets: what `mto match` ranks templates by and what `mto eval` records
for each prediction (`eval.gold_scores`).

One forward per batch, the gold target fed to the decoder (teacher forcing), gives per example:
  - the target's NLL over every target token (sentinels and EOS included, as the training loss counts
    them): the mean (`nll`, the example's own training loss) and the sum (`nll_sum`, minus the
    target's log-probability);
  - over the answer tokens only (sentinels and the tokenizer's special tokens, EOS included, are in the
    decoder's context but not counted): the mean NLL (`answer_nll`) and DepthRank (`depth_rank`), the
    mean 1-based rank of each gold token among the model's next-token logits (1: the model's top token;
    ties count in the gold token's favour), as the authors' code computes it (docs/reference-protocol.md
    section 7a). None for both when the target has no answer token.

Written by hand: transformers gives one loss for a whole batch (a mean over all its label tokens), not
the loss of each example nor the rank of the gold token; both need the logits, which the same forward
gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mto.templates import sentinel_token_ids
from mto.training.features import collate, tokenize_pairs
from mto.training.runtime import autocast, device


@dataclass(frozen=True)
class GoldScore:
    nll: float  # mean NLL over every target token: the example's training loss
    nll_sum: float  # summed NLL over every target token
    answer_nll: float | None  # mean NLL over the answer tokens (None: no answer token)
    depth_rank: float | None  # mean 1-based rank of the answer tokens (None: no answer token)
    tokens: int  # target tokens scored (EOS included)
    answer_tokens: int


def not_answer_ids(tokenizer) -> set[int]:
    """Token ids that are never part of an answer: the tokenizer's special tokens and its sentinels."""
    return set(tokenizer.all_special_ids) | set(sentinel_token_ids(tokenizer))


def gold_scores(
    model, tokenizer, pairs: list[tuple[str, str]], max_source: int, max_target: int, batch_size: int,
    precision: str,
) -> list[GoldScore]:  # fmt: skip
    """The `GoldScore` of each (source, target) pair, in order, `batch_size` pairs per forward."""
    features = tokenize_pairs(tokenizer, pairs, max_source, max_target)
    skipped = torch.tensor(sorted(not_answer_ids(tokenizer)), dtype=torch.long)
    dev = device()
    out: list[GoldScore] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size], tokenizer.pad_token_id)
            batch = {k: v.to(dev) for k, v in batch.items()}
            with autocast(precision, dev):
                logits = model(**batch).logits.float()
            labels = batch["labels"]
            target = labels != -100
            answer = target & ~torch.isin(labels, skipped.to(labels.device))
            gold = labels.clamp(min=0).unsqueeze(-1)
            ranks = (logits > logits.gather(-1, gold)).sum(-1) + 1
            nll = -torch.log_softmax(logits, -1).gather(-1, gold).squeeze(-1)
            for row in range(labels.shape[0]):
                kept, scored = target[row], answer[row]
                n_answer = int(scored.sum())
                out.append(GoldScore(
                    nll=float(nll[row][kept].mean()), nll_sum=float(nll[row][kept].sum()),
                    answer_nll=float(nll[row][scored].mean()) if n_answer else None,
                    depth_rank=float(ranks[row][scored].float().mean()) if n_answer else None,
                    tokens=int(kept.sum()), answer_tokens=n_answer,
                ))  # fmt: skip
    return out
