"""Tasks: the knowledge-completion data a run trains and evaluates on.

Every task is read from a folder in the official ATOMIC-2020 release format (see `atomic.py`);
the embedded synthetic world (`synthetic.py`) is written in that same format first, so both kinds
share one reader. A split is a list of records (see the design notes):

    {"id": "train-0", "head": ..., "relation": ..., "tail": ..., "tails": [...], "group": relation}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf.errors import MissingMandatoryValue

from mto.errors import ConfigError

KINDS = ("atomic", "synthetic")


@dataclass
class TaskData:
    """The three splits of one task, plus what identifies them."""

    name: str
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    fingerprint: str  # hash of the split files' bytes and the selection options
    source: str  # the folder the data came from

    def texts(self) -> list[str]:
        """Every distinct head and tail string of all splits, in order of first appearance.

        Used to train the tiny model's tokenizer; duplicates are dropped so that a head with
        many tails does not dominate the vocabulary.
        """
        seen: dict[str, None] = {}
        for split in (self.train, self.dev, self.test):
            for record in split:
                seen.setdefault(record["head"], None)
                for tail in record["tails"]:
                    seen.setdefault(tail, None)
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
    raise ConfigError(f"data.kind: unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")


__all__ = ["KINDS", "TaskData", "load_task"]
