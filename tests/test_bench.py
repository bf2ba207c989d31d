"""The benchmark's pure parts (scripts/bench/): summaries of repeats, the interleaved order, paired ratios,
the reliability verdict from a load series, the busiest other processes, mto's padding share, and the
report built from made-up runs. No timing: every figure here is given, not measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench import stats  # noqa: E402


def test_summary_median_and_spread():
    s = stats.summary([5.0, None, 1.0, 3.0])  # a repeat without the figure is left out
    assert (s["median"], s["min"], s["max"], s["n"]) == (3.0, 1.0, 5.0, 3)
    assert (s["q1"], s["q3"]) == (2.0, 4.0)
    even = stats.summary([4, 1, 2, 10])
    assert even["median"] == 3.0 and even["min"] == 1 and even["max"] == 10
    assert stats.summary([None, None]) is None
    assert stats.relative_spread(s) == pytest.approx(4 / 3)
    assert stats.relative_spread(stats.summary([2.0])) == 0


def test_show_gives_median_and_range():
    assert stats.show(stats.summary([5.0, 1.0, 3.0]), ".1f") == "3.0 (1.0–5.0)"
    assert stats.show(stats.summary([2.0]), ".1f") == "2.0"
    assert stats.show(stats.summary([1.5, 1.5]), ".2f", suffix="x") == "1.50x"
    assert stats.show(None) == "–"
    assert stats.show(stats.summary([0.25, 0.5]), ".0%") == "38% (25%–50%)"


def test_interleaved_alternates_the_arms_within_each_repeat():
    order = stats.interleaved(["baseline", "mto", "packed"], 3)
    assert [arm for _, arm in order] == ["baseline", "mto", "packed"] * 3
    assert [r for r, _ in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # the control: what running the arms one after the other would give is not this order
    back_to_back = [(r, arm) for arm in ("baseline", "mto", "packed") for r in range(3)]
    assert order != back_to_back and sorted(order) == sorted(back_to_back)
    with pytest.raises(ValueError, match="repeats"):
        stats.interleaved(["baseline"], 0)
    with pytest.raises(ValueError, match="distinct"):
        stats.interleaved(["mto", "mto"], 2)


def test_paired_ratios_pair_runs_of_the_same_repeat():
    runs = [
        {"repeat": 0, "arm": "baseline", "x": 10.0},
        {"repeat": 0, "arm": "mto", "x": 15.0},
        {"repeat": 1, "arm": "baseline", "x": 5.0},  # a slower repeat: the ratio is unchanged
        {"repeat": 1, "arm": "mto", "x": 7.5},
        {"repeat": 2, "arm": "baseline", "x": 8.0},  # mto missing in this repeat: left out
    ]
    assert stats.paired_ratios(runs, "x", "mto", "baseline") == [1.5, 1.5]
    assert stats.paired_ratios(list(reversed(runs)), "x", "mto", "baseline") == [1.5, 1.5]
    # the ratio of the medians would differ (mto 11.25 / baseline 8.0): pairing is what the test checks
    assert 11.25 / 8.0 != 1.5


def test_unreliable_when_the_load_exceeds_the_threads():
    quiet = [(0.0, 1.2), (2.0, 2.1), (4.0, 2.5)]  # 2 threads + 0.5: not above
    busy = [(0.0, 1.2), (2.0, 2.9), (4.0, 2.4)]
    assert stats.load_excess(quiet, threads=2) is None
    assert stats.load_excess(busy, threads=2) == (2.0, 2.9)
    assert stats.unreliable_reasons({"load_samples": quiet, "others_cores": 0.1}, threads=2) == []
    reasons = stats.unreliable_reasons({"load_samples": busy, "others_cores": 0.1}, threads=2)
    assert len(reasons) == 1 and "2.90 > 2 threads" in reasons[0]
    # the same series is fine for a run with more threads
    assert stats.unreliable_reasons({"load_samples": busy}, threads=3) == []
    # others' cores over the run, and a wait for a quiet machine that timed out, count as well
    assert "1.20 cores" in stats.unreliable_reasons({"load_samples": quiet, "others_cores": 1.2}, 2)[0]
    timed_out = {"load_samples": quiet, "wait_timed_out": True, "others_at_start": 0.9}
    assert "waited out" in stats.unreliable_reasons(timed_out, 2)[0]


def test_top_consumers_leave_out_ours_and_count_new_processes_from_zero():
    before = {1: ("mto", 100.0), 2: ("bash", 5.0), 3: ("python", 50.0)}
    after = {1: ("mto", 119.0), 2: ("bash", 5.0), 3: ("python", 60.0), 4: ("make", 2.0)}
    top = stats.top_consumers(before, after, seconds=10.0, exclude={3})
    assert top == [("mto", 1, pytest.approx(1.9)), ("make", 4, pytest.approx(0.2))]


def test_mto_padding_counts_padded_positions_by_hand():
    from bench.arms import mto_padding

    # 4 examples, one batch: sources 8, 2, 2, 4 and targets 4, 1, 1, 2 tokens (real: 24)
    lengths = [(8, 4), (2, 1), (2, 1), (4, 2)]
    features = [{"input_ids": [5] * s, "labels": [6] * t} for s, t in lengths]
    prep = {"features": features, "train_cfg": {"batch_size": 4}, "seed": 0, "pad_id": 0, "start_id": 0}
    pad = mto_padding(prep, steps=1)
    assert pad["mto"] == pytest.approx(1 - 24 / (4 * 8 + 4 * 4))  # padded to the longest: 48 positions
    # packed: rows of 8 + 8 (the longest, rounded up to 8) would take 2 rows, 32 positions; the packer
    # chooses rows of 16 + 8, which hold all four examples: 24 positions, no padding
    assert pad["packed"] == pytest.approx(0.0)
    assert pad["mto"] > 0.4  # the control: the same batch unpacked


def fake_workload(base_tps, packed_tps, loads) -> dict:
    prep = {
        "title": "(x) made up",
        "parameters": 1e6,
        "vocab": 100,
        "n_enc": 4e5,
        "n_dec": 6e5,
        "train_examples": 10,
        "eval_examples": 4,
        "mean_source_tokens": 8.0,
        "mean_target_tokens": 4.0,
        "cache": {"tokenize_s": 0.1, "cached_first_s": 0.2, "cached_second_s": 0.01},
        "train_cfg": {"batch_size": 4, "lr": 1e-3, "eval_batch_size": 4, "max_new_tokens": 8},
    }
    proc = {
        "wall_s": 1.0,
        "load_before": loads[0][1],
        "load_max": max(v for _, v in loads),
        "load_after": loads[-1][1],
        "load_samples": loads,
        "others_cores": 0.0,
        "top_others": [],
    }
    runs = []
    for repeat in range(3):
        for arm, tps, loss in (("baseline", base_tps, 2.0), ("packed", packed_tps, 2.02)):
            runs.append(
                {
                    "repeat": repeat,
                    "arm": arm,
                    "train_tokens_per_s": tps * (1 + repeat / 10),
                    "source_share": 0.6,
                    "heldout_loss": loss,
                    "processes": {"train": dict(proc)},
                }
            )
    return {
        "name": "t5-small",
        "steps": 5,
        "repeats": 3,
        "prep": prep,
        "runs": runs,
        "padding": {"baseline": 0.46, "mto": 0.46, "packed": 0.13},
    }


def test_report_marks_missed_targets_and_unreliable_runs(tmp_path):
    from bench.report import report

    info = {
        "cpu": "test",
        "cores": 2,
        "flags": [],
        "torch": "T",
        "transformers": "X",
        "datasets": "D",
        "python": "3",
        "threads": 2,
        "load_before": 0.0,
        "load_after": 0.0,
    }
    peaks = {"fp32": {"flops": 1e9, "n": 1024}, "bf16": {"flops": 1e8, "n": 1024}}
    quiet = fake_workload(100.0, 120.0, [(0.0, 1.0), (2.0, 2.0)])
    text = report(info, peaks, [quiet], [], "cmd", tmp_path)
    assert "Reliable" in text and "UNRELIABLE" not in text
    assert "MISSED by 20% (1.20x < 1.50x)" in text  # the paired ratio 1.2 against the target 1.5
    assert "MISSED by 0.50%" in text  # held-out +1.0% against at most +0.5%
    assert "transformers X" in text and "torch T" in text
    assert "1.61x" in text  # what the padding shares predict: 0.87 / 0.54
    summary = json.loads((tmp_path / "report.json").read_text())["summary"][0]
    assert summary["train_speedup"] == pytest.approx(1.2) and summary["unreliable"] is False

    busy = fake_workload(100.0, 160.0, [(0.0, 1.0), (2.0, 3.1)])
    text = report(info, peaks, [busy], [], "cmd", tmp_path)
    assert "**UNRELIABLE**" in text and "3.10 > 2 threads" in text
    assert "met (1.60x >= 1.50x)" in text


def test_bad_arguments_name_the_flag(capsys):
    from bench_train import parse

    assert parse(["--arms", "mto,packed", "--repeats", "2"]).arms == ["mto", "packed"]
    for bad, flag in (
        (["--arms", "mto,fast"], "--arms"),
        (["--repeats", "0"], "--repeats"),
        (["--steps", "tiny=many"], "--steps"),
        (["--workloads", ""], "--workloads"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse(bad)
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err.splitlines()[-1]


def test_a_shortfall_the_rounding_would_hide_is_shown_with_more_digits():
    from bench.report import verdict

    assert verdict(1.198, 1.2) == "MISSED by 0.2% (1.198x < 1.200x)"
    assert verdict(1.2, 1.2) == "met (1.20x >= 1.20x)"
    assert verdict(0.341, 0.5, "%") == "MISSED by 32% (34.1% < 50.0%)"
