"""Packed batches for T5: the examples of one batch laid end to end in fewer rows, so that far fewer
padded tokens are computed while the loss and the gradient stay those of the unpacked batch.

Why it is exact for T5: attention in T5 depends on positions only through the relative position bias,
and the distance between two tokens of one example does not change when the example starts at an offset
in a longer row. So with block-diagonal masks (the encoder's self-attention within a segment; the
decoder's causal and within a segment; cross-attention from decoder segment i to encoder segment i
only), decoder inputs shifted per segment (the start token at every segment start) and labels -100 on
padding, each example sees exactly what it sees alone. seqio/T5X pack the same way ("segment ids"); the
Hugging Face Trainer has no seq2seq packing, and T5's `forward` hands one `attention_mask` to both its
encoder and its cross-attention, so the encoder runs first here and the decoder gets its own masks.

Rows: example i's source and target must share a row (cross-attention stays within a row), so examples
go first-fit into rows of `Ls` source and `Lt` target tokens, multiples of `multiple` (few distinct
shapes for the kernels). Rows only as long as the batch's longest example leave most rows holding one
example (on ATOMIC batches a third of the positions stayed padding), so `row_lengths` tries longer rows,
up to `WIDEST` times the longest example, and keeps the layout that computes the fewest positions.
"""

from __future__ import annotations

from typing import Any

import torch

from mto.errors import ConfigError

PACKABLE_TUNING = ("full", "lora")  # prompt, prefix and soft tokens are per row, not per segment
WIDEST = 4  # rows up to 4x the batch's longest source / target: attention's cost grows with the square


def unsupported(model: Any, tuning_method: str, strategy: str = "ddp") -> str | None:
    """Why packing would not give this model exactly its unpacked loss, or None where it would."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "t5":
        kind = getattr(config, "model_type", type(model).__name__)
        return f"only for T5 models (relative positions); this model is {kind}, whose absolute positions " \
            "would need per-segment position ids"
    if str(tuning_method) not in PACKABLE_TUNING:
        return f"not with tuning={tuning_method}, whose prompt tokens belong to a row, not to one example " \
            f"(packing supports tuning={' or '.join(PACKABLE_TUNING)})"
    if str(strategy) != "ddp":  # train.packing=true with another strategy is refused by the config itself
        return f"with train.strategy=ddp only (not {strategy})"
    return None


def check_supported(model: Any, tuning_method: str, strategy: str = "ddp") -> None:
    """A one-line ConfigError unless packing gives this model exactly its unpacked loss."""
    reason = unsupported(model, tuning_method, strategy)
    if reason:
        raise ConfigError(f"train.packing=true: {reason}")


def decide(setting: bool | None, model: Any, tuning_method: str, strategy: str = "ddp") -> bool:
    """Whether a run packs its batches: `train.packing` true (refused where not exact), false, or null
    (the default: wherever it is exact)."""
    if setting is None:
        return unsupported(model, tuning_method, strategy) is None
    if setting:
        check_supported(model, tuning_method, strategy)
    return bool(setting)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def assign_rows(src_lens: list[int], tgt_lens: list[int], cap_src: int, cap_tgt: int) -> list[list[int]]:
    """Examples (by index) in rows: first-fit, longest sources first (first-fit decreasing)."""
    rows: list[list[int]] = []
    used: list[tuple[int, int]] = []
    for i in sorted(range(len(src_lens)), key=lambda i: (-src_lens[i], -tgt_lens[i], i)):
        for r, (s, t) in enumerate(used):
            if s + src_lens[i] <= cap_src and t + tgt_lens[i] <= cap_tgt:
                rows[r].append(i)
                used[r] = (s + src_lens[i], t + tgt_lens[i])
                break
        else:
            rows.append([i])
            used.append((src_lens[i], tgt_lens[i]))
    return rows


def row_lengths(src_lens: list[int], tgt_lens: list[int], multiple: int = 8) -> tuple[int, int]:
    """(Ls, Lt): the row lengths, multiples of `multiple` from the longest example's up to WIDEST times
    it, whose first-fit layout computes the fewest positions, rows x (Ls + Lt) (ties: the shorter rows).
    Lt grows with Ls in the batch's ratio of target to source tokens, so the search is one-dimensional
    (a few first-fit passes, about a millisecond for a batch of 32)."""
    low_src, low_tgt = _round_up(max(src_lens), multiple), _round_up(max(tgt_lens), multiple)
    ratio = sum(tgt_lens) / sum(src_lens)
    best = (len(src_lens) * (low_src + low_tgt), low_src, low_tgt)  # one example per row
    for cap_src in range(low_src, WIDEST * low_src + 1, multiple):
        cap_tgt = min(max(low_tgt, _round_up(round(cap_src * ratio), multiple)), WIDEST * low_tgt)
        fewest_rows = max(-(-sum(src_lens) // cap_src), -(-sum(tgt_lens) // cap_tgt))
        if fewest_rows * (cap_src + cap_tgt) >= best[0]:
            continue  # cannot beat the best even if packed without a gap
        cost = len(assign_rows(src_lens, tgt_lens, cap_src, cap_tgt)) * (cap_src + cap_tgt)
        if cost < best[0]:
            best = (cost, cap_src, cap_tgt)
    return best[1], best[2]


def pack(
    features: list[dict], pad_id: int, decoder_start_id: int, multiple: int = 8
) -> dict[str, torch.Tensor]:
    """Packed tensors of a batch: `input_ids`, `encoder_segments`, `decoder_input_ids`, `labels`,
    `decoder_segments` (segment k >= 1 is the k-th example of the row; 0 is padding)."""
    src_lens = [len(f["input_ids"]) for f in features]
    tgt_lens = [len(f["labels"]) for f in features]
    cap_src, cap_tgt = row_lengths(src_lens, tgt_lens, multiple)
    rows = assign_rows(src_lens, tgt_lens, cap_src, cap_tgt)
    shape_src, shape_tgt = (len(rows), cap_src), (len(rows), cap_tgt)
    input_ids = torch.full(shape_src, pad_id, dtype=torch.long)
    enc_seg = torch.zeros(shape_src, dtype=torch.long)
    dec_in = torch.full(shape_tgt, pad_id, dtype=torch.long)
    labels = torch.full(shape_tgt, -100, dtype=torch.long)
    dec_seg = torch.zeros(shape_tgt, dtype=torch.long)
    for r, members in enumerate(rows):
        s = t = 0
        for k, i in enumerate(members, start=1):
            src, tgt = features[i]["input_ids"], features[i]["labels"]
            input_ids[r, s : s + len(src)] = torch.tensor(src)
            enc_seg[r, s : s + len(src)] = k
            labels[r, t : t + len(tgt)] = torch.tensor(tgt)
            dec_in[r, t : t + len(tgt)] = torch.tensor([decoder_start_id, *tgt[:-1]])
            dec_seg[r, t : t + len(tgt)] = k
            s, t = s + len(src), t + len(tgt)
    return {"input_ids": input_ids, "encoder_segments": enc_seg, "decoder_input_ids": dec_in,
            "labels": labels, "decoder_segments": dec_seg}  # fmt: skip


def segment_masks(enc_seg: torch.Tensor, dec_seg: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Boolean 4D masks [rows, 1, queries, keys], True where attention is allowed: encoder self, decoder
    self (causal), cross. A padding query sees every key (its output is never used; a row of nothing but
    masked keys would give NaN)."""

    def within(q_seg: torch.Tensor, k_seg: torch.Tensor) -> torch.Tensor:
        same = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] > 0)
        return same | (q_seg[:, :, None] == 0)

    enc = within(enc_seg, enc_seg)
    length = dec_seg.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=dec_seg.device).tril()
    dec = (within(dec_seg, dec_seg) & causal) | (dec_seg[:, :, None] == 0)
    cross = within(dec_seg, enc_seg)
    return enc[:, None], dec[:, None], cross[:, None]


def _as_model_mask(mask: torch.Tensor, model: Any, dtype: torch.dtype) -> torch.Tensor:
    """sdpa and the other fused kernels take the boolean mask; the eager kernel adds the mask to the scores
    (a boolean one would silently add 1.0), so it gets 0 / the dtype's minimum."""
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def packed_forward(model: Any, packed: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                   call: Any = None):  # fmt: skip
    """The model's output on a packed batch; its `loss` is the mean token cross-entropy over all label
    tokens, as the unpacked batch's `model(**batch).loss`. The encoder runs on its own masks first; the
    rest through `call` (default `model`; the loop passes the model as accelerate prepared it, DDP)."""
    segments = segment_masks(packed["encoder_segments"], packed["decoder_segments"])
    enc_mask, dec_mask, cross_mask = (_as_model_mask(m, model, dtype) for m in segments)
    encoded = model.get_encoder()(input_ids=packed["input_ids"], attention_mask=enc_mask)
    return (call or model)(
        encoder_outputs=encoded,
        attention_mask=cross_mask,
        decoder_input_ids=packed["decoder_input_ids"],
        decoder_attention_mask=dec_mask,
        labels=packed["labels"],
        use_cache=False,
    )
