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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mto.config import SPLITS
from mto.errors import ConfigError, DataError
from mto.registry import Registry

if TYPE_CHECKING:
    from mto.config import DataConfig

# data.kind -> loader: `loader(data_config, splits) -> TaskData`, reading only the files of `splits` (the
# others are `unavailable`). A new task format is its module here (registering its loader with
# `@TASKS.register("kind")`) plus its YAML in conf/data/.
TASKS = Registry("kind", "mto.tasks")
METRICS = ("generation", "choice")
SHAPES = ("knowledge", "qa", "text2text")


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
    # The record format above: knowledge | qa | text2text (SHAPES); it picks the templates `mto match`
    # compares and `mto adapt` renders records with by default (mto.matching.DEFAULT_PAIRS).
    shape: str = "knowledge"
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
        """Every distinct string of the `text_fields` of the training split, in order of first appearance.

        Used to train the tiny model's tokenizer: never dev or test text, whose words (answers included)
        would otherwise become single pieces the model can copy, inflating every held-out figure.
        Duplicates are dropped so that a head with many tails does not dominate the vocabulary.
        """
        seen: dict[str, None] = {}
        for record in self.train:
            for name in self.text_fields:
                value = record[name]
                for text in [value] if isinstance(value, str) else value:
                    seen.setdefault(text, None)
        return list(seen)


def load_task(cfg: DataConfig, splits: Sequence[str] = SPLITS) -> TaskData:
    """Load the task that the `data` config describes (its `kind`'s registered loader), reading the files
    of `splits` only: `mto eval` needs no train.tsv to score test.tsv."""
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise ConfigError(f"split {unknown[0]!r}: expected one of {', '.join(SPLITS)}")
    return TASKS.get(cfg.kind, "data.kind")(cfg, tuple(s for s in SPLITS if s in splits))


def not_read(split: str, splits: Sequence[str]) -> str:
    """Why a split that this stage did not ask for is unavailable."""
    return f"the {split} split was not read (this stage reads {', '.join(splits)})"


__all__ = ["METRICS", "SHAPES", "SPLITS", "TASKS", "TaskData", "load_task", "not_read"]
