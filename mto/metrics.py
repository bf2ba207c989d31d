"""Metrics for generated knowledge tails and for multiple-choice answers.

Generation (one prediction vs. several gold tails):
  - exact match on :func:`normalize`-d text against any gold tail;
  - ROUGE-L F1 from ``rouge-score`` (its default tokenizer: lower-case, non-alphanumerics dropped, no
    stemming), taking the best gold tail;
  - corpus BLEU from ``sacrebleu`` with a variable number of references per example;
  - the number of distinct predictions (a collapse detector: a model that answers every head with the same
    tail scores a few points of ROUGE and BLEU but has ``distinct`` near 1).

Multiple choice: a prediction is matched to a choice by its label ("A", "1") first, then by its text.

Further metrics, asked for with `eval.metrics=[...]` (the registry `METRICS` at the end: name -> scorer,
with the figures each reports and the kind of task it scores):
  - ``rougeL_ref``: ROUGE-L F as the MTO code computes it (the ``rouge`` package, pltrdy, 1.0.1), best gold
    tail per query; case- and punctuation-sensitive ("To eat." vs "to eat": 0.5, rouge-score: 1.0);
  - ``sentence_cosine``: cosine similarity of sentence embeddings (sentence-transformers, a local model
    folder in ``eval.similarity_model``), best gold tail per query: what the MTO code reports as
    "bert_score" (SBERT paraphrase-MiniLM-L6-v2), which is not BERTScore.

All scores are returned as full floats; rounding is the display's job.
"""

from __future__ import annotations

import importlib.util
import re
from collections import defaultdict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from statistics import fmean
from typing import Any

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from mto.errors import ConfigError
from mto.registry import Registry

_WHITESPACE_RE = re.compile(r"\s+")
# Trailing sentence punctuation (and any spaces between it and the words), e.g. "to eat ." or "to eat!!".
_TRAILING_PUNCT_RE = re.compile(r"[\s.!?;]+$")


def normalize(text: str) -> str:
    """Canonical form of a short answer, used for exact match and for counting distinct predictions.

    Lower-cases, strips leading/trailing whitespace, collapses inner whitespace runs to one space and removes
    trailing ``.``, ``!``, ``?`` and ``;`` (any number of them, with spaces between), so
    ``"  To  eat !! "`` becomes ``"to eat"``. Punctuation inside the text ("eat, then sleep") is kept:
    it can change the meaning, and gold tails rarely end in anything else.
    """
    collapsed = _WHITESPACE_RE.sub(" ", text.lower()).strip()
    return _TRAILING_PUNCT_RE.sub("", collapsed)


def _check_refs(refs: list[str]) -> None:
    """Reject an empty reference list: every score below would be undefined (not 0) without a gold tail."""
    if not refs:
        raise ValueError("no reference: each example needs at least one gold tail")


def exact_match(pred: str, refs: list[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0."""
    _check_refs(refs)
    target = normalize(pred)
    return 1.0 if any(normalize(ref) == target for ref in refs) else 0.0


@lru_cache(maxsize=1)
def _rouge_scorer() -> rouge_scorer.RougeScorer:
    """One shared scorer: building it is cheap, but there is no reason to do it per example."""
    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(pred: str, refs: list[str]) -> float:
    """ROUGE-L F1 of ``pred`` against its best reference (rouge-score's ``score_multi`` takes the max F1).

    An empty prediction, or one with no alphanumeric token, scores 0.0 (rouge-score's convention).
    """
    _check_refs(refs)
    return float(_rouge_scorer().score_multi(refs, pred)["rougeL"].fmeasure)


def _reference_streams(refs: list[list[str]]) -> list[list[str | None]]:
    """Transpose per-example reference lists into sacrebleu's equal-length reference streams.

    sacrebleu wants ``streams[k][i]`` = k-th reference of example i, every stream as long as the corpus.
    Ragged lists are padded with ``None``: sacrebleu 2.6 (``metrics/base.py``, ``_cache_references``)
    drops ``None`` entries per segment, so a padded slot neither adds n-grams nor competes as the
    closest reference length. Padding with ``""`` would NOT be equivalent, although sacrebleu's docstring
    says so: the code keeps ``""`` as a zero-length reference, which can be picked as the closest length
    and changes the brevity penalty. Equal stream lengths also matter because sacrebleu ``zip``s the
    streams and silently truncates the shorter ones.
    """
    width = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


def corpus_bleu(preds: list[str], refs: list[list[str]], effective_order: bool = True) -> float:
    """sacrebleu corpus BLEU (0-100, 13a tokenizer, case-sensitive, exp smoothing) with ragged references.

    ``effective_order=True`` (our default, unlike sacrebleu's) only changes the degenerate case where no
    prediction in the whole corpus has n tokens for some n <= 4: standard BLEU then multiplies by a
    precision of 0/0 and returns 0.0 even for a perfect corpus of two-word tails (checked: sacrebleu gives
    0.00 for ``["a b"]`` vs ``[["a b"]]``). With it, the geometric mean stops at the highest order that
    exists; whenever every order has n-grams the score is identical to standard BLEU.
    """
    if not preds:
        raise ValueError("corpus_bleu: no predictions")
    if len(preds) != len(refs):
        # sacrebleu zips hypotheses with references and would silently drop the surplus.
        raise ValueError(f"corpus_bleu: {len(preds)} predictions but {len(refs)} reference lists")
    for r in refs:
        _check_refs(r)
    bleu = BLEU(effective_order=effective_order)
    return float(bleu.corpus_score(list(preds), _reference_streams(refs)).score)


def _check_pairs(preds: list[str], examples: list[dict[str, Any]], what: str) -> None:
    """Same non-zero number of predictions and examples, or a clear error."""
    if not examples or not preds:
        raise ValueError(f"{what}: empty input ({len(preds)} predictions, {len(examples)} examples)")
    if len(preds) != len(examples):
        raise ValueError(f"{what}: {len(preds)} predictions but {len(examples)} examples")


def score_generation(
    preds: list[str], examples: list[dict[str, Any]], options: Any = None
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Score generated tails against ``examples[i]["tails"]``, averaging ROUGE-L per ``group``.

    Returns ``(summary, per_example)``. ``per_example[i] = {"exact_match", "rougeL"}``. ``summary`` has
    ``n``; ``exact_match`` (mean over examples); ``rougeL`` (macro: mean per group, then mean over groups,
    so frequent relations do not dominate); ``rougeL_micro`` (plain mean over examples); ``bleu`` (corpus
    BLEU, see :func:`corpus_bleu`); ``distinct`` (number of distinct normalized predictions) and
    ``rougeL_per_group`` (group -> mean ROUGE-L, groups sorted by name).
    """
    _check_pairs(preds, examples, "score_generation")
    per_example: list[dict[str, float]] = []
    by_group: dict[str, list[float]] = defaultdict(list)
    for i, (pred, ex) in enumerate(zip(preds, examples, strict=True)):
        tails = list(ex["tails"])
        if not tails:
            raise ValueError(f"score_generation: example {i} ({ex.get('id', '?')}) has no gold tails")
        row = {"exact_match": exact_match(pred, tails), "rougeL": rouge_l(pred, tails)}
        per_example.append(row)
        by_group[str(ex["group"])].append(row["rougeL"])

    per_group = {group: fmean(by_group[group]) for group in sorted(by_group)}
    summary: dict[str, Any] = {
        "n": len(examples),
        "exact_match": fmean(r["exact_match"] for r in per_example),
        "rougeL": fmean(per_group.values()),
        "rougeL_micro": fmean(r["rougeL"] for r in per_example),
        "bleu": corpus_bleu(preds, [list(ex["tails"]) for ex in examples]),
        "distinct": len({normalize(p) for p in preds}),
        "rougeL_per_group": per_group,
    }
    return summary, per_example


def match_choice(pred: str, choices: list[str], labels: list[str]) -> int | None:
    """Index of the choice the prediction names, by label first ("A", "1"), then by answer text.

    Both sides are compared after :func:`normalize` (so "b." matches label "B"). Returns None when nothing
    matches. Sentinels such as ``<extra_id_0>`` must already be stripped by the caller.
    """
    if len(choices) != len(labels):
        raise ValueError(f"match_choice: {len(choices)} choices but {len(labels)} labels")
    target = normalize(pred)
    # Labels first: a choice whose text is "B" must not steal the prediction "B" from the choice labelled B.
    for candidates in (labels, choices):
        for index, candidate in enumerate(candidates):
            if normalize(candidate) == target:
                return index
    return None


def score_choices(
    preds: list[str], examples: list[dict[str, Any]], options: Any = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy of multiple-choice predictions; examples carry ``choices``, ``labels``, ``answer_index``.

    Returns ``(summary, per_example)``: ``summary = {"n", "accuracy", "unmatched"}`` where ``unmatched`` is
    the share of predictions that named no choice (they count as wrong); ``per_example[i] = {"correct": 0/1,
    "matched": index or None}``.
    """
    _check_pairs(preds, examples, "score_choices")
    per_example: list[dict[str, Any]] = []
    for pred, ex in zip(preds, examples, strict=True):
        matched = match_choice(pred, list(ex["choices"]), list(ex["labels"]))
        correct = int(matched is not None and matched == int(ex["answer_index"]))
        per_example.append({"correct": correct, "matched": matched})
    summary = {
        "n": len(examples),
        "accuracy": fmean(r["correct"] for r in per_example),
        "unmatched": fmean(r["matched"] is None for r in per_example),
    }
    return summary, per_example


# ------------------------------------------------------------------------------------------------
# The reference's metrics (docs/reference-protocol.md section 5)
# ------------------------------------------------------------------------------------------------


def per_group_mean(
    name: str, values: list[float], examples: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Summary `{name: macro mean (per group, then over groups), name_per_group}` and per-example rows."""
    by_group: dict[str, list[float]] = defaultdict(list)
    for value, ex in zip(values, examples, strict=True):
        by_group[str(ex["group"])].append(value)
    per_group = {group: fmean(by_group[group]) for group in sorted(by_group)}
    summary = {name: fmean(per_group.values()), f"{name}_per_group": per_group}
    return summary, [{name: v} for v in values]


@lru_cache(maxsize=1)
def _pltrdy_rouge() -> Any:
    try:
        from rouge import Rouge
    except ImportError:
        raise ConfigError(
            "eval.metrics=rougeL_ref needs the `rouge` package (pltrdy, 1.0.1): pip install 'mto[reference]'"
        ) from None
    return Rouge(metrics=["rouge-1", "rouge-l"])


def rouge_l_reference(pred: str, refs: list[str]) -> float:
    """ROUGE-L F of the `rouge` package (pltrdy 1.0.1), best reference, as the MTO code's `do_score`
    computes it (attempt/metrics/metrics.py L629-645): `get_scores(pred, ref, avg=True, ignore_empty=True)`
    per pair, the max over pairs, and 0.0 for the whole query when any pair raises (an empty prediction
    or reference, or one made of "." only). The package is used, not re-implemented, because its
    tokenisation is the point: sentences split on ".", words on single spaces, case kept, punctuation
    other than "." attached to words, and words counted as sets. Its ROUGE-L needs ROUGE-1 computed
    first (that is where "Hypothesis is empty." is raised), hence both metrics in the scorer."""
    _check_refs(refs)
    scorer = _pltrdy_rouge()
    try:
        return max(float(scorer.get_scores(pred, ref, avg=True, ignore_empty=True)["rouge-l"]["f"])
                   for ref in refs)  # fmt: skip
    except ValueError:
        return 0.0


def score_rouge_reference(
    preds: list[str], examples: list[dict[str, Any]], options: Any = None
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """`rougeL_ref` per example, averaged per group then over groups (the reference averages per
    relation over heads; it also averaged the overall mean in with the relations', which we do not)."""
    _check_pairs(preds, examples, "rougeL_ref")
    return per_group_mean("rougeL_ref", [rouge_l_reference(p, list(ex["tails"])) for p, ex in
                                         zip(preds, examples, strict=True)], examples)  # fmt: skip


@lru_cache(maxsize=2)
def sentence_model(path: str | None) -> Any:
    """The sentence-transformers model in the local folder `path` (never downloaded, no remote code)."""
    if not path:
        raise ConfigError(
            "eval.similarity_model: required by eval.metrics=sentence_cosine "
            "(a local sentence-transformers model folder, e.g. paraphrase-MiniLM-L6-v2 saved with save())"
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            "eval.metrics=sentence_cosine needs sentence-transformers: pip install 'mto[similarity]'"
        ) from None
    if not Path(path).expanduser().is_dir():
        raise ConfigError(
            f"eval.similarity_model={path}: no such folder (a local sentence-transformers model)"
        )
    from mto.training.runtime import device

    try:
        return SentenceTransformer(str(Path(path).expanduser()), device=str(device()),
                                   local_files_only=True, trust_remote_code=False)  # fmt: skip
    except Exception as err:  # noqa: BLE001  (whatever the library raises, one line naming the folder)
        cause = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            f"eval.similarity_model={path}: cannot load it with sentence-transformers "
            f"({type(err).__name__}: {cause})"
        ) from None


def score_sentence_cosine(
    preds: list[str], examples: list[dict[str, Any]], options: Any = None
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """`sentence_cosine`: the cosine similarity of the sentence embeddings of the prediction and of each
    gold tail (both stripped), the best tail per example, averaged per group then over groups. This is
    the MTO code's "bert_score" (metrics.py L392-421: SentenceTransformer, `util.pytorch_cos_sim`, max
    over prediction x tail pairs) with the model of `eval.similarity_model`."""
    _check_pairs(preds, examples, "sentence_cosine")
    model = sentence_model(getattr(options, "similarity_model", None))
    batch_size = getattr(options, "batch_size", 64)
    tails = list(dict.fromkeys(t.strip() for ex in examples for t in ex["tails"]))
    encode = lambda texts: model.encode(texts, batch_size=batch_size, convert_to_tensor=True,  # noqa: E731
                                        normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
    pred_vectors = encode([p.strip() for p in preds])
    tail_vectors = dict(zip(tails, encode(tails), strict=True))
    values = []
    for vector, ex in zip(pred_vectors, examples, strict=True):
        _check_refs(list(ex["tails"]))
        values.append(max(float(vector @ tail_vectors[t.strip()]) for t in ex["tails"]))
    return per_group_mean("sentence_cosine", values, examples)


# ------------------------------------------------------------------------------------------------
# The registry: eval.metrics names -> scorer, with the figures it reports and the tasks it scores
# ------------------------------------------------------------------------------------------------

METRICS = Registry("metric", "mto.metrics")
METRICS.register("generation", figures=("exact_match", "rougeL", "bleu", "distinct", "n"),
                 tasks=("generation",))(score_generation)  # fmt: skip
METRICS.register("choice", figures=("accuracy", "unmatched", "n"), tasks=("choice",))(score_choices)
METRICS.register("rougeL_ref", figures=("rougeL_ref",), tasks=("generation",), needs=("rouge", "reference"))(
    score_rouge_reference
)
METRICS.register("sentence_cosine", figures=("sentence_cosine",), tasks=("generation",),
                 needs=("sentence_transformers", "similarity"))(score_sentence_cosine)  # fmt: skip

Scorer = Callable[[list[str], list[dict[str, Any]], Any], tuple[dict[str, Any], list[dict[str, Any]]]]


def metric_names(task_metric: str, options: Any = None) -> list[str]:
    """The task's own scorer (TaskData.metric), then `eval.metrics`, each once."""
    return list(dict.fromkeys([task_metric, *(getattr(options, "metrics", None) or [])]))


def check_metrics(names: list[str], task_metric: str | None = None) -> None:
    """ConfigError for an unknown name in `eval.metrics`, or one that does not score this kind of task."""
    for name in names:
        METRICS.get(name, "eval.metrics")
        module, extra = METRICS.info(name).get("needs", (None, None))
        if module and importlib.util.find_spec(module) is None:  # refused before any training
            hint = f"pip install 'mto[{extra}]'"
            raise ConfigError(f"eval.metrics={name} needs {module}, which is not installed: {hint}")
        tasks = METRICS.info(name)["tasks"]
        if task_metric is not None and task_metric not in tasks:
            raise ConfigError(f"eval.metrics: {name} scores {'/'.join(tasks)} tasks, not {task_metric} ones")


def score(
    preds: list[str], examples: list[dict[str, Any]], task_metric: str, options: Any = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every metric of `metric_names`: their summaries merged, and one row per example with all scores."""
    names = metric_names(task_metric, options)
    check_metrics(names, task_metric)
    summary: dict[str, Any] = {}
    rows: list[dict[str, Any]] = [{} for _ in preds]
    for name in names:
        part, per_example = METRICS.get(name, "eval.metrics")(preds, examples, options)
        summary.update(part)
        for row, scores in zip(rows, per_example, strict=True):
            row.update(scores)
    return summary, rows


def figures(task_metric: str, options: Any = None) -> list[str]:
    """The headline figures of the metrics `metric_names` names, in order, each once."""
    names = metric_names(task_metric, options)
    return list(dict.fromkeys(f for name in names for f in METRICS.info(name)["figures"]))
