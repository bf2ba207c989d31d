"""The reference's metrics as their own named metrics (docs/reference-protocol.md section 5), the metric
registry, and the one-line errors when a metric's package or model is missing."""

from __future__ import annotations

import sys

import pytest
from conftest import compose_train, read_json

from mto.errors import ConfigError
from mto.metrics import METRICS, figures, rouge_l, rouge_l_reference, score, sentence_model

# (prediction, gold, ROUGE-L F of the `rouge` package 1.0.1): the values the package printed when the
# reference was read (docs/reference-protocol.md 5c).
PLTRDY = [
    ("To eat.", "to eat", 0.4999999950000001),  # case-sensitive: only "eat" is shared
    ("to eat.", "to eat", 0.999999995),  # a final "." only splits sentences
    ("to eat", "to eat", 0.999999995),
    ("eat food", "to eat food", 0.7999999952),
    ("to eat, drink", "to eat", 0.3999999952),  # "eat," is not "eat"
    ("go go home", "go home", 0.999999995),  # words counted as a set
    ("", "to eat", 0.0),  # ValueError in the package: the reference scores the head 0
    (".", "to eat", 0.0),  # "Hypothesis is empty."
]


@pytest.mark.parametrize(("pred", "gold", "expected"), PLTRDY)
def test_rougeL_ref_is_the_reference_rouge(pred, gold, expected):
    pytest.importorskip("rouge")
    assert rouge_l_reference(pred, [gold]) == pytest.approx(expected, abs=1e-12)


def test_rougeL_ref_and_rougeL_differ_where_the_reference_does():
    pytest.importorskip("rouge")
    assert rouge_l("To eat.", ["to eat"]) == 1.0  # rouge-score: lower-cased, punctuation dropped
    assert rouge_l_reference("To eat.", ["to eat"]) == pytest.approx(0.5, abs=1e-7)
    # best gold tail; one raising pair zeroes the query, as the reference's `except: rouge_score = 0`
    assert rouge_l_reference("to eat", ["go home", "to eat"]) == pytest.approx(1.0, abs=1e-7)
    assert rouge_l_reference("to eat", ["to eat", "."]) == 0.0


def test_rougeL_ref_without_the_package_is_one_line(monkeypatch):
    from mto import metrics

    metrics._pltrdy_rouge.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge", None)  # import rouge -> ImportError
    try:
        with pytest.raises(ConfigError, match=r"^eval.metrics=rougeL_ref needs the `rouge` package"):
            rouge_l_reference("to eat", ["to eat"])
    finally:
        metrics._pltrdy_rouge.cache_clear()


def test_a_metric_whose_package_is_missing_is_refused_before_any_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge", None)  # find_spec("rouge") -> None
    with pytest.raises(ConfigError, match=r"^eval.metrics=rougeL_ref needs rouge, which is not installed"):
        compose_train("eval.metrics=[rougeL_ref]")


def test_registry_scores_macro_per_relation_and_lists_its_figures():
    pytest.importorskip("rouge")
    examples = [
        {"tails": ["to eat"], "group": "xNeed"},
        {"tails": ["to eat"], "group": "xNeed"},
        {"tails": ["go home"], "group": "xWant"},
    ]
    options = compose_train("eval.metrics=[rougeL_ref]").eval
    summary, rows = score(["To eat.", "to eat", "go home"], examples, "generation", options)
    assert summary["rougeL_ref_per_group"] == pytest.approx({"xNeed": 0.75, "xWant": 1.0}, abs=1e-7)
    assert summary["rougeL_ref"] == pytest.approx(0.875, abs=1e-7)
    assert summary["rougeL"] == pytest.approx(1.0)  # the task's own scorer still runs
    assert [set(r) for r in rows] == [{"exact_match", "rougeL", "rougeL_ref"}] * 3
    assert figures("generation", options)[-1] == "rougeL_ref"
    assert {"generation", "choice", "rougeL_ref", "sentence_cosine"} <= set(METRICS.names())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["eval.metrics=[bert_score]"], r"^eval.metrics: unknown metric 'bert_score'; valid metrics: "),
        (["eval.metrics=[sentence_cosine]"], r"^eval.similarity_model: required by"),
    ],
)
def test_bad_metric_settings_are_refused_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        compose_train(*overrides)


def test_a_metric_for_another_kind_of_task_is_refused():
    with pytest.raises(ConfigError, match="eval.metrics: rougeL_ref scores generation tasks, not choice"):
        score(["A"], [{"choices": ["a"], "labels": ["A"], "answer_index": 0}], "choice",
              compose_train("eval.metrics=[rougeL_ref]").eval)  # fmt: skip


WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] to eat food go home buy a ticket see movie sleep the".split()


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory):
    """A sentence-transformers model built here: a 1-layer BERT of width 16 from a config (random
    weights, seed 0) with a word-level vocabulary, mean pooling, saved with `save()`."""
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("sbert")
    torch.manual_seed(0)
    shape = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    bert = BertModel(BertConfig(vocab_size=len(WORDS), max_position_embeddings=32, **shape))
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(root / "bert")
    bert.save_pretrained(root / "bert")
    encoder = models.Transformer(str(root / "bert"))
    width = getattr(encoder, "get_embedding_dimension", encoder.get_word_embedding_dimension)()
    pooling = models.Pooling(width, "mean")
    SentenceTransformer(modules=[encoder, pooling], device="cpu").save(str(root / "model"))
    return root / "model"


def test_sentence_cosine_is_the_best_tail_cosine_of_the_embeddings(tiny_sentence_model):
    overrides = ["eval.metrics=[sentence_cosine]", f"eval.similarity_model={tiny_sentence_model}"]
    options = compose_train(*overrides).eval
    examples = [
        {"tails": ["go home", "to eat food"], "group": "xWant"},
        {"tails": ["see a movie"], "group": "xWant"},
        {"tails": ["buy a ticket"], "group": "xNeed"},
    ]
    preds = [" to eat food ", "go home", "buy a ticket"]
    summary, rows = score(preds, examples, "generation", options)
    model = sentence_model(str(tiny_sentence_model))
    vectors = model.encode(["to eat food", "go home", "see a movie"], normalize_embeddings=True)
    by_hand = float(vectors[1] @ vectors[2])  # "go home" vs "see a movie"
    assert rows[0]["sentence_cosine"] == pytest.approx(1.0, abs=1e-5)  # stripped, equal to a tail
    assert rows[1]["sentence_cosine"] == pytest.approx(by_hand, abs=1e-5)
    assert by_hand < 0.999  # the tiny model tells these apart, so the test can fail
    assert summary["sentence_cosine_per_group"]["xNeed"] == pytest.approx(1.0, abs=1e-5)
    assert summary["sentence_cosine"] == pytest.approx(((1.0 + by_hand) / 2 + 1.0) / 2, abs=1e-5)


def test_a_similarity_model_that_cannot_load_is_one_line(tmp_path):
    pytest.importorskip("sentence_transformers")
    with pytest.raises(ConfigError, match=r"^eval.similarity_model=.*: no such folder"):
        sentence_model(str(tmp_path / "missing"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"^eval.similarity_model=.*junk: cannot load it") as err:
        sentence_model(str(tmp_path / "junk"))
    assert "\n" not in str(err.value)


def test_eval_reports_the_extra_metric_in_metrics_and_run_json(tiny_world, tmp_path):
    """mto/stages/eval.py looks the scorers and their figures up in the registry."""
    pytest.importorskip("rouge")
    from mto.stages.eval import evaluate_all
    from mto.templates import Template

    task, tokenizer, model = tiny_world
    cfg = compose_train("eval.metrics=[rougeL_ref]", "eval.max_examples=6", "eval.max_new_tokens=4")
    recorded = {}

    class Run:
        def figures(self, **values):
            recorded.update(values)

    template = Template.from_config(cfg.template, cfg.phrases)
    evaluate_all(model, tokenizer, task, template, cfg, tmp_path, "fp32", Run())
    metrics = read_json(tmp_path / "metrics.json")
    assert 0.0 <= metrics["rougeL_ref"] <= 1.0 and "rougeL_ref_per_group" in metrics
    assert recorded["rougeL_ref"] == metrics["rougeL_ref"] and "rougeL" in recorded
    first = (tmp_path / "predictions.jsonl").read_text().splitlines()[0]
    assert '"rougeL_ref"' in first
