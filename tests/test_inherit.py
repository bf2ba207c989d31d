"""`mto eval run=<dir>`: what an evaluation takes from the run it evaluates, through the real CLI.

Nothing in a run directory enables code (it may be someone else's); a data key set on the command line
changes that key of the run's data config and keeps the rest; evaluation reads only the splits it scores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import mto, read_json, run_dirs

from mto.config import DataConfig
from mto.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
TEXT2TEXT = ROOT / "tests" / "fixtures" / "text2text" / "jsonl"
QUICK = ["threads=1", "precision=fp32", "train.steps=2", "train.batch_size=4", "eval.after_train=false"]
EVAL = ["threads=1", "eval.max_new_tokens=4"]


def tsv(rows: list[tuple[str, str, str]]) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


def facts(n: int) -> list[tuple[str, str, str]]:
    """xIntent and xNeed triples of `n` heads no training file mentions."""
    return [(f"PersonX reads book {i}", r, f"to learn {i}") for i in range(n) for r in ("xIntent", "xNeed")]


@pytest.fixture(scope="module")
def atomic_run(tmp_path_factory) -> Path:
    """A tiny model trained on an ATOMIC-format folder, on its xIntent triples only."""
    cwd = tmp_path_factory.mktemp("atomic-run")
    folder = cwd / "data"
    folder.mkdir()
    triples = [(f"PersonX plays game {i}", r, f"to win {i}") for i in range(8) for r in ("xIntent", "xNeed")]
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(tsv(triples))
    mto("train", "data=atomic", f"data.path={folder}", "data.relations=[xIntent]", *QUICK, cwd=cwd)
    (run,) = run_dirs(cwd / "outputs" / "train")
    return run


@pytest.fixture(scope="module")
def text2text_run(tmp_path_factory) -> Path:
    """A tiny model trained on the text2text fixture, whose records name their fields input/output."""
    cwd = tmp_path_factory.mktemp("text2text-run")
    mto("train", "data=text2text", f"data.path={TEXT2TEXT}", "data.fields.source=input",
        "data.fields.target=output", "template=text2text", *QUICK, cwd=cwd)  # fmt: skip
    (run,) = run_dirs(cwd / "outputs" / "train")
    return run


def evaluated(cwd: Path) -> tuple[dict, dict, list[dict]]:
    """(run.json, metrics.json, predictions) of the one eval run under `cwd`."""
    (run,) = run_dirs(cwd / "outputs" / "eval")
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return read_json(run / "run.json"), read_json(run / "metrics.json"), predictions


@pytest.mark.slow
def test_a_data_path_override_keeps_the_runs_data_config(atomic_run, tmp_path):
    """`data.path=<other>` evaluates the other folder as the run's kind of data, with its relations; and a
    folder holding test.tsv alone is enough to score test."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "test.tsv").write_text(tsv(facts(5)))
    mto("eval", f"run={atomic_run}", f"data.path={other}", *EVAL, cwd=tmp_path)
    info, metrics, predictions = evaluated(tmp_path)
    expected = load_task(DataConfig(kind="atomic", path=str(other), relations=["xIntent"]), ["test"])
    assert info["data_fingerprint"] == expected.fingerprint
    assert metrics["n"] == 5
    assert [p["references"] for p in predictions] == [[f"to learn {i}"] for i in range(5)]


@pytest.mark.slow
def test_naming_the_data_group_switches_the_dataset(atomic_run, tmp_path):
    """`data=atomic` on the command line is the user's data config as a whole: the run's relation
    selection no longer applies."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "test.tsv").write_text(tsv(facts(3)))
    mto("eval", f"run={atomic_run}", "data=atomic", f"data.path={other}", *EVAL, cwd=tmp_path)
    _, metrics, predictions = evaluated(tmp_path)
    assert metrics["n"] == 6
    assert {p["group"] for p in predictions} == {"xIntent", "xNeed"}


@pytest.mark.slow
def test_a_split_file_override_keeps_the_field_mapping(text2text_run, tmp_path):
    """`+data.files.test=dev` scores the run's dev file as test, fields as the run mapped them; without
    the `+` (the default data config has no files to override) Hydra refuses it in a few lines, naming
    the spelling that works."""
    mto("eval", f"run={text2text_run}", "+data.files.test=dev", *EVAL, cwd=tmp_path)
    _, metrics, predictions = evaluated(tmp_path)
    assert metrics["n"] == 1
    assert predictions[0]["references"] == ["bonne nuit"]  # dev.jsonl's `output`
    assert predictions[0]["input"] == "translate English to French: good night"  # its `input`
    proc = mto("eval", f"run={text2text_run}", "data.files.test=dev", *EVAL, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "data.files.test" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 4
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_eval_reads_only_the_split_it_scores(text2text_run, tmp_path):
    folder = tmp_path / "test-only"
    folder.mkdir()
    shutil.copy(TEXT2TEXT / "test.jsonl", folder / "test.jsonl")
    mto("eval", f"run={text2text_run}", f"data.path={folder}", *EVAL, cwd=tmp_path)
    info, metrics, predictions = evaluated(tmp_path)
    assert info["status"] == "completed" and metrics["n"] == 1
    assert predictions[0]["references"] == ["à bientôt", "a bientot"]


# ------------------------------------------------------------------------------ code in a run directory

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import PretrainedConfig


class EvilConfig(PretrainedConfig):
    model_type = "evil"
"""


def hostile_run(folder: Path, marker: Path) -> Path:
    """A completed train run whose config says `trust_remote_code: true` and whose model folder maps its
    classes to a Python file of its own (`auto_map`), which leaves `marker` when it is imported."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mto.config import conf_dir

    run = folder / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "model").mkdir()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="train", overrides=["model.trust_remote_code=true", "data.n_heads=60"])
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "run.json").write_text(json.dumps({"stage": "train", "status": "completed"}))
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModelForSeq2SeqLM": "evil.EvilConfig"}
    (run / "model" / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    (run / "model" / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return run


@pytest.mark.slow
def test_a_run_directory_never_enables_its_own_code(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # where transformers copies remote code
    marker = tmp_path / "marker"
    run = hostile_run(tmp_path, marker)
    proc = mto("eval", f"run={run}", *EVAL, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "Traceback" not in proc.stderr
    # Only the user's own command line turns it on (and then the folder's code does run).
    mto("eval", f"run={run}", "model.trust_remote_code=true", *EVAL, cwd=tmp_path, check=False)
    assert marker.read_text() == "ran"


def test_a_run_config_may_not_call_resolvers():
    """`${oc.env:...}` in a run's config would read the evaluating user's environment into the evaluation
    (a template could copy a secret into predictions.jsonl); references to its own keys stay allowed."""
    from omegaconf import OmegaConf

    from mto.errors import ConfigError
    from mto.stages.inherit import refuse_resolver_calls

    fine = OmegaConf.create({"seed": 3, "data": {"sample_seed": "${seed}"}, "template": {"source": "{head}"}})
    refuse_resolver_calls(OmegaConf.to_container(fine, resolve=False), "run=r")
    hostile = {"template": {"source": "${oc.env:AWS_SECRET_ACCESS_KEY} {head}"}, "x": ["${ oc.decode:1}"]}
    with pytest.raises(ConfigError, match=r"^run=r: template.source='\$\{oc.env:AWS_SECRET_ACCESS_KEY\} "):
        refuse_resolver_calls(hostile, "run=r")
    with pytest.raises(ConfigError, match=r"^run=r: x\[0\]="):
        refuse_resolver_calls({"x": ["${ oc.decode:1}"]}, "run=r")
