"""The phrase sets as data (conf/phrases/): `mto template show` renders each reference's own strings.

The expected strings are the MTO code's, as its tasks.py renders them (docs/reference-protocol.md 2b:
head "PersonX goes to the store", tail "to buy food"), and the Maskability repository's templates
(`f"{head} {phrase}"`, `f"{head} {phrase} <extra_id_0>"`, 2d). The MTO code appends a literal " </s>" to
every target (the tokenizer adds our EOS) and keeps the double spaces of HasProperty's " is " (collapsed
by T5's SentencePiece normalisation, and by our renderer): both are normalised away before comparing.
"""

from __future__ import annotations

import pytest
from conftest import mto
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mto.config import conf_dir
from mto.stages.template import show

HEAD, TAIL = "PersonX goes to the store", "to buy food"
RELATIONS = ("xNeed", "xAttr", "xIntent", "AtLocation", "HasProperty", "xWant")

# (relation, template) -> (source, target) exactly as the MTO code printed them (sup-nat = prompting,
# unsup-nat = masked_prompting).
MTO2024 = {
    ("xNeed", "prompting"): ("But before PersonX goes to the store, PersonX needed", "to buy food </s>"),
    ("xNeed", "masked_prompting"): (
        "But before PersonX goes to the store, PersonX needed <extra_id_0>", "<extra_id_0> to buy food </s>"
    ),
    ("xAttr", "masked_prompting"): (
        "PersonX goes to the store So, PersonX is seen as <extra_id_0>", "<extra_id_0> to buy food </s>"
    ),
    ("xIntent", "prompting"): ("PersonX goes to the store they intend", "to buy food </s>"),
    ("AtLocation", "masked_prompting"): (
        "you are likely to find PersonX goes to the store in <extra_id_0>", "<extra_id_0> to buy food </s>"
    ),
    ("HasProperty", "masked_prompting"): (
        "PersonX goes to the store  is  <extra_id_0>", "<extra_id_0> to buy food </s>"
    ),
    ("xWant", "prompting"): ("After PersonX goes to the store, PersonX would want", "to buy food </s>"),
}
MASKABILITY = {
    ("xNeed", "masked_prompting"): ("PersonX goes to the store before that they need <extra_id_0>", None),
    ("xIntent", "prompting"): ("PersonX goes to the store because they intended", None),
    ("AtLocation", "masked_prompting"): ("PersonX goes to the store located at <extra_id_0>", None),
    ("HasProperty", "prompting"): ("PersonX goes to the store has the property of", None),
}


def reference_form(text: str) -> str:
    return " ".join(text.removesuffix(" </s>").split())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("atomic")
    rows = "".join(f"{HEAD}\t{r}\t{TAIL}\n" for r in RELATIONS)
    for split in ("train", "dev", "test"):
        (path / f"{split}.tsv").write_text(rows)
    return path


def rendered(folder, phrases: str, template: str) -> dict[str, tuple[str, str]]:
    overrides = ["data=atomic", f"data.path={folder}", f"phrases={phrases}", f"template={template}"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="train", overrides=overrides)
    pairs = show(cfg, n=len(RELATIONS))
    return dict(zip(RELATIONS, pairs, strict=True))


@pytest.mark.parametrize(("phrases", "golden"), [("mto2024", MTO2024), ("maskability", MASKABILITY)])
def test_each_reference_set_renders_the_references_strings(folder, phrases, golden):
    for template in ("prompting", "masked_prompting"):
        pairs = rendered(folder, phrases, template)
        for (relation, name), (source, target) in golden.items():
            if name != template:
                continue
            assert pairs[relation][0] == reference_form(source), (phrases, relation, template)
            expected_target = reference_form(target) if target else (
                f"<extra_id_0> {TAIL}" if template.startswith("masked") else TAIL
            )
            assert pairs[relation][1] == expected_target


def test_the_default_set_is_mto_and_every_set_covers_the_atomic_relations():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="train")
    mine = OmegaConf.to_container(OmegaConf.load(conf_dir() / "phrases" / "mto.yaml"))
    assert OmegaConf.to_container(cfg.phrases) == mine
    for name in ("mto2024", "maskability"):
        phrases = OmegaConf.to_container(OmegaConf.load(conf_dir() / "phrases" / f"{name}.yaml"))
        assert set(phrases) == set(mine), name
    # the head-embedded phrases of the MTO code are kept as such
    mto2024 = OmegaConf.load(conf_dir() / "phrases" / "mto2024.yaml")
    embedded = sorted(r for r, p in mto2024.items() if "{head}" in p)
    assert embedded == sorted(["Causes", "HasSubEvent", "AtLocation", "isAfter", "isBefore", "oEffect",
                               "oWant", "xEffect", "xNeed", "xWant"])


def test_template_show_on_the_command_line(folder, tmp_path):
    proc = mto("template", "show", "data=atomic", f"data.path={folder}", "phrases=mto2024",
               "template=prompting", "-n", "1", cwd=tmp_path)  # fmt: skip
    assert "But before PersonX goes to the store, PersonX needed" in " ".join(proc.stdout.split())
