"""`mto template show`: print how the configured template renders a task's examples, without
training anything (no run directory is written).

    mto template show template=masked_prompting data=atomic data.path=... n=3
"""

from __future__ import annotations

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from mto.config import typed
from mto.stages import steps


def show(cfg: DictConfig, n: int = 5, split: str = "train") -> list[tuple[str, str]]:
    """Render the first `n` examples of one relation each (round robin), print and return them."""
    cfg = typed(cfg)
    task = steps.get_task(cfg)
    template = steps.get_template(cfg, task)
    examples = getattr(task, split)
    picked, seen = [], set()
    for ex in examples:  # one example per group first, so every relation shows up
        if ex.get("group") not in seen:
            seen.add(ex.get("group"))
            picked.append(ex)
    picked = (picked + [ex for ex in examples if ex not in picked])[:n]
    pairs = [template.render(ex, lambda i: f"<extra_id_{i}>") for ex in picked]
    table = Table(title=f"template={template.name} on {task.name} ({split})", show_lines=True)
    table.add_column("source")
    table.add_column("target")
    for source, target in pairs:
        table.add_row(source, target)
    Console().print(table)
    return pairs
