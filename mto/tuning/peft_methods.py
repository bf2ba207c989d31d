"""`tuning=prompt|prefix|lora`: the PEFT methods, built, saved and loaded the PEFT way.

The model becomes a `peft.PeftModelForSeq2SeqLM` (for prefix tuning, its subclass in prefix.py, which
hands the prefix to transformers 5 as `cache`), whose `forward` and `generate` the training loop and the
evaluation call unchanged; the base is frozen by PEFT. Saving is `save_pretrained` (the folder holds
`adapter_config.json` and `adapter_model.safetensors`, kilobytes), loading `PeftModel.from_pretrained` on
the rebuilt or reloaded base (mto/tuning/base.py).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mto.errors import ConfigError
from mto.tuning import TUNING_METHODS
from mto.tuning.vectors import init_texts, initial_vectors

if TYPE_CHECKING:
    from mto.config import MtoConfig, TuningConfig

class PeftMethod:
    """A PEFT method configured by PEFT's own config class: `tuning.peft` holds its keyword arguments."""

    config_class = ""  # the name of the class in `peft`
    fixed: dict[str, Any] = {}  # arguments mto sets itself (the user's `tuning.peft` may not override them)
    uses_soft_tokens = False

    @classmethod
    def validate(cls, t: TuningConfig) -> None:
        """Build the PEFT config once, so PEFT refuses bad settings when the config is validated."""
        peft_config(t)

    @staticmethod
    def attach(model: Any, tokenizer: Any, cfg: MtoConfig, template: Any, task: Any) -> tuple[Any, Any, dict]:
        texts = init_texts(cfg.tuning, task, dict(cfg.phrases))
        return apply(model, tokenizer, cfg.tuning, texts, cfg.seed), tokenizer, {}

    @staticmethod
    def save(model: Any, path: Path, state: Any) -> None:
        save(model, path, state.base["name_or_path"])

    @staticmethod
    def load(model: Any, tokenizer: Any, path: Path) -> tuple[Any, Any, dict]:
        return load(model, path), tokenizer, {}


@TUNING_METHODS.register("prompt")
class PromptTuning(PeftMethod):
    # One set of virtual tokens, in front of the encoder's input: PEFT's seq2seq default (2 "transformer
    # submodules") allocates a second set for the decoder that prompt tuning never reads. The vectors'
    # start is ours (`tuning.init`, vectors.py), written over PEFT's random one.
    config_class = "PromptTuningConfig"
    fixed = {"num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM"}


@TUNING_METHODS.register("prefix")
class PrefixTuning(PeftMethod):
    config_class = "PrefixTuningConfig"


@TUNING_METHODS.register("lora")
class Lora(PeftMethod):
    config_class = "LoraConfig"
    fixed = {"bias": "none"}  # adapters hold the low-rank matrices only


def peft_config(t: TuningConfig) -> Any:
    """PEFT's config of `tuning.method` from `tuning.peft`; PEFT's refusals as one-line ConfigErrors."""
    import peft

    method = TUNING_METHODS.get(t.method, "tuning.method")
    given = dict(t.peft or {})
    for key in set(given) & set(method.fixed):
        raise ConfigError(f"tuning.peft.{key}: set by mto for tuning={t.method}; remove it")
    with peft_errors(method.config_class):
        config_class = getattr(peft, method.config_class)
        return config_class(task_type=peft.TaskType.SEQ_2_SEQ_LM, **method.fixed, **given)


@contextlib.contextmanager
def peft_errors(what: str):
    """PEFT's (and torch's, while PEFT builds modules) refusals of settings as one ConfigError line."""
    try:
        yield
    except (TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"tuning.peft ({what}): {first}") from None


def apply(model: Any, tokenizer: Any, t: TuningConfig, init_texts: list[str], seed: int) -> Any:
    """`model` wrapped by PEFT for `tuning.method`; prompt tuning's vectors set from `tuning.init`."""
    from peft import get_peft_model

    config = peft_config(t)
    if t.method == "prefix" and config.prefix_projection and not config.encoder_hidden_size:
        config.encoder_hidden_size = model.config.d_model
    embeddings = model.get_input_embeddings()
    with quiet(), peft_errors(type(config).__name__):
        peft_model = get_peft_model(model, config)
    if t.method == "prefix":
        peft_model = _prefix_through_cache(peft_model)
    if t.method == "prompt":
        weight = peft_model.prompt_encoder["default"].embedding.weight
        vectors = initial_vectors(
            t.init,
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
        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    if peft_model.active_peft_config.peft_type == "PREFIX_TUNING":
        peft_model = _prefix_through_cache(peft_model)
    return peft_model


def _prefix_through_cache(peft_model: Any) -> Any:
    """A prefix-tuned model that hands its prefix to transformers 5 as `cache` (prefix.py: PEFT 0.21's
    way is dropped by `generate`, which then decodes without the prefix)."""
    from mto.tuning.prefix import use_cache_api

    return use_cache_api(peft_model)


@contextlib.contextmanager
def quiet():
    """peft 0.21 asks transformers 5 a deprecated question (`is_gradient_checkpointing`): nothing for a
    user to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield
