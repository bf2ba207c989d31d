"""Every config the project ships composes and validates, for every stage (as lightning-hydra-template's
test_configs does); each range check refuses a bad value naming its key."""

from __future__ import annotations

import pytest
from conftest import compose_train
from hydra import compose, initialize_config_dir

from mto.config import MtoConfig, conf_dir, typed
from mto.errors import ConfigError
from mto.objectives import OBJECTIVES
from mto.tasks import TASKS
from mto.tuning import TUNING_METHODS

STAGES = ("train", "eval", "match", "adapt", "pipeline")
GROUPS = ("model", "data", "template", "objective", "tuning", "phrases", "train", "eval", "match", "adapt",
          "protocol")
# Options that are incomplete on their own by design, with what completes them.
NEEDS = {("objective", "mixed"): ["objective.default=filling"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "stage", [s if s == "train" else pytest.param(s, marks=pytest.mark.slow) for s in STAGES]
)  # ~18 s a stage: train in the default suite, every stage in `make test-extra`
def test_every_group_option_composes_for_every_stage(stage):
    composed = 0
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        for group in GROUPS:
            for option in options(group):
                overrides = [f"{group}={option}", *NEEDS.get((group, option), [])]
                cfg = typed(compose(config_name=stage, overrides=overrides))
                assert cfg.stage == ("run" if stage == "pipeline" else stage)
                if group == "objective" and option != "auto":
                    assert cfg.objective.name == option
                if group == "tuning":
                    assert cfg.tuning.method == option
                composed += 1
        for preset in options("experiment"):
            cfg = typed(compose(config_name=stage, overrides=[f"experiment={preset}"]))
            assert isinstance(cfg, MtoConfig)
    assert composed >= 40


def test_the_config_accepts_the_registered_names_and_only_them():
    assert set(options("objective")) - {"auto"} == set(OBJECTIVES.names())
    assert set(options("tuning")) == set(TUNING_METHODS.names())
    assert {compose_train(f"data={d}").data.kind for d in options("data")} == set(TASKS.names())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("objective.noise_density=2", r"^objective\.noise_density=2\.0: expected a number in \(0, 1\)$"),
        ("objective.noise_density=0", r"^objective\.noise_density=0\.0: expected a number in \(0, 1\)$"),
        ("objective.mean_noise_span_length=0.5", r"^objective\.mean_noise_span_length=0\.5: expected"),
        ("objective.input_length=1", r"^objective\.input_length=1: expected an integer >= 2$"),
        ("objective.input_length=2", r"^objective\.input_length=2: expected an integer >= 3$"),  # filling
        ("objective.form=gaps", r"^objective\.form='gaps': expected one of auto, tail, span$"),
        ("objective.name=mlm", r"^objective\.name: unknown objective 'mlm'; valid objectives: filling,"),
        ("data.kind=conceptnet", r"^data\.kind: unknown kind 'conceptnet'; valid kinds: atomic, qa,"),
        ("data.n_train=0", r"^data\.n_train: expected a positive integer or null, got 0$"),
        ("tuning.method=adapters", r"^tuning\.method: unknown tuning method 'adapters'; valid tuning"),
        ("tuning.lr=-1", r"^tuning\.lr=-1\.0: expected a positive learning rate"),
        ("tuning.init=zeros", r"^tuning\.init='zeros': expected one of phrase, text, vocab, uniform$"),
        ("tuning.encoder=gru", r"^tuning\.encoder='gru': expected one of none, mlp, lstm$"),
        ("tuning.peft={r: 4}", r"^tuning\.peft: set for tuning=full"),
        ("train.steps=-1", r"^train\.steps=-1: expected an integer >= 0$"),
        ("train.batch_size=0", r"^train\.batch_size=0: expected an integer >= 1$"),
        ("train.lr=0", r"^train\.lr=0\.0: expected a positive learning rate$"),
        ("train.epochs=0", r"^train\.epochs=0\.0: expected a number > 0$"),
        ("train.warmup_steps=-3", r"^train\.warmup_steps=-3: expected an integer >= 0$"),
        ("train.double_epochs_up_to=0", r"^train\.double_epochs_up_to=0: expected an integer >= 1$"),
        ("data.test_tails_per_head=0", r"^data\.test_tails_per_head=0: expected an integer >= 1$"),
        ("train.grad_clip=-1", r"^train\.grad_clip=-1\.0: expected a number >= 0"),
        ("train.max_target_length=1", r"^train\.max_target_length=1: expected an integer >= 2$"),
        ("train.patience=0", r"^train\.patience=0: expected an integer >= 1$"),
        ("train.monitor=rougeL", r"^train\.monitor='rougeL': expected a dev figure such as dev_rougeL"),
        ("train.patience=2", r"^train\.patience=2 needs eval\.every"),
        ("train.grad_accum=0", r"^train\.grad_accum=0: expected an integer >= 1$"),
        ("train.devices=0", r"^train\.devices=0: expected an integer >= 1$"),
        ("train.grad_accum=3", r"^train\.batch_size=32: expected a multiple of train\.grad_accum x train"),
        ("train.devices=5", r"^train\.batch_size=32: expected a multiple of train\.grad_accum x train"),
        ("eval.split=valid", r"^eval\.split=valid: expected one of train, dev, test$"),
        ("eval.extra_splits=[dev,valid]", r"^eval\.extra_splits=valid: expected one of train, dev, test$"),
        ("eval.num_beams=0", r"^eval\.num_beams=0: expected an integer >= 1$"),
        ("eval.max_examples=0", r"^eval\.max_examples=0: expected an integer >= 1$"),
        ("eval.metrics=[bert_score]", r"^eval\.metrics: unknown metric 'bert_score'; valid metrics: "),
        ("eval.every=-1", r"^eval\.every=-1: expected an integer >= 0$"),
        ("eval.dev_max_examples=0", r"^eval\.dev_max_examples=0: expected an integer >= 1$"),
        ("log.to=[tensorboard,neptune]", r"^log\.to='neptune': expected one of tensorboard, mlflow, wandb$"),
        ("log.wandb_mode=online-ish", r"^log\.wandb_mode='online-ish': expected one of online, offline"),
        ("match.n=0", r"^match\.n=0: expected an integer >= 1$"),
        ("match.threshold=1.5", r"^match\.threshold=1\.5: expected a number <= 1"),
        ("match.fallback=coin", r"^match\.fallback='coin': expected one of point, mapping, filling$"),
        ("match.confidence=1", r"^match\.confidence=1\.0: expected a number in \(0, 1\)$"),
        ("adapt.n_examples=0", r"^adapt\.n_examples=0: expected an integer >= 1$"),
        ("checkpoint.every=-1", r"^checkpoint\.every=-1: expected an integer >= 0$"),
        ("pipeline.stages=[match,fit]", r"^pipeline\.stages=\['match', 'fit'\]: expected stages in the"),
        ("pipeline.stages=[train,adapt]", r"^pipeline\.stages=\['train', 'adapt'\]: expected stages in the"),
        ("threads=0", r"^threads=0: expected an integer >= 1$"),
        ("outputs=' '", r"^outputs=' ': expected a folder"),
        ("model.tokenizer_vocab_size=4", r"^model\.tokenizer_vocab_size=4: expected an integer >= 8$"),
    ],
)
def test_each_range_check_names_its_key(override, expected):
    compose_train("objective.noise_density=0.15")  # the defaults themselves pass
    with pytest.raises(ConfigError, match=expected):
        compose_train(override)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train.packing=true", "train.strategy=fsdp"], r"^train\.packing=true: with train\.strategy=ddp"),
        (["eval.every=10", "train.strategy=deepspeed"], r"^eval\.every=10: validation during training runs"),
        (["train.batch_size=12", "train.grad_accum=2", "train.devices=4"],
         r"^train\.batch_size=12: expected a multiple of train\.grad_accum x train\.devices = 8 "),
    ],
)
def test_settings_beyond_one_device_that_cannot_go_together_are_refused(overrides, expected):
    compose_train("train.batch_size=16", "train.grad_accum=2", "train.devices=4")  # 16 = 2 x 4 x 2: fine
    with pytest.raises(ConfigError, match=expected):
        compose_train(*overrides)


def test_mixed_needs_a_route_and_span_corruption_no_tail_form():
    with pytest.raises(ConfigError, match="objective=mixed needs objective.by_group"):
        compose_train("objective=mixed")
    with pytest.raises(ConfigError, match="contradicts objective.name=span_corruption"):
        compose_train("objective=span_corruption", "objective.form=tail")
    assert compose_train("objective=mixed", "objective.rates={filling: 1}").objective.rates == {"filling": 1}
