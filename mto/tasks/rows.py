"""Row files shared by the file-based tasks (multiple-choice QA, text-to-text).

A task folder (`data.path`) holds one file per split, JSON Lines (`.jsonl`: one JSON object per line)
or CSV (`.csv`: a header row, then real CSV quoting, so a field may hold commas, quotes and newlines).
`data.files` names them (`{train: train.jsonl, dev: dev.jsonl, test: test.jsonl}`); a name without
extension (and a split left out of `data.files`: its own name) is looked up as `<name>.jsonl`, then
`<name>.csv`; a split set to null has no file (no such split). Without `data.path`, rows come from the
Hugging Face hub (`data.hub`, `data.subset`, `data.revision`, and `data.hub_splits` mapping our split
names to the hub's).

Both readers are written on the standard library (`json`, `csv`) rather than `datasets`' json/csv
builders, which do work offline for local files: those report a malformed line without its line
number, silently fill a field missing from one record with null (so a record missing a mapped field
could not be named), coerce columns to one Arrow type, and write Arrow cache files. Here every row
carries its location (`file:line`, or `hub[split] row N`) for error messages.

Fields are addressed with dotted paths (see `lookup`): `answerKey`, `choices.text`, `question.stem`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mto.cache import fingerprint as hash_object
from mto.errors import ConfigError, DataError
from mto.tasks import SPLITS, not_read

if TYPE_CHECKING:
    from mto.config import DataConfig

EXTENSIONS = (".jsonl", ".csv")
DEFAULT_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}

Row = tuple[str, dict]  # (location for messages, the record as read)


class Missing(Exception):
    """A dotted path does not resolve in a record (internal: callers turn it into a DataError)."""


# ---------------------------------------------------------------------------------------------
# Config values
# ---------------------------------------------------------------------------------------------


def file_task_options(cfg: DataConfig, kind: str) -> dict[str, Any]:
    """The options of a task read from JSON Lines/CSV files under `data.path` (or a hub dataset)."""
    return dict(
        path=cfg.path, fields=cfg.fields, files=cfg.files, n_train=cfg.n_train,
        sample_seed=cfg.sample_seed, name=cfg.name or kind,
        hub=cfg.hub, subset=cfg.subset, revision=cfg.revision, hub_splits=cfg.hub_splits,
    )  # fmt: skip


def field_map(fields: Any, spec: Mapping[str, bool], kind: str) -> dict[str, Any]:
    """Check `data.fields` against `spec` (name -> required); returns the plain mapping."""
    if fields is None:
        raise ConfigError(f"data.fields: required when data.kind={kind} (keys: {', '.join(spec)})")
    if not isinstance(fields, Mapping):
        raise ConfigError(f"data.fields: expected a mapping with keys {', '.join(spec)}, got {fields!r}")
    for key in fields:
        if key not in spec:
            raise ConfigError(f"data.fields.{key}: unknown key; valid keys: {', '.join(spec)}")
    out: dict[str, Any] = {}
    for key, required in spec.items():
        value = fields.get(key)
        if value is None:
            if required:
                raise ConfigError(f"data.fields.{key}: required (a field name or dotted path of the records)")
            continue
        if not (isinstance(value, str) and value.strip()):
            raise ConfigError(f"data.fields.{key}: expected a field name or dotted path, got {value!r}")
        out[key] = value.strip()
    return out


def eval_hint(split: str) -> str:
    """What to evaluate on when `split` cannot be."""
    other = "dev" if split == "test" else "test"
    return f"evaluate on {other} instead (eval.split={other})"


# ---------------------------------------------------------------------------------------------
# Dotted paths
# ---------------------------------------------------------------------------------------------


def lookup(record: Any, path: str) -> Any:
    """The value at dotted `path` in `record`; raises `Missing` when it does not resolve.

    A step into a dict takes that key; a step into a list takes the element at a numeric step
    (`choices.0`), and otherwise applies the rest of the path to every element, so that
    `question.choices.text` on `{"question": {"choices": [{"text": "a"}, {"text": "b"}]}}` is
    `["a", "b"]` (the official CommonsenseQA/OpenBookQA files). A key that itself contains dots
    (a CSV column named `choices.text`) is found as a whole first.
    """
    if isinstance(record, Mapping) and path in record:
        return record[path]
    return _walk(record, path.split("."), path)


def _walk(value: Any, steps: list[str], path: str) -> Any:
    for i, step in enumerate(steps):
        if isinstance(value, Mapping):
            if step not in value:
                raise Missing(path)
            value = value[step]
        elif isinstance(value, list):
            if step.isdigit():
                if int(step) >= len(value):
                    raise Missing(path)
                value = value[int(step)]
            else:
                return [_walk(item, steps[i:], path) for item in value]
        else:
            raise Missing(path)
    return value


def get(row: Row, path: str, what: str) -> Any:
    """`lookup` for a row; DataError naming the row's location, the field path, what it is for, the
    record's fields and the setting that names another field."""
    where, record = row
    try:
        return lookup(record, path)
    except Missing:
        keys = ", ".join(map(str, record)) if isinstance(record, Mapping) else ""
        key = "choices" if what == "choice" else what  # one path of a list of choice fields
        raise DataError(
            f"{where}: missing field '{path}' ({what}); the record has: {keys}; "
            f"name its {what} field with data.fields.{key}=<field>"
        ) from None


def text_value(row: Row, path: str, what: str) -> str:
    """The field at `path` as text (numbers are spelled out); DataError for null, lists, objects."""
    value = get(row, path, what)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value).strip()
    raise DataError(f"{row[0]}: field '{path}' ({what}): expected text, got {json.dumps(value)[:60]}")


# ---------------------------------------------------------------------------------------------
# Reading rows
# ---------------------------------------------------------------------------------------------


def parse_jsonl(data: bytes, file: str | Path) -> list[Row]:
    """JSON Lines: one object per line; blank lines skipped but counted."""
    rows: list[Row] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{file}:{lineno}: not valid UTF-8 ({err.reason})") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{file}:{lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                "expected one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{file}:{lineno}: expected a JSON object, got {type(record).__name__}")
        rows.append((f"{file}:{lineno}", record))
    return rows


def parse_csv(data: bytes, file: str | Path) -> list[Row]:
    """CSV with a header row (the field names); rows located by the line they start on."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{file}:{lineno}: not valid UTF-8 ({err.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    header: list[str] | None = None
    start = 1
    try:
        for values in reader:
            where = f"{file}:{start}"
            start = reader.line_num + 1  # the next row starts after the lines this one spanned
            if not values or all(not v.strip() for v in values):
                continue
            if header is None:
                header = [v.strip() for v in values]
                if "" in header or len(set(header)) != len(header):
                    raise DataError(f"{where}: header row needs distinct, non-empty column names: {values}")
                continue
            if len(values) != len(header):
                raise DataError(
                    f"{where}: expected {len(header)} columns ({', '.join(header)}), got {len(values)}"
                )
            rows.append((where, dict(zip(header, values, strict=True))))
    except csv.Error as err:
        raise DataError(f"{file}:{reader.line_num}: malformed CSV ({err})") from None
    return rows


def read_rows(file: Path) -> tuple[list[Row], bytes]:
    """The rows of one split file (format from its extension) and the file's bytes."""
    data = file.read_bytes()
    if file.suffix.lower() == ".csv":
        return parse_csv(data, file), data
    return parse_jsonl(data, file), data


def split_files(path: str | Path, files: Any, splits: Sequence[str] = SPLITS) -> dict[str, Path | None]:
    """Split -> its file in the task folder (None: the split has none), checked to exist, for `splits`.

    `files` maps a split to a file name; a name without extension (and a split left out: its own
    name) is looked up as `<name>.jsonl`, then `<name>.csv`; null means the split has no file.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path: {folder} not found; expected a folder of train/dev/test .jsonl or .csv")
    if not isinstance(files or {}, Mapping):
        raise ConfigError(f"data.files: expected a mapping such as {{train: train.jsonl}}, got {files!r}")
    names = dict(files or {})
    for key in names:
        if key not in SPLITS:
            raise ConfigError(f"data.files.{key}: unknown split; valid: {', '.join(SPLITS)}")
    out: dict[str, Path | None] = {}
    for split in splits:
        name = names.get(split, split)
        if name is None:
            if split == "train":
                raise ConfigError("data.files.train: required (a file name in data.path)")
            out[split] = None
            continue
        file = folder / str(name)
        if file.suffix.lower() in EXTENSIONS:
            if not file.is_file():
                raise DataError(f"data.files.{split}: {file} not found")
        elif file.suffix:
            raise ConfigError(f"data.files.{split}: {file.name}: expected a .jsonl or .csv file")
        else:
            found = [file.with_name(file.name + ext) for ext in EXTENSIONS]
            found = [f for f in found if f.is_file()]
            if not found:
                raise DataError(
                    f"data.files.{split}: {file}.jsonl (or .csv) not found; name the file with "
                    f"data.files.{split}=<file>, or set data.files.{split}=null if there is none"
                )
            file = found[0]
        out[split] = file
    return out


def hub_rows(hub: str, subset: str | None, split: str, revision: str | None) -> list[Row]:
    """The rows of one split of a hub dataset (needs network, or the `datasets` cache)."""
    import datasets  # imported here: slow, and only this path needs it

    try:
        ds = datasets.load_dataset(hub, subset, split=split, revision=revision)
    except Exception as err:  # any failure (network, cache, unknown name) is the user's to fix
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"data.hub: cannot load {hub} (subset {subset}, split {split}): {first}; "
            "without network, point data.path at local files"
        ) from None
    return [(f"{hub}[{split}] row {i}", dict(record)) for i, record in enumerate(ds)]


@dataclass
class SplitRows:
    """What a task kind builds its records from: rows per split and what identifies them."""

    rows: dict[str, list[Row]]  # split -> rows (an absent split: no key)
    where: dict[str, str]  # split -> its file or hub split, for messages
    absent: dict[str, str]  # split -> why it has no rows (no file, or no such hub split)
    digests: dict[str, str]  # split -> hash of the file bytes or rows
    source: str


def load_rows(
    path: str | Path | None,
    files: Any = None,
    hub: str | None = None,
    subset: str | None = None,
    revision: str | None = None,
    hub_splits: Any = None,
    splits: Sequence[str] = SPLITS,
) -> SplitRows:
    """Rows of `splits` (the others are absent, unread), from the files under `path`, or else from the hub.
    Empty splits are refused."""
    rows: dict[str, list[Row]] = {}
    where: dict[str, str] = {}
    absent: dict[str, str] = {split: not_read(split, splits) for split in SPLITS if split not in splits}
    digests: dict[str, str] = {}
    if path:
        for split, file in split_files(path, files, splits).items():
            if file is None:
                absent[split] = f"data.files.{split} is null: no {split} split; {eval_hint(split)}"
                continue
            rows[split], data = read_rows(file)
            where[split] = str(file)
            digests[split] = hashlib.sha256(data).hexdigest()
        source = str(Path(path).expanduser().resolve())
    elif hub:
        if not isinstance(hub_splits or {}, Mapping):
            raise ConfigError(
                f"data.hub_splits: expected a mapping such as {{dev: validation}}, got {hub_splits!r}"
            )
        names = {**DEFAULT_HUB_SPLITS, **(hub_splits or {})}
        for key in names:
            if key not in SPLITS:
                raise ConfigError(f"data.hub_splits.{key}: unknown split; valid: {', '.join(SPLITS)}")
        for split in splits:
            if names.get(split) is None:
                if split == "train":
                    raise ConfigError("data.hub_splits.train: required (the hub's name of the train split)")
                hint = eval_hint(split)
                absent[split] = f"data.hub_splits.{split} is null: {hub} has no {split} split; {hint}"
                continue
            rows[split] = hub_rows(hub, subset, str(names[split]), revision)
            where[split] = f"{hub}[{names[split]}]"
            digests[split] = hash_object([r for _, r in rows[split]])
        source = f"hub:{hub}" + (f"/{subset}" if subset else "") + (f"@{revision}" if revision else "")
    else:
        raise ConfigError("data.path: required (a folder of train/dev/test .jsonl or .csv), or set data.hub")
    for split, split_rows in rows.items():
        if not split_rows:
            raise DataError(f"{where[split]}: no records; expected at least one in the {split} split")
    return SplitRows(rows=rows, where=where, absent=absent, digests=digests, source=source)


def sample(records: Sequence[dict], n: int | None, seed: int) -> list[dict]:
    """Few-shot: `n` records drawn at random (all when fewer), kept in their original order.

    Seeded with a string (hashed with SHA-512 by `random`), so independent of PYTHONHASHSEED.
    """
    if n is None or n >= len(records):
        return list(records)
    chosen = sorted(random.Random(f"{seed}:train").sample(range(len(records)), n))
    return [records[i] for i in chosen]


def task_fingerprint(data: SplitRows, options: Mapping[str, Any]) -> str:
    """Hash of the split contents and the options that shape the records."""
    return hash_object({"splits": data.digests, "absent": sorted(data.absent), "options": dict(options)})
