"""Tests for mto.metrics: every expected value is worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest

from mto.metrics import (
    corpus_bleu,
    exact_match,
    match_choice,
    normalize,
    rouge_l,
    score_choices,
    score_generation,
)


def _ex(tails: list[str], group: str) -> dict:
    return {"tails": tails, "group": group}


# ---------------------------------------------------------------- normalize / exact match


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  To  Eat!! ", "to eat"),
        ("to eat .", "to eat"),  # space before the final period goes too
        ("Is it?;", "is it"),
        ("eat,\tthen\n sleep", "eat, then sleep"),  # inner punctuation kept, whitespace collapsed
        ("...", ""),
        ("", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_exact_match_any_reference() -> None:
    assert exact_match("To watch a film.", ["to see a movie", "to watch a film"]) == 1.0
    assert exact_match("to watch a", ["to see a movie", "to watch a film"]) == 0.0
    # Inner punctuation is significant.
    assert exact_match("eat, sleep", ["eat sleep"]) == 0.0


def test_exact_match_and_rouge_need_a_reference() -> None:
    with pytest.raises(ValueError, match="reference"):
        exact_match("x", [])
    with pytest.raises(ValueError, match="reference"):
        rouge_l("x", [])


# ---------------------------------------------------------------- ROUGE-L


def test_rouge_l_by_hand() -> None:
    # pred [a, cat, sat] (3 tokens), ref [the, cat, sat, down] (4 tokens); LCS = [cat, sat] = 2.
    # P = 2/3, R = 2/4, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7.
    assert rouge_l("a cat sat", ["the cat sat down"]) == pytest.approx(4 / 7)
    # Case and punctuation are dropped by rouge-score's tokenizer: same tokens, same score.
    assert rouge_l("A Cat, sat!", ["the cat sat down"]) == pytest.approx(4 / 7)


def test_rouge_l_takes_best_reference() -> None:
    # "dog" shares nothing (F1 0); "the cat sat down" gives 4/7 (above); "cat sat" gives
    # LCS 2, P = 2/3, R = 2/2, F1 = 2*(2/3)/(5/3) = 4/5: the max is 4/5 whatever the order.
    refs = ["dog", "the cat sat down", "cat sat"]
    assert rouge_l("a cat sat", refs) == pytest.approx(4 / 5)
    assert rouge_l("a cat sat", refs[::-1]) == pytest.approx(4 / 5)


def test_rouge_l_order_matters_for_lcs() -> None:
    # pred [sat, cat] vs ref [cat, sat]: LCS 1 (a subsequence keeps order), P = R = F1 = 1/2.
    assert rouge_l("sat cat", ["cat sat"]) == pytest.approx(0.5)
    assert rouge_l("", ["cat sat"]) == 0.0


# ---------------------------------------------------------------- BLEU


def test_bleu_identical_corpus_is_100() -> None:
    preds = ["the cat sat on the mat", "a dog ran in the park today"]
    assert corpus_bleu(preds, [[p] for p in preds]) == pytest.approx(100.0)


def test_bleu_short_tails_effective_order() -> None:
    # No prediction has 3 tokens, so there are no 3- or 4-grams at all. Standard BLEU multiplies in a
    # "precision" of 0/0 and gives 0 even for a perfect corpus; with effective order the mean stops at
    # bigrams: 1-gram 4/4, 2-gram 2/2 -> 100.
    preds = ["to eat", "happy", "go home"]
    refs = [[p] for p in preds]
    assert corpus_bleu(preds, refs) == pytest.approx(100.0)
    assert corpus_bleu(preds, refs, effective_order=False) == pytest.approx(0.0)


def test_bleu_ngram_precisions_by_hand() -> None:
    # hyp: the cat sat on the mat / ref: the cat sat on a mat (6 tokens each -> brevity penalty 1).
    # 1-grams: the(x2, clipped to 1) cat sat on mat -> 5/6
    # 2-grams: the cat, cat sat, sat on | on the, the mat -> 3/5
    # 3-grams: the cat sat, cat sat on | sat on the, on the mat -> 2/4
    # 4-grams: the cat sat on | cat sat on the, sat on the mat -> 1/3
    # BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * (1/12) ** 0.25 ~= 53.73
    score = corpus_bleu(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert score == pytest.approx(100 * (1 / 12) ** 0.25)
    # Same answer with effective_order off: every order has n-grams, so the two agree.
    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on a mat"]], effective_order=False) == (
        pytest.approx(score)
    )


def test_bleu_ragged_references_counts_by_hand() -> None:
    # Example 1 as above (counts 5/6, 3/5, 2/4, 1/3). Example 2 has two references, the second identical
    # to the hypothesis, so all its n-grams match: 6/6, 5/5, 4/4, 3/3. Corpus counts are summed:
    # 11/12, 8/10, 6/8, 4/6; product = 11/30; lengths 12 vs closest refs 6 + 6 -> BP 1.
    preds = ["the cat sat on the mat", "a dog ran in the park"]
    refs = [["the cat sat on a mat"], ["one dog ran in a park", "a dog ran in the park"]]
    assert corpus_bleu(preds, refs) == pytest.approx(100 * (11 / 30) ** 0.25)
    # Longer list first: the padding must not depend on which example is ragged.
    assert corpus_bleu(preds[::-1], refs[::-1]) == pytest.approx(100 * (11 / 30) ** 0.25)


def test_bleu_ragged_padding_does_not_fake_a_short_reference() -> None:
    # "a" vs ["a b c"]; "x y z w" vs ["x y z w", "q"]. All n-grams match (1g 5/5, 2g 3/3, 3g 2/2, 4g 1/1),
    # so only the brevity penalty matters: hyp length 1 + 4 = 5, closest refs 3 + 4 = 7,
    # BP = exp(1 - 7/5). Padding the first example's missing reference with "" instead of None would
    # offer a 0-length reference closest to "a" (|1-0| < |1-3|), ref length 4, no penalty, score 100.
    preds = ["a", "x y z w"]
    refs = [["a b c"], ["x y z w", "q"]]
    assert corpus_bleu(preds, refs) == pytest.approx(100 * math.exp(1 - 7 / 5))


def test_bleu_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no predictions"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="reference"):
        corpus_bleu(["a"], [[]])


# ---------------------------------------------------------------- score_generation


def test_score_generation_macro_vs_micro() -> None:
    preds = ["to eat.", "sleep", "a cat sat"]
    examples = [
        _ex(["To eat", "to drink"], "xIntent"),  # exact (after normalize): EM 1, ROUGE-L 1
        _ex(["to go home"], "xIntent"),  # nothing shared: EM 0, ROUGE-L 0
        _ex(["the cat sat down"], "xNeed"),  # EM 0, ROUGE-L 4/7 (see test_rouge_l_by_hand)
    ]
    summary, per_example = score_generation(preds, examples)

    assert per_example == [
        {"exact_match": 1.0, "rougeL": pytest.approx(1.0)},
        {"exact_match": 0.0, "rougeL": pytest.approx(0.0)},
        {"exact_match": 0.0, "rougeL": pytest.approx(4 / 7)},
    ]
    assert summary["n"] == 3
    assert summary["exact_match"] == pytest.approx(1 / 3)
    # Per group: xIntent (1 + 0)/2 = 1/2, xNeed 4/7.
    assert summary["rougeL_per_group"] == {"xIntent": pytest.approx(0.5), "xNeed": pytest.approx(4 / 7)}
    assert list(summary["rougeL_per_group"]) == ["xIntent", "xNeed"]
    # Macro = (1/2 + 4/7)/2 = 15/28 ~= 0.5357; micro = (1 + 0 + 4/7)/3 = 11/21 ~= 0.5238.
    assert summary["rougeL"] == pytest.approx(15 / 28)
    assert summary["rougeL_micro"] == pytest.approx(11 / 21)
    assert summary["distinct"] == 3
    assert 0.0 <= summary["bleu"] <= 100.0
    assert summary["bleu"] == pytest.approx(corpus_bleu(preds, [e["tails"] for e in examples]))


def test_score_generation_distinct_and_perfect_bleu() -> None:
    # Three spellings of one answer normalize to "to eat"; "to sleep" is the second distinct prediction.
    preds = ["To eat.", "to  eat", "to eat!", "to sleep"]
    examples = [_ex(["to eat"], "a"), _ex(["to eat"], "a"), _ex(["to eat"], "b"), _ex(["to sleep"], "b")]
    summary, _ = score_generation(preds, examples)
    assert summary["distinct"] == 2
    assert summary["exact_match"] == 1.0
    assert summary["rougeL"] == pytest.approx(1.0)
    # BLEU is case-sensitive and keeps punctuation as tokens (13a), unlike exact match: "To eat ." is not
    # a perfect hypothesis. Checked through corpus_bleu, not hard-coded, to keep this test about distinct.
    assert summary["bleu"] < 100.0


def test_score_generation_errors() -> None:
    with pytest.raises(ValueError, match="empty input"):
        score_generation([], [])
    with pytest.raises(ValueError, match="1 predictions but 2 examples"):
        score_generation(["a"], [_ex(["a"], "g"), _ex(["b"], "g")])
    with pytest.raises(ValueError, match="example 0 .*no gold tails"):
        score_generation(["a"], [{"id": "test-0", "tails": [], "group": "g"}])


# ---------------------------------------------------------------- multiple choice


def test_match_choice_label_then_text() -> None:
    choices, labels = ["a dog", "a cat", "a bird"], ["A", "B", "C"]
    assert match_choice("b", choices, labels) == 1  # label, case-insensitive
    assert match_choice(" B. ", choices, labels) == 1  # label with trailing period
    assert match_choice("A Cat!", choices, labels) == 1  # answer text
    assert match_choice("the cat", choices, labels) is None
    assert match_choice("", choices, labels) is None
    # A choice whose *text* is "B" (index 0) loses to the choice *labelled* B (index 1).
    assert match_choice("B", ["B", "A"], ["A", "B"]) == 1
    assert match_choice("2", ["yes", "no"], ["1", "2"]) == 1
    with pytest.raises(ValueError, match="2 choices but 1 labels"):
        match_choice("a", ["x", "y"], ["A"])


def test_score_choices() -> None:
    examples = [
        {"choices": ["a dog", "a cat"], "labels": ["A", "B"], "answer_index": 1},
        {"choices": ["a dog", "a cat"], "labels": ["A", "B"], "answer_index": 1},
        {"choices": ["yes", "no"], "labels": ["1", "2"], "answer_index": 0},
    ]
    preds = ["a cat", "A", "maybe"]  # right by text, wrong by label, unmatched
    summary, per_example = score_choices(preds, examples)
    assert per_example == [
        {"correct": 1, "matched": 1},
        {"correct": 0, "matched": 0},
        {"correct": 0, "matched": None},
    ]
    assert summary == {"n": 3, "accuracy": pytest.approx(1 / 3), "unmatched": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="empty input"):
        score_choices([], [])
