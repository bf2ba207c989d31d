"""Tests of the multiple-choice QA and text-to-text tasks (mto.tasks.qa, mto.tasks.text2text).

Fixtures under tests/fixtures/ hold a few records in each supported format: CommonsenseQA, SocialIQA,
PIQA and OpenBookQA as on the hub (JSON Lines), CommonsenseQA as in its official release (nested), and a
text-to-text task as JSON Lines and as CSV. No test touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import data_config

from mto.config import DataConfig
from mto.errors import ConfigError, DataError
from mto.metrics import score_choices, score_generation
from mto.tasks import load_task
from mto.tasks.rows import Missing, lookup

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
QA = FIXTURES / "qa"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTO_CACHE_DIR", str(tmp_path / "cache"))


def shipped(name: str, **overrides) -> DataConfig:
    """conf/data/<name>.yaml as Hydra would give it (with `seed` resolved), plus overrides."""
    return data_config(name, **overrides)


def qa(path: Path, fields: dict, **kw) -> DataConfig:
    return DataConfig(kind="qa", name=kw.pop("name", "t"), path=str(path), fields=fields, **kw)


def write(folder: Path, **splits: str) -> Path:
    """A task folder from file name -> text (`train_jsonl="..."` writes train.jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, text in splits.items():
        stem, ext = key.rsplit("_", 1)
        (folder / f"{stem}.{ext}").write_text(text, encoding="utf-8")
    return folder


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# ---------------------------------------------------------------------------------------------
# The four QA datasets, through the shipped configs
# ---------------------------------------------------------------------------------------------


def test_csqa_hub_format_field_by_field():
    task = load_task(shipped("csqa", path=str(QA / "csqa")))
    assert task.name == "csqa" and task.metric == "choice"
    assert len(task.train) == 4  # the blank line 3 is skipped
    assert task.train[0] == {
        "id": "c-tr-1",
        "question": "Where do you keep books?",
        "context": "",
        "stem": "Where do you keep books?",
        "choices": ["bank", "library", "park", "oven", "river"],
        "labels": ["A", "B", "C", "D", "E"],
        "answer_index": 1,
        "answer": "library",
        "label": "B",
        "tail": "library",
        "tails": ["library"],
        "group": "csqa",
    }
    assert [(r["id"], r["answer_index"], r["label"]) for r in task.train[1:]] == [
        ("c-tr-2", 0, "A"),
        ("c-tr-3", 4, "E"),
        ("c-tr-4", 1, "B"),
    ]
    assert [r["answer"] for r in task.dev] == ["kitchen", "rain"]
    assert task.split("dev") is task.dev


def test_csqa_unlabelled_test_split_says_to_evaluate_on_dev():
    task = load_task(shipped("csqa", path=str(QA / "csqa")))
    assert task.test == []
    with pytest.raises(DataError) as err:
        task.split("test")
    message = str(err.value)
    assert message.startswith(f"{QA / 'csqa' / 'test.jsonl'}: no record has an answer (field 'answerKey')")
    assert message.endswith("evaluate on dev instead (eval.split=dev)")
    assert "\n" not in message


def test_csqa_official_release_nested_records():
    fields = {
        "id": "id",
        "question": "question.stem",
        "choices": "question.choices.text",  # a list of {label, text} objects: the path maps over it
        "labels": "question.choices.label",
        "answer": "answerKey",
    }
    files = {
        "train": "train_rand_split.jsonl",
        "dev": "dev_rand_split.jsonl",
        "test": "test_rand_split_no_answers.jsonl",  # no answerKey at all
    }
    task = load_task(shipped("csqa", path=str(QA / "csqa_official"), fields=fields, files=files))
    assert [(r["id"], r["question"], r["choices"], r["labels"], r["answer"]) for r in task.train] == [
        ("o-tr-1", "Where do you buy bread?", ["freezer", "shoe box", "bakery"], ["A", "B", "C"], "bakery"),
        (
            "o-tr-2",
            "What keeps you dry in the rain?",
            ["umbrella", "fork", "pencil"],
            ["A", "B", "C"],
            "umbrella",
        ),
    ]
    assert task.dev[0]["label"] == "B"
    assert "test" in task.unavailable


def test_siqa_context_prepended_index1_answers_and_no_test_split():
    task = load_task(shipped("siqa", path=str(QA / "siqa")))
    assert task.train[0] == {
        "id": "train-0",
        "question": "Tracy went to the store. What will Tracy want to do next?",
        "context": "Tracy went to the store.",
        "stem": "What will Tracy want to do next?",
        "choices": ["buy some milk", "fly a plane", "paint the moon"],
        "labels": ["A", "B", "C"],
        "answer_index": 0,
        "answer": "buy some milk",
        "label": "A",
        "tail": "buy some milk",
        "tails": ["buy some milk"],
        "group": "siqa",
    }
    assert [(r["answer_index"], r["answer"]) for r in task.train[1:]] == [(2, "thankful"), (1, "tired")]
    assert [r["id"] for r in task.dev] == ["dev-0"]
    with pytest.raises(
        DataError, match=r"^data\.files\.test is null: no test split; evaluate on dev instead"
    ):
        task.split("test")


def test_piqa_index_answers_and_hidden_test_labels():
    task = load_task(shipped("piqa", path=str(QA / "piqa")))
    assert task.train[1] == {
        "id": "train-1",
        "question": "How do I keep bread fresh?",
        "context": "",
        "stem": "How do I keep bread fresh?",
        "choices": ["Leave it in the sun.", "Store it in a sealed bag."],
        "labels": ["A", "B"],
        "answer_index": 1,
        "answer": "Store it in a sealed bag.",
        "label": "B",
        "tail": "Store it in a sealed bag.",
        "tails": ["Store it in a sealed bag."],
        "group": "piqa",
    }
    assert task.train[0]["answer_index"] == 0
    with pytest.raises(DataError, match=r"test\.jsonl: no record has an answer \(field 'label'\)"):
        task.split("test")  # label -1: hidden, as on the hub


def test_obqa_field_by_field():
    task = load_task(shipped("obqa", path=str(QA / "obqa")))
    assert task.train[0] == {
        "id": "7-980",
        "question": "The sun is responsible for",
        "context": "",
        "stem": "The sun is responsible for",
        "choices": [
            "puppies learning new tricks",
            "children growing up and getting old",
            "flowers wilting in a vase",
            "plants sprouting, blooming and wilting",
        ],
        "labels": ["A", "B", "C", "D"],
        "answer_index": 3,
        "answer": "plants sprouting, blooming and wilting",
        "label": "D",
        "tail": "plants sprouting, blooming and wilting",
        "tails": ["plants sprouting, blooming and wilting"],
        "group": "obqa",
    }
    assert (task.dev[0]["label"], task.test[0]["answer"]) == ("A", "quit eating lunch out")
    assert task.unavailable == {}


def test_qa_records_score_with_score_choices():
    task = load_task(shipped("csqa", path=str(QA / "csqa")))
    summary, _ = score_choices(["A", "library"], task.dev)  # right by label, wrong by text
    assert summary["accuracy"] == 0.5


def test_texts_cover_questions_choices_and_labels_of_the_training_split():
    task = load_task(shipped("piqa", path=str(QA / "piqa")))
    texts = task.texts()
    assert texts[:5] == [
        "To open a jar, you can",
        "twist the lid to the left.",
        "push the lid down hard.",
        "A",
        "B",
    ]
    assert "How do I keep bread fresh?" in texts
    assert "To dry wet shoes," not in texts  # a dev question: the tokenizer never learns held-out text


def test_answer_given_as_text(tmp_path):
    rows = jsonl(
        {"q": "Pick red", "opts": ["blue", "red"], "gold": "red"},
        {"q": "Pick blue", "opts": ["blue", "red"], "gold": " BLUE "},  # spaces and case do not matter
    )
    folder = write(tmp_path / "t", train_jsonl=rows, dev_jsonl=rows, test_jsonl=rows)
    fields = {"question": "q", "choices": "opts", "answer": "gold"}
    task = load_task(qa(folder, fields, answer_is="text"))
    assert [(r["answer_index"], r["answer"]) for r in task.train] == [(1, "red"), (0, "blue")]


def test_qa_from_csv_with_one_column_per_choice(tmp_path):
    text = 'question,a,b,c,answer\n"Which is a fruit, not a tool?",hammer,apple,saw,2\n'
    folder = write(tmp_path / "t", train_csv=text, dev_csv=text, test_csv=text)
    fields = {"question": "question", "choices": ["a", "b", "c"], "answer": "answer"}
    task = load_task(qa(folder, fields, answer_is="index1"))
    assert task.train[0]["question"] == "Which is a fruit, not a tool?"
    assert (task.train[0]["choices"], task.train[0]["answer"]) == (["hammer", "apple", "saw"], "apple")


# ---------------------------------------------------------------------------------------------
# Few-shot sampling
# ---------------------------------------------------------------------------------------------


def many_questions(tmp_path: Path, n: int = 20) -> Path:
    rows = jsonl(*({"q": f"question {i}", "c": ["yes", "no"], "a": i % 2} for i in range(n)))
    return write(tmp_path / "many", train_jsonl=rows, dev_jsonl=rows, test_jsonl=rows)


def test_n_train_samples_n_examples_reproducibly(tmp_path):
    folder = many_questions(tmp_path)
    fields = {"question": "q", "choices": "c", "answer": "a"}

    def ids(**kw) -> list[str]:
        return [r["id"] for r in load_task(qa(folder, fields, answer_is="index", **kw)).train]

    first = ids(n_train=5, sample_seed=1)
    assert len(first) == 5 and len(set(first)) == 5
    assert first == sorted(first, key=lambda i: int(i.split("-")[1]))  # kept in file order
    assert ids(n_train=5, sample_seed=1) == first
    assert ids(n_train=5, sample_seed=2) != first
    assert len(ids()) == 20 and len(ids(n_train=50)) == 20  # fewer than asked: all
    full = load_task(qa(folder, fields, answer_is="index"))
    few = load_task(qa(folder, fields, answer_is="index", n_train=5, sample_seed=1))
    assert len(few.dev) == 20 and few.fingerprint != full.fingerprint
    with pytest.raises(ConfigError, match=r"^data\.n_train: expected a positive integer"):
        load_task(qa(folder, fields, n_train=0))


def test_n_train_through_shipped_config():
    a = load_task(shipped("csqa", path=str(QA / "csqa"), n_train=2))
    b = load_task(shipped("csqa", path=str(QA / "csqa"), n_train=2))
    assert len(a.train) == 2 and [r["id"] for r in a.train] == [r["id"] for r in b.train]


# ---------------------------------------------------------------------------------------------
# Errors: one line, naming the file and line (or the config key)
# ---------------------------------------------------------------------------------------------

GOOD = jsonl({"q": "Q?", "c": ["x", "y"], "a": "A"})
FIELDS = {"question": "q", "choices": "c", "answer": "a"}


def load_error(folder: Path, fields: dict = FIELDS, error=DataError, **kw) -> str:
    with pytest.raises(error) as err:
        load_task(qa(folder, fields, **kw))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_folder_and_files(tmp_path):
    assert load_error(tmp_path / "nope").startswith(f"data.path: {tmp_path / 'nope'} not found")
    folder = write(tmp_path / "t", train_jsonl=GOOD, dev_jsonl=GOOD)
    assert load_error(folder) == (
        f"data.files.test: {folder / 'test'}.jsonl (or .csv) not found; name the file with "
        "data.files.test=<file>, or set data.files.test=null if there is none"
    )
    message = load_error(folder, files={"dev": "valid.jsonl"})
    assert message == f"data.files.dev: {folder / 'valid.jsonl'} not found"
    assert load_error(folder, error=ConfigError, files={"dev": "dev.txt"}).startswith(
        "data.files.dev: dev.txt: expected a .jsonl or .csv file"
    )
    assert load_error(folder, error=ConfigError, files={"valid": "dev.jsonl"}).startswith(
        "data.files.valid: unknown split"
    )


def test_bad_json_line_names_file_and_line(tmp_path):
    folder = write(tmp_path / "t", train_jsonl=GOOD + "\n" + '{"q": "Q?", "c": ["x", "y"] "a": "A"}\n')
    folder = write(folder, dev_jsonl=GOOD, test_jsonl=GOOD)
    assert load_error(folder).startswith(
        f"{folder / 'train.jsonl'}:3: not valid JSON (Expecting ',' delimiter"
    )
    write(folder, train_jsonl=GOOD + '["q", "c"]\n')
    assert load_error(folder) == f"{folder / 'train.jsonl'}:2: expected a JSON object, got list"


def test_record_missing_a_mapped_field(tmp_path):
    dev = GOOD + jsonl({"q": "Q?", "choices": ["x", "y"], "a": "B"})
    folder = write(tmp_path / "t", train_jsonl=GOOD, dev_jsonl=dev, test_jsonl=GOOD)
    assert load_error(folder) == (
        f"{folder / 'dev.jsonl'}:2: missing field 'c' (choices); the record has: q, choices, a; "
        "name its choices field with data.fields.choices=<field>"
    )
    nested = {"question": "q", "choices": "c.text", "answer": "a"}
    assert load_error(folder, nested).startswith(
        f"{folder / 'train.jsonl'}:1: missing field 'c.text' (choices)"
    )
    # An answer missing from one record of a split whose other records have answers.
    write(folder, dev_jsonl=GOOD + jsonl({"q": "Q?", "c": ["x", "y"]}))
    assert load_error(folder).startswith(f"{folder / 'dev.jsonl'}:2: missing field 'a' (answer)")
    write(folder, dev_jsonl=GOOD + jsonl({"q": "Q?", "c": ["x", "y"], "a": ""}))
    assert load_error(folder).startswith(f"{folder / 'dev.jsonl'}:2: field 'a' (answer) is empty")


def test_answer_matching_no_choice(tmp_path):
    folder = write(tmp_path / "t", dev_jsonl=GOOD, test_jsonl=GOOD)
    write(folder, train_jsonl=GOOD + jsonl({"q": "Q?", "c": ["x", "y"], "a": "C"}))
    assert load_error(folder) == (
        f"{folder / 'train.jsonl'}:2: answer 'C' (field 'a') matches no choice label; "
        "expected one of 'A', 'B'"
    )
    two = jsonl({"q": "Q?", "c": ["x", "y"], "a": 2})
    write(folder, train_jsonl=two, dev_jsonl=two, test_jsonl=two)
    assert load_error(folder, answer_is="index") == (
        f"{folder / 'train.jsonl'}:1: answer 2 (field 'a', a 0-based index) matches no choice (2 choices)"
    )
    assert load_task(qa(folder, FIELDS, answer_is="index1")).train[0]["answer"] == "y"  # valid 1-based
    write(folder, train_jsonl=jsonl({"q": "Q?", "c": ["x", "y"], "a": "0"}))
    assert "answer '0' (field 'a', a 1-based index) matches no choice" in load_error(
        folder, answer_is="index1"
    )
    write(folder, train_jsonl=jsonl({"q": "Q?", "c": ["x", "y"], "a": "z"}))
    assert "matches no choice text; expected one of 'x', 'y'" in load_error(folder, answer_is="text")
    assert "expected an integer index, got 'z'" in load_error(folder, answer_is="index")


def test_unlabelled_train_split_and_empty_split(tmp_path):
    unlabelled = jsonl({"q": "Q?", "c": ["x", "y"]})
    folder = write(tmp_path / "t", train_jsonl=unlabelled, dev_jsonl=GOOD, test_jsonl=GOOD)
    assert load_error(folder) == (
        f"{folder / 'train.jsonl'}: no record has an answer (field 'a'); the train split needs answers"
    )
    write(folder, train_jsonl=GOOD, dev_jsonl="\n\n")
    assert load_error(folder) == f"{folder / 'dev.jsonl'}: no records; expected at least one in the dev split"


def test_qa_config_errors(tmp_path):
    folder = write(tmp_path / "t", train_jsonl=GOOD, dev_jsonl=GOOD, test_jsonl=GOOD)
    with pytest.raises(ConfigError, match=r"^data\.answer_is: expected one of label, index, index1, text"):
        load_task(qa(folder, FIELDS, answer_is="letter"))
    with pytest.raises(ConfigError, match=r"^data\.fields\.answer: required"):
        load_task(qa(folder, {"question": "q", "choices": "c"}))
    with pytest.raises(ConfigError, match=r"^data\.fields\.qestion: unknown key"):
        load_task(qa(folder, {**FIELDS, "qestion": "q"}))
    with pytest.raises(ConfigError, match=r"^data\.fields: required when data\.kind=qa"):
        load_task(qa(folder, None))
    with pytest.raises(ConfigError, match=r"^data\.path: required"):
        load_task(DataConfig(kind="qa", fields=FIELDS))  # no path and no hub
    with pytest.raises(ConfigError, match=r"^data\.path: required"):
        load_task(data_config("text2text"))


def test_labels_must_fit_the_choices(tmp_path):
    rows = jsonl({"q": "Q?", "c": {"text": ["x", "y"], "label": ["A"]}, "a": "A"})
    folder = write(tmp_path / "t", train_jsonl=rows, dev_jsonl=rows, test_jsonl=rows)
    fields = {"question": "q", "choices": "c.text", "labels": "c.label", "answer": "a"}
    assert (
        load_error(folder, fields)
        == f"{folder / 'train.jsonl'}:1: field 'c.label' (labels): 1 labels for 2 choices"
    )


def test_split_names():
    task = load_task(shipped("obqa", path=str(QA / "obqa")))
    with pytest.raises(ConfigError, match=r"^eval\.split=valid: expected one of train, dev, test$"):
        task.split("valid")


# ---------------------------------------------------------------------------------------------
# Dotted paths
# ---------------------------------------------------------------------------------------------


def test_lookup_paths():
    record = {"a": {"b": [{"c": 1}, {"c": 2}]}, "x.y": "dotted column", "l": ["p", "q"]}
    assert lookup(record, "a.b.c") == [1, 2]
    assert lookup(record, "a.b.1.c") == 2
    assert lookup(record, "x.y") == "dotted column"
    assert lookup(record, "l.0") == "p"
    for path in ("a.z", "l.2", "a.b.d", "x"):
        with pytest.raises(Missing):
            lookup(record, path)


# ---------------------------------------------------------------------------------------------
# text2text
# ---------------------------------------------------------------------------------------------


def text2text(path: Path, **kw) -> DataConfig:
    fields = kw.pop("fields", {"source": "source", "target": "target"})
    return DataConfig(kind="text2text", name="t2t", path=str(path), fields=fields, **kw)


def test_text2text_jsonl_field_by_field():
    fields = {"source": "input", "target": "output", "group": "task", "id": "uid"}
    task = load_task(text2text(FIXTURES / "text2text" / "jsonl", fields=fields))
    assert task.metric == "generation" and task.unavailable == {}
    assert task.train == [
        {
            "id": "t1",
            "source": "translate English to French: hello",
            "target": "bonjour",
            "tail": "bonjour",
            "tails": ["bonjour"],
            "group": "greet",
        },
        {
            "id": "t2",
            "source": "translate English to French: thank you",
            "target": "merci",
            "tail": "merci",
            "tails": ["merci", "merci bien"],
            "group": "thanks",
        },
        {
            "id": "t3",
            "source": "translate English to French: goodbye",
            "target": "au revoir",
            "tail": "au revoir",
            "tails": ["au revoir"],
            "group": "greet",
        },
    ]
    assert task.test[0]["tails"] == ["à bientôt", "a bientot"]
    summary, _ = score_generation(["merci bien"], [task.train[1]])
    assert summary["exact_match"] == 1.0
    assert task.texts()[:3] == [
        "translate English to French: hello",
        "bonjour",
        "translate English to French: thank you",
    ]


def test_text2text_csv_quoting_field_by_field():
    task = load_task(text2text(FIXTURES / "text2text" / "csv"))  # train.csv has Windows line ends
    assert task.train == [
        {
            "id": "train-0",
            "source": "summarize: apples, pears and plums",
            "target": "fruit",
            "tail": "fruit",
            "tails": ["fruit"],
            "group": "t2t",
        },
        {
            "id": "train-1",
            "source": "summarize: red, green, blue",
            "target": "colours, mostly",
            "tail": "colours, mostly",
            "tails": ["colours, mostly"],
            "group": "t2t",
        },
        {
            "id": "train-2",
            "source": 'say "hi" twice',
            "target": '"hi" "hi"',
            "tail": '"hi" "hi"',
            "tails": ['"hi" "hi"'],
            "group": "t2t",
        },
    ]
    # A quoted field spanning two lines; the blank line after it is skipped.
    assert [(r["id"], r["source"], r["target"]) for r in task.dev] == [
        ("dev-0", "summarize: a line\nand another line", "two lines"),
        ("dev-1", "summarize: cats and dogs", "pets"),
    ]
    assert task.test[0]["source"] == "summarize: one, two"


def test_text2text_shipped_config(tmp_path):
    task = load_task(shipped("text2text", path=str(FIXTURES / "text2text" / "csv")))
    assert task.name == "text2text" and task.metric == "generation"
    assert [r["group"] for r in task.dev] == ["text2text", "text2text"]
    few = load_task(shipped("text2text", path=str(FIXTURES / "text2text" / "csv"), n_train=2))
    assert len(few.train) == 2 and few.fingerprint != task.fingerprint


def test_text2text_errors(tmp_path):
    folder = write(tmp_path / "t", train_csv="source,target\na,b\n", dev_csv="source,target\na,b\n")
    write(folder, test_csv='source,target\nok,fine\n\n"x, y",z,extra\n')
    with pytest.raises(DataError) as err:
        load_task(text2text(folder))
    assert str(err.value) == f"{folder / 'test.csv'}:4: expected 2 columns (source, target), got 3"
    write(folder, test_csv="input,target\na,b\n")
    with pytest.raises(DataError) as err:
        load_task(text2text(folder))
    assert (
        str(err.value)
        == f"{folder / 'test.csv'}:2: missing field 'source' (source); the record has: input, target; "
        "name its source field with data.fields.source=<field>"
    )
    write(folder, test_csv="source,target\na,\n")
    with pytest.raises(DataError, match=r"test\.csv:2: field 'target' \(target\) is empty$"):
        load_task(text2text(folder))
    write(folder, test_csv="source,target\n")
    with pytest.raises(DataError, match=r"test\.csv: no records; expected at least one in the test split$"):
        load_task(text2text(folder))
    (folder / "test.csv").unlink()
    task = load_task(text2text(folder, files={"test": None}))  # no test split: dev/test .csv found by name
    assert task.test == [] and task.dev[0]["source"] == "a"
    with pytest.raises(
        DataError, match=r"^data\.files\.test is null: no test split; evaluate on dev instead"
    ):
        task.split("test")


def test_only_the_splits_asked_for_are_read(tmp_path):
    """`mto eval` scores test from a folder holding test.jsonl alone; the unread splits say so."""
    folder = write(tmp_path / "t", test_jsonl=jsonl({"source": "a", "target": "b"}))
    task = load_task(text2text(folder), ["test"])
    assert [r["source"] for r in task.test] == ["a"] and task.train == task.dev == []
    with pytest.raises(DataError, match=r"^the train split was not read \(this stage reads test\)$"):
        task.split("train")
    qa_folder = write(tmp_path / "qa", dev_jsonl=GOOD)
    fields = {"question": "q", "choices": "c", "answer": "a"}
    assert len(load_task(qa(qa_folder, fields), ["dev"]).dev) == 1
    with pytest.raises(DataError, match="train.jsonl"):
        load_task(qa(qa_folder, fields))


def test_file_names_without_extension_find_jsonl_or_csv(tmp_path):
    folder = write(
        tmp_path / "t", train_csv="source,target\na,b\n", valid_jsonl=jsonl({"source": "c", "target": "d"})
    )
    write(folder, test_csv="source,target\ne,f\n")
    task = load_task(text2text(folder, files={"dev": "valid"}))
    assert [r["source"] for r in (task.train + task.dev + task.test)] == ["a", "c", "e"]


# ---------------------------------------------------------------------------------------------
# The hub code path, with `datasets.load_dataset` replaced (no network)
# ---------------------------------------------------------------------------------------------


def test_hub_loading_maps_splits_and_locates_rows(monkeypatch):
    import datasets

    calls = []
    siqa_row = {
        "context": "C.",
        "question": "Q?",
        "answerA": "a",
        "answerB": "b",
        "answerC": "c",
        "label": "2",
    }

    def fake_load_dataset(name, subset=None, split=None, revision=None):
        calls.append((name, subset, split, revision))
        if split == "validation":
            return [siqa_row, {**siqa_row, "label": "7"}]
        return [siqa_row]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = shipped("siqa")  # path null: the hub
    with pytest.raises(DataError) as err:
        load_task(cfg)
    assert str(err.value) == (
        "allenai/social_i_qa[validation] row 1: answer '7' (field 'label', a 1-based index) "
        "matches no choice (3 choices)"
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: [siqa_row])
    task = load_task(cfg)
    assert calls[:2] == [
        ("allenai/social_i_qa", "default", "train", "refs/convert/parquet"),
        ("allenai/social_i_qa", "default", "validation", "refs/convert/parquet"),
    ]
    assert task.source == "hub:allenai/social_i_qa/default@refs/convert/parquet"
    assert (task.train[0]["question"], task.train[0]["answer"]) == ("C. Q?", "b")
    with pytest.raises(DataError, match=r"^data\.hub_splits\.test is null: allenai/social_i_qa has no test"):
        task.split("test")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_task(cfg)
    assert str(err.value) == (
        "data.hub: cannot load allenai/social_i_qa (subset default, split train): Couldn't reach the hub; "
        "without network, point data.path at local files"
    )
