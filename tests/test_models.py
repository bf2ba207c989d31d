"""Tests for mto.models: the offline tiny T5 (tokenizer + model) and loading saved models back."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import huggingface_hub.constants
import pytest
import torch
from omegaconf import OmegaConf

import mto.models as models
from mto.config import ModelConfig
from mto.errors import ConfigError, MtoError
from mto.models import is_encoder_decoder, load_tokenizer_and_model, sentinel

# An ATOMIC-like corpus with a small vocabulary: the case where SentencePiece's unigram trainer alone
# would split frequent words ("to", "PersonX") into pieces.
CORPUS = [
    "PersonX buys a ticket",
    "to see a movie",
    "to watch a film",
    "PersonX goes to the store",
    "to buy food",
    "PersonX wanted to eat",
    "PersonX pays PersonY a compliment",
    "to be nice",
    "PersonX reads a book",
    "to learn something new",
    "PersonX calls PersonY's mother",
    "to talk to her",
    "PersonX buys a ticket because PersonX wanted to see a movie.",
    "PersonX reads a book because PersonX wanted to learn.",
    "Before that, PersonX needed to have money.",
]
BUILD = {
    "d_model": 32,
    "d_ff": 64,
    "num_layers": 1,
    "num_decoder_layers": 1,
    "num_heads": 2,
    "d_kv": 16,
    "feed_forward_proj": "relu",
    "dropout_rate": 0.0,
}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh project cache per test; the Hub is never asked (a missing name fails at once)."""
    monkeypatch.setenv("MTO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "cache"


def tiny_cfg(**overrides):
    """A `model=tiny`-like config with a very small architecture."""
    values = {"name_or_path": "tiny", "build": dict(BUILD), "tokenizer_vocab_size": 300}
    values.update(overrides)
    return ModelConfig(**values)


def tiny(seed: int = 0, **overrides):
    return load_tokenizer_and_model(tiny_cfg(**overrides), corpus=lambda: list(CORPUS), seed=seed)


def test_special_ids_and_sentinels_take_the_highest_ids():
    tok, model = tiny()
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    size = len(tok)
    assert size <= 300  # the asked size is a ceiling: this corpus supports fewer pieces
    assert tok.convert_tokens_to_ids("<extra_id_0>") == size - 1
    assert tok.convert_tokens_to_ids("<extra_id_99>") == size - 100
    assert model.config.vocab_size == size


def test_sentinel_is_one_token_inside_a_sentence():
    tok, _ = tiny()
    text = "PersonX buys a ticket because PersonX wanted"
    ids = tok(f"{text} <extra_id_0>").input_ids
    last = len(tok) - 1
    assert ids[-2:] == [last, tok.eos_token_id]
    assert ids.count(last) == 1
    assert ids[:-2] == tok(text, add_special_tokens=False).input_ids


def test_round_trip_of_corpus_text_and_frequent_words_stay_whole():
    tok, _ = tiny()
    for text in CORPUS:
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    # Without the seeded retraining, SentencePiece 0.2.3 gave "▁" "to" and "▁Person" "X" here.
    for word in ("PersonX", "to", "a", "wanted"):
        assert tok.tokenize(word) == ["\u2581" + word]
    # A character the corpus never had is <unk> (T5Tokenizer has no byte fallback).
    assert tok.unk_token_id in tok("PersonZ").input_ids


def test_tokenizer_is_cached_and_loads_without_protobuf(cache, monkeypatch):
    tok, _ = tiny()
    entries = list((cache / "tokenizer").iterdir())
    assert len(entries) == 1
    assert (entries[0] / "tokenizer.json").is_file()
    assert not (entries[0] / "spiece.model").exists()  # loading a .model would need protobuf

    def no_training(*args, **kwargs):
        raise AssertionError("the cached tokenizer should have been used")

    monkeypatch.setattr(models, "_train_sentencepiece", no_training)
    monkeypatch.setitem(sys.modules, "google.protobuf", None)  # any protobuf import now fails
    again, _ = tiny()
    assert again.get_vocab() == tok.get_vocab()
    assert again(CORPUS[-1]).input_ids == tok(CORPUS[-1]).input_ids
    # Another vocabulary size is another cache entry: it must train.
    with pytest.raises(AssertionError, match="cached tokenizer"):
        tiny(tokenizer_vocab_size=250)


def test_same_seed_same_weights_other_seed_other_weights():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    _, first = tiny(seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # building does not move the caller's RNG
    _, second = tiny(seed=0)
    _, other = tiny(seed=1)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["shared.weight"], c["shared.weight"])


def test_the_composed_config_is_accepted():
    node = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name_or_path": "tiny", "build": BUILD})
    cfg = OmegaConf.to_object(OmegaConf.merge(node, {"tokenizer_vocab_size": 300}))
    tok, model = load_tokenizer_and_model(cfg, corpus=lambda: list(CORPUS), seed=0)
    assert model.config.d_model == 32 and model.config.num_layers == 1
    assert is_encoder_decoder(model)


def test_forward_with_labels_and_generate():
    tok, model = tiny()
    cfg, gen = model.config, model.generation_config
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (0, 1, 0)
    assert (gen.pad_token_id, gen.eos_token_id, gen.decoder_start_token_id) == (0, 1, 0)
    batch = tok(
        ["PersonX buys a ticket <extra_id_0>", "PersonX reads a book"], padding=True, return_tensors="pt"
    )
    labels = tok(["<extra_id_0> to see a movie", "to learn"], padding=True, return_tensors="pt").input_ids
    labels[labels == tok.pad_token_id] = -100
    model.eval()
    with torch.no_grad():
        out = model(**batch, labels=labels)
    # A fresh model predicts close to uniformly: the loss is near ln(vocabulary size).
    assert abs(out.loss.item() - math.log(len(tok))) < 1.0
    assert out.logits.shape == (2, labels.shape[1], len(tok))
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 2 and 2 <= generated.shape[1] <= 4
    assert generated[:, 0].tolist() == [0, 0]  # decoding starts from <pad>


def test_saved_tiny_model_loads_back_identically(tmp_path):
    tok, model = tiny()
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    tok2, model2 = load_tokenizer_and_model(ModelConfig(name_or_path=str(folder)))
    assert type(model2).__name__ == "T5ForConditionalGeneration"
    a, b = model.state_dict(), model2.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    texts = [*CORPUS, "PersonX buys a ticket because PersonX wanted <extra_id_0>"]
    assert [tok2(t).input_ids for t in texts] == [tok(t).input_ids for t in texts]
    assert model2.generation_config.decoder_start_token_id == 0
    batch = tok(CORPUS[:2], padding=True, return_tensors="pt")
    start = torch.zeros((2, 1), dtype=torch.long)
    model.eval()
    model2.eval()
    with torch.no_grad():
        assert torch.equal(
            model(**batch, decoder_input_ids=start).logits, model2(**batch, decoder_input_ids=start).logits
        )


def test_missing_model_names_fail_in_one_line(tmp_path):
    with pytest.raises(MtoError, match=r"model.name_or_path=/no/such/model: no such folder"):
        load_tokenizer_and_model(ModelConfig(name_or_path="/no/such/model"))
    with pytest.raises(MtoError) as info:
        load_tokenizer_and_model(ModelConfig(name_or_path="no-such-org-mto/no-such-model"))
    message = str(info.value)
    assert message.startswith("model.name_or_path=no-such-org-mto/no-such-model: not a local folder")
    assert "\n" not in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MtoError, match="cannot load a model from this folder"):
        load_tokenizer_and_model(ModelConfig(name_or_path=str(empty)))


def test_bad_build_settings_are_config_errors_before_any_training():
    def corpus():
        raise AssertionError("a config error should stop before the tokenizer is trained")

    cases = {
        "model.build.d_modle": {**BUILD, "d_modle": 64},
        "model.build.vocab_size": {**BUILD, "vocab_size": 500},
    }
    for key, build in cases.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_tokenizer_and_model(tiny_cfg(build=build), corpus=corpus)
    with pytest.raises(ConfigError, match=r"model\.build: .*d_model"):
        tiny(build={**BUILD, "d_model": "wide"})
    with pytest.raises(ConfigError, match="no text corpus"):
        load_tokenizer_and_model(tiny_cfg())
    with pytest.raises(ConfigError, match="corpus .* is empty"):
        load_tokenizer_and_model(tiny_cfg(), corpus=lambda: ["", "  "])


def test_sentinel_for_t5_and_bart_like_tokenizers():
    from transformers import BartTokenizer, GPT2Config, GPT2LMHeadModel

    tok, model = tiny()
    assert sentinel(tok, 0) == "<extra_id_0>"
    assert sentinel(tok, 7) == "<extra_id_7>"
    with pytest.raises(ConfigError, match="no sentinel <extra_id_100>: too many masks"):
        sentinel(tok, 100)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "\u0120a": 5, "<mask>": 6}
    bart = BartTokenizer(vocab=vocab, merges=[])
    assert sentinel(bart, 0) == "<mask>"
    with pytest.raises(ConfigError, match="BART has a single <mask> token"):
        sentinel(bart, 1)
    plain = SimpleNamespace(unk_token_id=3, mask_token=None, convert_tokens_to_ids=lambda token: 3)
    with pytest.raises(ConfigError, match="no sentinel <extra_id_0> and no mask token: .* T5 or BART"):
        sentinel(plain, 0)
    assert is_encoder_decoder(model)
    decoder_only = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=16))
    assert not is_encoder_decoder(decoder_only)
