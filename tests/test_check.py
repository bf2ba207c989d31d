"""`mto report <sweep> check=match_run=<dir>`: the chooser's decisions against the templates that won."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import mto, read_json

from mto.errors import MtoError
from mto.stages.check import check_match

FAMILY = {"prompting": "mapping", "mapping": "mapping", "masked_prompting": "filling"}
# template -> relation -> ROUGE-L of two seeds
SWEEP = {
    "prompting": {"xIntent": (0.40, 0.40), "xAttr": (0.20, 0.30)},
    "mapping": {"xIntent": (0.45, 0.35), "xAttr": (0.10, 0.10)},
    "masked_prompting": {"xIntent": (0.50, 0.50), "xAttr": (0.60, 0.40)},
}


def sweep(root: Path) -> Path:
    for template, relations in SWEEP.items():
        for seed in (0, 1):
            run = root / f"{template}-{seed}"
            (run / ".hydra").mkdir(parents=True)
            (run / ".hydra" / "config.yaml").write_text(
                f"template: {{name: {template}, objective: {FAMILY[template]}}}\ndata: {{name: atomic}}\n"
            )
            per_group = {rel: values[seed] for rel, values in relations.items()}
            (run / "metrics.json").write_text(json.dumps({"rougeL_per_group": per_group}))
            (run / "run.json").write_text(json.dumps({"stage": "train", "status": "completed"}))
    return root


def match_run(root: Path, decisions: dict) -> Path:
    root.mkdir()
    (root / "match.json").write_text(json.dumps({
        "decisions": decisions, "mapping_template": "prompting", "filling_template": "masked_prompting",
    }))  # fmt: skip
    return root


def test_agreement_and_score_lost_against_the_oracle(tmp_path):
    runs = sweep(tmp_path / "sweep")
    chooser = match_run(tmp_path / "match", {"xIntent": "mapping", "xAttr": "filling", "oReact": "filling"})
    summary = check_match([runs], chooser, metric="rougeL", out=tmp_path / "out")
    rows = {r["group"]: r for r in summary["rows"]}
    assert set(rows) == {"xIntent", "xAttr"}  # oReact was not swept
    assert rows["xIntent"]["winner"] == "masked_prompting" and rows["xIntent"]["agree"] is False
    assert rows["xIntent"]["lost"] == pytest.approx(0.50 - 0.40)  # the chooser's prompting vs the oracle
    assert rows["xAttr"]["winner"] == "masked_prompting" and rows["xAttr"]["agree"] is True
    assert rows["xAttr"]["lost"] == 0.0
    assert summary["agreement"] == 0.5 and summary["mean_lost"] == pytest.approx(0.05)
    assert read_json(tmp_path / "out" / "check.json")["agreement"] == 0.5


def test_without_a_swept_relation_the_check_says_so(tmp_path):
    runs = sweep(tmp_path / "sweep")
    chooser = match_run(tmp_path / "match", {"HinderedBy": "mapping"})
    with pytest.raises(MtoError, match="no relation of .* has `rougeL_per_group` scores"):
        check_match([runs], chooser)


def test_check_on_the_command_line(tmp_path):
    runs = sweep(tmp_path / "sweep")
    chooser = match_run(tmp_path / "match", {"xIntent": "mapping", "xAttr": "filling"})
    proc = mto("report", str(runs), f"check=match_run={chooser}", cwd=tmp_path)
    assert "agreement 50.00% over 2 relations" in proc.stdout
    bad = mto("report", str(runs), "check=oops", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "check=match_run=" in bad.stderr
