"""Reader for the official ATOMIC-2020 release format.

A task folder holds `train.tsv`, `dev.tsv` and `test.tsv`: tab-separated, no header, three columns
(head, relation, tail), one row per triple. Fields are raw text: a `"` is an ordinary character
(the release has tails such as `says "thank you"`), not CSV quoting. `csv`, pandas and `datasets`
all treat `"` as a quote by default and silently merge or mangle such rows, so the three columns
are split by hand here, which also lets every error name its file and line.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mto.cache import fingerprint as hash_object
from mto.config import HEAD_ORDERS
from mto.errors import ConfigError, DataError
from mto.tasks import SPLITS, TASKS, TaskData, not_read

if TYPE_CHECKING:
    from mto.config import DataConfig

COLUMNS = ("head", "relation", "tail")
FORMAT_HINT = "expected a folder with train.tsv, dev.tsv, test.tsv (ATOMIC-2020 format)"

Triple = tuple[str, str, str]


def parse_tsv(data: bytes, file: str | Path) -> list[Triple]:
    """Parse the bytes of one split file into (head, relation, tail) triples, in file order.

    Empty lines and rows with an empty tail are skipped; an empty head or relation is an error.
    A UTF-8 byte-order mark and Windows line ends are tolerated; surrounding spaces of a field
    are dropped (they never carry meaning in the release).
    """
    triples: list[Triple] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{file}:{lineno}: not valid UTF-8 ({err.reason})") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(COLUMNS):
            raise DataError(
                f"{file}:{lineno}: expected 3 tab-separated columns (head, relation, tail), got {len(fields)}"
            )
        head, relation, tail = (value.strip() for value in fields)
        for column, value in (("head", head), ("relation", relation)):
            if not value:
                raise DataError(f"{file}:{lineno}: empty {column} field (expected head, relation, tail)")
        if not tail:
            # The official release itself has a few rows with an empty tail (train.tsv 1, dev.tsv 2
            # in our sample): they state no fact, so they are skipped rather than rejected.
            continue
        triples.append((head, relation, tail))
    return triples


def is_none(tail: str) -> bool:
    """ATOMIC marks 'no inference' with the literal tail `none` (any case)."""
    return tail.strip().lower() == "none"


def select(
    triples: Iterable[Triple], relations: Sequence[str] | None = None, drop_none: bool = True
) -> list[Triple]:
    """Keep the triples of `relations` (all when None), drop `none` tails, drop repeated triples."""
    keep = set(relations) if relations is not None else None
    chosen = (t for t in triples if (keep is None or t[1] in keep) and not (drop_none and is_none(t[2])))
    return list(dict.fromkeys(chosen))  # dict keeps the first occurrence's order


def sample_heads(triples: Sequence[Triple], n_heads: int, seed: int | str) -> list[Triple]:
    """Few-shot selection: for every relation, `n_heads` heads drawn at random, with all their tails.

    Heads are sorted before drawing and each relation gets its own `random.Random` seeded with a
    string (hashed with SHA-512 by `random`, so independent of PYTHONHASHSEED): the sample of one
    relation does not change when other relations are added or removed. A relation with fewer
    heads keeps them all.
    """
    heads_of: dict[str, set[str]] = {}
    for head, relation, _ in triples:
        heads_of.setdefault(relation, set()).add(head)
    chosen: set[tuple[str, str]] = set()
    for relation in sorted(heads_of):
        heads = sorted(heads_of[relation])
        rng = random.Random(f"{seed}:{relation}")
        chosen.update((head, relation) for head in rng.sample(heads, min(n_heads, len(heads))))
    return [t for t in triples if (t[0], t[1]) in chosen]


DEFAULT_SAMPLING = {
    "head_order": "random", "train_tails_per_head": None, "test_tails_per_head": None,
    "test_heads_per_relation": None,
}  # fmt: skip
# The draw of dev/test heads (head_order=random) does not follow the run's seed: every run of a sweep is
# evaluated on the same queries.
EVAL_SAMPLE_SEED = "eval"


def richest_first(raw: Sequence[Triple]) -> dict[str, tuple[int, int, str]]:
    """Each head's sort key in the MTO code's order (`Atomic.preproc_df`, attempt/data/tasks.py
    L1826-1847; docs/reference-protocol.md section 4), counted over the whole split file as read (every
    relation, `none` tails and repeated rows included, as the code counts): the number of distinct
    relations of the head, then its number of rows, then the head's text, all descending (so the text
    runs reverse-alphabetically, as pandas sorts strings)."""
    relations: dict[str, set[str]] = {}
    rows: dict[str, int] = {}
    for head, relation, _ in raw:
        relations.setdefault(head, set()).add(relation)
        rows[head] = rows.get(head, 0) + 1
    return {head: (len(relations[head]), rows[head], head) for head in rows}


def first_heads(triples: Sequence[Triple], n_heads: int, order: str, raw: Sequence[Triple]) -> list[Triple]:
    """The first `n_heads` heads of every relation in `order` (richest_first: `richest_first(raw)`;
    file: first appearance), with all their triples, in the order of `triples`.

    The MTO code took N+1 heads (its `subsample` appended the first row of head N+1 before checking the
    count, reference trap 3); we take N."""
    keys = richest_first(raw) if order == "richest_first" else {}
    heads_of: dict[str, dict[str, None]] = {}
    for head, relation, _ in triples:
        heads_of.setdefault(relation, {}).setdefault(head, None)
    chosen: set[tuple[str, str]] = set()
    for relation, heads in heads_of.items():
        ordered = sorted(heads, key=keys.__getitem__, reverse=True) if keys else list(heads)
        chosen.update((head, relation) for head in ordered[:n_heads])
    return [t for t in triples if (t[0], t[1]) in chosen]


def choose_heads(
    triples: Sequence[Triple], n_heads: int | None, order: str, seed: int | str, raw: Sequence[Triple]
) -> list[Triple]:
    """`n_heads` heads per relation (all when None) by `order`: random (drawn with `seed`),
    richest_first or file (see `first_heads`)."""
    if n_heads is None:
        return list(triples)
    if order == "random":
        return sample_heads(triples, n_heads, seed)
    return first_heads(triples, n_heads, order, raw)


def cap_tails(triples: Sequence[Triple], n_tails: int | None) -> list[Triple]:
    """The first `n_tails` triples (tails) of every (head, relation), in file order (all when None), as
    the MTO code keeps the first `samples_per_head` rows of a head."""
    if n_tails is None:
        return list(triples)
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for triple in triples:
        key = (triple[0], triple[1])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= n_tails:
            kept.append(triple)
    return kept


def train_records(triples: Sequence[Triple]) -> list[dict]:
    """One record per triple; `tails` lists all gold tails of its (head, relation)."""
    tails_of = _group(triples)
    return [
        {
            "id": f"train-{i}",
            "head": head,
            "relation": relation,
            "tail": tail,
            "tails": list(tails_of[head, relation]),
            "group": relation,
        }
        for i, (head, relation, tail) in enumerate(triples)
    ]


def eval_records(triples: Sequence[Triple], split: str) -> list[dict]:
    """One record per (head, relation) in order of first appearance; `tail` is the first gold tail."""
    return [
        {
            "id": f"{split}-{i}",
            "head": head,
            "relation": relation,
            "tail": tails[0],
            "tails": list(tails),
            "group": relation,
        }
        for i, ((head, relation), tails) in enumerate(_group(triples).items())
    ]


def _group(triples: Iterable[Triple]) -> dict[tuple[str, str], list[str]]:
    """(head, relation) -> its tails, both in order of first appearance, tails without repeats."""
    groups: dict[tuple[str, str], dict[str, None]] = {}
    for head, relation, tail in triples:
        groups.setdefault((head, relation), {}).setdefault(tail, None)
    return {key: list(tails) for key, tails in groups.items()}


def split_files(path: str | Path, splits: Sequence[str] = SPLITS) -> dict[str, Path]:
    """The files of `splits` in a task folder; DataError naming `data.path` when one is missing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path: {folder} not found; {FORMAT_HINT}")
    files = {split: folder / f"{split}.tsv" for split in splits}
    for file in files.values():
        if not file.is_file():
            raise DataError(f"data.path: {file} not found; {FORMAT_HINT}")
    return files


def _relations_option(relations: Any) -> list[str] | None:
    """Normalise `data.relations`: None, a name, or a list of names (OmegaConf ListConfig included)."""
    if relations is None:
        return None
    names = [relations] if isinstance(relations, str) else [str(r) for r in relations]
    if not names:
        raise ConfigError("data.relations: empty list; use null to keep all relations")
    return names


def n_train_option(n_train: Any) -> int | None:
    if n_train is None:
        return None
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ConfigError(f"data.n_train: expected a positive integer or null, got {n_train!r}")
    return n_train


@TASKS.register("atomic")
def atomic_task(cfg: DataConfig, splits: Sequence[str] = SPLITS) -> TaskData:
    """`data.kind=atomic`: the folder `data.path` in the ATOMIC-2020 release format."""
    if not cfg.path:
        raise ConfigError(
            "data.path: required when data.kind=atomic "
            "(a folder with train.tsv, dev.tsv, test.tsv in ATOMIC-2020 format)"
        )
    return load_atomic(cfg.path, **selection(cfg), name=cfg.name or "atomic", splits=splits)


def selection(cfg: DataConfig) -> dict[str, Any]:
    """The options of `load_atomic` that choose relations, few-shot heads and `none` tails (refusing the
    file options of the qa/text2text kinds, which this format has no use for)."""
    for key in ("files", "fields"):
        if getattr(cfg, key):
            raise ConfigError(
                f"data.{key}: not used by data.kind={cfg.kind}, which reads train.tsv, dev.tsv and "
                f"test.tsv (head, relation, tail); data.{key} is for data.kind=qa or text2text"
            )
    return dict(
        relations=cfg.relations, n_train=cfg.n_train, sample_seed=cfg.sample_seed, drop_none=cfg.drop_none,
        head_order=cfg.head_order, train_tails_per_head=cfg.train_tails_per_head,
        test_tails_per_head=cfg.test_tails_per_head, test_heads_per_relation=cfg.test_heads_per_relation,
    )  # fmt: skip


def load_atomic(
    path: str | Path,
    relations: Sequence[str] | None = None,
    n_train: int | None = None,
    sample_seed: int = 0,
    drop_none: bool = True,
    name: str = "atomic",
    head_order: str = "random",
    train_tails_per_head: int | None = None,
    test_tails_per_head: int | None = None,
    test_heads_per_relation: int | None = None,
    splits: Sequence[str] = SPLITS,
) -> TaskData:
    """Read a task folder in ATOMIC-2020 format and build the train/dev/test records (of `splits` only:
    the other splits' files are not read, and those splits are unavailable).

    Order of operations: read, keep `relations`, drop `none` tails (when `drop_none`), drop repeated
    triples; then train: `n_train` heads per relation by `head_order`, at most `train_tails_per_head`
    tails each; dev and test: `test_heads_per_relation` heads per relation by `head_order`, at most
    `test_tails_per_head` gold tails each (the sampling of a `protocol=`: docs/reference-protocol.md 4).
    """
    relations = _relations_option(relations)
    n_train = n_train_option(n_train)
    drop_none = bool(drop_none)
    if head_order not in HEAD_ORDERS:
        raise ConfigError(f"data.head_order={head_order!r}: expected one of {', '.join(HEAD_ORDERS)}")
    files = split_files(path, splits)
    blobs = {split: file.read_bytes() for split, file in files.items()}
    raw = {split: parse_tsv(blobs[split], files[split]) for split in files}
    for split in files:
        if not raw[split]:
            raise DataError(f"{files[split]}: no rows; expected lines of head<TAB>relation<TAB>tail")
    if relations is not None:
        _check_relations(relations, raw, path)

    selected: dict[str, list[Triple]] = {split: [] for split in SPLITS}
    for split in files:
        triples = select(raw[split], relations, drop_none)
        if split == "train":
            triples = choose_heads(triples, n_train, head_order, sample_seed, raw[split])
            triples = cap_tails(triples, train_tails_per_head)
        else:
            triples = choose_heads(triples, test_heads_per_relation, head_order, EVAL_SAMPLE_SEED, raw[split])
            triples = cap_tails(triples, test_tails_per_head)
        if not triples:
            raise DataError(
                f"{files[split]}: no rows left after filtering (relations={relations}, drop_none={drop_none})"
            )
        selected[split] = triples

    sampled = n_train is not None and head_order == "random"
    options = {
        "relations": sorted(relations) if relations is not None else None,
        "n_train": n_train,
        # the seed only changes the data when there is a sample to draw
        "sample_seed": sample_seed if sampled else None,
        "drop_none": drop_none,
    }
    sampling = {
        "head_order": head_order,
        "train_tails_per_head": train_tails_per_head,
        "test_tails_per_head": test_tails_per_head,
        "test_heads_per_relation": test_heads_per_relation,
    }
    if sampling != DEFAULT_SAMPLING:  # the defaults keep the fingerprints data had before these options
        options.update(sampling)
    digests = {split: hashlib.sha256(blob).hexdigest() for split, blob in blobs.items()}
    return TaskData(
        name=name,
        train=train_records(selected["train"]),
        dev=eval_records(selected["dev"], "dev"),
        test=eval_records(selected["test"], "test"),
        fingerprint=hash_object({"files": digests, "options": options}),
        source=str(Path(path).expanduser().resolve()),
        unavailable={split: not_read(split, list(files)) for split in SPLITS if split not in files},
    )


def _check_relations(relations: Sequence[str], raw: dict[str, list[Triple]], path: str | Path) -> None:
    """DataError for a requested relation that no split contains, listing the ones present."""
    present = sorted({relation for triples in raw.values() for _, relation, _ in triples})
    for relation in relations:
        if relation not in present:
            raise DataError(
                f"data.relations: unknown relation {relation!r} in {path}; present: {', '.join(present)}"
            )
