"""The runs a report gathers, and which of them may be averaged together.

Each run is read from its own `run.json`, `metrics.json` and `.hydra/config.yaml` (`RunRecord`), so a
sweep that is still running can be reported (unfinished runs are kept apart, with failed ones); a
`skipped` job (its completed twin made it unnecessary) counts through its twin, once. Config keys are
dotted paths; `template` is short for `template.name`, `model` for `model.name_or_path`, `data` for
`data.name`; `lineage.*` and `figures.*` keys read run.json (`adaptation` is `lineage.adapt_objective`).

Only like runs are averaged: runs that land in one row (or one point of a plot) must have the same
resolved config but for the seed. A run named by `run=`, `adapt_run=` or `match_run=` is compared
through that run's own config (`adapt_run.objective.name`), so two seeds of one arm are alike while
two adaptations are not. Runs that differ in anything else are refused with the keys that differ,
unless `pool=true` (then a warning says what was pooled).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from mto.errors import MtoError
from mto.runs import NOT_HASHED, RUN_FILE, read_json

SHORT_KEYS = {"template": "template.name", "model": "model.name_or_path", "data": "data.name",
              "objective": "objective.name", "tuning": "tuning.method",
              "adaptation": "lineage.adapt_objective"}  # fmt: skip
DEFAULT_BY = ("stage", "data.name", "model.name_or_path", "template.name", "data.n_train")
FEWSHOT_KEY = "data.n_train"
# Keys a suggestion of `by=` prefers when several would split runs as well.
PREFERRED = {*DEFAULT_BY, *SHORT_KEYS.values()}

# Keys in which runs averaged together may differ: the seeds, and how a run is carried out.
SEED_KEYS = ("seed", "data.sample_seed")
IGNORED_KEYS = (*SEED_KEYS, "threads", *NOT_HASHED)
# Keys naming another run (and the run.json lineage field that holds its resolved path): compared
# through that run's config, under the key as prefix (`adapt_run.objective.name`).
REFERENCES = {"run": "train_run", "adapt_run": "adapt_run", "match_run": "match_run"}


@dataclass
class RunRecord:
    path: Path
    status: str
    config: dict
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # run.json
    run_dir: Path | None = None  # the directory the record was read from (a skipped job's, not its twin's)
    _flat: dict | None = field(default=None, repr=False)
    _node: Any = field(default=None, repr=False)

    def value(self, key: str):
        """A config key (dotted), a run.json field for `lineage.*` / `figures.*` keys, or a key of a
        referenced run (`adapt_run.objective.name`)."""
        if key == "stage":
            return self.config.get("stage")
        if key == "template.name" and self.info.get("template"):  # its own name if its text was overridden
            return self.info["template"]
        if key.startswith(("lineage.", "figures.")):
            section, _, name = key.partition(".")
            return self.info.get(section, {}).get(name)
        if self._node is None:
            self._node = OmegaConf.create(self.config)
        value = OmegaConf.select(self._node, key, default=None, throw_on_resolution_failure=False)
        if value is None and key.split(".")[0] in REFERENCES:
            value = self.comparable().get(key)
        return value

    def comparable(self) -> dict[str, Any]:
        """The flat config this run is compared on: seeds and run-management keys left out, the runs it
        names replaced by their own comparable configs."""
        if self._flat is None:
            self._flat = comparable_config(self.config, self.info.get("lineage") or {})
        return self._flat


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: "{}"}
    if isinstance(node, list):
        return {prefix[:-1]: json.dumps(node, sort_keys=True, default=str)}
    return {prefix[:-1]: node}


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def comparable_config(config: dict, lineage: dict, depth: int = 0) -> dict[str, Any]:
    """`config` flattened, less IGNORED_KEYS; a REFERENCES key becomes the referenced run's comparable
    config under that prefix (found through run.json's lineage, else the key's value as a path)."""
    flat = {k: v for k, v in _flatten(config).items() if not _ignored(k)}
    for ref, lineage_key in REFERENCES.items():
        target = lineage.get(lineage_key) or flat.get(ref)
        if not target:
            continue
        target_dir = Path(str(target))
        cfg_path = target_dir / ".hydra" / "config.yaml"
        if depth >= 3 or not cfg_path.is_file():
            continue  # the path itself stays the value compared
        flat.pop(ref, None)
        sub_info = read_json(target_dir / RUN_FILE) if (target_dir / RUN_FILE).is_file() else {}
        sub = comparable_config(yaml.safe_load(cfg_path.read_text()) or {}, sub_info.get("lineage") or {},
                                depth + 1)  # fmt: skip
        flat.update({f"{ref}.{k}": v for k, v in sub.items()})
    return flat


def find_runs(paths: list[str]) -> list[Path]:
    """Every run directory (holding run.json) at or under `paths`."""
    found = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise MtoError(f"report: {path} does not exist")
        found += [path] if (path / RUN_FILE).is_file() else [p.parent for p in sorted(path.rglob(RUN_FILE))]
    return sorted(set(found))


def load_record(run_dir: Path) -> RunRecord:
    info = read_json(run_dir / RUN_FILE)
    source = Path(info["twin"]) if info.get("status") == "skipped" and info.get("twin") else run_dir
    config_path = run_dir / ".hydra" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.is_file() else {}
    status = info.get("status", "unknown")
    metrics = {}
    if status in ("completed", "skipped") and (source / "metrics.json").is_file():
        metrics = read_json(source / "metrics.json")
        metrics.update({k: v for k, v in read_json(source / RUN_FILE).get("figures", {}).items()
                        if k not in metrics and isinstance(v, (int, float))})  # fmt: skip
    if status == "skipped" and (source / RUN_FILE).is_file():
        info = {**info, "lineage": read_json(source / RUN_FILE).get("lineage", {})}
    return RunRecord(path=source.resolve(), status=status, config=config, metrics=metrics, info=info,
                     run_dir=run_dir)  # fmt: skip


def gather(paths: list[str]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(runs with metrics, deduplicated by the run that computed them; runs without: failed, running...)"""
    done: dict[Path, RunRecord] = {}
    other = []
    for run_dir in find_runs(paths):
        record = load_record(run_dir)
        if record.metrics:
            done.setdefault(record.path, record)
        else:
            other.append(record)
    return list(done.values()), other


# ------------------------------------------------------------------ averaging only like runs


def _sort_key(key: tuple) -> tuple:
    """Numbers in numeric order (8 before 32), then text, then None (full data) last."""
    return tuple((v is None, not is_number(v), v if is_number(v) else str(v)) for v in key)


def group(records: list[RunRecord], keys: list[str]) -> dict[tuple, list[RunRecord]]:
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(tuple(record.value(k) for k in keys), []).append(record)
    return {k: groups[k] for k in sorted(groups, key=_sort_key)}


def differing_keys(records: list[RunRecord], keys: list[str]) -> dict[str, set[str]]:
    """Config keys (beyond `keys` and the seeds) whose values differ between runs that `keys` put
    together, each with the values seen."""
    differ: dict[str, set[str]] = {}
    for members in group(records, keys).values():
        flats = [m.comparable() for m in members]
        for key in sorted(set().union(*flats)):
            if key in keys:
                continue
            values = {str(f.get(key)) for f in flats}  # absent reads as null, the schema's default
            if len(values) > 1:
                differ.setdefault(key, set()).update(values)
    return differ


def keys_to_split(records: list[RunRecord], keys: list[str], differ: dict[str, set[str]]) -> list[str]:
    """A few keys that, added to `keys`, leave only like runs together (greedy: the key after which the
    fewest keys still differ; config-group names such as `tuning.method` win ties)."""
    added: list[str] = []
    while differ and len(added) < 8:
        ranked = [
            (len(differing_keys(records, [*keys, *added, key])), key not in PREFERRED,
             not key.endswith((".name", ".method")), len(values), key)
            for key, values in differ.items()
        ]  # fmt: skip
        added.append(min(ranked)[-1])
        differ = differing_keys(records, [*keys, *added])
    return added


def short_key(key: str) -> str:
    return next((short for short, full in SHORT_KEYS.items() if full == key), key)


def check_alike(records: list[RunRecord], keys: list[str], pool: bool, option: str) -> str | None:
    """Refuse (MtoError) to average runs that `keys` put together but that differ in more than the seed;
    with `pool`, warn instead. Returns the note on what was pooled (None: only seeds were)."""
    differ = differing_keys(records, keys)
    if not differ:
        return None
    split = keys_to_split(records, keys, differ) if not pool else []
    shown = [*split, *sorted(k for k in differ if k not in split)]
    listed = "; ".join(
        f"{k} ({', '.join(sorted(differ[k])[:4])}{', ...' if len(differ[k]) > 4 else ''})" for k in shown[:6]
    )
    if len(shown) > 6:
        listed += f"; and {len(shown) - 6} more keys"
    if pool:
        note = f"pooled runs that differ in more than the seed: {listed}"
        print(f"mto report: warning: {note}", file=sys.stderr)
        return note
    suggestion = ",".join(short_key(k) for k in [*keys, *split])
    raise MtoError(
        f"runs averaged together differ in more than the seed: {listed}; add keys to {option}= "
        f"(e.g. {option}={suggestion}) or pass pool=true to average them anyway"
    )


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def constant_keys(records: list[RunRecord], keys: list[str]) -> list[str]:
    return [k for k in keys if len({str(r.value(k)) for r in records}) == 1]
