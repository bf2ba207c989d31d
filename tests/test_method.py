"""The MTO method end to end through the real CLI: adapt with an objective, match, train from the
adapted model with template=auto, and the whole `mto run` pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import mto, read_json, run_dirs

from mto.tracking import read_steps

WORLD = ["data.n_heads=80", "data.relations=[xIntent,xNeed,xEffect]"]
ADAPT = [*WORLD, "train.steps=120", "train.batch_size=32", "train.log_every=40", "train.lr=3e-3"]
MATCH = [*WORLD, "match.n=24"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory) -> dict[str, Path]:
    """The tiny model adapted (from scratch) with filling only, and with mapping only."""
    out = {}
    for objective in ("filling", "mapping"):
        cwd = tmp_path_factory.mktemp(f"adapt-{objective}")
        mto("adapt", f"objective={objective}", *ADAPT, cwd=cwd)
        (out[objective],) = run_dirs(cwd / "outputs" / "adapt")
    return out


def test_adapt_writes_a_model_and_its_lineage(adapted):
    for objective, run in adapted.items():
        info = read_json(run / "run.json")
        assert info["status"] == "completed"
        assert info["figures"]["objective"]["name"] == objective
        assert info["figures"]["adapt_records"] > 0
        assert (run / "model" / "model.safetensors").is_file()
        assert [r["step"] for r in read_steps(run)] == [40, 80, 120]  # its per-step log (log_every=40)


def test_match_follows_the_adaptation_objective(adapted, tmp_path):
    """Adapted with filling only, a model knows the task better under masked prompting (high MI) than
    one adapted with mapping only; `mto match` decides Filling for the first and Mapping for the second."""
    mi, decisions = {}, {}
    for objective, run in adapted.items():
        cwd = tmp_path / objective
        cwd.mkdir()
        mto("match", f"adapt_run={run}", *MATCH, cwd=cwd)
        (match_run,) = run_dirs(cwd / "outputs" / "match")
        result = read_json(match_run / "match.json")
        assert read_json(match_run / "run.json")["lineage"]["adapt_run"] == str(run.resolve())
        mi[objective] = {g: r["mi"] for g, r in result["groups"].items()}
        decisions[objective] = result["decisions"]
    assert set(mi["filling"]) == {"xIntent", "xNeed", "xEffect"}
    for relation in mi["filling"]:
        assert mi["filling"][relation] > mi["mapping"][relation], relation
    assert set(decisions["filling"].values()) == {"filling"}
    # Mean ranks over a few examples are noisy where a mapping-adapted model knows a relation under both
    # templates, so the mapping model is asked for a majority, not unanimity.
    assert list(decisions["mapping"].values()).count("mapping") >= 2


def test_train_with_auto_template_from_adapted_model(adapted, tmp_path):
    """template=auto picks masked_prompting from a match run that decided Filling everywhere."""
    cwd = tmp_path
    mto("match", f"adapt_run={adapted['filling']}", *MATCH, cwd=cwd)
    (match_run,) = run_dirs(cwd / "outputs" / "match")
    mto(
        "train",
        f"adapt_run={adapted['filling']}",
        "template=auto",
        f"match_run={match_run}",
        *WORLD,
        "train.steps=10",
        "eval.max_examples=12",
        "eval.max_new_tokens=8",
        cwd=cwd,
    )
    (train_run,) = run_dirs(cwd / "outputs" / "train")
    info = read_json(train_run / "run.json")
    assert info["lineage"]["adapt_run"] == str(adapted["filling"].resolve())
    assert info["lineage"]["match_run"] == str(match_run.resolve())
    first = (train_run / "predictions.jsonl").read_text().splitlines()[0]
    assert "<extra_id_0>" in first  # the filling template was used


def test_match_rules_needs_no_model(tmp_path):
    mto("match", "match.method=rules", *WORLD, "model=t5-small", cwd=tmp_path)  # never loaded
    (run,) = run_dirs(tmp_path / "outputs" / "match")
    assert set(read_json(run / "match.json")["decisions"].values()) == {"filling"}


def test_auto_template_without_match_run_is_refused(tmp_path):
    proc = mto("train", "template=auto", *WORLD, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "match_run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_run_pipeline_links_its_stages(tmp_path):
    mto(
        "run",
        *WORLD,
        "match.n=4",
        "train.steps=8",
        "eval.max_examples=8",
        "eval.max_new_tokens=6",
        "train.log_every=4",
        cwd=tmp_path,
    )
    (pipeline,) = [
        d
        for d in run_dirs(tmp_path / "outputs" / "run")
        if d.parent.name != d.name and (d / "1_match").exists()
    ]
    info = read_json(pipeline / "run.json")
    assert info["status"] == "completed"
    assert list(info["lineage"]) == ["match", "adapt", "train", "eval"]
    adapt = read_json(pipeline / "2_adapt" / "run.json")
    train = read_json(pipeline / "3_train" / "run.json")
    evaluation = read_json(pipeline / "4_eval" / "run.json")
    assert adapt["lineage"]["match_run"] == str((pipeline / "1_match").resolve())
    assert train["lineage"]["adapt_run"] == str((pipeline / "2_adapt").resolve())
    assert evaluation["lineage"]["train_run"] == str((pipeline / "3_train").resolve())
    assert info["figures"]["exact_match"] == evaluation["figures"]["exact_match"]
