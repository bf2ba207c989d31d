"""The base model an adapter belongs to: what identifies it, and how eval gets exactly it back.

An adapter run never stores a copy of its base model. It records what the base *is*:

- a checkpoint (hub name or local folder): `name_or_path` and `revision`, reloaded with `from_pretrained`;
- a T5 built from scratch (`model.build`, the embedded `tiny`): the build settings and the seed. Building
  is deterministic (`mto.models.build_t5` seeds its own RNG), so eval rebuilds the very same weights from
  them and the tokenizer, which the adapter folder keeps (a few tens of kB) because it was trained
  offline on the task's text and exists nowhere else once the cache is cleared.

Either way a fingerprint taken at training time is checked at load time: of every weight for a built
base (cheap, and the proof that the rebuild is bitwise the same), of the parameter names and shapes for
a checkpoint (hashing gigabytes of weights on every eval would cost more than it tells: the name and
revision already identify them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from mto.cache import fingerprint
from mto.config import ModelConfig
from mto.errors import ConfigError, MtoError


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every tensor of `model.state_dict()` (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def shapes_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the parameter names and shapes: the architecture, not the values."""
    return fingerprint([(name, list(t.shape)) for name, t in sorted(model.state_dict().items())])


def identity(model_cfg: Any, seed: int, model: torch.nn.Module) -> dict:
    """What identifies the base model `model` (loaded from the `model` config `model_cfg`)."""
    build = dict(model_cfg.build) if model_cfg.build is not None else None
    record = {
        "name_or_path": str(model_cfg.name_or_path),
        "revision": model_cfg.revision,
        "build": build,
        "tokenizer_vocab_size": int(model_cfg.tokenizer_vocab_size) if build is not None else None,
        "seed": int(seed) if build is not None else None,
        "shapes": shapes_fingerprint(model),
        "weights": weights_fingerprint(model) if build is not None else None,
    }
    return record


def describe(base: dict) -> str:
    """A base model in a few words, for messages."""
    if base.get("build") is not None:
        return f"'{base['name_or_path']}' (built from model.build, seed {base.get('seed')})"
    revision = f"@{base['revision']}" if base.get("revision") else ""
    return f"'{base['name_or_path']}{revision}'"


def check_same_base(recorded: dict, model_cfg: Any, adapter: Path) -> None:
    """Refuse to put an adapter on a base other than the one it was trained on."""
    build = dict(model_cfg.build) if model_cfg.build is not None else None
    current = {
        "name_or_path": str(model_cfg.name_or_path),
        "revision": model_cfg.revision,
        "build": build,
        "tokenizer_vocab_size": int(model_cfg.tokenizer_vocab_size) if build is not None else None,
    }
    differ = [key for key in current if current[key] != recorded.get(key)]
    if differ:
        raise ConfigError(
            f"tuning.adapter={adapter}: the adapter was trained on base model {describe(recorded)}, "
            f"not on model {describe({**current, 'seed': recorded.get('seed')})} "
            f"(model.{differ[0]}: {recorded.get(differ[0])} vs {current[differ[0]]}); "
            "evaluate it on its own base (drop the model override)"
        )


def load_base(recorded: dict, adapter: Path, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(tokenizer, model) of the base an adapter was trained on, checked against its fingerprint."""
    from mto.models import build_t5, load_tokenizer_and_model

    if recorded.get("build") is not None:
        from transformers import AutoTokenizer

        if not (adapter / "tokenizer_config.json").is_file():
            raise ConfigError(
                f"tuning.adapter={adapter}: the tokenizer of its built base {describe(recorded)} is missing"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(adapter))
        model = build_t5(recorded["build"], tokenizer, int(recorded["seed"]))
        got, key = weights_fingerprint(model), "weights"
    else:
        spec = ModelConfig(
            name_or_path=recorded["name_or_path"],
            revision=recorded.get("revision"),
            trust_remote_code=trust_remote_code,
        )
        try:
            tokenizer, model = load_tokenizer_and_model(spec)
        except MtoError as err:
            raise ConfigError(
                f"tuning.adapter={adapter}: its base model {describe(recorded)} cannot be loaded ({err})"
            ) from err
        got, key = shapes_fingerprint(model), "shapes"
    if recorded.get(key) and got != recorded[key]:
        raise ConfigError(
            f"tuning.adapter={adapter}: base model {describe(recorded)} loads with {key} fingerprint {got}, "
            f"but the adapter was trained on {recorded[key]} (another model under the same name?)"
        )
    return tokenizer, model
