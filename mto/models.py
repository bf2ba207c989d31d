"""Load the tokenizer and the encoder-decoder model a run uses.

Two routes, chosen by `cfg.build`:

- `build` is None: a real checkpoint (`model.name_or_path`, a local folder or a Hugging Face Hub name),
  loaded with the Auto classes. Weights load safely: transformers prefers `model.safetensors` and only
  falls back to a `pytorch_model.bin` through `torch.load(weights_only=True)`; we never ask for more.
- `build` is a dict of `T5Config` arguments ("model=tiny"): a T5 trained from scratch, with a
  SentencePiece tokenizer learnt offline on the task's own text and cached in the project cache.

A model from the second route, saved with `save_pretrained`, loads back through the first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError

from mto.cache import cached_dir, fingerprint
from mto.errors import ConfigError, MtoError

if TYPE_CHECKING:
    from mto.config import ModelConfig

# Bump when the way tokenizers are trained or laid out changes: old cache entries are then ignored.
TOKENIZER_VERSION = 1
# T5's sentinel count; sentinels take the highest ids, `<extra_id_0>` the very last one.
N_SENTINELS = 100
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
# SentencePiece's own default cap on seed pieces.
_MAX_SEEDS = 1_000_000
# Set by us from the tokenizer, so a `model.build` may not set them.
_DERIVED_KEYS = ("vocab_size", "pad_token_id", "eos_token_id", "decoder_start_token_id")


def load_tokenizer_and_model(
    cfg: ModelConfig, corpus: Callable[[], list[str]] | None = None, seed: int = 0
) -> tuple[Any, Any]:
    """Return `(tokenizer, model)` for the model config `cfg` (the `model` group of a run config).

    `corpus` supplies the text to train a tokenizer on; it is called only when `cfg.build` is set.
    `seed` fixes the random initialisation of a built model (it does not touch the global RNG).
    """
    if cfg.build is None:
        return _load_pretrained(cfg.name_or_path, cfg.trust_remote_code, cfg.revision)
    build, vocab_size = dict(cfg.build), cfg.tokenizer_vocab_size
    if corpus is None:
        raise ConfigError("model.build is set (a model trained from scratch) but no text corpus was given")
    # Check the architecture before the (slower) tokenizer training, so config typos fail fast.
    _check_build_keys(build)
    tokenizer = load_or_train_tokenizer(corpus(), vocab_size)
    model = build_t5(build, tokenizer, seed)
    return tokenizer, model


def sentinel(tokenizer: Any, i: int) -> str:
    """The text of the i-th mask/sentinel token: `<extra_id_{i}>` (T5), or BART's single `<mask>`."""
    if i < 0:
        raise ValueError(f"sentinel index must be >= 0, got {i}")
    token = f"<extra_id_{i}>"
    if _has_token(tokenizer, token):
        return token
    if _has_token(tokenizer, "<extra_id_0>"):
        raise ConfigError(
            f"the tokenizer has no sentinel {token}: too many masks for its <extra_id_*> tokens"
        )
    mask = getattr(tokenizer, "mask_token", None)
    if mask is not None:
        if i == 0:
            return str(mask)
        raise ConfigError(
            "BART has a single <mask> token: templates with more than one {mask} need a T5 tokenizer"
        )
    raise ConfigError(
        f"the tokenizer has no sentinel {token} and no mask token: masked templates need T5 or BART"
    )


def _has_token(tokenizer: Any, token: str) -> bool:
    """Whether `token` is one token of the vocabulary (unknown tokens map to <unk> or None)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def is_encoder_decoder(model: Any) -> bool:
    """True for T5/BART-like models (separate encoder and decoder), False for decoder-only ones."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


# --- route 1: a real checkpoint ---------------------------------------------------------------------


def _load_pretrained(name: str, trust_remote_code: bool, revision: str | None) -> tuple[Any, Any]:
    """Load tokenizer and seq2seq model from a local folder or the Hub; one-line MtoError if impossible."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    local = Path(name).expanduser()
    is_local = local.is_dir()
    if not is_local and name.startswith(("/", "./", "../", "~")):
        # Clearly meant as a path: say so at once rather than asking the Hub about it.
        raise MtoError(f"model.name_or_path={name}: no such folder")
    source = str(local) if is_local else name
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = str(revision)
    # Without the Hub, huggingface_hub retries for about a minute: ask the cache only, at once.
    offline = None if is_local else _hub_unreachable()
    if offline:
        logging.getLogger("mto").warning("%s: loading %s from the local cache only", offline, name)
        kwargs["local_files_only"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        # `use_safetensors=None` (the default) prefers safetensors and falls back to .bin files only via
        # `torch.load(weights_only=True)`; `use_safetensors=True` would refuse old .bin-only checkpoints
        # and, online, ask a Hub bot to convert them.
        # (transformers does not pass local_files_only on to its look-up of a PEFT adapter: we do.)
        extra = {"adapter_kwargs": {"local_files_only": True}} if offline else {}
        model = AutoModelForSeq2SeqLM.from_pretrained(source, weights_only=True, **kwargs, **extra)
    except (OSError, ValueError, pickle.UnpicklingError, SafetensorError) as err:  # missing, corrupt, refused
        if offline:
            from huggingface_hub.constants import HF_HUB_CACHE

            raise MtoError(
                f"model.name_or_path={name}: not a local folder, not in the local cache ({HF_HUB_CACHE}),"
                f" and {offline}; download it where there is network (`hf download {name}`), or point"
                " at a local folder with its config.json, weights and tokenizer:"
                " model.name_or_path=/path/to/folder"
            ) from err
        where = "not a local folder and not reachable on the Hugging Face Hub"
        if is_local:
            where = "cannot load a model from this folder"
        raise MtoError(f"model.name_or_path={name}: {where} ({_short(err)})") from err
    return tokenizer, model


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face Hub cannot be asked (HF_HUB_OFFLINE set, or no TCP connection to its endpoint,
    or to the proxy in front of it, within `timeout` seconds, name lookup included), or None."""
    import socket
    import threading
    import urllib.parse
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 8080
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(str(err.strerror or err))

    thread = threading.Thread(target=connect, daemon=True)  # a name lookup ignores socket timeouts
    thread.start()
    thread.join(timeout)
    if outcome and outcome[0] is None:
        return None
    why = outcome[0] if outcome else f"no answer in {timeout:.0f} s"
    return f"the Hugging Face Hub ({host}:{port}) is unreachable ({why})"


# --- route 2: a T5 built from scratch ---------------------------------------------------------------


def load_or_train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A T5 tokenizer trained on `texts`, built once and then loaded from the project cache.

    `vocab_size` counts everything: <pad>, </s>, <unk>, the learnt pieces and the 100 sentinels. A corpus
    too small to support that many pieces gets fewer (SentencePiece's `hard_vocab_limit=False`).
    """
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ConfigError("model.build: the corpus to train the tokenizer on is empty")
    key = fingerprint({"corpus": _corpus_hash(texts), "vocab_size": vocab_size, "version": TOKENIZER_VERSION})
    folder = cached_dir("tokenizer", key, lambda tmp: _build_tokenizer_dir(tmp, texts, vocab_size))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    _check_special_ids(tokenizer)
    return tokenizer


def _build_tokenizer_dir(folder: Path, texts: list[str], vocab_size: int) -> None:
    """Train SentencePiece on `texts` and save the matching T5 tokenizer into `folder`."""
    tokenizer = t5_tokenizer_from_pieces(_train_sentencepiece(texts, vocab_size))
    tokenizer.save_pretrained(str(folder))
    meta = {"vocab_size_requested": vocab_size, "size": len(tokenizer), "n_texts": len(texts)}
    (folder / "mto_tokenizer.json").write_text(json.dumps(meta, indent=1) + "\n")


def _train_sentencepiece(texts: list[str], vocab_size: int) -> list[tuple[str, float]]:
    """Train a SentencePiece unigram model in memory; return its (piece, score) pairs after the specials.

    Unigram, because transformers' T5Tokenizer always segments with a Unigram model: BPE pieces with
    BPE scores would be segmented differently from what SentencePiece learnt. `identity` normalisation,
    because a reloaded T5Tokenizer keeps no normaliser other than SentencePiece's precompiled one, whose
    bytes can only be read from the model file with protobuf.
    """
    n_pieces = vocab_size - N_SENTINELS
    processor = _sentencepiece_unigram(texts, n_pieces)
    if processor.get_piece_size() < n_pieces:
        # SentencePiece 0.2.x seeds its unigram vocabulary only with substrings shared by two distinct
        # words, so on a small vocabulary (the synthetic world: ~800 words) whole words like "▁to" are
        # never candidates and words split into letters. When it stops short of the asked size, retrain
        # from seeds of every word substring and keep whichever vocabulary encodes the corpus shorter.
        try:
            seeded = _sentencepiece_unigram(texts, n_pieces, seeds=_substring_seeds(texts))
        except ConfigError:  # a SentencePiece without `seed_sentencepieces_file`: keep the first vocabulary
            seeded = None
        if seeded is not None and _n_tokens(seeded, texts) < _n_tokens(processor, texts):
            processor = seeded
    return [(processor.id_to_piece(i), processor.get_score(i)) for i in range(3, processor.get_piece_size())]


def _sentencepiece_unigram(texts: list[str], n_pieces: int, seeds: Counter[str] | None = None) -> Any:
    """One SentencePiece training run (in memory, one thread, quiet); ConfigError if it cannot train."""
    import sentencepiece as spm

    options: dict[str, Any] = {
        "vocab_size": n_pieces,
        "model_type": "unigram",
        "pad_id": PAD_ID,
        "eos_id": EOS_ID,
        "unk_id": UNK_ID,
        "bos_id": -1,
        "character_coverage": 1.0,  # every character of the task text gets a piece: no <unk> on it
        "normalization_rule_name": "identity",
        "hard_vocab_limit": False,  # a small corpus may not support the full size: take fewer pieces
        "num_threads": 1,
        "minloglevel": 2,
    }
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="mto-spm-") as tmp:
        if seeds is not None:
            seed_file = Path(tmp) / "seeds.tsv"
            lines = (f"{piece}\t{count}\n" for piece, count in seeds.most_common(_MAX_SEEDS))
            seed_file.write_text("".join(lines), encoding="utf-8")
            options["seed_sentencepieces_file"] = str(seed_file)
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buffer, **options)
        except RuntimeError as err:
            size = n_pieces + N_SENTINELS
            raise ConfigError(
                f"model.tokenizer_vocab_size={size}: cannot train the tokenizer ({_short(err)})"
            ) from err
    return spm.SentencePieceProcessor(model_proto=buffer.getvalue())


def _substring_seeds(texts: list[str], max_len: int = 16) -> Counter[str]:
    """Every substring (2 to `max_len` characters) of every "▁word", counted over the corpus."""
    words = Counter(word for text in texts for word in text.split())
    seeds: Counter[str] = Counter()
    for word, count in words.items():
        marked = "\u2581" + word
        for i in range(len(marked)):
            for j in range(i + 2, min(len(marked), i + max_len) + 1):
                seeds[marked[i:j]] += count
    return seeds


def _n_tokens(processor: Any, texts: list[str]) -> int:
    """How many pieces the corpus takes (fewer is better: the unigram objective is compression)."""
    return sum(len(ids) for ids in processor.encode(texts))


def t5_tokenizer_from_pieces(pieces: list[tuple[str, float]]) -> Any:
    """A T5Tokenizer laid out as T5 expects: <pad>, </s>, <unk>, the pieces, <extra_id_99> ... <extra_id_0>.

    Built from the (piece, score) list because `T5Tokenizer(vocab_file=...)` in transformers 5.x ignores
    the file and makes an empty vocabulary.
    """
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(N_SENTINELS - 1, -1, -1)]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=N_SENTINELS)
    _check_special_ids(tokenizer)
    return tokenizer


def _check_special_ids(tokenizer: Any) -> None:
    """The ids the model config relies on; a silent shift here would corrupt training."""
    got = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    if got != (PAD_ID, EOS_ID, UNK_ID):
        raise MtoError(f"tokenizer special ids (pad, eos, unk) are {got}, expected (0, 1, 2)")
    last = len(tokenizer) - 1
    if tokenizer.convert_tokens_to_ids("<extra_id_0>") != last:
        raise MtoError(f"tokenizer: <extra_id_0> should have the highest id {last}")


def build_t5(build: Mapping[str, Any], tokenizer: Any, seed: int) -> Any:
    """A randomly initialised T5ForConditionalGeneration; the same seed gives the same weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    _check_build_keys(build)
    ids = {"pad_token_id": PAD_ID, "eos_token_id": EOS_ID, "decoder_start_token_id": PAD_ID}
    try:
        config = T5Config(**build, vocab_size=len(tokenizer), **ids)
    except (StrictDataclassError, TypeError, ValueError) as err:  # bad types or values in model.build
        raise ConfigError(f"model.build: {_short(err)}") from err
    # fork_rng: reproducible weights without changing the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    return model


def _check_build_keys(build: Mapping[str, Any]) -> None:
    """Every key must be a T5Config setting we do not derive ourselves."""
    from transformers import T5Config

    known = {f.name for f in dataclasses.fields(T5Config)} | set(T5Config.attribute_map)
    known |= set(T5Config().to_dict())  # inherited settings (tie_word_embeddings, bos_token_id, ...)
    for key in build:
        if key in _DERIVED_KEYS:
            raise ConfigError(f"model.build.{key}: set from the tokenizer, remove it from the config")
        if key not in known:
            raise ConfigError(f"model.build.{key}: not a T5Config setting (e.g. d_model, d_ff, num_layers)")


# --- small helpers ----------------------------------------------------------------------------------


def _corpus_hash(texts: list[str]) -> str:
    """A hash of the corpus text, streamed so large corpora are not joined in memory."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _short(err: BaseException, limit: int = 200) -> str:
    """The first two lines of an error message on one line, cut to `limit` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
