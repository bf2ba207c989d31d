"""Tasks: the data a run trains and evaluates on, one kind per `data.kind`.

- `atomic`, `synthetic` (knowledge completion): a folder in the official ATOMIC-2020 release format
  (see `atomic.py`); the embedded synthetic world (`synthetic.py`) is written in that same format first,
  so both kinds share one reader. Records:

    {"id": "train-0", "head": ..., "relation": ..., "tail": ..., "tails": [...], "group": relation}

- `qa` (multiple-choice QA: CommonsenseQA, SocialIQA, PIQA, OpenBookQA; see `qa.py`), scored by accuracy:

    {"id", "question", "context", "stem", "choices", "labels", "options", "answer_index", "answer",
     "label", "tail", "tails", "group"}

- `text2text` (any source -> target pairs from JSON Lines or CSV; see `text2text.py`):

    {"id", "source", "target", "tail", "tails", "group"}

`TaskData.metric` says how predictions are scored: "generation" (`mto.metrics.score_generation`, against
`tails`) or "choice" (`mto.metrics.score_choices`, against `choices`/`labels`/`answer_index`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf.errors import MissingMandatoryValue

from mto.errors import ConfigError, DataError

KINDS = ("atomic", "synthetic", "qa", "text2text")
SPLITS = ("train", "dev", "test")
METRICS = ("generation", "choice")


@dataclass
class TaskData:
    """The three splits of one task, plus what identifies them."""

    name: str
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    fingerprint: str  # hash of the split files' bytes (or hub rows) and the selection options
    source: str  # the folder (or hub dataset) the data came from
    metric: str = "generation"  # how predictions are scored: generation | choice (see METRICS)
    # Record fields whose text a tokenizer built offline must cover (a field may hold a list of strings).
    text_fields: tuple[str, ...] = ("head", "tails")
    # Splits that cannot be evaluated (absent, or without answers such as CommonsenseQA's official
    # test set): split -> the one-line reason. Such a split is an empty list; `split()` raises the reason.
    unavailable: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> list[dict]:
        """The records of split `name`; DataError with the reason when the split is unavailable."""
        if name not in SPLITS:
            raise ConfigError(f"eval.split={name}: expected one of {', '.join(SPLITS)}")
        if name in self.unavailable:
            raise DataError(self.unavailable[name])
        return getattr(self, name)

    def texts(self) -> list[str]:
        """Every distinct string of the `text_fields` of all splits, in order of first appearance.

        Used to train the tiny model's tokenizer; duplicates are dropped so that a head with
        many tails does not dominate the vocabulary.
        """
        seen: dict[str, None] = {}
        for split in (self.train, self.dev, self.test):
            for record in split:
                for name in self.text_fields:
                    value = record[name]
                    for text in [value] if isinstance(value, str) else value:
                        seen.setdefault(text, None)
        return list(seen)


def _optional(cfg: Any, key: str) -> Any:
    """`cfg.key`, or None when absent or left as OmegaConf's mandatory `???`."""
    try:
        return getattr(cfg, key, None)
    except MissingMandatoryValue:
        return None


def load_task(cfg: Any) -> TaskData:
    """Load the task that the `data` config describes (dispatch on `cfg.kind`)."""
    # Imported here: the submodules import TaskData from this package.
    from mto.tasks.atomic import load_atomic
    from mto.tasks.synthetic import world_dir

    kind = getattr(cfg, "kind", None)
    options = dict(
        relations=getattr(cfg, "relations", None),
        n_train=getattr(cfg, "n_train", None),
        sample_seed=getattr(cfg, "sample_seed", 0),
        drop_none=getattr(cfg, "drop_none", True),
    )
    if kind == "atomic":
        path = _optional(cfg, "path")
        if not path:
            raise ConfigError(
                "data.path: required when data.kind=atomic "
                "(a folder with train.tsv, dev.tsv, test.tsv in ATOMIC-2020 format)"
            )
        return load_atomic(path, name=getattr(cfg, "name", None) or "atomic", **options)
    if kind == "synthetic":
        folder = world_dir(n_heads=getattr(cfg, "n_heads", 600), seed=getattr(cfg, "world_seed", 0))
        return load_atomic(folder, name=getattr(cfg, "name", None) or "synthetic", **options)
    if kind in ("qa", "text2text"):
        return _load_file_task(cfg, kind)
    raise ConfigError(f"data.kind: unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def _load_file_task(cfg: Any, kind: str) -> TaskData:
    """`qa` and `text2text`: JSON Lines/CSV files under `data.path`, or the hub when `data.path` is null."""
    from mto.tasks.qa import load_qa
    from mto.tasks.text2text import load_text2text

    options = dict(
        path=_optional(cfg, "path"),
        fields=getattr(cfg, "fields", None),
        files=getattr(cfg, "files", None),
        n_train=getattr(cfg, "n_train", None),
        sample_seed=getattr(cfg, "sample_seed", 0),
        name=getattr(cfg, "name", None) or kind,
        hub=getattr(cfg, "hub", None),
        subset=getattr(cfg, "subset", None),
        revision=getattr(cfg, "revision", None),
        hub_splits=getattr(cfg, "hub_splits", None),
    )
    if kind == "qa":
        return load_qa(answer_is=getattr(cfg, "answer_is", "label"), **options)
    return load_text2text(**options)


__all__ = ["KINDS", "METRICS", "SPLITS", "TaskData", "load_task"]
