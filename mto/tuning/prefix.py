"""`tuning=prefix` through transformers 5's cache API.

PEFT (0.21) hands prefix tuning's key/value prefix to the base model as `past_key_values`, a name
transformers 5 replaced by `cache`. In `forward` the old name still works but warns (FutureWarning,
every training run); in `generate`, which always passes a `cache` of its own, transformers keeps that
one and drops the prefix ("Both `past_key_values` and `cache` are set ... ignoring deprecated
`past_key_values`"): the model generated as its base, as if no prefix had been trained.

`PrefixTuningSeq2SeqLM` is PEFT's seq2seq model with the prefix handed over as `cache`: in `forward`, and
as the cache `generate` decodes from. Nothing else changes (parameters, saving, loading are PEFT's).
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModelForSeq2SeqLM, PeftType


class PrefixTuningSeq2SeqLM(PeftModelForSeq2SeqLM):
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        decoder_inputs_embeds=None,
        labels=None,
        task_ids=None,
        **kwargs,
    ):
        """PEFT's prefix-tuning forward, the prefix passed as `cache`: a fresh prefix for every call (any
        cache given is replaced, as PEFT does), attended to by every decoder position."""
        batch_size = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if decoder_attention_mask is not None:
            ones = decoder_attention_mask.new_ones(batch_size, self.active_peft_config.num_virtual_tokens)
            decoder_attention_mask = torch.cat((ones, decoder_attention_mask), dim=1)
        kwargs.pop("past_key_values", None)
        kwargs["cache"] = self.get_prompt(batch_size)
        return self.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            decoder_inputs_embeds=decoder_inputs_embeds,
            labels=labels,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, *args, task_ids=None, **kwargs):
        """The base's step inputs; on the first step the cache is the prefix (for as many rows as are
        decoded, beams included), which `generate` then carries on from step to step."""
        inputs = self.base_model_prepare_inputs_for_generation(*args, **kwargs)
        cache = inputs.get("cache")
        if kwargs.get("is_first_iteration") or cache is None or cache.get_seq_length() == 0:
            inputs["cache"] = self.get_prompt(inputs["decoder_input_ids"].shape[0])
        inputs.pop("past_key_values", None)
        return inputs


def use_cache_api(model: Any) -> Any:
    """`model`, PEFT's prefix-tuned seq2seq model, as a `PrefixTuningSeq2SeqLM`.

    PEFT picks its model class from a table keyed by task type (in `get_peft_model` and
    `PeftModel.from_pretrained`), so the subclass is set on the built model: it adds no state."""
    prefix = (
        isinstance(model, PeftModelForSeq2SeqLM)
        and model.active_peft_config.peft_type == PeftType.PREFIX_TUNING
    )
    if not prefix:
        raise TypeError(f"not a PEFT prefix-tuned seq2seq model: {type(model).__name__}")
    model.__class__ = PrefixTuningSeq2SeqLM
    return model
