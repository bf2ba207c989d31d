"""`tuning=soft`: MTO soft prompts, trained tokens placed *inside* the template with `{soft:N}`.

    template=masked_post_prompt   {head} {soft:8} {phrase} {mask}  ->  {mask} {tail}
    PersonX buys a ticket <soft_0> ... <soft_7> because PersonX intended <extra_id_0>

How it works:

- The soft tokens are new special tokens of the tokenizer: `<soft_0>` ... (one set shared by all
  relations), or `<soft_xIntent_0>` ... (`tuning.per_relation`: one set per relation). The template
  renders `{soft:N}` to the names the tokenizer holds (`render_soft`), so they tokenise to one id each,
  at exactly the place the template puts them.
- Their vectors live in a `SoftPrompt` module (optionally reparameterised by a residual MLP or LSTM,
  as in P-tuning), and the encoder's input embedding is wrapped (`SoftEmbedding`) so that soft ids read
  those vectors and every other id the frozen base embedding. Nothing else of the base changes.

Why not PEFT: its prompt methods (prompt tuning, P-tuning, prefix tuning) only ever *prepend* virtual
tokens, so they cannot put a prompt after the head or before the sentinel. Its `TrainableTokens` (and
LoRA's `trainable_token_indices`) train rows of the embedding matrix, which would mean resizing the
vocabulary: with T5's tied embeddings the output layer grows too, so the model could *generate* soft
tokens, and an untied model gets random new output rows that differ between training and reloading;
nor does it offer a reparameterisation encoder. Wrapping the encoder's embedding leaves the base's
vocabulary, output layer and weights exactly as they were.

Saved as `soft_prompt.safetensors` (the final token vectors) and `soft_prompt.json` (token names, sizes).
As PEFT does for P-tuning, a reparameterisation encoder is a training device and is not saved: the file
holds its output, which is what the model reads (a two-layer LSTM as wide as t5-base would be ~90 MB).
The output is computed by the same float32 operations on the same shapes as in training, so the
reloaded prompt is bitwise the one the model ended training with.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mto.errors import ConfigError
from mto.tuning import TUNING_METHODS
from mto.tuning.vectors import groups_of, initial_vectors, phrase_text, relations_of

if TYPE_CHECKING:
    from mto.config import MtoConfig, TuningConfig

CONFIG_FILE = "soft_prompt.json"
WEIGHTS_FILE = "soft_prompt.safetensors"
SHARED = ""  # the set key of a prompt shared by all relations


# ---------------------------------------------------------------- token names, tokenizer, templates
def token_sets(n: int, groups: list[str] | None) -> dict[str, list[str]]:
    """Token names of each set: `{"": [<soft_0>, ...]}` shared, or `{group: [<soft_group_0>, ...]}`."""
    if groups is None:
        return {SHARED: [f"<soft_{i}>" for i in range(n)]}
    names: dict[str, list[str]] = {}
    used: dict[str, str] = {}
    for group in groups:
        safe = re.sub(r"[^0-9A-Za-z]+", "_", group).strip("_") or "group"
        if safe in used:
            raise ConfigError(
                f"tuning.per_relation: relations {used[safe]!r} and {group!r} give the same token name"
            )
        used[safe] = group
        names[group] = [f"<soft_{safe}_{i}>" for i in range(n)]
    return names


def add_soft_tokens(tokenizer: Any, sets: dict[str, list[str]]) -> int:
    """Add the tokens of `sets` (in order) to `tokenizer` as special tokens; their first id.

    The ids are consecutive, which `SoftEmbedding` relies on. The sets are also left on the tokenizer
    (`mto_soft`) for `render_soft`."""
    from transformers import AddedToken

    names = [name for tokens in sets.values() for name in tokens]
    first = len(tokenizer)
    tokenizer.add_tokens(
        [AddedToken(name, special=True, normalized=False) for name in names], special_tokens=True
    )
    ids = tokenizer.convert_tokens_to_ids(names)
    if ids != list(range(first, first + len(names))):
        raise ConfigError(f"tuning=soft: the tokenizer already holds some of the soft tokens {names[:3]}...")
    tokenizer.mto_soft = {"sets": sets}
    return first


def render_soft(tokenizer: Any) -> Callable[[Mapping[str, object], int], str]:
    """The `soft(example, i)` a template renders `{soft:N}` with: the tokenizer's soft-token names."""

    def soft(example: Mapping[str, object], i: int) -> str:
        info = getattr(tokenizer, "mto_soft", None)
        if info is None:
            raise ConfigError(
                "the template places {soft:N} tokens but the model has no soft prompt: train with tuning=soft"
            )
        sets = info["sets"]
        key = SHARED if SHARED in sets else str(example.get("group", example.get("relation")))
        if key not in sets:
            raise ConfigError(
                f"tuning=soft: no soft prompt for relation {key!r} (trained for: {', '.join(sorted(sets))})"
            )
        if i >= len(sets[key]):
            raise ConfigError(
                f"tuning=soft: the template places more than the {len(sets[key])} trained soft tokens"
            )
        return sets[key][i]

    return soft


# ---------------------------------------------------------------- the modules
class SoftPrompt(nn.Module):
    """The vectors of `n_sets` x `n_tokens` soft tokens, optionally reparameterised.

    The encoders are residual with a zero-initialised last layer, so at the start the prompt is exactly
    its initialisation (e.g. the phrase's words) whichever encoder is chosen. The LSTM reads each set as
    one sequence, as P-tuning does. Encoders run in float32 whatever autocast is active."""

    def __init__(
        self, n_sets: int, n_tokens: int, dim: int, encoder: str = "none", hidden: int | None = None
    ):
        super().__init__()
        self.n_sets, self.n_tokens, self.dim, self.encoder = n_sets, n_tokens, dim, encoder
        hidden = int(hidden or dim)
        self.embedding = nn.Parameter(torch.zeros(n_sets * n_tokens, dim))
        if encoder == "mlp":
            self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        elif encoder == "lstm":
            self.lstm = nn.LSTM(dim, hidden, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        elif encoder != "none":
            raise ConfigError(f"tuning.encoder={encoder}: expected one of none, mlp, lstm")
        if encoder != "none":
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    @property
    def n_rows(self) -> int:
        return self.n_sets * self.n_tokens

    def forward(self) -> torch.Tensor:
        x = self.embedding
        if self.encoder == "none":
            return x
        with torch.autocast(x.device.type, enabled=False):
            if self.encoder == "mlp":
                return x + self.head(x)
            out, _ = self.lstm(x.view(self.n_sets, self.n_tokens, self.dim))
            return x + self.head(out).reshape(self.n_rows, self.dim)


class SoftEmbedding(nn.Module):
    """The encoder's input embedding with soft ids (`first_id` ... `first_id + n_rows - 1`) read from a
    `SoftPrompt` and every other id from the frozen base embedding."""

    def __init__(self, base: nn.Module, prompt: SoftPrompt, first_id: int):
        super().__init__()
        self.base, self.prompt, self.first_id = base, prompt, int(first_id)

    @property
    def weight(self) -> torch.Tensor:  # code that asks the input embedding for its dtype/device
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        offset = input_ids - self.first_id
        is_soft = (offset >= 0) & (offset < self.prompt.n_rows)
        embeds = self.base(torch.where(is_soft, torch.zeros_like(input_ids), input_ids))
        if not bool(is_soft.any()):
            return embeds
        vectors = self.prompt().to(embeds.dtype)[offset.clamp(0, self.prompt.n_rows - 1)]
        return torch.where(is_soft.unsqueeze(-1), vectors, embeds)


def _encoder(model: Any) -> Any:
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    if (
        encoder is None
        or encoder is model
        or not isinstance(getattr(encoder, "embed_tokens", None), nn.Module)
    ):
        raise ConfigError(
            f"tuning=soft needs an encoder-decoder model with an encoder embedding (T5, BART), "
            f"not {type(model).__name__}"
        )
    return encoder


def install(model: Any, prompt: SoftPrompt, first_id: int) -> None:
    """Freeze `model` and route its encoder's input embedding through `prompt`."""
    for p in model.parameters():
        p.requires_grad_(False)
    encoder = _encoder(model)
    encoder.embed_tokens = SoftEmbedding(encoder.embed_tokens, prompt, first_id)


def soft_prompt(model: Any) -> SoftPrompt:
    return _encoder(model).embed_tokens.prompt


@TUNING_METHODS.register("soft")
class SoftPrompting:
    """MTO soft prompts: trained tokens placed by the template's `{soft:N}`."""

    uses_soft_tokens = True

    @staticmethod
    def attach(model: Any, tokenizer: Any, cfg: MtoConfig, template: Any, task: Any) -> tuple[Any, Any, dict]:
        groups, relations, phrases = groups_of(task), relations_of(task), dict(cfg.phrases)
        return apply(model, tokenizer, cfg.tuning, template.n_soft, groups, relations, phrases, cfg.seed)

    @staticmethod
    def save(model: Any, path: Path, state: Any) -> None:
        save(model, path, state.extra)

    @staticmethod
    def load(model: Any, tokenizer: Any, path: Path) -> tuple[Any, Any, dict]:
        return load(model, tokenizer, path)

    @staticmethod
    def validate(t: TuningConfig) -> None:
        if t.peft:
            raise ConfigError("tuning.peft: set for tuning=soft, which is not a PEFT method")


# ---------------------------------------------------------------- apply, save, load
def apply(
    model: Any,
    tokenizer: Any,
    t: Any,
    n_tokens: int,
    groups: list[str],
    relations: list[str],
    phrases: dict[str, str],
    seed: int,
) -> tuple[Any, Any, dict]:
    """Add the soft prompt to `model`; return it, the run's tokenizer (a copy of `tokenizer` holding
    the soft tokens: the base tokenizer stays as the base knows it) and the settings to save."""
    per_relation = bool(t.per_relation)
    sets = token_sets(n_tokens, groups if per_relation else None)
    embed = _encoder(model).embed_tokens
    dim = model.config.d_model
    init = t.init
    rows = []
    for key in sets:
        if init == "text":
            texts = [t.init_text] if t.init_text else []
        elif init == "phrase":
            texts = [phrase_text(r, phrases) for r in ([key] if key != SHARED else relations)]
        else:
            texts = []
        n_rows = embed.weight.shape[0]
        set_seed = seed + len(rows)  # a different draw for each set
        rows.append(initial_vectors(init, n_tokens, embed, dim, tokenizer, n_rows, texts, set_seed))
    encoder = t.encoder
    prompt = SoftPrompt(len(sets), n_tokens, dim, encoder, t.encoder_hidden_size)
    prompt.to(embed.weight.device)
    with torch.no_grad():
        prompt.embedding.copy_(torch.cat(rows).to(prompt.embedding.device))
    run_tokenizer = copy.deepcopy(tokenizer)
    first_id = add_soft_tokens(run_tokenizer, sets)
    install(model, prompt, first_id)
    settings = {
        "sets": sets,
        "n_tokens": n_tokens,
        "first_id": first_id,
        "dim": dim,
        "encoder": encoder,
        "encoder_hidden_size": t.encoder_hidden_size,
        "init": init,
    }
    return model, run_tokenizer, settings


def save(model: Any, path: Path, settings: dict) -> None:
    """The soft-token vectors (the encoder's output, when there is one) and the settings."""
    from safetensors.torch import save_file

    with torch.no_grad():
        vectors = soft_prompt(model)().detach().to("cpu").contiguous()
    save_file({"embedding": vectors}, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    (path / CONFIG_FILE).write_text(json.dumps(settings, indent=1) + "\n")


def load(model: Any, tokenizer: Any, path: Path) -> tuple[Any, Any, dict]:
    """The soft prompt saved in `path` on `model`; the run's tokenizer with its tokens; the settings."""
    from safetensors.torch import load_file

    settings = json.loads((path / CONFIG_FILE).read_text())
    run_tokenizer = copy.deepcopy(tokenizer)
    first_id = add_soft_tokens(run_tokenizer, settings["sets"])
    if first_id != settings["first_id"]:
        raise ConfigError(
            f"tuning.adapter={path}: the soft tokens get ids from {first_id}, but were trained at "
            f"{settings['first_id']}: the base tokenizer differs from the one the prompt was trained with"
        )
    # The saved vectors are final (see the module docstring): no encoder on top of them.
    prompt = SoftPrompt(len(settings["sets"]), settings["n_tokens"], settings["dim"], "none")
    prompt.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    prompt.requires_grad_(False)
    install(model, prompt, first_id)
    return model, run_tokenizer, settings
