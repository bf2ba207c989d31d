"""Protocols: named sets of settings that reproduce a published setup (`protocol=` in conf/protocol/;
docs/reference-protocol.md says what each reference does, with file and line).

    protocol=mto          today's behaviour (the default)
    protocol=mto2024      the MTO code's settings (puraminy/MTO = puraminy/ATTEMPT)
    protocol=maskability  the Maskability Index paper's

A protocol is a `@package _global_` preset: it pins the sampling (tails per training head, gold tails per
test head, test heads per relation, head order), the relation phrases, the metrics and the optimiser
defaults. Every run stamps `protocol` into run.json: the name, the settings, and a fingerprint of the
settings that decide what a score measures (MEASURED: which examples, which phrases, which metrics,
which decoding). The optimiser settings are the protocol's defaults, recorded but not fingerprinted: a
sweep over the learning rate stays within its protocol. Scores of runs whose name or fingerprint differ
are not comparable, and `mto report` refuses to put them in one table unless told to
(`mixed_protocols=true`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mto.cache import fingerprint
from mto.config import MtoConfig, plain
from mto.errors import MtoError
from mto.runs import RUN_FILE, read_json

# What a score measures: the examples, the wording, the metric implementations and the decoding.
MEASURED = (
    "data.head_order", "data.train_tails_per_head", "data.test_tails_per_head",
    "data.test_heads_per_relation", "data.drop_none", "phrases", "eval.metrics", "eval.num_beams",
    "eval.max_new_tokens",
)  # fmt: skip
# The optimiser defaults a protocol sets (recorded in the stamp, free to sweep).
OPTIMISER = (
    "train.optimizer", "train.lr", "train.batch_size", "train.epochs", "train.steps",
    "train.double_epochs_up_to", "train.scheduler", "train.warmup_steps", "train.weight_decay",
)  # fmt: skip


def _select(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def stamp(cfg: MtoConfig) -> dict:
    """run.json's `protocol`: name, fingerprint (of the name and the MEASURED settings) and settings."""
    config = plain(cfg)
    measured = {key: _select(config, key) for key in MEASURED}
    return {
        "name": cfg.protocol.name,
        "fingerprint": fingerprint({"name": cfg.protocol.name, **measured}),
        "settings": {**measured, **{key: _select(config, key) for key in OPTIMISER}},
    }


def protocols_of(paths: Iterable[str | Path]) -> dict[tuple[str, str | None], list[Path]]:
    """(protocol name, fingerprint) -> the run directories under `paths` that carry it. A run from
    before protocols were stamped counts as `mto` with no fingerprint."""
    found: dict[tuple[str, str | None], list[Path]] = {}
    for path in paths:
        path = Path(path)
        files = [path / RUN_FILE] if (path / RUN_FILE).is_file() else sorted(path.rglob(RUN_FILE))
        for file in files:
            try:
                info = read_json(file)
            except (OSError, ValueError):
                continue
            protocol = info.get("protocol") or {}
            key = (protocol.get("name", "mto"), protocol.get("fingerprint"))
            found.setdefault(key, []).append(file.parent)
    return found


def check_protocols(paths: Iterable[str | Path], mixed: bool = False) -> None:
    """MtoError when the runs under `paths` follow different protocols (another name, or the same name
    with other measured settings), unless `mixed`. Runs without a fingerprint match any of their name."""
    found = protocols_of(paths)
    names = {name for name, _ in found}
    prints = {(name, fp) for name, fp in found if fp is not None}
    if mixed or (len(names) <= 1 and len(prints) <= 1):
        return
    parts = [
        f"{name}{'' if fp is None else ' ' + fp[:8]} ({len(runs)} runs, e.g. {runs[0]})"
        for (name, fp), runs in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]
    raise MtoError(
        f"report: runs of different protocols in one table: {'; '.join(parts)}; "
        "report them apart, or pass mixed_protocols=true"
    )
