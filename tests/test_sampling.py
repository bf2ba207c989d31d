"""ATOMIC sampling options that the protocol= presets pin (docs/reference-protocol.md section 4), golden
tests from the MTO code's own simulation: heads A (5 rows, 2 relations), D (2 rows, 2 relations), C (4),
E (3), B (2); N = 2 heads, 3 tails per head -> the code's `[A0, A1, A2, D0, C0]`, whose C0 is its N+1
bug (trap 3), so we expect `[A0, A1, A2, D0]`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mto.errors import ConfigError
from mto.tasks.atomic import load_atomic, richest_first

# File order differs from the richest-first order on purpose: B, C, A, E, D.
ROWS = [
    ("PersonX b", "xNeed", "b0"), ("PersonX b", "xNeed", "b1"),
    ("PersonX c", "xNeed", "c0"), ("PersonX c", "xNeed", "c1"), ("PersonX c", "xNeed", "c2"),
    ("PersonX c", "xNeed", "c3"),
    ("PersonX a", "xNeed", "a0"), ("PersonX a", "xWant", "aw"), ("PersonX a", "xNeed", "a1"),
    ("PersonX a", "xNeed", "a2"), ("PersonX a", "xNeed", "a3"),
    ("PersonX e", "xNeed", "e0"), ("PersonX e", "xNeed", "e1"), ("PersonX e", "xNeed", "e2"),
    ("PersonX d", "xWant", "dw"), ("PersonX d", "xNeed", "d0"),
]  # fmt: skip


def folder(tmp_path: Path, rows=ROWS) -> Path:
    text = "".join("\t".join(r) + "\n" for r in rows)
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text(text)
    return tmp_path


def xneed_tails(records) -> list[str]:
    return [r["tail"] for r in records if r["relation"] == "xNeed"]


def test_richest_first_is_the_reference_sort():
    keys = richest_first(ROWS)
    order = sorted(keys, key=keys.__getitem__, reverse=True)
    assert order == ["PersonX a", "PersonX d", "PersonX c", "PersonX e", "PersonX b"]
    # equal counts: the head's text decides, descending (pandas sorts strings that way)
    tie = [("PersonX a", "xNeed", "t"), ("PersonX b", "xNeed", "t")]
    keys = richest_first(tie)
    assert sorted(keys, key=keys.__getitem__, reverse=True) == ["PersonX b", "PersonX a"]


def test_two_heads_three_tails_richest_first_is_the_reference_sample_without_its_extra_head(tmp_path):
    task = load_atomic(folder(tmp_path), n_train=2, train_tails_per_head=3, head_order="richest_first")
    assert xneed_tails(task.train) == ["a0", "a1", "a2", "d0"]  # the code: a0 a1 a2 d0 c0 (N+1 heads)
    assert sorted({r["head"] for r in task.train if r["relation"] == "xWant"}) == ["PersonX a", "PersonX d"]


def test_one_tail_per_training_head_and_the_seed_does_not_change_a_deterministic_order(tmp_path):
    path = folder(tmp_path)
    one = load_atomic(path, n_train=3, train_tails_per_head=1, head_order="richest_first", sample_seed=1)
    other = load_atomic(path, n_train=3, train_tails_per_head=1, head_order="richest_first", sample_seed=2)
    assert xneed_tails(one.train) == ["c0", "a0", "d0"]  # file order of the chosen heads A, D, C
    assert one.train == other.train and one.fingerprint == other.fingerprint


def test_file_order_takes_the_first_heads_met(tmp_path):
    task = load_atomic(folder(tmp_path), n_train=2, head_order="file")
    assert xneed_tails(task.train) == ["b0", "b1", "c0", "c1", "c2", "c3"]


def test_test_queries_keep_three_gold_tails_and_n_heads_per_relation(tmp_path):
    task = load_atomic(folder(tmp_path), test_tails_per_head=3, test_heads_per_relation=2,
                       head_order="richest_first")  # fmt: skip
    queries = {(q["head"], q["relation"]): q["tails"] for q in task.test}
    assert queries == {
        ("PersonX a", "xNeed"): ["a0", "a1", "a2"],  # 4 gold tails in the file, the first 3 kept
        ("PersonX d", "xNeed"): ["d0"],
        ("PersonX a", "xWant"): ["aw"],
        ("PersonX d", "xWant"): ["dw"],
    }
    assert {(q["head"], q["relation"]) for q in task.dev} == set(queries)
    assert len(task.train) == len(ROWS)  # training is not touched by the test options


def test_random_test_heads_do_not_follow_the_run_seed(tmp_path):
    path = folder(tmp_path)
    runs = [load_atomic(path, test_heads_per_relation=2, sample_seed=s).test for s in (1, 2, 3)]
    assert runs[0] == runs[1] == runs[2]
    assert len([q for q in runs[0] if q["relation"] == "xNeed"]) == 2


def test_none_rows_count_in_the_order_even_when_dropped(tmp_path):
    """The code counts rows over the file as read: a `none` tail makes E (3 + 1 rows) richer than C (4),
    the text deciding the tie (E > C)."""
    rows = [*ROWS, ("PersonX e", "xNeed", "none")]
    task = load_atomic(folder(tmp_path, rows), n_train=3, head_order="richest_first", drop_none=True,
                       train_tails_per_head=1)  # fmt: skip
    assert xneed_tails(task.train) == ["a0", "e0", "d0"]  # heads A, D, E in file order; without it A, D, C


def test_the_defaults_keep_todays_sampling_and_fingerprint(tmp_path):
    path = folder(tmp_path)
    plain = load_atomic(path)
    assert load_atomic(path, head_order="random").fingerprint == plain.fingerprint
    assert load_atomic(path, test_tails_per_head=3).fingerprint != plain.fingerprint
    assert max(len(q["tails"]) for q in plain.test) == 4


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.head_order=richest", r"^data\.head_order=.richest.: expected one of random, richest_fir"),
        ("data.test_tails_per_head=0", r"^data\.test_tails_per_head=0: expected an integer >= 1$"),
        ("data.train_tails_per_head=-1", r"^data\.train_tails_per_head=-1: expected an integer >= 1$"),
        ("data.test_heads_per_relation=0", r"^data\.test_heads_per_relation=0: expected an integer >= 1$"),
    ],
)
def test_sampling_settings_are_checked(override, expected):
    from conftest import compose_train

    with pytest.raises(ConfigError, match=expected):
        compose_train(override)
