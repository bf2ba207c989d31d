"""Initial vectors of trained prompt tokens (`tuning=prompt` and `tuning=soft`), one rule for both.

- `phrase` / `text`: the embeddings of the words of a text (the relation's phrase, `tuning.init_text`),
  cycled or cut to the number of tokens as PEFT's `PromptTuningInit.TEXT` does; several texts (a prompt
  shared by relations, initialised from all their phrases) are averaged position by position.
- `vocab`: embeddings of randomly drawn ordinary vocabulary words (no pad, EOS, unk or sentinels).
- `uniform`: uniform noise in [-0.5, 0.5] (Lester et al., 2021).

Done here rather than with PEFT's own `prompt_tuning_init`: its TEXT mode reloads a tokenizer by name
(`tokenizer_name_or_path`), which the tiny model's offline tokenizer does not have, and counts the EOS
it appends as a word; its SAMPLE_VOCAB draws pad and sentinels too and uses the global RNG. Here the
draws come from the run's seed alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mto.errors import ConfigError
from mto.templates import fill, sentinel_token_ids

UNIFORM_RANGE = 0.5


def ordinary_token_ids(tokenizer: Any, n_rows: int) -> list[int]:
    """Ids of the words of the vocabulary: not special, not a sentinel, within the embedding's rows."""
    excluded = set(tokenizer.all_special_ids) | set(sentinel_token_ids(tokenizer))
    return [i for i in range(min(len(tokenizer), n_rows)) if i not in excluded]


def text_token_ids(tokenizer: Any, text: str, n: int) -> list[int]:
    """The word ids of `text` (no EOS), cycled or cut to `n`."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"tuning.init: the text {text!r} has no tokens to initialise a prompt from")
    return (ids * (n // len(ids) + 1))[:n]


def phrase_text(relation: str, phrases: dict[str, str]) -> str:
    """The words of a relation's phrase (placeholders such as `{head}` dropped); its name if none."""
    return fill(phrases[relation], lambda _: "") if relation in phrases else relation


@torch.no_grad()
def initial_vectors(
    init: str,
    n: int,
    embed: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    tokenizer: Any,
    n_rows: int,
    texts: Sequence[str],
    seed: int,
) -> torch.Tensor:
    """`n` float32 vectors of size `dim`; `embed(ids)` gives the model's input embeddings of token ids,
    `n_rows` is the size of its embedding table; `texts` are used by `phrase` and `text`."""
    generator = torch.Generator().manual_seed(int(seed))
    device = embed.weight.device if hasattr(embed, "weight") else torch.device("cpu")
    if init == "uniform":
        return ((torch.rand(n, dim, generator=generator) * 2 - 1) * UNIFORM_RANGE).to(device)
    if init == "vocab":
        words = torch.tensor(ordinary_token_ids(tokenizer, n_rows))
        picked = words[torch.randint(len(words), (n,), generator=generator)]
        return embed(picked.to(device)).float()
    if init in ("phrase", "text"):
        if not texts:
            raise ConfigError(
                f"tuning.init={init}: no text to initialise the prompt from (no relations or no "
                "tuning.init_text); use tuning.init=vocab or uniform"
            )
        rows = [embed(torch.tensor(text_token_ids(tokenizer, t, n), device=device)).float() for t in texts]
        return torch.stack(rows).mean(dim=0)
    raise ConfigError(f"tuning.init={init}: expected one of phrase, text, vocab, uniform")


def groups_of(task: Any) -> list[str]:
    """The task's metric groups (relations of a knowledge task), sorted."""
    return sorted(
        {str(ex.get("group", ex.get("relation"))) for s in (task.train, task.dev, task.test) for ex in s}
    )


def relations_of(task: Any) -> list[str]:
    return sorted({str(ex["relation"]) for ex in task.train if "relation" in ex})


def init_texts(t: Any, task: Any, phrases: dict[str, str]) -> list[str]:
    """Texts a prompt shared by all relations starts from: `init_text`, or every relation's phrase."""
    if t.init == "text":
        return [t.init_text]
    if t.init == "phrase":
        relations = relations_of(task)
        if not relations:
            raise ConfigError(
                f"tuning.init=phrase: task '{task.name}' has no relations; use init=vocab or text"
            )
        return [phrase_text(r, phrases) for r in relations]
    return []

