"""The gold targets' scores at evaluation (`eval.gold_scores`, mto/stages/gold.py), from the teacher-forced
scorer `mto match` ranks with too (mto/training/scoring.py): per prediction NLL and DepthRank in
predictions.jsonl, their means in metrics.json."""

from __future__ import annotations

import json
from statistics import fmean
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_train, read_json

from mto.config import TemplateConfig
from mto.stages import steps
from mto.stages.eval import evaluate
from mto.stages.gold import gold_targets
from mto.templates import Template, load_template
from mto.training.features import collate, tokenize_pairs
from mto.training.scoring import gold_scores, not_answer_ids


def read_predictions(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def test_each_predictions_gold_nll_is_the_models_loss_on_that_example(tiny_world, tmp_path):
    task, tokenizer, model = tiny_world
    # batches of 3 queries, so several queries (and their golds) share a padded forward
    cfg = compose_train("eval.max_examples=8", "eval.max_new_tokens=4", "eval.batch_size=3")
    template = Template.from_config(cfg.template, cfg.phrases)
    summary = evaluate(model, tokenizer, task, template, cfg, tmp_path, "fp32")
    records = read_predictions(tmp_path)
    examples = task.test[:8]
    assert any(len(ex["tails"]) > 1 for ex in examples)  # the multi-gold case is exercised
    for ex, record in zip(examples, records, strict=True):
        losses, sums = [], []
        for tail in ex["tails"]:  # each gold alone, through the model's own loss
            pairs = steps.render(template, [{**ex, "tail": tail}], tokenizer)
            lengths = cfg.train.max_source_length, cfg.train.max_target_length
            features = tokenize_pairs(tokenizer, pairs, *lengths)
            batch = collate(features, tokenizer.pad_token_id)
            with torch.inference_mode():
                loss = float(model(**batch).loss)
            losses.append(loss)
            sums.append(loss * len(features[0]["labels"]))
        assert record["gold_targets"] == len(ex["tails"])
        assert record["gold_nll"] == pytest.approx(fmean(losses), rel=1e-5)
        assert record["gold_nll_sum"] == pytest.approx(fmean(sums), rel=1e-5)
        assert record["depth_rank"] >= 1.0
    # a control: the figures are each query's own, not one batch mean copied to every record
    assert len({round(r["gold_nll"], 4) for r in records}) > 2

    # metrics.json: per relation the mean over (query, gold) pairs, then the mean over relations
    metrics = read_json(tmp_path / "metrics.json")
    per_group: dict[str, list[tuple[float, int]]] = {}
    for ex, record in zip(examples, records, strict=True):
        per_group.setdefault(ex["group"], []).append((record["depth_rank"], record["gold_targets"]))
    expected = {g: sum(r * n for r, n in v) / sum(n for _, n in v) for g, v in per_group.items()}
    assert metrics["depth_rank_per_group"] == pytest.approx(expected)
    assert metrics["depth_rank"] == pytest.approx(fmean(expected.values()))
    assert metrics["gold_targets"] == sum(len(ex["tails"]) for ex in examples)
    assert {"gold_nll", "depth_rank"} <= set(summary["figures"])


def test_gold_scores_can_be_turned_off(tiny_world, tmp_path):
    task, tokenizer, model = tiny_world
    cfg = compose_train("eval.max_examples=3", "eval.max_new_tokens=2", "eval.gold_scores=false")
    template = Template.from_config(cfg.template, cfg.phrases)
    summary = evaluate(model, tokenizer, task, template, cfg, tmp_path, "fp32")
    assert "depth_rank" not in read_json(tmp_path / "metrics.json") and "depth_rank" not in summary["figures"]
    assert all("gold_nll" not in record for record in read_predictions(tmp_path))


class RankedGold(torch.nn.Module):
    """A stand-in model whose logits put the gold token `rank`-th at every position of an answer token
    (rank 1: the model predicts the gold) and 50th at the sentinel and EOS (not answer tokens)."""

    def __init__(self, vocab_size: int, rank: int, skipped: set[int]):
        super().__init__()
        self.vocab_size, self.rank, self.skipped = vocab_size, rank, skipped

    def forward(self, input_ids, attention_mask, labels):
        logits = torch.zeros(*labels.shape, self.vocab_size)
        for b, t in torch.nonzero(labels != -100).tolist():
            gold = int(labels[b, t])
            above = 49 if gold in self.skipped else self.rank - 1
            others = [i for i in range(self.vocab_size) if i != gold][:above]
            logits[b, t, others] = 2.0
            logits[b, t, gold] = 1.0
        return SimpleNamespace(logits=logits)


def test_depth_rank_is_one_when_the_model_predicts_the_gold_and_counts_answer_tokens_only(tiny_world):
    task, tokenizer, _ = tiny_world
    cfg = compose_train("match.batch_size=2")
    template = load_template("masked_prompting", cfg.phrases)  # targets: <extra_id_0> tail </s>
    pairs = steps.render(template, task.test[:5], tokenizer)
    skipped = not_answer_ids(tokenizer)
    vocab = len(tokenizer)

    def scores(rank: int):
        return gold_scores(RankedGold(vocab, rank, skipped), tokenizer, pairs, 64, 16, 2, "fp32")

    top = scores(1)
    assert [s.depth_rank for s in top] == [1.0] * 5  # sentinel and EOS (ranked 50th) are not averaged
    assert all(s.answer_tokens == s.tokens - 2 for s in top)  # all but the sentinel and EOS
    control = scores(7)
    assert [s.depth_rank for s in control] == [7.0] * 5
    assert all(c.answer_nll > t.answer_nll for c, t in zip(control, top, strict=True))
    # `mto match` ranks with the same scorer
    from mto.stages.match import score_pairs

    assert score_pairs(RankedGold(vocab, 3, skipped), tokenizer, pairs, cfg, "fp32")["rank"] == 3.0


def test_each_gold_rendering_is_scored_once(tiny_world):
    _, tokenizer, _ = tiny_world
    example = {"head": "PersonX eats", "relation": "xWant", "tail": "to rest",
               "tails": ["to rest", "to sleep"], "group": "xWant"}  # fmt: skip
    with_tail = Template.from_config(TemplateConfig(name="t", objective="mapping", source="{head}",
                                                    target="{tail}"), {})  # fmt: skip
    pairs, owners = gold_targets(with_tail, [example, example], tokenizer)
    assert [t for _, t in pairs] == ["to rest", "to sleep"] * 2 and owners == [0, 0, 1, 1]
    # a template that does not say the tail renders every gold the same: one pair per query
    without = Template.from_config(TemplateConfig(name="u", objective="mapping", source="{head}",
                                                  target="{relation}"), {})  # fmt: skip
    assert gold_targets(without, [example], tokenizer) == ([("PersonX eats", "xWant")], [0])
    # text2text keeps its gold in `target` too: each reference is scored
    record = {"source": "good night", "target": "bonne nuit", "tail": "bonne nuit",
              "tails": ["bonne nuit", "bonsoir"], "group": "all"}  # fmt: skip
    text2text = Template.from_config(TemplateConfig(name="v", objective="mapping", source="{source}",
                                                    target="{target}"), {})  # fmt: skip
    assert [t for _, t in gold_targets(text2text, [record], tokenizer)[0]] == ["bonne nuit", "bonsoir"]
