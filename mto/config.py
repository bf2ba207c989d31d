"""Structured configs: the schema every stage's YAML is validated against.

Each dataclass mirrors one config group in `conf/` (model/, data/, template/, objective/, tuning/) or
one settings block (train, eval). Hydra merges the YAML files into these typed nodes, so a wrong type
or an unknown key is refused with the full key named (e.g. `Key 'lrr' not in 'TrainConfig'`), and
enum-valued keys list their valid values.

This module also registers the OmegaConf resolvers the configs use; it is imported by every stage
(and so by every submitit worker) before any config is resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast where the device supports it (CUDA bf16, CPUs with AVX-512 BF16/AMX)
    fp32 = "fp32"
    bf16 = "bf16"


class Scheduler(str, Enum):
    linear = "linear"
    constant = "constant"


@dataclass
class ModelConfig:
    """Which model and tokenizer a run starts from."""

    name_or_path: str = MISSING  # hub name or local folder, loaded with `from_pretrained`
    # T5Config keyword arguments: when set, build a randomly initialised T5 of this shape with a
    # SentencePiece tokenizer trained offline on the task's text (the embedded `tiny` default).
    build: Optional[dict[str, Any]] = None
    tokenizer_vocab_size: int = 1000  # pieces of the offline tokenizer (only with `build`)
    trust_remote_code: bool = False
    revision: Optional[str] = None


@dataclass
class DataConfig:
    """Which task, where its files are, and which part of it to use."""

    name: str = MISSING
    kind: str = MISSING  # synthetic | atomic | qa | text2text
    # atomic: folder of train/dev/test.tsv; qa/text2text: folder of split files (null: load data.hub)
    path: Optional[str] = None
    relations: Optional[list[str]] = None  # keep only these relations (all when null)
    n_train: Optional[int] = None  # few-shot: heads per relation (QA, text2text: examples) sampled from train
    sample_seed: int = 0  # seed of the few-shot sample
    drop_none: bool = True  # drop `none` tails, as the ATOMIC-2020 papers do
    n_heads: int = 600  # synthetic world: number of heads
    world_seed: int = 0  # synthetic world: generator seed
    # qa/text2text: split -> file in data.path (.jsonl/.csv; no extension: either; null: no such split)
    files: Optional[dict[str, Optional[str]]] = None
    hub: Optional[str] = None  # qa/text2text: Hugging Face dataset, loaded only when data.path is null
    subset: Optional[str] = None  # hub dataset configuration (e.g. openbookqa: main)
    revision: Optional[str] = None  # hub revision
    hub_splits: Optional[dict[str, Optional[str]]] = None  # our split -> the hub's (null: no such split)
    fields: Optional[dict[str, Any]] = None  # record part -> dotted path (QA choices: a path or a list)
    answer_is: str = "label"  # qa: how the answer field reads: label | index | index1 | text


@dataclass
class TemplateConfig:
    """How one example is rendered into a source and a target (see mto/templates.py)."""

    name: str = MISSING
    objective: str = MISSING  # the objective family the template is aligned with: mapping | filling
    source: str = MISSING
    target: str = MISSING


@dataclass
class ObjectiveConfig:
    """The pre-training objective used to adapt a model (mto adapt; see mto/objectives/)."""

    name: str = MISSING  # mapping | filling | span_corruption | prefix_lm | mixed | auto (from match_run)
    form: str = "auto"  # filling: auto (records: tail filling, texts: span corruption) | tail | span
    noise_density: float = 0.15  # span corruption
    mean_noise_span_length: float = 3.0
    input_length: int = 64  # span corruption: corrupted input length (EOS included); prefix_lm: chunk size
    pack: bool = True  # span corruption: concatenate texts and cut blocks (T5); false: each text alone
    random_roll: bool = False  # seqio's random_roll
    random_noise_count: bool = False  # noise count ~ Binomial(L, density) instead of round(L x density)
    # mixed. `Any`, not Optional[dict]: overriding a None typed dict crashes OmegaConf (omegaconf #1360).
    by_group: Any = None  # group (relation) -> objective
    default: Optional[str] = None  # objective for examples by_group does not route (wins over rates)
    rates: Any = None  # objective -> weight


class TuningMethod(str, Enum):
    full = "full"  # every weight trains
    prompt = "prompt"  # PEFT prompt tuning: virtual tokens prepended to the input
    prefix = "prefix"  # PEFT prefix tuning: trained keys/values in front of the decoder's self-attention
    lora = "lora"  # PEFT LoRA: low-rank updates of attention projections
    soft = "soft"  # MTO soft prompt: trained tokens placed by the template ({soft:N})


class PromptInit(str, Enum):
    phrase = "phrase"  # the words of the relation's phrase (per relation; shared: averaged over relations)
    text = "text"  # the words of tuning.init_text
    vocab = "vocab"  # rows of randomly drawn vocabulary words
    uniform = "uniform"  # uniform in [-0.5, 0.5] (Lester et al., 2021)


class SoftEncoder(str, Enum):
    none = "none"  # the soft-token vectors train directly
    mlp = "mlp"  # reparameterised through a residual two-layer MLP (P-tuning style)
    lstm = "lstm"  # reparameterised through a residual bidirectional LSTM + MLP (P-tuning)


@dataclass
class TuningConfig:
    """Which parameters train (see mto/tuning/). Keys a method does not use are ignored by it."""

    method: TuningMethod = TuningMethod.full
    lr: Optional[float] = None  # learning rate of the trained parameters (null: train.lr)
    # prompt, prefix: virtual tokens; soft: taken from the template's {soft:N}
    num_virtual_tokens: int = 8
    init: PromptInit = PromptInit.vocab  # prompt, soft: initial token vectors
    init_text: Optional[str] = None  # init=text
    per_relation: bool = False  # soft: one set of tokens per relation (group) instead of one shared set
    encoder: SoftEncoder = SoftEncoder.none  # soft: reparameterisation of the token vectors
    encoder_hidden_size: Optional[int] = None  # soft encoder, prefix projection (null: the model width)
    prefix_projection: bool = False  # prefix: produce the prefix through an MLP (Li & Liang, 2021)
    r: int = 8  # lora: rank
    alpha: float = 16.0  # lora: scaling numerator (the update is scaled by alpha / r)
    dropout: float = 0.0  # lora: dropout on the adapter's input
    target_modules: Optional[list[str]] = None  # lora: module names (null: PEFT's default, T5: [q, v])
    adapter: Optional[str] = None  # a saved adapter folder to load onto the base (set by `mto eval run=`)


@dataclass
class TrainConfig:
    steps: int = 600  # optimiser steps (takes precedence over epochs when both are set)
    epochs: Optional[float] = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: Scheduler = Scheduler.linear
    grad_clip: float = 1.0
    max_source_length: int = 64
    max_target_length: int = 32
    log_every: int = 50
    # Batches of similar lengths (less padding: 1.47x the tokens/s on ATOMIC on a 2-core CPU) instead of
    # uniformly random ones. Off by default: on short runs it cost held-out loss (README, benchmarks).
    group_by_length: bool = False


@dataclass
class EvalConfig:
    after_train: bool = True  # `mto train` evaluates its model at the end
    split: str = "test"
    batch_size: int = 64
    num_beams: int = 1  # greedy by default
    max_new_tokens: int = 24
    max_examples: Optional[int] = None  # evaluate on the first N examples only
    extra_splits: list[str] = field(default_factory=list)  # also score these (metrics_<split>.json)


class AdaptSource(str, Enum):
    task = "task"  # the task's own records (training pool)
    files = "files"  # raw text files, one document per line (adapt.files)
    both = "both"


@dataclass
class AdaptConfig:
    """`mto adapt`: where the adaptation text comes from (optimisation settings are in `train`)."""

    source: AdaptSource = AdaptSource.task
    files: list[str] = field(default_factory=list)  # raw text files, one document per line
    include_test_heads: bool = False  # also the test heads' facts (knowledge probing); dev stays held out
    relations: Optional[list[str]] = None  # only these relations' records (all when null)
    n_examples: Optional[int] = None  # at most this many records / documents, sampled with the seed
    # Draw the objective's random choices (span masks, prefix-LM cuts, mixed routing by rate) afresh each
    # epoch, as T5's on-the-fly pipeline does; false: once, the same masks every epoch.
    resample: bool = True


@dataclass
class CheckpointConfig:
    """Checkpoints of the training loop (also taken on SIGTERM/SIGUSR1), for resuming."""

    every: int = 500  # steps between checkpoints (0: only on SIGTERM/SIGUSR1)
    keep: bool = False  # keep the last checkpoint once the run completed (it is removed by default)


@dataclass
class PipelineConfig:
    """`mto run`: which stages to chain, in order."""

    stages: list[str] = field(default_factory=lambda: ["match", "adapt", "train", "eval"])


class MatchMethod(str, Enum):
    model = "model"  # score the templates with the model (gold-token NLL and rank)
    rules = "rules"  # decide from the task's shape, without a model


@dataclass
class MatchConfig:
    """`mto match`: which templates to score, on how many examples, and the decision threshold."""

    method: MatchMethod = MatchMethod.model
    n: int = 32  # examples sampled per relation (per task for QA) from the training pool
    threshold: float = 0.30  # Filling when the maskability index MI >= threshold
    mapping_template: Optional[str] = None  # null: prompting (knowledge) | answer (QA)
    filling_template: Optional[str] = None  # null: masked_prompting (knowledge) | masked_answer (QA)
    templates: list[str] = field(default_factory=list)  # more templates to score and show
    batch_size: int = 32


@dataclass
class MtoConfig:
    stage: str = MISSING
    seed: int = 42
    precision: Precision = Precision.auto
    threads: Optional[int] = None  # torch threads; null = the cores this process may use
    run: Optional[str] = None  # eval: the train run directory to evaluate
    match_run: Optional[str] = None  # a `mto match` run whose decisions template=auto / objective=auto use
    adapt_run: Optional[str] = None  # train: start from the model of this `mto adapt` run
    resume: Optional[str] = None  # continue the run in this directory from its last checkpoint
    skip_completed: bool = False  # skip a job whose completed twin (same config hash) exists (on in -m)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    phrases: dict[str, str] = field(default_factory=dict)  # relation -> natural-language phrase
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


CONF_DIR_NAME = "conf"


def conf_dir() -> Path:
    """The folder holding the YAML configs: inside the installed package, or the source checkout's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / CONF_DIR_NAME, here.parent / CONF_DIR_NAME):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mto configs not found next to {here}")


def _dirname_suffix(overrides: Any, exclude_keys: Any = ()) -> str:
    """`_<overrides>` as one path component, or '': the command line's task overrides (a list) spelled
    `key-value` joined by `_`, the important keys first (`run`, `experiment`, `model`, `tuning`,
    `template`, `objective`, `data.n_train`, `data`, lineage, `seed`; then the rest alphabetically).
    A path value is named by its last part (`run=outputs/train/<date>/<leaf>` -> `run-<leaf>`; a sweep
    job's leaf `3_seed-1` keeps its sweep's folder in front). Overrides that would make the name longer
    than 120 characters are left out whole, never cut inside a value, and counted at the end
    (`_+2-more`); all of them are in the run's `.hydra/overrides.yaml`."""
    limit, hard_limit = 120, 200  # the first override may take up to 200 (a path component holds 255)
    order = ("run", "experiment", "model", "tuning", "template", "objective", "data.n_train", "data",
             "adapt_run", "match_run", "seed")  # fmt: skip
    excluded = {str(k) for k in (exclude_keys or ())}
    items = []
    for line in overrides or ():
        key, sep, value = str(line).partition("=")
        bare = key.lstrip("+~").split("@")[0]
        if bare in excluded or bare.startswith(("hydra.", "hydra/")) or not sep:
            continue
        if "/" in value and "," not in value:  # a path: its last part (and the sweep folder of a job)
            parts = [p for p in Path(value.rstrip("/")).parts if p not in ("", "/")]
            short = parts[-1:] if parts else [value]
            while len(parts) > len(short) and (re.match(r"\d+_", short[0]) or short[0] in ("model",)):
                short = parts[-len(short) - 1 :]
            value = "-".join(short)
        rank = next((i for i, k in enumerate(order) if bare == k or bare.startswith(k + ".")), len(order))
        key, value = (re.sub(r"[^A-Za-z0-9.+_-]+", "-", part).strip("-") for part in (key, value))
        items.append((rank, f"{key}-{value}"))
    kept, left_out = [], 0
    for _, item in sorted(items):
        length = sum(len(k) + 1 for k in kept) + len(item)
        if length <= limit or (not kept and len(item) <= hard_limit):
            kept.append(item)
        else:
            left_out += 1
    if left_out:
        kept.append(f"+{left_out}-more")
    return "".join("_" + item for item in kept)


def register() -> None:
    """Register the schema and resolvers (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="mto_schema", node=MtoConfig)
    if not OmegaConf.has_resolver("mto.dirname"):
        OmegaConf.register_new_resolver("mto.dirname", _dirname_suffix)
    if not OmegaConf.has_resolver("mto.is_multirun"):
        OmegaConf.register_new_resolver("mto.is_multirun", lambda mode: str(mode).endswith("MULTIRUN"))


register()
