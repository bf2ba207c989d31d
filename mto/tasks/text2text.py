"""The generic text-to-text task: any source -> target pairs from JSON Lines/CSV files (see rows.py).

Text-to-text records
--------------------
`data.fields = {source: <path>, target: <path>, group: <path, optional>, id: <path, optional>}`:

    {"id": "train-0", "source": ..., "target": ..., "tail": target, "tails": [target, ...], "group": ...}

A target holding a list of strings gives several references (`tails`); `target`/`tail` is the first.
`group` (what metrics average over) defaults to the task name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mto.errors import DataError
from mto.tasks import SPLITS, TASKS, TaskData
from mto.tasks.atomic import n_train_option
from mto.tasks.rows import (
    Row,
    field_map,
    file_task_options,
    get,
    load_rows,
    sample,
    task_fingerprint,
    text_value,
)

if TYPE_CHECKING:
    from mto.config import DataConfig

TEXT2TEXT_FIELDS = {"source": True, "target": True, "group": False, "id": False}  # name -> required


# ---------------------------------------------------------------------------------------------
# The text2text task
# ---------------------------------------------------------------------------------------------


def targets_of(row: Row, path: str) -> list[str]:
    """The target field as a list of references (a string, or a non-empty list of strings)."""
    value = get(row, path, "target")
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise DataError(
                f"{row[0]}: field '{path}' (target): expected text or a list of texts, "
                f"got {json.dumps(value)[:60]}"
            )
        if str(item).strip():
            out.append(str(item).strip())
    if not out:
        raise DataError(f"{row[0]}: field '{path}' (target) is empty")
    return out


def text2text_record(row: Row, fields: Mapping[str, str], split: str, index: int, name: str) -> dict:
    """One source -> target record."""
    source = text_value(row, fields["source"], "source")
    if not source:
        raise DataError(f"{row[0]}: field '{fields['source']}' (source) is empty")
    tails = targets_of(row, fields["target"])
    return {
        "id": text_value(row, fields["id"], "id") if "id" in fields else f"{split}-{index}",
        "source": source,
        "target": tails[0],
        "tail": tails[0],
        "tails": tails,
        "group": text_value(row, fields["group"], "group") if "group" in fields else name,
    }


@TASKS.register("text2text")
def text2text_task(cfg: DataConfig, splits: Sequence[str] = SPLITS) -> TaskData:
    """`data.kind=text2text`: files under `data.path`, or the hub dataset `data.hub` (path null)."""
    return load_text2text(**file_task_options(cfg, "text2text"), splits=splits)


def load_text2text(
    path: str | Path | None,
    fields: Any,
    files: Any = None,
    n_train: int | None = None,
    sample_seed: int = 0,
    name: str = "text2text",
    hub: str | None = None,
    subset: str | None = None,
    revision: str | None = None,
    hub_splits: Any = None,
    splits: Sequence[str] = SPLITS,
) -> TaskData:
    """Source -> target pairs from JSON Lines/CSV files under `path` (or a hub dataset), `splits` only."""
    mapping = field_map(fields, TEXT2TEXT_FIELDS, "text2text")
    n_train = n_train_option(n_train)
    data = load_rows(path, files, hub, subset, revision, hub_splits, splits)
    records = {
        split: [text2text_record(row, mapping, split, i, name) for i, row in enumerate(rows)]
        for split, rows in data.rows.items()
    }
    options = {
        "kind": "text2text",
        "fields": mapping,
        "n_train": n_train,
        "sample_seed": sample_seed if n_train is not None else None,
    }
    return TaskData(
        name=name,
        train=sample(records.get("train", []), n_train, sample_seed),
        dev=records.get("dev", []),
        test=records.get("test", []),
        fingerprint=task_fingerprint(data, options),
        source=data.source,
        metric="generation",
        shape="text2text",
        text_fields=("source", "tails"),
        unavailable={split: reason for split, reason in data.absent.items()},
    )
