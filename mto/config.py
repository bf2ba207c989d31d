"""Structured configs: the schema every stage's YAML is validated against.

Each dataclass mirrors one config group in `conf/` (model/, data/, template/, objective/, tuning/) or
one settings block (train, eval). Hydra merges the YAML files into these typed nodes, so a wrong type
or an unknown key is refused with the full key named (e.g. `Key 'lrr' not in 'TrainConfig'`), and
enum-valued keys list their valid values. Each setting has its one default here; the YAML files set only
what a group option changes. Ranges and cross-key rules are checked in `__post_init__` (as peft's configs
do), which runs when a stage turns its config into these dataclasses (`typed`), and for `--cfg` before the
config is printed; names of objectives, task kinds and tuning methods come from their registries.

This module also registers the OmegaConf resolvers the configs use; it is imported by every stage
(and so by every submitit worker) before any config is resolved.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mto.errors import ConfigError


class Choice(str, Enum):
    """A fixed set of values; prints as its value (`precision=auto`, not `Precision.auto`)."""

    def __str__(self) -> str:
        return str(self.value)


class Precision(Choice):
    auto = "auto"  # bf16 autocast where the device supports it (CUDA bf16, CPUs with AVX-512 BF16/AMX)
    fp32 = "fp32"
    bf16 = "bf16"


class Scheduler(Choice):
    """Learning-rate schedules of transformers' `get_scheduler`, each after `train.warmup_steps` of linear
    warm-up (transformers' warm-up starts at 0 at step 0)."""

    linear = "linear"  # down to 0 at the last step
    cosine = "cosine"  # half a cosine down to 0 at the last step
    constant = "constant"  # constant after the warm-up (transformers' constant_with_warmup)
    constant_with_warmup = "constant_with_warmup"  # the same, by transformers' name
    inverse_sqrt = "inverse_sqrt"  # 1/sqrt(step) after the warm-up, as T5 pre-training used


class MonitorMode(Choice):
    max = "max"  # higher is better (ROUGE-L, exact match, accuracy)
    min = "min"  # lower is better


class Keep(Choice):
    best = "best"  # the weights of the best evaluation of train.monitor
    last = "last"  # the weights of the last step


class Strategy(Choice):
    """How several processes share a model (accelerate's plugins; mto/training/distributed.py)."""

    ddp = "ddp"  # a full copy per process, gradients averaged (DistributedDataParallel)
    fsdp = "fsdp"  # parameters, gradients and optimiser states sharded (FullyShardedDataParallel; GPUs)
    deepspeed = "deepspeed"  # DeepSpeed ZeRO stage 2 (the `deepspeed` package; GPUs)


class Optimizer(Choice):
    adamw = "adamw"  # torch's AdamW (fused where available)
    # transformers' Adafactor with a fixed step size, as both references ran it (MTO run.py L2192-2300:
    # eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None, no relative step or scaling)
    adafactor = "adafactor"


def is_set(value: Any) -> bool:
    """Neither null nor OmegaConf's mandatory `???` (a schema default that a YAML file fills in)."""
    return value is not None and value != MISSING


def expect(ok: bool, key: str, value: Any, expected: str) -> None:
    """ConfigError `key=value: expected ...` unless `ok`: the one shape of a range error."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(value: Any, key: str, minimum: int = 1, optional: bool = False) -> None:
    if optional and value is None:
        return
    expect(_is_int(value) and value >= minimum, key, value, f"an integer >= {minimum}")


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

    def __post_init__(self) -> None:
        positive_int(self.tokenizer_vocab_size, "model.tokenizer_vocab_size", minimum=8)
        name = self.name_or_path
        if self.build is not None and is_set(name) and ("/" in name or name.startswith(("~", "."))):
            # A folder or `org/name` given under a `build` preset (`model=tiny model.name_or_path=/a/dir`)
            # is what the user asked for: loaded (or refused when absent), never silently replaced by a
            # model built from scratch.
            self.build = None


# data.head_order: which heads a few-shot sample and data.test_heads_per_relation take (mto/tasks/atomic.py)
HEAD_ORDERS = ("random", "richest_first", "file")


@dataclass
class DataConfig:
    """Which task, where its files are, and which part of it to use."""

    name: Optional[str] = None  # the task's name in reports (null: the kind's)
    kind: str = MISSING  # a task kind of mto/tasks/ (atomic | synthetic | qa | text2text)
    # atomic: folder of train/dev/test.tsv; qa/text2text: folder of split files (null: load data.hub)
    path: Optional[str] = None
    relations: Optional[list[str]] = None  # keep only these relations (all when null)
    n_train: Optional[int] = None  # few-shot: heads per relation (QA, text2text: examples) sampled from train
    sample_seed: int = 0  # seed of the few-shot sample
    drop_none: bool = True  # drop `none` tails, as the ATOMIC-2020 papers do
    # ATOMIC-format sampling (a protocol= preset pins these; docs/reference-protocol.md section 4):
    # which heads n_train and test_heads_per_relation take: random (drawn with sample_seed; dev/test heads
    # with a fixed seed) | richest_first (the MTO code's sort: most relations, most rows, then the text,
    # descending) | file (first appearance)
    head_order: str = "random"
    train_tails_per_head: Optional[int] = None  # training triples kept per (head, relation), file order
    test_tails_per_head: Optional[int] = None  # gold tails kept per dev/test query, file order (null: all)
    test_heads_per_relation: Optional[int] = None  # dev/test queries per relation (null: all)
    n_heads: int = 600  # synthetic world: number of heads
    world_seed: int = 0  # synthetic world: generator seed
    # qa/text2text: split -> file in data.path (.jsonl/.csv; no extension: either; null: no such split).
    # These three are `Any`, not Optional[dict]: `data.files.test=x` over a None typed dict (a kind that does
    # not set them, e.g. `mto eval`'s default before it inherits the run's data) crashes OmegaConf (#1360).
    # The task readers check their shape (mto/tasks/rows.py).
    files: Any = None
    hub: Optional[str] = None  # qa/text2text: Hugging Face dataset, loaded only when data.path is null
    subset: Optional[str] = None  # hub dataset configuration (e.g. openbookqa: main)
    revision: Optional[str] = None  # hub revision
    hub_splits: Any = None  # our split -> the hub's (null: no such split)
    fields: Any = None  # record part -> dotted path (QA choices: a path or a list)
    answer_is: str = "label"  # qa: how the answer field reads: label | index | index1 | text

    def __post_init__(self) -> None:
        if is_set(self.kind):
            from mto.tasks import TASKS

            if self.kind not in TASKS:
                raise ConfigError(TASKS.unknown(self.kind, "data.kind"))
        if self.n_train is not None and not (_is_int(self.n_train) and self.n_train >= 1):
            raise ConfigError(f"data.n_train: expected a positive integer or null, got {self.n_train!r}")
        expect(self.head_order in HEAD_ORDERS, "data.head_order", self.head_order,
               f"one of {', '.join(HEAD_ORDERS)}")  # fmt: skip
        for key in ("train_tails_per_head", "test_tails_per_head", "test_heads_per_relation"):
            positive_int(getattr(self, key), f"data.{key}", optional=True)


@dataclass
class TemplateConfig:
    """How one example is rendered into a source and a target (see mto/templates.py)."""

    name: str = MISSING
    objective: str = MISSING  # the objective family the template is aligned with: mapping | filling
    source: str = MISSING
    target: str = MISSING


FORMS = ("auto", "tail", "span")  # filling: records -> tail filling, texts -> span corruption | one of them


@dataclass
class ObjectiveConfig:
    """The pre-training objective used to adapt a model (mto adapt; see mto/objectives/). The options are
    shared by the objectives that use them (mixed hands them to its sub-objectives)."""

    name: str = MISSING  # an objective of mto/objectives/, or auto (the decisions of match_run)
    form: str = "auto"  # filling: auto (records: tail filling, texts: span corruption) | tail | span
    noise_density: float = 0.15  # span corruption: share of a text's tokens that are masked
    mean_noise_span_length: float = 3.0
    # span corruption: corrupted input length (EOS included); prefix_lm, mapping: chunk size of raw texts
    input_length: int = 64
    pack: bool = True  # span corruption: concatenate texts and cut blocks (T5); false: each text alone
    random_roll: bool = False  # seqio's random_roll
    random_noise_count: bool = False  # noise count ~ Binomial(L, density) instead of round(L x density)
    # mixed. `Any`, not Optional[dict]: overriding a None typed dict crashes OmegaConf (omegaconf #1360).
    by_group: Any = None  # group (relation) -> objective
    default: Optional[str] = None  # objective for examples by_group does not route (wins over rates)
    rates: Any = None  # objective -> weight

    def __post_init__(self) -> None:
        expect(self.form in FORMS, "objective.form", self.form, f"one of {', '.join(FORMS)}")
        d = self.noise_density
        expect(_is_number(d) and 0 < d < 1, "objective.noise_density", d, "a number in (0, 1)")
        m = self.mean_noise_span_length
        expect(_is_number(m) and m >= 1, "objective.mean_noise_span_length", m, "a number >= 1")
        positive_int(self.input_length, "objective.input_length", minimum=2)
        if not is_set(self.name) or self.name == "auto":
            return
        from mto.objectives import OBJECTIVES

        if self.name not in OBJECTIVES:
            raise ConfigError(OBJECTIVES.unknown(self.name, "objective.name"))
        OBJECTIVES.get(self.name, "objective.name").validate(self)


# prompt, soft: where the token vectors start: the relations' phrase (shared: averaged over relations), the
# words of tuning.init_text, randomly drawn vocabulary rows, or uniform in [-0.5, 0.5] (Lester et al., 2021)
PROMPT_INITS = ("phrase", "text", "vocab", "uniform")
# soft: the vectors train directly, or through a residual MLP, or a residual bidirectional LSTM + MLP
SOFT_ENCODERS = ("none", "mlp", "lstm")


@dataclass
class TuningConfig:
    """Which parameters train (see mto/tuning/). Keys a method does not use are ignored by it."""

    method: str = MISSING  # a method of mto/tuning/: full | prompt | prefix | lora | soft
    lr: Optional[float] = None  # learning rate of the trained parameters (null: train.lr)
    # prompt, prefix, lora: the settings of PEFT's own config class (PromptTuningConfig, PrefixTuningConfig,
    # LoraConfig), passed to it as they are: e.g. tuning.peft.r=16, tuning.peft.num_virtual_tokens=20
    peft: Any = None  # `Any`, not Optional[dict]: see by_group (omegaconf #1360)
    init: str = "vocab"  # prompt, soft: initial token vectors: phrase | text | vocab | uniform
    init_text: Optional[str] = None  # init=text
    per_relation: bool = False  # soft: one set of tokens per relation (group) instead of one shared set
    encoder: str = "none"  # soft: reparameterisation of the token vectors: none | mlp | lstm (P-tuning)
    encoder_hidden_size: Optional[int] = None  # soft encoder (null: the model width)
    adapter: Optional[str] = None  # a saved adapter folder to load onto the base (set by `mto eval run=`)

    def __post_init__(self) -> None:
        expect(self.peft is None or isinstance(self.peft, Mapping), "tuning.peft", self.peft,
               "a mapping of the PEFT config's arguments")  # fmt: skip
        if self.lr is not None:
            expect(_is_number(self.lr) and self.lr > 0, "tuning.lr", self.lr,
                   "a positive learning rate (or null: train.lr)")  # fmt: skip
        expect(self.init in PROMPT_INITS, "tuning.init", self.init, f"one of {', '.join(PROMPT_INITS)}")
        if self.init == "text" and not self.init_text:
            raise ConfigError("tuning.init=text needs tuning.init_text (the words to start the prompt from)")
        encoders = ", ".join(SOFT_ENCODERS)
        expect(self.encoder in SOFT_ENCODERS, "tuning.encoder", self.encoder, f"one of {encoders}")
        positive_int(self.encoder_hidden_size, "tuning.encoder_hidden_size", optional=True)
        if is_set(self.method):
            from mto.tuning import TUNING_METHODS

            TUNING_METHODS.get(self.method, "tuning.method").validate(self)


@dataclass
class TrainConfig:
    steps: int = 600  # optimiser steps (when train.epochs is null)
    epochs: Optional[float] = None  # passes over the training features; when set, wins over train.steps
    # The MTO code's adjust_epochs (run.py L1298-1301): train.epochs doubled when data.n_train (heads per
    # relation) is at most this (protocol=mto2024: 10; null: never)
    double_epochs_up_to: Optional[int] = None
    optimizer: Optimizer = Optimizer.adamw
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 30
    scheduler: Scheduler = Scheduler.linear
    grad_clip: float = 1.0  # max gradient norm (0: no clipping)
    max_source_length: int = 64
    max_target_length: int = 32
    log_every: int = 50
    # Batches of similar lengths (less padding: 1.47x the tokens/s on ATOMIC on a 2-core CPU) instead of
    # uniformly random ones. Off by default: on short runs it cost held-out loss (README, benchmarks).
    group_by_length: bool = False
    # Pack each batch's examples end to end into fewer rows with segment masks (mto/training/packing.py): the
    # same loss and gradient with far less padding (1.36x the tokens/s on ATOMIC, README benchmarks). Exact
    # for T5 with tuning=full or lora under strategy=ddp only. null (default): packed wherever it is exact,
    # else not; true: packed, and anything else refused in one line; false: never.
    packing: Optional[bool] = None
    # Validation during training (every eval.every steps, on eval.dev_max_examples dev examples): the figure
    # to watch (null: dev_rougeL, dev_accuracy for QA), whether higher or lower is better, how many
    # evaluations without improvement stop the run (null: never), and which weights model/ holds.
    monitor: Optional[str] = None
    monitor_mode: MonitorMode = MonitorMode.max
    patience: Optional[int] = None
    keep: Keep = Keep.best
    # Beyond one device (README "Scaling out"). train.batch_size is the GLOBAL batch of one optimiser step,
    # split into grad_accum x processes micro-batches; the loss is normalised by the label tokens of the whole
    # global batch, so the result does not depend on the split (mto/training/distributed.py).
    grad_accum: int = 1  # micro-batches each process accumulates per optimiser step
    devices: int = 1  # processes the stage starts itself (one per GPU; on a CPU they share its cores)
    strategy: Strategy = Strategy.ddp  # ddp | fsdp | deepspeed (the last two: GPUs only)

    def __post_init__(self) -> None:
        positive_int(self.steps, "train.steps", minimum=0)
        if self.epochs is not None:
            expect(_is_number(self.epochs) and self.epochs > 0, "train.epochs", self.epochs, "a number > 0")
        positive_int(self.batch_size, "train.batch_size")
        expect(_is_number(self.lr) and self.lr > 0, "train.lr", self.lr, "a positive learning rate")
        expect(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        positive_int(self.warmup_steps, "train.warmup_steps", minimum=0)
        expect(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "a number >= 0 (0: no clipping)")
        positive_int(self.max_source_length, "train.max_source_length", minimum=2)
        positive_int(self.max_target_length, "train.max_target_length", minimum=2)
        positive_int(self.log_every, "train.log_every")
        positive_int(self.double_epochs_up_to, "train.double_epochs_up_to", optional=True)
        positive_int(self.patience, "train.patience", optional=True)
        positive_int(self.grad_accum, "train.grad_accum")
        positive_int(self.devices, "train.devices")
        if self.packing and self.strategy != Strategy.ddp:  # refused before any model loads
            raise ConfigError(f"train.packing=true: with train.strategy=ddp only (not {self.strategy}, "
                              "whose wrapped model cannot run the encoder on its own)")  # fmt: skip
        parts = self.grad_accum * self.devices
        expect(self.batch_size % parts == 0, "train.batch_size", self.batch_size,
               f"a multiple of train.grad_accum x train.devices = {parts} (the global batch is split into "
               "that many micro-batches)")  # fmt: skip
        if self.monitor is not None:
            expect(str(self.monitor).startswith("dev_"), "train.monitor", self.monitor,
                   "a dev figure such as dev_rougeL, dev_exact_match or dev_accuracy")  # fmt: skip


SPLITS = ("train", "dev", "test")


@dataclass
class EvalConfig:
    after_train: bool = True  # `mto train` evaluates its model at the end
    split: str = "test"
    batch_size: int = 64
    num_beams: int = 1  # greedy by default
    max_new_tokens: int = 24
    max_examples: Optional[int] = None  # evaluate on the first N examples only
    extra_splits: list[str] = field(default_factory=list)  # also score these (metrics_<split>.json)
    # `mto eval` of a model built from scratch (`model.build`, the default `tiny`) with no `run=` or adapter
    # scores random weights: refused (mto/stages/eval.py) unless asked for here, as an untrained baseline.
    allow_untrained: bool = False
    # More metrics beside the task's own (mto/metrics.py METRICS): rougeL_ref (the MTO code's ROUGE-L,
    # the `rouge` package), sentence_cosine (sentence-embedding cosine, needs eval.similarity_model)
    metrics: list[str] = field(default_factory=list)
    similarity_model: Optional[str] = None  # a local sentence-transformers model folder (sentence_cosine)
    every: int = 0  # train: evaluate on the dev sample every N steps (0: only after training)
    # The dev sample: its first N examples (null: as eval.max_examples), scored during training and after
    # it (the dev_* figures, which train.monitor watches and sweeps optimise).
    dev_max_examples: Optional[int] = 200
    # Score the gold targets too (mto/stages/gold.py): teacher-forced NLL and DepthRank of each query's gold
    # tails, in predictions.jsonl and metrics.json (gold_nll, depth_rank): one forward per batch of pairs.
    gold_scores: bool = True

    def __post_init__(self) -> None:
        from mto.metrics import check_metrics

        check_metrics(self.metrics)
        if "sentence_cosine" in self.metrics and not self.similarity_model:
            raise ConfigError(
                "eval.similarity_model: required by eval.metrics=sentence_cosine "
                "(a local sentence-transformers model folder)"
            )
        splits = [("eval.split", self.split)] + [("eval.extra_splits", s) for s in self.extra_splits]
        for key, split in splits:
            if split not in SPLITS:
                raise ConfigError(f"{key}={split}: expected one of {', '.join(SPLITS)}")
        positive_int(self.batch_size, "eval.batch_size")
        positive_int(self.num_beams, "eval.num_beams")
        positive_int(self.max_new_tokens, "eval.max_new_tokens")
        positive_int(self.max_examples, "eval.max_examples", optional=True)
        positive_int(self.every, "eval.every", minimum=0)
        positive_int(self.dev_max_examples, "eval.dev_max_examples", optional=True)


class AdaptSource(Choice):
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

    def __post_init__(self) -> None:
        positive_int(self.n_examples, "adapt.n_examples", optional=True)


@dataclass
class CheckpointConfig:
    """Checkpoints of the training loop (`<run>/checkpoints/step-<N>/`), for resuming."""

    # steps between checkpoints; one is also taken after the last step and on SIGTERM/SIGUSR1/SIGUSR2/SIGINT
    # (0: only those)
    every: int = 500
    keep: bool = False  # keep the last checkpoint once the run completed (it is removed by default)

    def __post_init__(self) -> None:
        positive_int(self.every, "checkpoint.every", minimum=0)


# tracker -> the modules its extra (`pip install 'mto[<tracker>]'`) installs (MLflow's sqlite store needs
# SQLAlchemy and alembic)
TRACKERS = {
    "tensorboard": ("tensorboard",), "mlflow": ("mlflow", "sqlalchemy", "alembic"), "wandb": ("wandb",),
}  # fmt: skip


@dataclass
class LogConfig:
    """Experiment trackers that receive the per-step figures (mto/tracking.py); the run's own
    metrics_steps.jsonl is written whatever this says."""

    to: list[str] = field(default_factory=list)  # tensorboard | mlflow | wandb (each an optional extra)
    project: str = "mto"  # the MLflow experiment and the W&B project
    mlflow_uri: Optional[str] = None  # null: sqlite:///<outputs root>/mlflow.db
    wandb_mode: Optional[str] = None  # online | offline | disabled; null: WANDB_MODE, else online

    def __post_init__(self) -> None:
        for name in self.to:
            expect(name in TRACKERS, "log.to", name, f"one of {', '.join(TRACKERS)}")
            missing = [module for module in TRACKERS[name] if importlib.util.find_spec(module) is None]
            if missing:  # asked for but not installed: said before anything runs
                raise ConfigError(f"log.to={name}: {', '.join(missing)} not installed; "
                                  f"install the extra with `pip install 'mto[{name}]'`")  # fmt: skip
        modes = ("online", "offline", "disabled")
        if self.wandb_mode is not None:
            expect(self.wandb_mode in modes, "log.wandb_mode", self.wandb_mode, f"one of {', '.join(modes)}")


STAGES = ("match", "adapt", "train", "eval")


@dataclass
class PipelineConfig:
    """`mto run`: which stages to chain, in order."""

    stages: list[str] = field(default_factory=lambda: list(STAGES))

    def __post_init__(self) -> None:
        known = all(stage in STAGES for stage in self.stages)
        if not self.stages or not known or self.stages != sorted(self.stages, key=STAGES.index):
            order = ", ".join(STAGES)
            raise ConfigError(f"pipeline.stages={self.stages}: expected stages in the order {order}")


FALLBACKS = ("point", "mapping", "filling")


class MatchMethod(Choice):
    zero_shot = "zero_shot"  # score the templates zero-shot with the model (gold-token NLL and rank)
    # the Maskability paper's: a few-shot fine-tune per template family, then DepthRank on held-out heads
    depth_rank = "depth_rank"
    rules = "rules"  # the MTO code's rules (temp_flex per relation, temp_len per question), no model
    model = "model"  # the former name of zero_shot, still accepted (read as zero_shot)


@dataclass
class MatchConfig:
    """`mto match`: which templates to score, on how many examples, and the decision threshold."""

    method: MatchMethod = MatchMethod.zero_shot
    n: int = 32  # examples sampled per relation (per task for QA) from the training pool
    threshold: float = 0.30  # Filling when the maskability index MI >= threshold
    mapping_template: Optional[str] = None  # null: prompting (knowledge) | answer (QA)
    filling_template: Optional[str] = None  # null: masked_prompting (knowledge) | masked_answer (QA)
    templates: list[str] = field(default_factory=list)  # more templates to score and show
    batch_size: int = 32
    bootstrap: int = 1000  # resamples of the examples for MI's confidence interval (0: none)
    confidence: float = 0.95  # the interval's level
    # a relation whose interval holds the threshold is `uncertain` and takes this decision: point (the MI
    # itself decides) | mapping | filling
    fallback: str = "point"
    # depth_rank: DepthRank is measured on this split's queries, one example per gold tail (the protocol's
    # data.test_heads_per_relation and data.test_tails_per_head choose them), after a few-shot fine-tune
    # per template family on match.n training examples per relation with the train.* settings
    heldout_split: str = "dev"

    def __post_init__(self) -> None:
        if self.method == MatchMethod.model:
            self.method = MatchMethod.zero_shot
        positive_int(self.n, "match.n")
        positive_int(self.batch_size, "match.batch_size")
        positive_int(self.bootstrap, "match.bootstrap", minimum=0)
        c = self.confidence
        expect(_is_number(c) and 0 < c < 1, "match.confidence", c, "a number in (0, 1)")
        expect(self.fallback in FALLBACKS, "match.fallback", self.fallback, f"one of {', '.join(FALLBACKS)}")
        split = self.heldout_split
        expect(split in SPLITS, "match.heldout_split", split, f"one of {', '.join(SPLITS)}")
        expect(_is_number(self.threshold) and self.threshold <= 1, "match.threshold", self.threshold,
               "a number <= 1 (the maskability index is at most 1)")  # fmt: skip


@dataclass
class ProtocolConfig:
    """The published protocol a run follows (conf/protocol/, mto/protocol.py): its name is stamped into
    run.json with a fingerprint of the settings it pins."""

    name: str = "mto"  # mto (ours) | mto2024 (the MTO code's) | maskability (the Maskability paper's)


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
    # the folder runs are written under (hydra.run.dir, hydra.sweep.dir; relative: to the launch folder),
    # and the only place completed twins are looked for
    outputs: str = "outputs"
    # skip a job whose completed twin (same config hash) exists; null: on in -m sweeps, off for one run
    skip_completed: Optional[bool] = None
    # The figure a stage returns to a sweeper (hydra/sweeper=optuna); null: train and eval dev_rougeL
    # (dev_accuracy for QA), adapt adapt_loss, match filling_share, run its last stage's.
    optimized_metric: Optional[str] = None
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
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        positive_int(self.threads, "threads", optional=True)
        if self.train.patience is not None and not self.eval.every:
            raise ConfigError(f"train.patience={self.train.patience} needs eval.every (steps between "
                              "evaluations on the dev sample)")  # fmt: skip
        if self.eval.every and self.train.strategy != Strategy.ddp:
            raise ConfigError(f"eval.every={self.eval.every}: validation during training runs with "
                              f"train.strategy=ddp only (not {self.train.strategy}, whose shards "
                              "cannot decode); set eval.every=0")  # fmt: skip

        expect(isinstance(self.outputs, str) and self.outputs.strip() != "", "outputs", self.outputs,
               "a folder (the root of the run directories)")  # fmt: skip


def effective_train(cfg: MtoConfig) -> TrainConfig:
    """`train` as it runs: `epochs` doubled when `data.n_train <= train.double_epochs_up_to` (the MTO
    code's adjust_epochs: few heads, twice the passes)."""
    up_to, n_train = cfg.train.double_epochs_up_to, cfg.data.n_train
    if cfg.train.epochs and up_to is not None and n_train is not None and n_train <= up_to:
        return dataclasses.replace(cfg.train, epochs=cfg.train.epochs * 2)
    return cfg.train


def typed(cfg: DictConfig) -> MtoConfig:
    """The composed config as the typed dataclasses, validated (every `__post_init__` runs): what the
    stages and the code below them read. Done once per stage, after run inheritance.

    Keys the schema does not have are refused here too: Hydra lets `+train.lrr=1` or `+foo=1` add them
    (it opens the struct for `+`), and they would be ignored without a word."""
    unknown_keys(cfg)
    return OmegaConf.to_object(cfg)


def unknown_keys(cfg: DictConfig, schema: Any = MtoConfig, prefix: str = "") -> None:
    """ConfigError naming the first key of `cfg` that `schema` (a dataclass) does not define. Fields typed
    `Any` or dict (tuning.peft, model.build, phrases) hold free keys and are not searched."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in cfg.keys() if isinstance(cfg, DictConfig) else ():
        if key not in fields:
            raise ConfigError(
                f"{prefix}{key}: no such setting in {schema.__name__} (`+` adds only keys the schema "
                "has; `--cfg job` lists them)"
            )
        kind = fields[key].type
        kind = kind if isinstance(kind, type) else globals().get(str(kind))
        if dataclasses.is_dataclass(kind) and isinstance(cfg[key], DictConfig):
            unknown_keys(cfg[key], kind, f"{prefix}{key}.")


def plain(obj: Any) -> Any:
    """A config dataclass (or DictConfig) as plain dicts, lists and values, enums as their values."""
    if OmegaConf.is_config(obj):
        return OmegaConf.to_container(obj, resolve=True, enum_to_str=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


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


register()
