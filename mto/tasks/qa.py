"""Multiple-choice QA tasks (CommonsenseQA, SocialIQA, PIQA, OpenBookQA, or any dataset shaped like them).

Rows come from JSON Lines/CSV files or the Hugging Face hub (see `mto.tasks.text2text` for both).
`data.fields` says where each part of a question is, as dotted paths into a record:

    question: the question text                       (CSQA `question`, PIQA `goal`, OBQA `question_stem`)
    choices:  a path to a list of texts               (CSQA `choices.text`)
              or a list of paths, one per choice      (SocialIQA `[answerA, answerB, answerC]`)
    labels:   a path to the list of choice labels     (CSQA `choices.label`); optional: A, B, C, ...
    answer:   the field holding the gold answer       (CSQA `answerKey`, SocialIQA/PIQA `label`)
    context:  optional text said before the question  (SocialIQA `context`)
    id:       optional record id                      (default `<split>-<row>`)

`data.answer_is` says how to read the answer: `label` (one of the labels, e.g. "B"), `index` (0-based),
`index1` (1-based, SocialIQA's "1"/"2"/"3") or `text` (the text of the right choice).

Record (`group` is the task name; `tail`/`tails` let generation metrics and templates use the answer):

    {"id", "question" (context + " " + question), "context" ("" when none), "stem" (the question alone),
     "choices": [...], "labels": [...], "answer_index": int, "answer": choice text, "label": its label,
     "tail": answer, "tails": [answer], "group": task name}

A split of which no record has an answer (CommonsenseQA's official test set; PIQA's marks it -1) is
unavailable: `TaskData.split()` then says to evaluate on the other split. The train split must have answers.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mto.errors import ConfigError, DataError
from mto.tasks import SPLITS, TASKS, TaskData
from mto.tasks.atomic import n_train_option
from mto.tasks.rows import (
    Missing,
    Row,
    eval_hint,
    field_map,
    file_task_options,
    get,
    load_rows,
    lookup,
    sample,
    task_fingerprint,
    text_value,
)

if TYPE_CHECKING:
    from mto.config import DataConfig

# name -> required
QA_FIELDS = {
    "question": True, "choices": True, "answer": True, "context": False, "labels": False, "id": False,
}  # fmt: skip
ANSWER_KINDS = ("label", "index", "index1", "text")
NO_ANSWER = ("", "-1")  # how unlabelled splits spell "no answer" (CSQA test: "", PIQA test: -1)


def qa_fields(fields: Any) -> dict[str, Any]:
    """`data.fields` for QA: `choices` may also be a list of field paths."""
    choices = fields.get("choices") if isinstance(fields, Mapping) else None
    if isinstance(choices, list):
        if len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise ConfigError(
                f"data.fields.choices: expected a path or a list of at least 2 field paths, got {choices!r}"
            )
        mapping = field_map({**fields, "choices": "-"}, QA_FIELDS, "qa")
        mapping["choices"] = [c.strip() for c in choices]
        return mapping
    return field_map(fields, QA_FIELDS, "qa")


def answer_kind(answer_is: Any) -> str:
    if answer_is not in ANSWER_KINDS:
        raise ConfigError(f"data.answer_is: expected one of {', '.join(ANSWER_KINDS)}, got {answer_is!r}")
    return str(answer_is)


def has_answer(row: Row, path: str) -> bool:
    """Whether the row's answer field is there and not one of the 'no answer' spellings."""
    try:
        value = lookup(row[1], path)
    except Missing:
        return False
    return value is not None and str(value).strip() not in NO_ANSWER


def texts_at(row: Row, path: str, what: str) -> list[str]:
    """A list of texts at `path` (numbers spelled out)."""
    value = get(row, path, what)
    if not isinstance(value, list) or not all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
    ):
        raise DataError(f"{row[0]}: field '{path}' ({what}): expected a list of texts, got {str(value)[:60]}")
    return [str(v).strip() for v in value]


def choices_of(row: Row, spec: str | list[str]) -> list[str]:
    if isinstance(spec, list):
        return [text_value(row, path, "choice") for path in spec]
    choices = texts_at(row, spec, "choices")
    if len(choices) < 2:
        raise DataError(f"{row[0]}: field '{spec}' (choices): expected 2 or more choices, got {len(choices)}")
    return choices


def labels_of(row: Row, path: str | None, n: int) -> list[str]:
    """The choice labels: from the record, or A, B, C, ... ."""
    if path is None:
        if n > len(string.ascii_uppercase):
            raise DataError(f"{row[0]}: {n} choices but no labels; set data.fields.labels")
        return list(string.ascii_uppercase[:n])
    labels = texts_at(row, path, "labels")
    if len(labels) != n:
        raise DataError(f"{row[0]}: field '{path}' (labels): {len(labels)} labels for {n} choices")
    if len(set(labels)) != n or "" in labels:
        raise DataError(f"{row[0]}: field '{path}' (labels): expected distinct, non-empty labels: {labels}")
    return labels


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _find(text: str, candidates: list[str]) -> int | None:
    """Index of `text` among `candidates`: exact first, then ignoring case."""
    for same in (lambda a, b: a == b, lambda a, b: a.casefold() == b.casefold()):
        for i, candidate in enumerate(candidates):
            if same(text, candidate):
                return i
    return None


def answer_index(row: Row, path: str, kind: str, choices: list[str], labels: list[str]) -> int:
    """The index of the gold choice; DataError when the answer names none of them."""
    value = get(row, path, "answer")
    shown = str(value).strip()
    if value is None or shown in NO_ANSWER:
        raise DataError(
            f"{row[0]}: field '{path}' (answer) is empty, but other records of this split have answers"
        )
    if kind in ("index", "index1"):
        number = _as_int(value)
        if number is None:
            raise DataError(f"{row[0]}: field '{path}' (answer): expected an integer index, got {value!r}")
        index = number - (1 if kind == "index1" else 0)
        if not 0 <= index < len(choices):
            base = "1-based" if kind == "index1" else "0-based"
            raise DataError(
                f"{row[0]}: answer {value!r} (field '{path}', a {base} index) matches no choice "
                f"({len(choices)} choices)"
            )
        return index
    candidates = labels if kind == "label" else choices
    index = _find(shown, candidates)
    if index is None:
        listed = ", ".join(repr(c) for c in candidates)
        raise DataError(
            f"{row[0]}: answer {shown!r} (field '{path}') matches no choice {kind}; expected one of {listed}"
        )
    return index


def qa_record(row: Row, fields: Mapping[str, Any], kind: str, split: str, index: int, name: str) -> dict:
    """One multiple-choice record."""
    context = text_value(row, fields["context"], "context") if "context" in fields else ""
    stem = text_value(row, fields["question"], "question")
    question = f"{context} {stem}".strip()
    if not question:
        raise DataError(f"{row[0]}: field '{fields['question']}' (question) is empty")
    choices = choices_of(row, fields["choices"])
    labels = labels_of(row, fields.get("labels"), len(choices))
    gold = answer_index(row, fields["answer"], kind, choices, labels)
    return {
        "id": text_value(row, fields["id"], "id") if "id" in fields else f"{split}-{index}",
        "question": question,
        "context": context,
        "stem": stem,
        "choices": choices,
        "labels": labels,
        "answer_index": gold,
        "answer": choices[gold],
        "label": labels[gold],
        "tail": choices[gold],
        "tails": [choices[gold]],
        "group": name,
    }


@TASKS.register("qa")
def qa_task(cfg: DataConfig, splits: Sequence[str] = SPLITS) -> TaskData:
    """`data.kind=qa`: files under `data.path`, or the hub dataset `data.hub` when `data.path` is null."""
    return load_qa(answer_is=cfg.answer_is, **file_task_options(cfg, "qa"), splits=splits)


def load_qa(
    path: str | None,
    fields: Any,
    answer_is: str = "label",
    files: Any = None,
    n_train: int | None = None,
    sample_seed: int = 0,
    name: str = "qa",
    hub: str | None = None,
    subset: str | None = None,
    revision: str | None = None,
    hub_splits: Any = None,
    splits: Sequence[str] = SPLITS,
) -> TaskData:
    """A multiple-choice task from JSON Lines/CSV files under `path`, or from the hub when `path` is None
    (the files of `splits` only)."""
    mapping = qa_fields(fields)
    kind = answer_kind(answer_is)
    n_train = n_train_option(n_train)
    data = load_rows(path, files, hub, subset, revision, hub_splits, splits)
    unavailable = dict(data.absent)
    records: dict[str, list[dict]] = {}
    for split, rows in data.rows.items():
        if not any(has_answer(row, mapping["answer"]) for row in rows):
            what = f"{data.where[split]}: no record has an answer (field '{mapping['answer']}')"
            if split == "train":
                raise DataError(f"{what}; the train split needs answers")
            unavailable[split] = f"{what}: the {split} split is unlabelled; {eval_hint(split)}"
            continue
        records[split] = [qa_record(row, mapping, kind, split, i, name) for i, row in enumerate(rows)]
    options = {
        "kind": "qa",
        "fields": mapping,
        "answer_is": kind,
        "n_train": n_train,
        "sample_seed": sample_seed if n_train is not None else None,
    }
    return TaskData(
        name=name,
        train=sample(records.get("train", []), n_train, sample_seed),
        dev=records.get("dev", []),
        test=records.get("test", []),
        fingerprint=task_fingerprint(data, options),
        source=data.source,
        metric="choice",
        shape="qa",
        text_fields=("question", "choices", "labels"),
        unavailable=unavailable,
    )
