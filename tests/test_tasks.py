"""Tests of mto.tasks: the ATOMIC-2020 reader, few-shot sampling, and the synthetic world."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_train, data_config

from mto.config import DataConfig
from mto.errors import ConfigError, DataError
from mto.tasks import TaskData, load_task
from mto.tasks import synthetic as syn
from mto.tasks.atomic import load_atomic, parse_tsv

ROOT = Path(__file__).resolve().parents[1]
ATOMIC = ROOT.parent / "shared" / "data" / "atomic2020"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing in this file touches the real cache."""
    monkeypatch.setenv("MTO_CACHE_DIR", str(tmp_path / "cache"))


def write_task(
    folder: Path, train: str, dev: str = "h9\txIntent\tto rest\n", test: str | None = None
) -> Path:
    """A task folder from TSV text (`test` defaults to the dev text)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("dev", dev), ("test", dev if test is None else test)):
        (folder / f"{name}.tsv").write_text(text, encoding="utf-8")
    return folder


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"kind": "atomic", **kw})


# ---------------------------------------------------------------------------------------------
# ATOMIC-2020 reader
# ---------------------------------------------------------------------------------------------


def test_quotes_are_plain_characters(tmp_path):
    # An unbalanced `"` would make a CSV reader swallow the following lines into one field.
    train = 'h1\toEffect\tsays "thank you"\nh1\toWant\tto join the remark "cheers\nh2\txIntent\tto rest\n'
    task = load_task(cfg(path=str(write_task(tmp_path / "t", train))))
    assert [r["tail"] for r in task.train] == ['says "thank you"', 'to join the remark "cheers', "to rest"]


def test_train_records_one_per_triple(tmp_path):
    train = "h1\txIntent\ta\nh2\txNeed\tb\nh1\txIntent\tc\nh1\txIntent\ta\n"  # last line repeats line 1
    task = load_task(cfg(path=str(write_task(tmp_path / "t", train))))
    assert task.train == [
        {
            "id": "train-0",
            "head": "h1",
            "relation": "xIntent",
            "tail": "a",
            "tails": ["a", "c"],
            "group": "xIntent",
        },
        {"id": "train-1", "head": "h2", "relation": "xNeed", "tail": "b", "tails": ["b"], "group": "xNeed"},
        {
            "id": "train-2",
            "head": "h1",
            "relation": "xIntent",
            "tail": "c",
            "tails": ["a", "c"],
            "group": "xIntent",
        },
    ]


def test_eval_records_grouped_in_order_of_first_appearance(tmp_path):
    dev = "h2\txNeed\tb\nh1\txIntent\tc\nh2\txNeed\ta\nh1\txIntent\tc\nh2\txIntent\td\n"
    task = load_task(cfg(path=str(write_task(tmp_path / "t", "h\txIntent\tx\n", dev=dev))))
    assert [(r["id"], r["head"], r["relation"], r["tail"], r["tails"]) for r in task.dev] == [
        ("dev-0", "h2", "xNeed", "b", ["b", "a"]),
        ("dev-1", "h1", "xIntent", "c", ["c"]),
        ("dev-2", "h2", "xIntent", "d", ["d"]),
    ]
    assert [r["id"] for r in task.test] == ["test-0", "test-1", "test-2"]
    assert all(r["group"] == r["relation"] for r in task.dev)


def test_none_tails(tmp_path):
    train = "h1\txIntent\tnone\nh1\txIntent\tto eat\nh2\toReact\t None \nh3\toReact\tNONE\n"
    dev = "d1\toReact\tnone\nd2\txIntent\tto go\n"  # d1 has only `none`: it disappears
    folder = write_task(tmp_path / "t", train, dev=dev)
    dropped = load_task(cfg(path=str(folder)))
    assert [(r["head"], r["tail"]) for r in dropped.train] == [("h1", "to eat")]
    assert [r["head"] for r in dropped.dev] == ["d2"]
    kept = load_task(cfg(path=str(folder), drop_none=False))
    assert [r["tail"] for r in kept.train] == ["none", "to eat", "None", "NONE"]
    assert kept.dev[0]["tails"] == ["none"]
    assert kept.fingerprint != dropped.fingerprint


@pytest.mark.parametrize(
    ("line", "columns"), [("h2\txIntent\n", 2), ("h2\txIntent\tto eat\textra\n", 4), ("just text\n", 1)]
)
def test_wrong_column_count_names_file_and_line(tmp_path, line, columns):
    train = "h1\txIntent\ta\n\n" + line  # the empty line 2 is skipped but still counted
    folder = write_task(tmp_path / "t", train)
    with pytest.raises(DataError) as err:
        load_task(cfg(path=str(folder)))
    assert str(err.value) == (
        f"{folder / 'train.tsv'}:3: expected 3 tab-separated columns (head, relation, tail), got {columns}"
    )


def test_empty_fields(tmp_path):
    folder = write_task(tmp_path / "t", "h1\txIntent\ta\n\txNeed\tb\n")
    with pytest.raises(DataError, match=r"train\.tsv:2: empty head field"):
        load_task(cfg(path=str(folder)))
    folder = write_task(tmp_path / "u", "h1\t \ta\n")
    with pytest.raises(DataError, match=r"train\.tsv:1: empty relation field"):
        load_task(cfg(path=str(folder)))
    # An empty tail states nothing (the official release has a few): the row is skipped.
    assert parse_tsv(b"h1\txIntent\t\nh1\txIntent\tb\n", "x.tsv") == [("h1", "xIntent", "b")]


def test_windows_line_ends_and_byte_order_mark():
    data = "\ufeffh1\txIntent\ta\r\nh2\txNeed\tb\r\n".encode()
    assert parse_tsv(data, "x.tsv") == [("h1", "xIntent", "a"), ("h2", "xNeed", "b")]


def test_missing_folder_or_split(tmp_path):
    with pytest.raises(
        DataError, match=r"^data\.path: .*nowhere not found; expected a folder with train\.tsv"
    ):
        load_task(cfg(path=str(tmp_path / "nowhere")))
    folder = write_task(tmp_path / "t", "h1\txIntent\ta\n")
    (folder / "test.tsv").unlink()
    with pytest.raises(DataError) as err:
        load_task(cfg(path=str(folder)))
    assert str(err.value) == (
        f"data.path: {folder}/test.tsv not found; "
        "expected a folder with train.tsv, dev.tsv, test.tsv (ATOMIC-2020 format)"
    )


def test_empty_split_after_filtering(tmp_path):
    folder = write_task(tmp_path / "t", "h1\txIntent\ta\n", dev="d1\txNeed\tb\nd2\txIntent\tnone\n")
    with pytest.raises(DataError) as err:
        load_task(cfg(path=str(folder), relations=["xIntent"]))
    assert str(err.value) == (
        f"{folder / 'dev.tsv'}: no rows left after filtering (relations=['xIntent'], drop_none=True)"
    )


def test_relations_filter_and_unknown_relation(tmp_path):
    train = "h1\txIntent\ta\nh1\txNeed\tb\nh2\toReact\tc\n"
    folder = write_task(tmp_path / "t", train, dev="d1\txNeed\tb\n")  # no xIntent in dev: fine
    task = load_task(cfg(path=str(folder), relations=["xIntent", "xNeed"]))
    assert [r["relation"] for r in task.train] == ["xIntent", "xNeed"]
    assert [r["relation"] for r in task.dev] == ["xNeed"]
    with pytest.raises(DataError) as err:
        load_task(cfg(path=str(folder), relations=["xIntent", "xWish"]))
    assert "'xWish'" in str(err.value) and "present: oReact, xIntent, xNeed" in str(err.value)


def test_composed_config(tmp_path):
    folder = write_task(tmp_path / "t", "h1\txIntent\ta\nh1\txNeed\tb\n", dev="d\txNeed\tb\n")
    conf = data_config("atomic", path=str(folder), relations=["xNeed"], n_train=None)
    task = load_task(conf)
    assert (task.name, [r["tail"] for r in task.train]) == ("atomic", ["b"])
    assert task.source == str(folder.resolve())


def test_texts_are_distinct_heads_and_tails_of_the_training_split(tmp_path):
    folder = write_task(
        tmp_path / "t",
        "h1\txIntent\ta\nh1\txNeed\tb\nh2\txIntent\ta\n",
        dev="d\txNeed\tb\n",
        test="e\tx\tz\n",
    )
    assert load_task(cfg(path=str(folder))).texts() == ["h1", "a", "b", "h2"]


def made_up_capitals(tmp_path: Path) -> Path:
    """A text2text task of made-up country -> capital pairs; dev and test name countries and capitals
    that the training file never mentions."""
    rng = random.Random(0)
    syllables = ["zor", "bla", "qui", "vex", "tan", "mur", "dell", "kra", "fen", "olo", "ska", "rith"]
    names: list[str] = []
    while len(names) < 400:
        name = "".join(rng.sample(syllables, 3)).capitalize()
        if name not in names:
            names.append(name)
    folder = tmp_path / "capitals"
    folder.mkdir()
    for split, (start, n) in {"train": (0, 150), "dev": (300, 25), "test": (350, 25)}.items():
        pairs = [(names[start + 2 * i], names[start + 2 * i + 1]) for i in range(n)]
        rows = [{"source": f"What is the capital of {country}?", "target": city} for country, city in pairs]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_the_tiny_tokenizer_never_learns_held_out_names(tmp_path):
    """The offline tokenizer learns from training text and template wording only: a name that only dev or
    test mention is never a single piece (it would be an answer the model can copy), and every piece of the
    vocabulary occurs in that training text."""
    from mto.models import load_or_train_tokenizer
    from mto.stages.steps import tokenizer_corpus

    folder = made_up_capitals(tmp_path)
    config = compose_train("data=text2text", f"data.path={folder}", "template=text2text")
    task = load_task(config.data)
    corpus = tokenizer_corpus(config, task)
    tokenizer = load_or_train_tokenizer(corpus, config.model.tokenizer_vocab_size)
    def names(split: list[dict]) -> set[str]:
        return {ex["source"].split()[-1].rstrip("?") for ex in split} | {ex["target"] for ex in split}

    held_out = names(task.dev + task.test) - names(task.train)
    assert len(held_out) == 100
    training_text = " ".join(corpus)
    assert sorted(name for name in held_out if name in training_text) == []
    assert sorted(name for name in held_out if len(tokenizer.tokenize(name)) == 1) == []
    special = set(tokenizer.all_special_tokens)
    pieces = [p.replace("\u2581", " ").strip() for p in tokenizer.get_vocab() if p not in special]
    assert [p for p in pieces if p and p not in training_text] == []


def test_only_the_splits_asked_for_are_read(tmp_path):
    """A folder holding test.tsv alone is enough to score test; the unread splits say why they are empty."""
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "test.tsv").write_text("h1\txIntent\ta\nh1\txNeed\tb\n")
    task = load_task(cfg(path=str(folder), relations=["xNeed"]), ["test"])
    assert [r["tail"] for r in task.test] == ["b"] and task.train == task.dev == []
    with pytest.raises(DataError, match=r"^the dev split was not read \(this stage reads test\)$"):
        task.split("dev")
    with pytest.raises(DataError, match="train.tsv not found"):
        load_task(cfg(path=str(folder)))
    with pytest.raises(ConfigError, match="^data.files: not used by data.kind=atomic"):
        load_task(cfg(path=str(folder), files={"test": "dev"}), ["test"])


def test_fingerprint(tmp_path):
    folder = write_task(tmp_path / "t", "h1\txIntent\ta\nh2\txIntent\tb\nh1\txNeed\tc\n")
    base = load_task(cfg(path=str(folder))).fingerprint
    assert load_task(cfg(path=str(folder))).fingerprint == base
    # without a sample the seed changes nothing, so it does not change the fingerprint either
    assert load_task(cfg(path=str(folder), sample_seed=7)).fingerprint == base
    others = {
        load_task(cfg(path=str(folder), relations=["xIntent"])).fingerprint,
        load_task(cfg(path=str(folder), n_train=1, sample_seed=0)).fingerprint,
        load_task(cfg(path=str(folder), n_train=1, sample_seed=1)).fingerprint,
    }
    (folder / "dev.tsv").write_text("h9\txIntent\tto rest!\n")
    others.add(load_task(cfg(path=str(folder))).fingerprint)
    assert len(others) == 4 and base not in others


def test_load_task_config_errors(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^data\.kind: unknown kind 'conceptnet'; valid kinds: atomic, qa, synthetic, text2text$",
    ):
        load_task(DataConfig(kind="conceptnet"))
    with pytest.raises(ConfigError, match=r"^data\.path: required"):
        load_task(DataConfig(kind="atomic"))
    with pytest.raises(ConfigError, match=r"^data\.path: required"):
        load_task(data_config("atomic"))  # conf/data/atomic.yaml as shipped
    folder = write_task(tmp_path / "t", "h1\txIntent\ta\n")
    with pytest.raises(ConfigError, match=r"^data\.n_train: expected a positive integer"):
        load_task(cfg(path=str(folder), n_train=0))


# ---------------------------------------------------------------------------------------------
# Few-shot sampling
# ---------------------------------------------------------------------------------------------

# 10 heads with xIntent (head k has k % 3 + 1 tails) and 6 heads with xNeed (one tail each)
SAMPLE_TRAIN = "".join(
    f"head {k:02d}\txIntent\tintent {k} {j}\n" for k in range(10) for j in range(k % 3 + 1)
) + "".join(f"head {k:02d}\txNeed\tneed {k}\n" for k in range(6))


def sampled(task: TaskData) -> dict[str, set[str]]:
    heads: dict[str, set[str]] = {}
    for r in task.train:
        heads.setdefault(r["relation"], set()).add(r["head"])
    return heads


def test_n_train_takes_exactly_n_heads_per_relation_with_all_their_tails(tmp_path):
    folder = write_task(tmp_path / "t", SAMPLE_TRAIN)
    task = load_task(cfg(path=str(folder), n_train=3, sample_seed=0))
    heads = sampled(task)
    assert {rel: len(h) for rel, h in heads.items()} == {"xIntent": 3, "xNeed": 3}
    for r in task.train:
        k = int(r["head"].split()[1])
        expected = (
            [f"intent {k} {j}" for j in range(k % 3 + 1)] if r["relation"] == "xIntent" else [f"need {k}"]
        )
        assert r["tails"] == expected
    n_triples = sum(int(h.split()[1]) % 3 + 1 for h in heads["xIntent"]) + 3
    assert len(task.train) == n_triples
    assert len(task.dev) == 1  # dev and test are never sampled


def test_n_train_same_seed_same_sample_other_seed_other_sample(tmp_path):
    folder = write_task(tmp_path / "t", SAMPLE_TRAIN)
    a = sampled(load_task(cfg(path=str(folder), n_train=3, sample_seed=0)))
    assert sampled(load_task(cfg(path=str(folder), n_train=3, sample_seed=0))) == a
    assert sampled(load_task(cfg(path=str(folder), n_train=3, sample_seed=1)))["xIntent"] != a["xIntent"]
    # one relation's sample does not depend on which other relations are loaded
    alone = sampled(load_task(cfg(path=str(folder), n_train=3, sample_seed=0, relations=["xIntent"])))
    assert alone == {"xIntent": a["xIntent"]}
    # asking for more heads than a relation has keeps them all
    assert {k: len(v) for k, v in sampled(load_task(cfg(path=str(folder), n_train=8))).items()} == {
        "xIntent": 8,
        "xNeed": 6,
    }


def test_n_train_independent_of_python_hash_seed(tmp_path):
    folder = write_task(tmp_path / "t", SAMPLE_TRAIN)
    code = (
        "from mto.tasks.atomic import load_atomic;"
        f"print(sorted({{r['head'] for r in load_atomic({str(folder)!r}, n_train=4, sample_seed=5).train}}))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }  # fmt: skip
    assert len(outputs) == 1
    in_process = sorted({r["head"] for r in load_atomic(folder, n_train=4, sample_seed=5).train})
    assert outputs == {f"{in_process}\n"}


# ---------------------------------------------------------------------------------------------
# The shared ATOMIC-2020 sample
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not ATOMIC.is_dir(), reason="../shared/data/atomic2020 not present")
def test_real_atomic2020_sample():
    task = load_task(cfg(path=str(ATOMIC)))
    # counted with: sort -u train.tsv | awk -F'\t' '$3!="" && tolower($3)!="none"' | wc -l (and for
    # dev/test the distinct (head, relation) pairs of such rows)
    assert (len(task.train), len(task.dev), len(task.test)) == (22736, 576, 1165)
    assert 'says "thank you"' in {r["tail"] for r in task.train}
    assert len({r["relation"] for r in task.train}) == 19
    train_pairs = {(r["head"], r["relation"]) for r in task.train}
    assert not train_pairs & {(r["head"], r["relation"]) for r in task.dev + task.test}
    few = load_task(cfg(path=str(ATOMIC), relations=["xIntent", "xNeed"], n_train=5, sample_seed=1))
    assert {k: len(v) for k, v in sampled(few).items()} == {"xIntent": 5, "xNeed": 5}
    assert {r["relation"] for r in few.test} == {"xIntent", "xNeed"}


# ---------------------------------------------------------------------------------------------
# Synthetic world
# ---------------------------------------------------------------------------------------------


def test_head_tails_follow_the_rules():
    cake = syn.head_tails("buys", "a cake", "food", seed=0)
    assert list(cake) == list(syn.RELATIONS)
    assert cake["xIntent"][0] == "to eat something"  # the domain's purpose
    assert cake["xNeed"][0] == "to have money"  # the verb's need
    assert cake["xWant"][0] == "to eat the cake"  # the domain's template on the object
    assert cake["oReact"] == ["none"]  # nobody else is involved
    bike = syn.head_tails("loses", "the bike", "sport", seed=0)
    assert bike["xIntent"] == ["none"]  # an accident
    assert (bike["xWant"][0], bike["xReact"][0], bike["isAfter"][0]) == (
        "to find the bike",
        "sad",
        "PersonX takes the bike outside",
    )
    gift = syn.head_tails("gives PersonY", "some cookies", "food", seed=3)
    assert (gift["xIntent"][0], gift["oReact"][0]) == ("to be kind", "grateful")
    for tails in (*cake.values(), *bike.values(), *gift.values()):
        assert 1 <= len(tails) <= 3 and len(set(tails)) == len(tails)


def test_generate_world_splits_and_determinism():
    world = syn.generate_world(100, seed=0)
    heads = {split: {h for h, _, _ in triples} for split, triples in world.items()}
    assert {split: len(h) for split, h in heads.items()} == {"train": 80, "dev": 10, "test": 10}
    assert not (
        heads["train"] & heads["dev"] or heads["train"] & heads["test"] or heads["dev"] & heads["test"]
    )
    assert syn.generate_world(100, seed=0) == world
    assert syn.generate_world(100, seed=1) != world
    for h, rel, tail in (t for triples in world.values() for t in triples):
        assert (
            h.startswith("PersonX ")
            and rel in syn.RELATIONS
            and tail
            and "{" not in tail
            and "\t" not in tail
        )
    # a head's facts do not depend on which other heads the world holds
    small = {t for triples in world.values() for t in triples}
    big = {t for triples in syn.generate_world(300, seed=0).values() for t in triples}
    shared = {h for h, _, _ in small} & {h for h, _, _ in big}
    assert len(shared) > 10
    assert {t for t in small if t[0] in shared} == {t for t in big if t[0] in shared}


def test_n_heads_out_of_range():
    with pytest.raises(ConfigError, match=r"^data\.n_heads: expected an integer from 10 to \d+, got 100000$"):
        syn.world_dir(100000, 0)


def test_world_dir_files_are_byte_identical_and_cached(tmp_path, monkeypatch):
    first = syn.world_dir(50, 3)
    assert sorted(p.name for p in first.iterdir()) == ["dev.tsv", "test.tsv", "train.tsv", "world.txt"]
    monkeypatch.setenv("MTO_CACHE_DIR", str(tmp_path / "other"))
    second = syn.world_dir(50, 3)
    assert second != first
    for name in ("train.tsv", "dev.tsv", "test.tsv", "world.txt"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    # cached: a second call does not build again
    monkeypatch.setattr(syn, "write_world", lambda *a: pytest.fail("rebuilt a cached world"))
    assert syn.world_dir(50, 3) == second
    assert syn.world_dir.__module__ == "mto.tasks.synthetic"


def test_world_files_round_trip_through_the_atomic_reader():
    folder = syn.world_dir(40, 7)
    world = syn.generate_world(40, 7)
    task = load_atomic(folder, drop_none=False, name="synthetic")
    assert len(task.train) == len(world["train"])
    assert [(r["head"], r["relation"], r["tail"]) for r in task.train] == world["train"]
    sentences = (folder / syn.WORLD_FILE).read_text().splitlines()
    facts = [t for triples in world.values() for t in triples if t[2] != "none"]
    assert len(sentences) == len(facts)
    h, _, tail = next(t for t in facts if t[1] == "xIntent")
    assert f"{h}. PersonX wanted {tail}." in sentences


def test_world_sentences():
    triples = [
        ("PersonX buys a ticket", "xIntent", "to see a movie"),
        ("PersonX buys a ticket", "oReact", "none"),
        ("PersonX buys a ticket", "HinderedBy", "PersonX has no money"),
        ("a cup", "AtLocation", "cupboard"),
    ]
    assert syn.world_sentences(triples) == [
        "PersonX buys a ticket. PersonX wanted to see a movie.",
        "PersonX buys a ticket. This is hindered if PersonX has no money.",
        "a cup. AtLocation: cupboard.",
    ]


def test_load_task_synthetic():
    conf = DataConfig(kind="synthetic", n_heads=60, world_seed=2, relations=["xNeed", "oReact"], n_train=5)
    task = load_task(conf)
    assert task.name == "synthetic" and Path(task.source).parent.name == "synthetic"
    assert {k: len(v) for k, v in sampled(task).items()} == {"xNeed": 5, "oReact": 5}
    assert {r["relation"] for r in task.dev + task.test} <= {"xNeed", "oReact"}
    assert all(r["tail"] != "none" for r in task.train + task.dev + task.test)
    assert load_task(conf).fingerprint == task.fingerprint
    assert load_task(dataclasses.replace(conf, world_seed=3)).fingerprint != task.fingerprint
