"""`mto eval` scores something trained, or says why not: with no `run=` (or an empty one, as a shell
pattern that matched nothing gives) and only a model built from scratch, it refuses with one line
unless `eval.allow_untrained=true` asks for the untrained baseline."""

from __future__ import annotations

import pytest
from conftest import TINY_WORLD, mto, read_json, run_dirs

from mto.errors import ConfigError
from mto.stages.eval import check_something_trained


def compose_eval(*overrides: str):
    from hydra import compose, initialize_config_dir

    from mto.config import conf_dir, typed

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return typed(compose(config_name="eval", overrides=[*TINY_WORLD, *overrides]))


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ([], "nothing trained to evaluate: model=tiny is built from scratch"),
        (["model.name_or_path=tiny2"], "nothing trained to evaluate: model=tiny2 is built from scratch"),
        (["run="], "run= is empty"),
        (["run=", "eval.allow_untrained=true"], "run= is empty"),
        # what is allowed: the baseline asked for, a checkpoint, an adapter, a run
        (["eval.allow_untrained=true"], None),
        (["model=t5-small"], None),
        (["model.name_or_path=/some/folder", "model.build=null"], None),
        (["model.name_or_path=/some/folder"], None),  # a folder given is loaded, not built (issue 12.8)
        (["tuning=lora", "tuning.adapter=/some/run/model"], None),
        (["run=/some/run"], None),
    ],
)
def test_what_eval_refuses_to_score(overrides, refusal):
    cfg = compose_eval(*overrides)
    if refusal is None:
        check_something_trained(cfg)
        return
    with pytest.raises(ConfigError, match=refusal) as err:
        check_something_trained(cfg)
    assert "\n" not in str(err.value)
    if "nothing trained" in refusal:
        assert "run=<train run dir>" in str(err.value) and "eval.allow_untrained=true" in str(err.value)


@pytest.mark.slow
def test_cli_eval_without_a_run_refuses_then_scores_the_baseline_when_asked(tmp_path):
    small = ["data.n_heads=60", "threads=1", "eval.max_examples=8", "eval.max_new_tokens=4"]
    for args, expected in [([], "eval.allow_untrained=true"), (["run="], "run= is empty")]:
        proc = mto("eval", *args, *small, cwd=tmp_path, check=False)
        assert proc.returncode == 2
        message = proc.stderr.strip().splitlines()
        assert len(message) == 1 and message[0].startswith("mto eval: ") and expected in message[0]
    refused = run_dirs(tmp_path / "outputs" / "eval")
    assert len(refused) == 2
    for run in refused:
        assert read_json(run / "run.json")["status"] == "failed"
        assert not (run / "metrics.json").exists() and not (run / "predictions.jsonl").exists()

    mto("eval", "eval.allow_untrained=true", *small, cwd=tmp_path)
    (baseline,) = set(run_dirs(tmp_path / "outputs" / "eval")) - set(refused)
    assert read_json(baseline / "run.json")["status"] == "completed"
    assert read_json(baseline / "metrics.json")["n"] == 8
