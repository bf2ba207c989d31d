"""`tuning=prompt|prefix|lora`: the PEFT methods, built, saved and loaded the PEFT way.

The model becomes a `peft.PeftModelForSeq2SeqLM`, whose `forward` and `generate` the training loop and
the evaluation call unchanged; the base is frozen by PEFT. Saving is `save_pretrained` (the folder holds
`adapter_config.json` and `adapter_model.safetensors`, kilobytes), loading `PeftModel.from_pretrained` on
the rebuilt or reloaded base (mto/tuning/base.py).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import torch

from mto.tuning.vectors import initial_vectors


def peft_config(method: str, t: Any) -> Any:
    """The PEFT config of `method` from the `tuning` settings `t`."""
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    task = TaskType.SEQ_2_SEQ_LM
    if method == "prompt":
        # One set of virtual tokens, in front of the encoder's input: PEFT's seq2seq default (2 "transformer
        # submodules") allocates a second set for the decoder that prompt tuning never reads.
        return PromptTuningConfig(
            task_type=task,
            num_virtual_tokens=int(t.num_virtual_tokens),
            num_transformer_submodules=1,
            prompt_tuning_init=PromptTuningInit.RANDOM,  # overwritten from `tuning.init` (vectors.py)
        )
    if method == "prefix":
        return PrefixTuningConfig(
            task_type=task,
            num_virtual_tokens=int(t.num_virtual_tokens),
            prefix_projection=bool(t.prefix_projection),
            encoder_hidden_size=t.encoder_hidden_size,
        )
    if method == "lora":
        targets = list(t.target_modules) if t.target_modules else None
        return LoraConfig(
            task_type=task,
            r=int(t.r),
            lora_alpha=float(t.alpha),
            lora_dropout=float(t.dropout),
            target_modules=targets,
            bias="none",
        )
    raise ValueError(method)


def apply(model: Any, tokenizer: Any, t: Any, method: str, init_texts: list[str], seed: int) -> Any:
    """`model` wrapped by PEFT for `method`; prompt tuning's vectors set from `tuning.init`."""
    from peft import get_peft_model

    config = peft_config(method, t)
    if method == "prefix" and config.prefix_projection and not config.encoder_hidden_size:
        config.encoder_hidden_size = model.config.d_model
    embeddings = model.get_input_embeddings()
    with quiet():
        peft_model = get_peft_model(model, config)
    if method == "prompt":
        weight = peft_model.prompt_encoder["default"].embedding.weight
        vectors = initial_vectors(
            _value(t.init),
            weight.shape[0],
            embeddings,
            weight.shape[1],
            tokenizer,
            embeddings.num_embeddings,
            init_texts,
            seed,
        )
        with torch.no_grad():
            weight.copy_(vectors.to(weight.device, weight.dtype))
    return peft_model


def save(model: Any, path: Path, base_name: str) -> None:
    """PEFT's `save_pretrained`, naming the base in `adapter_config.json`.

    `save_embedding_layers=False`: its default ("auto") asks the Hugging Face Hub for the base's config to
    see whether the vocabulary was resized, which never happens here (soft tokens do not resize it)."""
    model.peft_config["default"].base_model_name_or_path = base_name
    model.save_pretrained(str(path), save_embedding_layers=False)


def load(model: Any, path: Path) -> Any:
    """The adapter in `path` on `model` (frozen, inference mode)."""
    from peft import PeftModel

    with quiet():
        return PeftModel.from_pretrained(model, str(path), is_trainable=False)


@contextlib.contextmanager
def quiet():
    """peft 0.21 asks transformers 5 a deprecated question (`is_gradient_checkpointing`): nothing for a
    user to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))
