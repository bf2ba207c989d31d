"""`mto runs`: the runs under a folder, newest first, and one run in detail.

    mto runs                          # every run under outputs/
    mto runs outputs/multirun --status failed --stage train
    mto runs show outputs/train/2026-11-22/10-31-07-123456_seed-3

Everything is read from the run directories themselves: `run.json` (stage, status, times, figures,
lineage, error), `.hydra/overrides.yaml` (what the command line set) and `.hydra/config.yaml` (the
composed config, compared with the stage's defaults by `show`).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from mto.errors import MtoError
from mto.runs import RUN_FILE, read_json

STATUSES = ("completed", "failed", "running", "interrupted", "skipped")
STAGES = {"match": "match", "adapt": "adapt", "train": "train", "eval": "eval", "run": "pipeline"}
# The figure a listing shows for a run: the first of these it has.
HEADLINE = ("exact_match", "accuracy", "rougeL", "adapt_loss", "filling_share", "train_loss")
STATUS_STYLE = {"completed": "green", "failed": "red", "running": "yellow", "interrupted": "magenta",
                "skipped": "dim"}  # fmt: skip


@dataclass
class RunEntry:
    path: Path
    info: dict
    overrides: list[str]

    @property
    def start(self) -> _dt.datetime:
        return _time(self.info.get("start_time")) or _dt.datetime.fromtimestamp(
            (self.path / RUN_FILE).stat().st_mtime
        ).astimezone()

    def duration(self) -> str:
        start, end = _time(self.info.get("start_time")), _time(self.info.get("end_time"))
        if start is None:
            return "-"
        if end is None:
            if self.info.get("status") != "running":
                return "-"
            return f"{_span(_dt.datetime.now().astimezone() - start)} so far"
        return _span(end - start)

    def headline(self) -> str:
        if self.info.get("status") == "failed" and self.info.get("error"):
            error = str(self.info["error"])
            return error if len(error) <= 70 else error[:67] + "..."
        figures = self.info.get("figures") or {}
        for name in HEADLINE:
            value = figures.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
        return "-"


def _time(text: Any) -> _dt.datetime | None:
    if not text:
        return None
    try:
        value = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.astimezone()


def _span(delta: _dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _shown(path: Any) -> str:
    """A path relative to the working directory when inside it."""
    path = Path(str(path))
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_overrides(run_dir: Path) -> list[str]:
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return []
    return [str(o) for o in yaml.safe_load(saved.read_text()) or [] if not str(o).startswith("hydra.")]


def find(root: Path) -> list[RunEntry]:
    if not root.exists():
        raise MtoError(f"{root} does not exist (run a stage first, or name a folder of runs: mto runs <dir>)")
    files = [root / RUN_FILE] if (root / RUN_FILE).is_file() else sorted(root.rglob(RUN_FILE))
    entries = []
    for path in files:
        try:
            info = read_json(path)
        except (OSError, ValueError):
            continue
        entries.append(RunEntry(path.parent, info, read_overrides(path.parent)))
    return entries


def lineage_text(info: dict) -> str:
    links = dict(info.get("lineage") or {})
    if info.get("twin"):
        links["twin"] = info["twin"]
    parts = []
    for key, value in links.items():
        if isinstance(value, str) and ("/" in value or "\\" in value):
            parts.append(f"{key}={_shown(value)}")
        elif value is not None and key != "train_config_hash":
            parts.append(f"{key}={value}")
    return "\n".join(parts) or "-"


def list_runs(root: str = "outputs", status: str | None = None, stage: str | None = None,
              limit: int = 50) -> list[RunEntry]:  # fmt: skip
    """Print the runs under `root` newest first (optionally only one status / stage); return them."""
    if status is not None and status not in STATUSES:
        raise MtoError(f"--status {status}: expected one of {', '.join(STATUSES)}")
    if stage is not None and stage not in STAGES:
        raise MtoError(f"--stage {stage}: expected one of {', '.join(STAGES)}")
    if limit < 0:
        raise MtoError(f"--limit {limit}: expected 0 (all) or more")
    entries = [e for e in find(Path(root)) if status in (None, e.info.get("status"))
               and stage in (None, e.info.get("stage"))]  # fmt: skip
    entries.sort(key=lambda e: e.start, reverse=True)
    shown = entries[:limit] if limit else entries
    filters = ", ".join(f for f in (status and f"status {status}", stage and f"stage {stage}") if f)
    table = Table(title=f"runs under {root}" + (f" ({filters})" if filters else "") + ", newest first")
    for column in ("start", "stage", "status", "duration"):  # short: never wrapped
        table.add_column(column, no_wrap=True)
    for column in ("overrides", "headline", "lineage", "directory"):
        table.add_column(column, overflow="fold")
    for e in shown:
        state = str(e.info.get("status", "?"))
        table.add_row(
            e.start.strftime("%Y-%m-%d %H:%M:%S"), str(e.info.get("stage", "?")),
            f"[{STATUS_STYLE.get(state, 'white')}]{state}[/]", e.duration(), " ".join(e.overrides) or "-",
            e.headline(), lineage_text(e.info), _shown(e.path),
        )  # fmt: skip
    console = Console()
    console.print(table)
    if len(shown) < len(entries):
        console.print(f"{len(shown)} of {len(entries)} runs shown (--limit 0 shows all)")
    elif not entries:
        console.print("no runs" + (f" with {filters}" if filters else ""))
    return shown


# ------------------------------------------------------------------ one run


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def stage_defaults(stage: str) -> dict:
    """The stage's config with no overrides (interpolations left as written, as in .hydra/config.yaml)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mto.config import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name=STAGES[stage])
    return OmegaConf.to_container(cfg, resolve=False)


def config_diff(run_dir: Path, stage: str) -> list[tuple[str, Any, Any]]:
    """(key, default, this run's value) for every key where the run's config differs from the stage's
    defaults."""
    run_config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    ours, defaults = _flatten(run_config), _flatten(stage_defaults(stage))
    missing = object()
    rows = []
    for key in sorted(set(ours) | set(defaults)):
        a, b = defaults.get(key, missing), ours.get(key, missing)
        if a != b:
            rows.append((key, "-" if a is missing else a, "-" if b is missing else b))
    return rows


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def files_of(run_dir: Path) -> list[tuple[str, str]]:
    """(name, size) of the run's files; a folder as one line with its file count and total size."""
    rows = []
    for path in sorted(run_dir.iterdir()):
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            total = sum(p.stat().st_size for p in files)
            rows.append((f"{path.name}/", f"{len(files)} files, {_size(total)}"))
        elif path.is_file():
            rows.append((path.name, _size(path.stat().st_size)))
    return rows


def show_run(run_dir: str) -> None:
    """Print one run: what it is, its config diff from the stage's defaults, its figures and files."""
    path = Path(run_dir)
    if not (path / RUN_FILE).is_file():
        raise MtoError(f"{run_dir}: not a run directory (no {RUN_FILE})")
    entry = RunEntry(path, read_json(path / RUN_FILE), read_overrides(path))
    info = entry.info
    stage = str(info.get("stage"))
    console = Console()
    state = str(info.get("status"))
    git = info.get("git") or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    styled = f"[{STATUS_STYLE.get(state, 'white')}]{state}[/]"
    for key, value in (
        ("run", _shown(path)), ("stage", stage), ("status", styled),
        ("error", info.get("error")), ("started", info.get("start_time")), ("duration", entry.duration()),
        ("command", info.get("command")), ("overrides", " ".join(entry.overrides) or "-"),
        ("lineage", lineage_text(info)), ("seed", info.get("seed")), ("attempt", info.get("attempt")),
        ("git", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}" if git else None),
        ("host", info.get("host")),
    ):  # fmt: skip
        if value not in (None, ""):
            head.add_row(key, str(value))
    console.print(head)

    if (path / ".hydra" / "config.yaml").is_file() and stage in STAGES:
        try:
            rows = config_diff(path, stage)
        except Exception as err:  # the config folder changed since: say so, show the rest
            console.print(f"config diff unavailable: {type(err).__name__}: {err}".splitlines()[0])
        else:
            diff = Table(title=f"config: what differs from `mto {stage}` defaults")
            for column in ("key", "default", "this run"):
                diff.add_column(column, overflow="fold")
            for key, default, value in rows:
                diff.add_row(key, _value(default), _value(value))
            console.print(diff if rows else "config: the stage's defaults")

    figures = info.get("figures") or {}
    if figures:
        table = Table(title="figures (run.json)")
        table.add_column("figure")
        table.add_column("value", justify="right", overflow="fold")
        for key, value in figures.items():
            table.add_row(key, _value(value))
        console.print(table)

    files = Table(title="files")
    files.add_column("file")
    files.add_column("size", justify="right")
    for name, size in files_of(path):
        files.add_row(name, size)
    console.print(files)
