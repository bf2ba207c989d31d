"""What trains: `tuning=full|prompt|prefix|lora|soft` (conf/tuning/*.yaml).

- `full`: every weight (the model is left as it is, saved whole with `save_pretrained`).
- `prompt`, `prefix`, `lora`: the PEFT methods (`peft_methods.py`), saved the PEFT way.
- `soft`: MTO soft prompts placed by the template's `{soft:N}` (`soft.py`).

For every method but `full` the base model is frozen, and a run saves an *adapter* in `model/`: the
method's own files (`adapter_config.json` + `adapter_model.safetensors`, or `soft_prompt.*`), the
identity of its base (`mto_adapter.json`, see `base.py`) and, for a base built from scratch, its
tokenizer. `mto eval run=<that run>` (`tuning.adapter`) loads the base named there, checks it is the
one the adapter was trained on, and puts the adapter back on it.

    model, tokenizer, state = apply_tuning(model, tokenizer, cfg, template, task)   # before training
    train_model(..., lr=learning_rate(state, cfg.train.lr))                          # tuning.lr or train.lr
    save_tuned(model, tokenizer, folder, state)                                      # after
    tokenizer, model, state = load_tuned(cfg)                                        # at eval

`state` (a `TuningState`, None for `full`) is what saving and describing the model need besides its
modules; it is passed along explicitly, never left on the model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mto.config import plain
from mto.errors import ConfigError
from mto.registry import Registry
from mto.tuning import base as base_model

log = logging.getLogger("mto")

# tuning.method -> the method's class, with `validate(tuning_config)`, `attach(model, tokenizer, cfg,
# template, task) -> (model, tokenizer, extra)`, `save(model, path, state)`, `load(model, tokenizer, path)
# -> (model, tokenizer, extra)` and `uses_soft_tokens`. A new method is its module in this package plus its
# YAML in conf/tuning/.
TUNING_METHODS = Registry("tuning method", "mto.tuning")


METADATA = "mto_adapter.json"
SOFT_TEMPLATES = "pre_prompt, post_prompt, masked_pre_prompt, masked_post_prompt"


@dataclass
class TuningState:
    """What a tuned model needs besides its modules, to be saved and described (returned by
    `apply_tuning` and `load_tuned`, passed to `save_tuned` and `figures`)."""

    method: str
    settings: dict  # the `tuning` config of the run
    base: dict  # the base model's identity (base.identity)
    base_tokenizer: Any  # the tokenizer the base came with (no soft tokens)
    extra: dict = field(default_factory=dict)  # method details (soft: token names, sizes)


@TUNING_METHODS.register("full")
class FullTuning:
    """Every weight trains; the model is left as it is and saved whole (`save_pretrained`)."""

    uses_soft_tokens = False

    @staticmethod
    def validate(t: Any) -> None:
        if t.peft:
            raise ConfigError("tuning.peft: set for tuning=full, which trains every weight (a PEFT method?)")


def method_of(t: Any) -> str:
    return str(t.method)


def apply_tuning(
    model: Any, tokenizer: Any, cfg: Any, template: Any, task: Any
) -> tuple[Any, Any, TuningState | None]:
    """`(model, tokenizer, state)` ready to train with `cfg.tuning`: unchanged and no state for `full`;
    otherwise the base frozen and the method's parameters added (the tokenizer gains soft tokens for
    `soft`), with the state `save_tuned` and `figures` need."""
    t = cfg.tuning
    method = method_of(t)
    impl = TUNING_METHODS.get(method, "tuning.method")
    n_soft = getattr(template, "n_soft", 0)
    if n_soft and not impl.uses_soft_tokens:
        raise ConfigError(
            f"template={template.name} places {{soft:N}} tokens, which only tuning=soft trains "
            f"(tuning={method})"
        )
    if method == "full":
        return model, tokenizer, None
    if t.adapter:
        raise ConfigError(
            f"tuning.adapter={t.adapter}: adapters are loaded to evaluate; training starts a new one"
        )
    if impl.uses_soft_tokens and not n_soft:
        raise ConfigError(
            f"tuning={method} needs a template with {{soft:N}} placeholders ({SOFT_TEMPLATES}), not "
            f"template={template.name}"
        )
    base = base_model.identity(cfg.model, cfg.seed, model)
    state = TuningState(method=method, settings=plain(t), base=base, base_tokenizer=tokenizer)
    model, tokenizer, state.extra = impl.attach(model, tokenizer, cfg, template, task)
    trainable, total = parameter_counts(model)
    log.info(
        "tuning=%s: %d of %d parameters train (%.4f%%), lr %s",
        method,
        trainable,
        total,
        100 * trainable / total,
        t.lr if t.lr is not None else f"{cfg.train.lr} (train.lr)",
    )
    return model, tokenizer, state


def learning_rate(state: TuningState | None, train_lr: float) -> float:
    """The step size to train with: `tuning.lr` for a method that sets it (not `full`), else `train.lr`."""
    return (state.settings.get("lr") if state is not None else None) or train_lr


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, all) parameters; tied weights counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_tuned(model: Any, tokenizer: Any, path: Path, state: TuningState) -> None:
    """Write the adapter of a tuned `model` (its `state` from `apply_tuning`) into the folder `path`
    (never a copy of the base)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    TUNING_METHODS.get(state.method, "tuning.method").save(model, path, state)
    if state.base.get("build") is not None:
        # A tokenizer trained offline exists nowhere else once the cache is cleared; the base model itself
        # is rebuilt from `base.build` and `base.seed`.
        state.base_tokenizer.save_pretrained(str(path))
    trainable, total = parameter_counts(model)
    meta = {
        "method": state.method,
        "tuning": state.settings,
        "base": state.base,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    (path / METADATA).write_text(json.dumps(meta, indent=1, default=str) + "\n")


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / METADATA).is_file()


def read_metadata(path: Path) -> dict:
    path = Path(path)
    if not is_adapter_dir(path):
        raise ConfigError(f"tuning.adapter={path}: not an adapter folder (no {METADATA})")
    return json.loads((path / METADATA).read_text())


def base_model_config(path: Path) -> dict:
    """The `model` config keys of the base the adapter in `path` was trained on (for `mto eval run=`).

    Taken from the adapter, not from the run's config: a run started from `adapt_run=` trained on that
    run's model folder, which its composed config does not name."""
    base = read_metadata(path)["base"]
    keys = {
        "name_or_path": base["name_or_path"],
        "revision": base.get("revision"),
        "build": base.get("build"),
    }
    if base.get("build") is not None:
        keys["tokenizer_vocab_size"] = base["tokenizer_vocab_size"]
    return keys


def load_tuned(cfg: Any) -> tuple[Any, Any, TuningState]:
    """(tokenizer, model, state): the base named in the adapter folder `cfg.tuning.adapter`, with the
    adapter, and its state.

    The base must be the model config of `cfg` (what `mto eval run=` inherits); another is refused."""
    path = Path(cfg.tuning.adapter)
    meta = read_metadata(path)
    base = meta["base"]
    base_model.check_same_base(base, cfg.model, path)
    tokenizer, model = base_model.load_base(base, path, cfg.model.trust_remote_code)
    state = TuningState(method=meta["method"], settings=meta["tuning"], base=base, base_tokenizer=tokenizer)
    impl = TUNING_METHODS.get(meta["method"], f"{path / METADATA}: method")
    model, tokenizer, state.extra = impl.load(model, tokenizer, path)
    log.info("adapter %s (tuning=%s) on base model %s", path, meta["method"], base_model.describe(base))
    return tokenizer, model, state


def figures(model: Any, path: Path, state: TuningState | None) -> dict:
    """run.json figures of a tuned model saved in `path`: parameter counts, the adapter's size; none
    for `full` (`state` None)."""
    if state is None:
        return {}
    trainable, total = parameter_counts(model)
    files = [f for f in Path(path).iterdir() if f.is_file()]
    return {
        "tuning": state.method,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / total,
        "adapter_bytes": sum(f.stat().st_size for f in files if f.suffix == ".safetensors"),
        "adapter_folder_bytes": sum(f.stat().st_size for f in files),
    }
