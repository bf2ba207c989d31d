"""Golden tests of every template family, rendered from the shipped YAML files."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mto.config import conf_dir
from mto.errors import ConfigError
from mto.templates import Template, decode_answer, placeholders

PHRASES = OmegaConf.to_container(OmegaConf.load(conf_dir() / "phrases" / "mto.yaml"))
TRIPLE = {"head": "PersonX buys a ticket", "relation": "xIntent", "tail": "to see a movie"}
QA = {
    "question": "Where do you keep books?",
    "choices": ["bank", "library", "park"],
    "labels": ["A", "B", "C"],
    "answer": "library",
    "label": "B",
}


def sentinel(i: int) -> str:
    return f"<extra_id_{i}>"


def shipped(name: str, phrases=PHRASES) -> Template:
    return Template.from_config(OmegaConf.load(conf_dir() / "template" / f"{name}.yaml"), phrases)


@pytest.mark.parametrize(
    ("name", "source", "target"),
    [
        ("mapping", "xIntent: PersonX buys a ticket", "to see a movie"),
        ("masked_mapping", "xIntent: PersonX buys a ticket <extra_id_0>", "<extra_id_0> to see a movie"),
        ("prompting", "PersonX buys a ticket because PersonX intended", "to see a movie"),
        (
            "masked_prompting",
            "PersonX buys a ticket because PersonX intended <extra_id_0>",
            "<extra_id_0> to see a movie",
        ),
    ],
)
def test_knowledge_templates(name, source, target):
    assert shipped(name).render(TRIPLE, sentinel) == (source, target)


@pytest.mark.parametrize(
    ("name", "source", "target"),
    [
        ("answer", "Where do you keep books? (A) bank (B) library (C) park", "library"),
        (
            "masked_answer",
            "Where do you keep books? (A) bank (B) library (C) park Answer: <extra_id_0>",
            "<extra_id_0> library",
        ),
        ("choice", "Where do you keep books? (A) bank (B) library (C) park", "B"),
        (
            "masked_choice",
            "Where do you keep books? (A) bank (B) library (C) park Answer: <extra_id_0>",
            "<extra_id_0> B",
        ),
    ],
)
def test_qa_templates(name, source, target):
    assert shipped(name).render(QA, sentinel) == (source, target)


def test_phrase_embedding_the_head_is_not_said_twice():
    phrases = {**PHRASES, "isAfter": "before {head}, PersonX"}
    example = {"head": "PersonX eats dinner", "relation": "isAfter", "tail": "PersonX cooks"}
    source, target = shipped("masked_prompting", phrases).render(example, sentinel)
    assert source == "before PersonX eats dinner, PersonX <extra_id_0>"
    assert target == "<extra_id_0> PersonX cooks"


def test_masks_are_numbered_in_order():
    template = Template("two", "{head} {mask} and {mask}", "{mask} x {mask} y")
    assert template.render(TRIPLE, sentinel) == (
        "PersonX buys a ticket <extra_id_0> and <extra_id_1>",
        "<extra_id_0> x <extra_id_1> y",
    )


def test_template_naming_a_missing_field_is_refused():
    with pytest.raises(
        ConfigError, match=r"template=answer uses \{question\}, a field that task 'atomic' lacks"
    ):
        shipped("answer").check(TRIPLE.keys(), "atomic")


def test_relation_without_phrase_is_refused():
    template = shipped("prompting", {"xIntent": "because PersonX intended"})
    with pytest.raises(ConfigError, match=r"phrases\.xNeed is not set"):
        template.check(TRIPLE.keys(), "atomic", relations=["xIntent", "xNeed"])
    template.check(TRIPLE.keys(), "atomic", relations=["xIntent"])  # complete: accepted


@pytest.mark.parametrize("bad", ["{head.__class__}", "{head[0]}", "{head!r}", "{head:>10}", "{0}"])
def test_placeholders_must_be_plain_names(bad):
    with pytest.raises(ConfigError, match="plain name"):
        placeholders(bad, "template.source")


def test_target_with_more_masks_than_source_is_refused():
    with pytest.raises(ConfigError, match="target has 2"):
        Template("bad", "{head} {mask}", "{mask} {tail} {mask}")


class _Tok:
    """The slice of a tokenizer decode_answer uses: ids 0 pad, 1 eos, 90/91 sentinels, words otherwise."""

    all_special_ids = [0, 1, 2, 90, 91]
    eos_token_id = 1
    mask_token_id = None
    words = {5: "to", 6: "see", 7: "a", 8: "movie"}

    def get_vocab(self):
        return {"<extra_id_0>": 91, "<extra_id_1>": 90, "to": 5}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.words[i] for i in ids)


@pytest.mark.parametrize(
    ("ids", "answer"),
    [
        ([0, 91, 5, 6, 7, 8, 90, 5, 1], "to see a movie"),  # the first sentinel's span only
        ([0, 5, 6, 1, 7], "to see"),  # no sentinel: everything up to EOS
        ([0, 91, 91, 5, 1], ""),  # an empty span is an empty answer
    ],
)
def test_decode_answer_reads_the_first_span(ids, answer):
    assert decode_answer(ids, _Tok()) == answer


def test_a_template_whose_text_was_overridden_gets_a_name_of_its_own(tmp_path):
    """`'template.source="..."'` on the command line keeps `template.name`; the Template (what run.json
    records and reports group by) gets the name plus a hash of its text, so different templates are never
    merged under the shipped name."""
    import json

    from mto.config import TemplateConfig
    from mto.reporting.records import gather
    from mto.reporting.tables import summarise

    assert shipped("masked_prompting").name == "masked_prompting"
    config = TemplateConfig(name="masked_prompting", objective="filling", source="{head} {phrase} so {mask}",
                            target="{mask} {tail}")  # fmt: skip
    own = Template.from_config(config, PHRASES)
    other = Template.from_config(TemplateConfig(**{**vars(config), "source": "{head} {mask}"}), PHRASES)
    assert own.name.startswith("masked_prompting~") and other.name.startswith("masked_prompting~")
    assert own.name != other.name and Template.from_config(config, PHRASES).name == own.name
    assert Template.from_config(TemplateConfig(**{**vars(config), "name": "mine"}), PHRASES).name == "mine"
    for i, name in enumerate(["masked_prompting", own.name, own.name]):
        run = tmp_path / str(i)
        (run / ".hydra").mkdir(parents=True)
        config_file = run / ".hydra" / "config.yaml"
        OmegaConf.save({"stage": "train", "template": {"name": "masked_prompting"}}, config_file)
        (run / "run.json").write_text(json.dumps({"status": "completed", "template": name}))
        (run / "metrics.json").write_text(json.dumps({"rougeL": float(i)}))
    rows = summarise(gather([str(tmp_path)])[0], ["template.name"], "rougeL")
    assert [(r["template.name"], r["runs"]) for r in rows] == [("masked_prompting", 1), (own.name, 2)]
