"""Training curves (mto/curves.py) from the runs' own per-step logs, and `mto report` drawing them."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.figure
import matplotlib.image
import yaml

from mto.curves import read_curves
from mto.stages.report import report


def fake_run(folder: Path, template: str, seed: int, steps: list[dict] | None) -> Path:
    """A completed train run with a per-step log (`steps`: its records; None: no log)."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"stage": "train", "seed": seed, "template": {"name": template}, "data": {"name": "synthetic"}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "run.json").write_text(json.dumps({"stage": "train", "status": "completed", "figures": {}}))
    (folder / "metrics.json").write_text(json.dumps({"rougeL": 0.5}))
    if steps is not None:
        (folder / "metrics_steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    return folder


def log(losses: list[float], dev: list[float]) -> list[dict]:
    """Loss every 10 steps, dev ROUGE-L every 20 (as eval.every=20 writes it)."""
    records = []
    for i, loss in enumerate(losses, start=1):
        records.append({"step": 10 * i, "loss": loss, "lr": 1e-3, "tokens_per_s": 900.0})
        if i % 2 == 0:
            records.append({"step": 10 * i, "dev_rougeL": dev[i // 2 - 1], "dev_exact_match": 0.1})
    return records


def test_curves_are_read_from_each_runs_per_step_log_grouped(tmp_path):
    a1 = fake_run(tmp_path / "a1", "mapping", 1, log([3.0, 2.0, 1.5, 1.2], [0.2, 0.3]))
    a2 = fake_run(tmp_path / "a2", "mapping", 2, log([3.1, 2.2], [0.25]))
    b1 = fake_run(tmp_path / "b1", "masked_prompting", 1, log([2.5, 1.0], [0.5]))
    silent = fake_run(tmp_path / "c", "masked_prompting", 2, None)
    curves = read_curves({"mapping": [a1, a2], "masked_prompting": [b1, silent]}, "rougeL")
    assert [(c.run, c.group) for c in curves] == [(a1, "mapping"), (a2, "mapping"), (b1, "masked_prompting")]
    assert curves[0].loss == ([10, 20, 30, 40], [3.0, 2.0, 1.5, 1.2])
    assert curves[0].dev == ([20, 40], [0.2, 0.3])
    assert read_curves({"x": [a1]}, "dev_exact_match")[0].dev == ([20, 40], [0.1, 0.1])


def test_report_plots_loss_and_dev_curves_one_line_per_run(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", "mapping", 1, log([3.0, 2.0, 1.5, 1.2], [0.2, 0.3]))
    fake_run(sweep / "1", "mapping", 2, log([3.2, 2.1, 1.6, 1.1], [0.1, 0.4]))
    fake_run(sweep / "2", "masked_prompting", 1, log([2.5, 1.0, 0.8, 0.7], [0.5, 0.6]))
    saved = {}
    savefig = matplotlib.figure.Figure.savefig

    def keep(fig, path, **kwargs):
        if isinstance(path, str | Path):  # the report's other plots are saved into memory buffers
            saved[Path(path).name] = fig
        return savefig(fig, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    out = report([str(sweep)], by=["template"], metric="rougeL", out=str(tmp_path / "report"))
    height, width, _ = matplotlib.image.imread(out / "curves.png").shape
    assert width > 1.5 * height  # two panels side by side
    loss, dev = saved["curves.png"].axes
    assert (loss.get_ylabel(), dev.get_ylabel()) == ("training loss", "dev_rougeL")
    assert [list(line.get_ydata()) for line in dev.lines] == [[0.2, 0.3], [0.1, 0.4], [0.5, 0.6]]
    assert len(loss.lines) == 3 and [t.get_text() for t in loss.get_legend().get_texts()] == [
        "mapping", "masked_prompting"]  # one colour and legend entry per group  # fmt: skip
    assert loss.lines[0].get_color() == loss.lines[1].get_color() != loss.lines[2].get_color()
    # Without per-step logs (runs from before them) there is no curve plot, and the report still works.
    fake_run(tmp_path / "old" / "0", "mapping", 1, None)
    out = report([str(tmp_path / "old")], by=["template"], metric="rougeL", out=str(tmp_path / "report2"))
    assert (out / "report.csv").is_file() and not (out / "curves.png").exists()
