"""`match.method=rules`: the MTO code's decision rules (docs/reference-protocol.md 1a, 1d), golden tests
from its own lists, and `template=auto` following a rule decided per example."""

from __future__ import annotations

import json

import pytest
from conftest import compose_train, mto, read_json, run_dirs

from mto.errors import ConfigError
from mto.matching import FILLING, MAPPING, auto_template, rule_decision, temp_flex, temp_len

# attempt/data/tasks.py L1776-1781, `Atomic.temp_flex`: the relations given "unsup-nat" (Filling).
REFERENCE_FILLING = ["ObjectUse", "AtLocation", "MadeUpOf", "HasProperty", "CapableOf", "Desires",
                     "NotDesires", "xAttr", "xReact", "oReact", "isFilledBy"]  # fmt: skip
# The list of relations the reference makes Mapping ("sup-nat"), plus Causes and xReason.
REFERENCE_MAPPING = ["xIntent", "xWant", "xNeed", "xEffect", "oWant", "oEffect", "isAfter", "isBefore",
                     "HasSubEvent", "HinderedBy", "Causes", "xReason"]  # fmt: skip


def test_temp_flex_is_the_reference_list_on_all_23_relations():
    for relation in REFERENCE_FILLING:
        assert temp_flex(relation) == FILLING, relation
        assert rule_decision({"relation": relation, "head": "h"}) == FILLING
    for relation in REFERENCE_MAPPING:
        assert temp_flex(relation) == MAPPING, relation
    # The Maskability paper's table agrees on its nine relations (MI >= 0.30: Mask-Filling).
    paper = ("AtLocation", "ObjectUse", "xAttr", "CapableOf", "HasProperty", "isFilledBy", "xIntent", "xNeed",
             "xWant")  # fmt: skip
    assert [temp_flex(r) for r in paper] == [FILLING] * 6 + [MAPPING] * 3


@pytest.mark.parametrize(
    ("question", "choices", "expected"),
    [
        ("Where do you keep books?", ["bank", "library", "park"], FILLING),
        ("Where do you keep books", ["bank", "library", "park"], MAPPING),  # no "?"
        ("Which is true?", ["a b c d", "e f g h"], MAPPING),  # mean length exactly 4 words
        ("Which is true?", ["a b c d", "e f g"], FILLING),  # 3.5 words
        ("Which is true?", ["a  b", "c"], FILLING),  # split(" "): "a  b" counts 3, as the code counts
    ],
)
def test_temp_len_is_the_reference_rule(question, choices, expected):
    assert temp_len(question, choices) == expected


def test_temp_len_decides_each_question_not_the_first_for_all():
    """The code decided once from the first example and reused it (trap 4); we decide per example."""
    short = {"stem": "Where?", "question": "Where?", "choices": ["a", "b"]}
    long = {"stem": "Where?", "question": "Where?", "choices": ["one two three four five"] * 2}
    assert [rule_decision(ex) for ex in (short, long, short)] == [FILLING, MAPPING, FILLING]
    # the question alone counts, not a context said before it
    ctx = {"stem": "Where do they go", "question": "Who? Where do they go", "choices": ["a", "b"]}
    assert rule_decision(ctx) == MAPPING


def test_rules_refuse_a_task_the_reference_has_no_rule_for():
    with pytest.raises(ConfigError, match="match.method=rules: the reference rules decide"):
        rule_decision({"source": "x", "target": "y"})


def test_model_is_accepted_as_the_old_name_of_zero_shot():
    assert str(compose_train().match.method) == "zero_shot"
    assert str(compose_train("match.method=model").match.method) == "zero_shot"


@pytest.mark.slow
def test_match_rules_on_the_cli_follow_temp_flex(tmp_path):
    relations = ["xIntent", "xNeed", "xAttr", "xReact", "HinderedBy"]
    mto("match", "match.method=rules", "data.n_heads=60", f"data.relations=[{','.join(relations)}]",
        "model=t5-small", cwd=tmp_path)  # fmt: skip  (never loaded)
    (run,) = run_dirs(tmp_path / "outputs" / "match")
    result = read_json(run / "match.json")
    assert result["method"] == "rules"
    assert result["decisions"] == {"xIntent": MAPPING, "xNeed": MAPPING, "xAttr": FILLING,
                                   "xReact": FILLING, "HinderedBy": MAPPING}  # fmt: skip
    assert {g["rule"] for g in result["groups"].values()} == {"temp_flex"}
    assert result["per_example"] == []


def test_template_auto_applies_temp_len_to_each_question(tmp_path):
    folder = tmp_path / "qa"
    folder.mkdir()
    records = [
        {"id": "1", "question_stem": "Where do you keep books?", "choices": {"text": ["bank", "library"],
         "label": ["A", "B"]}, "answerKey": "B"},
        {"id": "2", "question_stem": "What happens then?", "choices": {"text": [
            "the plants grow tall and strong", "the plants wither in the dark"], "label": ["A", "B"]},
         "answerKey": "A"},
        {"id": "3", "question_stem": "The sun is", "choices": {"text": ["hot", "cold"], "label": ["A", "B"]},
         "answerKey": "A"},
    ]  # fmt: skip
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = tmp_path / "match_run"
    run.mkdir()
    (run / "match.json").write_text(json.dumps({
        "method": "rules", "mapping_template": "answer", "filling_template": "masked_answer",
        "decisions": {"obqa": FILLING}, "per_example": ["obqa"],
    }))  # fmt: skip
    cfg = compose_train("data=obqa", f"data.path={folder}", "template=auto", f"match_run={run}")
    from mto.stages import steps

    task = steps.get_task(cfg)
    template = auto_template(cfg)
    sources = [template.render(ex, lambda i: f"<extra_id_{i}>")[0] for ex in task.train]
    assert [s.endswith("<extra_id_0>") for s in sources] == [True, False, False]


# ---------------------------------------------------------------------------------------------
# Bootstrap intervals of MI, `uncertain`, and match.method=depth_rank
# ---------------------------------------------------------------------------------------------


def scores_of(ranks_mapping, ranks_filling) -> dict:
    def summary(ranks):
        kept = [r for r in ranks if r is not None]
        return {"rank": sum(kept) / len(kept), "ranks": list(ranks)}

    return {"g": {"prompting": summary(ranks_mapping), "masked_prompting": summary(ranks_filling)}}


PAIR = ("prompting", "masked_prompting")


def test_a_clear_mi_is_certain_and_its_interval_holds_the_point():
    from mto.matching import decide

    (result,) = decide(scores_of([10, 12] * 10, [2, 3] * 10), PAIR, 0.30, resamples=500, seed=1).values()
    low, high = result["mi_ci"]
    assert low <= result["mi"] <= high and low > 0.30
    assert result["decision"] == FILLING and result["uncertain"] is False


def test_a_borderline_mi_is_uncertain_and_takes_the_fallback():
    from mto.matching import decide

    # MI = (10 - 7) / 10 = 0.30; the example the mapping template could not score is left out
    scores = scores_of([1, 19] * 10 + [None], [1, 13] * 10 + [7])
    point = decide(scores, PAIR, 0.30, resamples=500, seed=1)["g"]
    assert point["mi"] == pytest.approx(0.30) and point["uncertain"] is True
    assert point["mi_ci"][0] < 0.30 <= point["mi_ci"][1]
    assert point["decision"] == FILLING  # fallback=point: the MI decides
    assert decide(scores, PAIR, 0.30, resamples=500, fallback="mapping", seed=1)["g"]["decision"] == MAPPING
    again = decide(scores, PAIR, 0.30, resamples=500, seed=1)
    assert again == decide(scores, PAIR, 0.30, resamples=500, seed=1)
    assert "mi_ci" not in decide(scores, PAIR, 0.30)["g"]  # resamples=0: no interval


@pytest.mark.slow
def test_match_depth_rank_fine_tunes_per_family_then_ranks_held_out_tails(tmp_path):
    from mto.stages import steps
    from mto.stages.match import heldout, score_pairs
    from mto.templates import load_template

    world = ["data.n_heads=60", "data.relations=[xIntent,xAttr]", "threads=1", "precision=fp32"]
    held = ["data.test_heads_per_relation=5", "data.test_tails_per_head=2"]
    train = ["match.n=16", "train.steps=40", "train.batch_size=8", "train.lr=3e-3", "train.warmup_steps=0"]
    mto("match", "match.method=depth_rank", *world, *held, *train, "match.bootstrap=200", cwd=tmp_path)
    (run,) = run_dirs(tmp_path / "outputs" / "match")
    result = read_json(run / "match.json")
    assert result["method"] == "depth_rank" and set(result["groups"]) == {"xIntent", "xAttr"}

    cfg = compose_train(*world, *held)
    task = steps.get_task(cfg)
    queries = heldout(task, "dev")
    assert {g: len(exs) for g, exs in queries.items()} == {
        g: sum(min(2, len(q["tails"])) for q in task.dev if q["group"] == g) for g in ("xIntent", "xAttr")
    }
    tokenizer, model = steps.get_model(cfg, task)
    for group, res in result["groups"].items():
        tuned = res["templates"]["masked_prompting"]
        assert tuned["n"] == len(queries[group])  # one DepthRank per held-out (head, tail) pair
        mapping_rank = res["templates"]["prompting"]["rank"]
        assert res["mi"] == pytest.approx((mapping_rank - tuned["rank"]) / mapping_rank)
        assert res["mi_ci"][0] <= res["mi"] <= res["mi_ci"][1]
        assert res["decision"] == (FILLING if res["mi"] >= 0.30 else MAPPING)  # fallback=point
        template = load_template("masked_prompting", cfg.phrases)
        pairs = steps.render(template, queries[group], tokenizer)
        zero_shot = score_pairs(model, tokenizer, pairs, cfg, "fp32")
        assert tuned["rank"] < zero_shot["rank"]  # the few-shot fine-tune happened before ranking
