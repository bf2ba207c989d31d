"""protocol= presets (conf/protocol/, mto/protocol.py): what each pins, the fingerprint stamped into
run.json, and `mto report` refusing to mix protocols in one table unless told to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_train, mto

from mto.errors import MtoError
from mto.protocol import check_protocols, stamp


def test_mto_is_the_default_and_changes_nothing():
    default, explicit = compose_train(), compose_train("protocol=mto")
    assert default == explicit and default.protocol.name == "mto"
    data = default.data
    assert (data.head_order, data.test_tails_per_head, default.eval.metrics) == ("random", None, [])


def test_mto2024_pins_the_mto_codes_settings():
    cfg = compose_train("protocol=mto2024")
    assert cfg.protocol.name == "mto2024"
    assert cfg.phrases["xNeed"] == "But before {head}, PersonX needed"
    assert cfg.phrases["xIntent"] == "they intend"
    data = cfg.data
    assert (data.head_order, data.train_tails_per_head, data.test_tails_per_head) == ("richest_first", 3, 3)
    assert data.test_heads_per_relation == 100 and data.drop_none is False
    assert cfg.eval.metrics == ["rougeL_ref"] and cfg.eval.num_beams == 1
    train = cfg.train
    assert (str(train.optimizer), train.lr, train.batch_size, train.epochs) == ("adamw", 1e-3, 20, 20)
    assert train.double_epochs_up_to == 10


def test_maskability_pins_the_papers_settings():
    cfg = compose_train("protocol=maskability")
    assert cfg.phrases["xNeed"] == "before that they need" and cfg.seed == 13
    data = cfg.data
    assert (data.head_order, data.test_heads_per_relation, data.test_tails_per_head) == ("file", 100, 3)
    train = cfg.train
    assert (str(train.optimizer), train.lr, train.batch_size, train.epochs) == ("adafactor", 1e-4, 8, 3)
    assert str(train.scheduler) == "constant" and train.warmup_steps == 0 and cfg.match.threshold == 0.30


def test_the_command_line_still_wins_over_a_protocol():
    cfg = compose_train("protocol=mto2024", "phrases=mto", "train.lr=5e-4")
    assert cfg.phrases["xNeed"] == "but before, PersonX needed" and cfg.train.lr == 5e-4


def test_the_fingerprint_covers_what_is_measured_not_the_optimiser():
    base = stamp(compose_train("protocol=mto2024"))
    assert base["name"] == "mto2024" and base["settings"]["data.test_tails_per_head"] == 3
    assert stamp(compose_train("protocol=mto2024", "train.lr=5e-4"))["fingerprint"] == base["fingerprint"]
    five_tails = stamp(compose_train("protocol=mto2024", "data.test_tails_per_head=5"))
    assert five_tails["fingerprint"] != base["fingerprint"]
    assert stamp(compose_train("protocol=mto2024", "phrases=mto"))["fingerprint"] != base["fingerprint"]
    assert stamp(compose_train())["fingerprint"] != base["fingerprint"]


def fake_run(root: Path, name: str, protocol: dict | None, rouge: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    info = {"stage": "train", "status": "completed", "figures": {}}
    info.update({"protocol": protocol} if protocol else {})
    (run / "run.json").write_text(json.dumps(info))
    (run / "metrics.json").write_text(json.dumps({"rougeL": rouge}))
    return run


def test_check_protocols_refuses_a_mix_unless_told(tmp_path):
    mto_stamp, ref_stamp = stamp(compose_train()), stamp(compose_train("protocol=mto2024"))
    fake_run(tmp_path / "a", "r1", mto_stamp, 0.4)
    fake_run(tmp_path / "a", "r2", None, 0.5)  # from before stamps: counts as mto
    check_protocols([tmp_path / "a"])
    fake_run(tmp_path / "a", "r3", ref_stamp, 0.6)
    with pytest.raises(MtoError, match=r"^report: runs of different protocols in one table: mto .*mto2024 "):
        check_protocols([tmp_path / "a"])
    check_protocols([tmp_path / "a"], mixed=True)
    other = stamp(compose_train("data.test_tails_per_head=3"))  # same name, other measured settings
    fake_run(tmp_path / "b", "r1", mto_stamp, 0.4)
    fake_run(tmp_path / "b", "r2", other, 0.4)
    with pytest.raises(MtoError, match="different protocols"):
        check_protocols([tmp_path / "b"])


def test_mto_report_refuses_in_one_line_and_accepts_when_told(tmp_path):
    fake_run(tmp_path / "runs", "r1", stamp(compose_train()), 0.4)
    fake_run(tmp_path / "runs", "r2", stamp(compose_train("protocol=maskability")), 0.6)
    proc = mto("report", str(tmp_path / "runs"), f"out={tmp_path / 'out'}", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "different protocols" in proc.stderr and "mixed_protocols=true" in proc.stderr
    assert not (tmp_path / "out").exists()
    mto("report", str(tmp_path / "runs"), f"out={tmp_path / 'out'}", "mixed_protocols=true", cwd=tmp_path)
    assert (tmp_path / "out" / "report.csv").is_file()
