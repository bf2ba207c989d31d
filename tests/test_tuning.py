"""Prompt and parameter-efficient tuning (`tuning=prompt|prefix|lora|soft`) on the tiny model: only the
method's parameters train, in the expected number; the adapter saves small and loads back to the same
outputs, on a base rebuilt bitwise; soft tokens sit where the templates put them; wrong bases are refused.
The end-to-end path (`mto train tuning=...` then `mto eval run=`) runs through the real CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import SMALL, compose_train, mto, read_json, run_dirs

from mto import tuning
from mto.errors import ConfigError
from mto.models import sentinel
from mto.stages import steps
from mto.templates import Template, load_template, placeholders
from mto.training.features import collate, tokenize_pairs
from mto.training.loop import train_model
from mto.tuning import base as base_model
from mto.tuning import soft
from mto.tuning.vectors import initial_vectors

D_MODEL, N_TOKENS = 128, 8  # conf/model/tiny.yaml; the soft templates' {soft:8} and num_virtual_tokens
TRIPLE = {
    "head": "PersonX buys a ticket",
    "relation": "xIntent",
    "tail": "to see a movie",
    "group": "xIntent",
}


def base_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# Trainable parameters worked out by hand for the tiny T5 (d_model 128, 4 heads x d_kv 32, 2+2 layers).
LORA_MODULES = 2 * 2 + 2 * 2 + 2 * 2  # q, v of: encoder self-attention, decoder self- and cross-attention
EXPECTED = {
    "prompt": N_TOKENS * D_MODEL,  # 1,024: one vector per virtual token
    "prefix": N_TOKENS * 2 * 2 * D_MODEL,  # 4,096: a key and a value per token and decoder layer
    "lora": LORA_MODULES * 8 * (D_MODEL + D_MODEL),  # 24,576: A (8x128) and B (128x8) per module
    "soft": N_TOKENS * D_MODEL,  # 1,024: one shared set of 8 tokens
}
CASES = {
    "prompt": (["tuning=prompt", "template=masked_prompting"], EXPECTED["prompt"]),
    "prefix": (["tuning=prefix", "template=masked_prompting"], EXPECTED["prefix"]),
    # the prefix through an MLP: 8x128 vectors, 128 -> 128 -> 2x2x128 (weights and biases)
    "prefix_projection": (
        ["tuning=prefix", "tuning.peft.prefix_projection=true", "template=masked_prompting"],
        N_TOKENS * D_MODEL + (D_MODEL * D_MODEL + D_MODEL) + (D_MODEL * 4 * D_MODEL + 4 * D_MODEL),
    ),
    "lora": (["tuning=lora", "tuning.lr=0.01", "template=masked_prompting"], EXPECTED["lora"]),
    "soft": (["tuning=soft", "template=masked_post_prompt"], EXPECTED["soft"]),
    # 9 relations x 8 tokens x 128, plus the residual MLP 128 -> 128 -> 128 (weights and biases)
    "soft_per_relation_mlp": (
        ["tuning=soft", "template=pre_prompt", "tuning.per_relation=true", "tuning.encoder=mlp"],
        9 * N_TOKENS * D_MODEL + 2 * (D_MODEL * D_MODEL + D_MODEL),
    ),
    # 8 x 128, a 2-layer bidirectional LSTM (hidden 128: 4 gates x 128 rows over inputs of 128, then 256;
    # two bias vectors), and its MLP head 256 -> 128 -> 128
    "soft_lstm": (
        ["tuning=soft", "template=masked_pre_prompt", "tuning.encoder=lstm"],
        N_TOKENS * D_MODEL
        + 2 * (512 * 128 + 512 * 128 + 2 * 512)
        + 2 * (512 * 256 + 512 * 128 + 2 * 512)
        + (256 * 128 + 128)
        + (128 * 128 + 128),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_method_trains_only_its_parameters_and_reloads_exactly(tiny_world, case, tmp_path):
    overrides, expected_trainable = CASES[case]
    task, base_tokenizer, built = tiny_world
    cfg = compose_train(*overrides, "train.steps=6", "train.warmup_steps=0", "train.batch_size=8")
    model = copy.deepcopy(built)
    # The methods wrap the base's modules in place: its parameters stay the same objects (by id).
    frozen = {id(p): p.detach().clone() for p in model.parameters()}
    template = steps.get_template(cfg, task)
    model, tokenizer, state = tuning.apply_tuning(model, base_tokenizer, cfg, template, task)

    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    n_trainable, n_total = tuning.parameter_counts(model)
    assert n_trainable == expected_trainable == sum(p.numel() for p in trainable.values())
    assert n_total == base_parameters(built) + n_trainable
    if case == "soft_per_relation_mlp":
        assert len({ex["relation"] for split in (task.train, task.test) for ex in split}) == 9

    pairs = steps.render(template, task.train, tokenizer)
    features = tokenize_pairs(tokenizer, pairs, 64, 32)
    train_model(
        model, tokenizer, features, cfg.train, "fp32", cfg.seed, lr=tuning.learning_rate(state, cfg.train.lr)
    )

    # Every base weight bitwise as it was; every trained tensor moved.
    after = dict(model.named_parameters())
    assert {id(p) for n, p in after.items() if n not in trainable} == set(frozen)
    for name, p in after.items():
        if name in trainable:
            assert not torch.equal(p.detach(), trainable[name]), f"{name} did not train"
        else:
            assert not p.requires_grad and torch.equal(p.detach(), frozen[id(p)]), f"{name} changed"

    # Saved small, the PEFT way; loads onto the rebuilt base with the very same outputs.
    folder = tmp_path / "model"
    steps.save_model(model, tokenizer, folder, state)
    names = {f.name for f in folder.iterdir()}
    if case.startswith("soft"):
        assert {"soft_prompt.safetensors", "soft_prompt.json"} <= names
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= names
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    assert "model.safetensors" not in names and tuning.METADATA in names
    figures = tuning.figures(model, folder, state)
    assert figures["trainable_parameters"] == expected_trainable
    assert figures["trainable_share"] == pytest.approx(expected_trainable / n_total)
    assert figures["adapter_bytes"] < 300_000 and figures["adapter_folder_bytes"] < 400_000

    cfg_eval = dataclasses.replace(cfg, tuning=dataclasses.replace(cfg.tuning, adapter=str(folder)))
    tokenizer2, loaded = steps.get_model(cfg_eval, None)
    assert len(tokenizer2) == len(tokenizer)
    sources = [s for s, _ in steps.render(template, task.test[:6], tokenizer2)]
    assert sources == [s for s, _ in steps.render(template, task.test[:6], tokenizer)]
    batch = collate(tokenize_pairs(tokenizer2, pairs[:6], 64, 32), 0)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        kwargs.update(max_new_tokens=6, num_beams=1, do_sample=False)
        assert torch.equal(model.generate(**kwargs), loaded.generate(**kwargs))


def test_rebuilt_base_is_bitwise_the_one_trained_on(tiny_world, tmp_path):
    _, tokenizer, built = tiny_world
    cfg = compose_train()
    record = base_model.identity(cfg.model, cfg.seed, built)
    assert record["seed"] == 42 and record["build"]["d_model"] == D_MODEL and record["weights"]
    tokenizer.save_pretrained(str(tmp_path))
    _, rebuilt = base_model.load_base(record, tmp_path)
    original, again = built.state_dict(), rebuilt.state_dict()
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k].cpu(), again[k]) for k in original)
    # Another seed builds other weights: refused by the fingerprint, naming the adapter and the base.
    with pytest.raises(ConfigError, match=r"tuning.adapter=.*'tiny' \(built from model.build, seed 7\).*"):
        base_model.load_base({**record, "seed": 7}, tmp_path)


@pytest.fixture(scope="module")
def lora_adapter(tiny_world, tmp_path_factory) -> Path:
    """An (untrained) LoRA adapter of the tiny base, saved."""
    task, tokenizer, built = tiny_world
    cfg = compose_train("tuning=lora")
    model, tokenizer, state = tuning.apply_tuning(
        copy.deepcopy(built), tokenizer, cfg, steps.get_template(cfg, task), task
    )
    folder = tmp_path_factory.mktemp("lora") / "model"
    steps.save_model(model, tokenizer, folder, state)
    return folder


def test_adapter_for_another_base_is_refused(lora_adapter):
    cfg = compose_train("tuning=lora", "model.build.d_model=64", f"tuning.adapter={lora_adapter}")
    with pytest.raises(ConfigError) as err:
        steps.get_model(cfg, None)
    message = str(err.value)
    assert "\n" not in message
    assert str(lora_adapter) in message and "'tiny' (built from model.build, seed 42)" in message
    assert "model.build" in message and "'d_model': 128" in message and "'d_model': 64" in message


def test_base_that_cannot_be_found_is_refused(lora_adapter, tmp_path):
    moved = tmp_path / "model"
    moved.mkdir()
    for f in lora_adapter.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    meta = json.loads((moved / tuning.METADATA).read_text())
    meta["base"].update(name_or_path=str(tmp_path / "gone" / "t5"), build=None, tokenizer_vocab_size=None)
    (moved / tuning.METADATA).write_text(json.dumps(meta))
    cfg = compose_train("tuning=lora", f"model.name_or_path={tmp_path / 'gone' / 't5'}", "model.build=null")
    cfg = dataclasses.replace(cfg, tuning=dataclasses.replace(cfg.tuning, adapter=str(moved)))
    with pytest.raises(ConfigError) as err:
        steps.get_model(cfg, None)
    message = str(err.value)
    assert "\n" not in message and str(moved) in message
    assert f"'{tmp_path / 'gone' / 't5'}'" in message and "cannot be loaded" in message


def test_template_and_method_must_agree(tiny_world):
    task, tokenizer, built = tiny_world
    for overrides, expected in [  # regular expressions
        (["tuning=lora", "template=pre_prompt"], r"places \{soft:N\} tokens, which only tuning=soft trains"),
        (["tuning=soft", "template=masked_prompting"], r"tuning=soft needs a template with \{soft:N\}"),
        (["tuning=prompt", "tuning.init=text"], "tuning.init=text needs tuning.init_text"),
        (["tuning=lora", "tuning.peft.lora_dropout=1.5"], r"tuning.peft \(LoraConfig\): dropout probability"),
        (["tuning=lora", "+tuning.peft.rank=4"], r"tuning.peft \(LoraConfig\): .*unexpected keyword .*rank"),
        (["tuning=lora", "+tuning.peft.bias=all"], "tuning.peft.bias: set by mto for tuning=lora"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            cfg = compose_train(*overrides)  # settings a method cannot use are refused here ...
            tuning.apply_tuning(built, tokenizer, cfg, steps.get_template(cfg, task), task)  # ... or here
    assert not any(hasattr(m, "lora_A") for m in built.modules())


# ---------------------------------------------------------------- where the soft tokens land
def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("pre_prompt", "{soft} PersonX buys a ticket because PersonX intended"),
        ("post_prompt", "PersonX buys a ticket {soft} because PersonX intended"),
        ("masked_pre_prompt", "{soft} PersonX buys a ticket because PersonX intended <extra_id_0>"),
        ("masked_post_prompt", "PersonX buys a ticket {soft} because PersonX intended <extra_id_0>"),
    ],
)
@pytest.mark.parametrize("per_relation", [False, True])
def test_soft_tokens_land_where_the_template_puts_them(tiny_world, name, source, per_relation):
    _, base_tokenizer, _ = tiny_world
    tokenizer = copy.deepcopy(base_tokenizer)
    sets = soft.token_sets(N_TOKENS, ["xIntent", "xNeed"] if per_relation else None)
    first = soft.add_soft_tokens(tokenizer, sets)
    assert first == len(base_tokenizer)
    template = load_template(name, {"xIntent": "because PersonX intended"})
    assert template.n_soft == N_TOKENS
    src, tgt = template.render(TRIPLE, lambda i: sentinel(tokenizer, i), soft.render_soft(tokenizer))
    names = [f"<soft_xIntent_{i}>" if per_relation else f"<soft_{i}>" for i in range(N_TOKENS)]
    assert src == source.replace("{soft}", " ".join(names))
    assert tgt == ("<extra_id_0> to see a movie" if name.startswith("masked") else "to see a movie")

    soft_ids = list(range(first, first + N_TOKENS))  # xIntent's set comes first
    head = ids_of(tokenizer, "PersonX buys a ticket")
    phrase = ids_of(tokenizer, "because PersonX intended")
    mask = [tokenizer.convert_tokens_to_ids("<extra_id_0>")] if name.startswith("masked") else []
    pieces = [soft_ids, head, phrase] if "pre" in name else [head, soft_ids, phrase]
    expected = [i for piece in pieces for i in piece] + mask + [tokenizer.eos_token_id]
    assert tokenizer(src)["input_ids"] == expected


def test_soft_placeholder_syntax():
    assert placeholders("{soft:4} {head} {phrase}", "t") == ["soft", "head", "phrase"]
    for bad in ("{soft} {head}", "{soft:x} {head}", "{soft:0} {head}", "{soft!r:2}"):
        with pytest.raises(ConfigError, match="soft"):
            placeholders(bad, "template.source")
    with pytest.raises(ConfigError, match="belongs in the source"):
        Template("t", source="{head} {soft:2}", target="{soft:2} {tail}")
    # Two placeholders number on: 4 distinct tokens; a preview renders the shared names.
    two = Template("t", source="{soft:2} {head} {soft:2}", target="{tail}")
    assert two.n_soft == 4
    assert two.render(TRIPLE, str)[0] == "<soft_0> <soft_1> PersonX buys a ticket <soft_2> <soft_3>"


def test_soft_template_without_a_soft_prompt_is_refused(tiny_world):
    _, tokenizer, _ = tiny_world
    template = load_template("pre_prompt", {"xIntent": "because PersonX intended"})
    with pytest.raises(ConfigError, match="train with tuning=soft"):
        steps.render(template, [TRIPLE], tokenizer)


# ---------------------------------------------------------------- the real CLI: train, then eval run=
@pytest.mark.parametrize(
    ("overrides", "weights_file", "trainable"),
    [
        (["tuning=lora", "tuning.lr=0.01"], "adapter_model.safetensors", EXPECTED["lora"]),
        (["tuning=soft", "template=masked_post_prompt"], "soft_prompt.safetensors", EXPECTED["soft"]),
    ],
)
@pytest.mark.slow
def test_cli_eval_of_an_adapter_run_reproduces_its_predictions(tmp_path, overrides, weights_file, trainable):
    mto("train", *overrides, *SMALL, "threads=1", cwd=tmp_path)
    (trained,) = run_dirs(tmp_path / "outputs" / "train")
    figures = read_json(trained / "run.json")["figures"]
    assert figures["trainable_parameters"] == trainable
    assert figures["total_parameters"] == figures["parameters"] == figures["total_parameters"]
    assert figures["adapter_bytes"] == (trained / "model" / weights_file).stat().st_size < 200_000
    assert not (trained / "model" / "model.safetensors").exists()

    mto("eval", f"run={trained}", "seed=5", cwd=tmp_path)
    (evaluated,) = run_dirs(tmp_path / "outputs" / "eval")
    assert read_json(evaluated / "run.json")["status"] == "completed"
    assert (evaluated / "predictions.jsonl").read_text() == (trained / "predictions.jsonl").read_text()
    assert read_json(evaluated / "metrics.json")["rougeL"] == read_json(trained / "metrics.json")["rougeL"]


# ---------------------------------------------------------------- initialisation
def test_prompt_initialisations(tiny_world):
    task, tokenizer, built = tiny_world
    embed = built.get_input_embeddings()
    phrase = ids_of(tokenizer, "because PersonX intended")
    cycled = (phrase * N_TOKENS)[:N_TOKENS]

    def init(kind, texts=(), seed=0):
        return initial_vectors(kind, N_TOKENS, embed, D_MODEL, tokenizer, embed.num_embeddings, texts, seed)

    with torch.no_grad():
        assert torch.equal(init("phrase", ["because PersonX intended"]), embed(torch.tensor(cycled)))
        two = init("phrase", ["because PersonX intended", "PersonX buys a ticket"])
        other = (ids_of(tokenizer, "PersonX buys a ticket") * N_TOKENS)[:N_TOKENS]
        mean = (embed(torch.tensor(cycled)) + embed(torch.tensor(other))) / 2
        assert torch.allclose(two, mean)
        vocab = init("vocab", seed=3)
        assert torch.equal(vocab, init("vocab", seed=3)) and not torch.equal(vocab, init("vocab", seed=4))
        excluded = set(tokenizer.all_special_ids) | set(range(len(tokenizer) - 100, len(tokenizer)))
        words = [i for i in range(len(tokenizer)) if i not in excluded]
        for row in vocab:  # each row is the embedding of an ordinary word (no pad, EOS, unk, sentinel)
            assert any(torch.equal(row, embed.weight[i]) for i in words)
        uniform = init("uniform")
        assert uniform.shape == (N_TOKENS, D_MODEL) and uniform.abs().max() <= 0.5 and uniform.std() > 0.2

    # PEFT prompt tuning starts from tuning.init_text's words; a soft prompt per relation from its phrase.
    cfg = compose_train("tuning=prompt", "tuning.init=text", "tuning.init_text='because PersonX intended'")
    model, _, _ = tuning.apply_tuning(
        copy.deepcopy(built), tokenizer, cfg, steps.get_template(cfg, task), task
    )
    with torch.no_grad():
        assert torch.equal(model.prompt_encoder["default"].embedding.weight, embed(torch.tensor(cycled)))
    cfg = compose_train(
        "tuning=soft", "template=pre_prompt", "tuning.per_relation=true", "tuning.init=phrase"
    )
    model, run_tokenizer, _ = tuning.apply_tuning(
        copy.deepcopy(built), tokenizer, cfg, steps.get_template(cfg, task), task
    )
    rows = soft.soft_prompt(model).embedding
    xintent = list(run_tokenizer.mto_soft["sets"]).index("xIntent")
    with torch.no_grad():
        assert torch.equal(rows[xintent * N_TOKENS : (xintent + 1) * N_TOKENS], embed(torch.tensor(cycled)))
