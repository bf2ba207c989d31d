"""Adapters change what is generated: with a large random adapter, every method's generation (mto's
`generate`, greedy and beam, and `model.generate`) differs from the base's; the greedy loop gives
exactly `model.generate`'s tokens with the adapter on; a saved prefix adapter reloads to the same
predictions; and training and evaluating print no library warning."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from conftest import SMALL, compose_train, mto, run_dirs

from mto import tuning
from mto.config import EvalConfig
from mto.stages import steps
from mto.training.decoding import generate, greedy_generate, supports_greedy_generate

METHODS = {  # method -> the overrides it trains with
    "prompt": ["tuning=prompt", "template=masked_prompting"],
    "prefix": ["tuning=prefix", "template=masked_prompting"],
    "prefix_projection": ["tuning=prefix", "tuning.peft.prefix_projection=true", "template=masked_prompting"],
    "lora": ["tuning=lora", "template=masked_prompting"],
    "soft": ["tuning=soft", "template=masked_post_prompt"],
}
GREEDY_LOOP = {"prefix", "prefix_projection", "lora", "soft"}  # the rest goes through model.generate
MAX_NEW = 8


@pytest.fixture(scope="module")
def base(tiny_world):
    """The tiny world with its model's weights drawn at random (seeded) large enough that greedy outputs
    vary by input (the freshly built model emits padding only)."""
    task, tokenizer, built = tiny_world
    model = copy.deepcopy(built)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return task, tokenizer, model.eval()


def with_random_adapter(base, case: str, seed: int = 1):
    """(model with the `case` adapter, its weights drawn at random (`seed`) and large; tokenizer; sources)."""
    task, tokenizer, model = base
    cfg = compose_train(*METHODS[case])
    template = steps.get_template(cfg, task)
    tuned, tokenizer, _ = tuning.apply_tuning(copy.deepcopy(model), tokenizer, cfg, template, task)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 2.0)
    sources = [s for s, _ in steps.render(template, task.test[:16], tokenizer)]
    return tuned.eval(), tokenizer, sources


def hf_generate(model, tokenizer, sources: list[str], num_beams: int = 1) -> list[list[int]]:
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=num_beams,
            do_sample=False, max_new_tokens=MAX_NEW,
        )  # fmt: skip
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos) + 1] if eos in row else row for row in out.tolist()]


def mto_generate(model, tokenizer, sources: list[str], num_beams: int = 1) -> list[list[int]]:
    cfg = EvalConfig(batch_size=5, num_beams=num_beams, max_new_tokens=MAX_NEW)
    out = generate(model, tokenizer, sources, cfg, "fp32", 64)
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos) + 1] if eos in row else row for row in out]


def differing(a: list[list[int]], b: list[list[int]]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


@pytest.mark.filterwarnings("error")  # no library warning while decoding
@pytest.mark.parametrize("case", list(METHODS))
def test_an_adapter_changes_generation(base, case):
    _, _, plain = base
    model, tokenizer, sources = with_random_adapter(base, case)
    # Compared with the base and with another draw of the adapter (the base cannot read soft tokens).
    others = {"another adapter": with_random_adapter(base, case, seed=2)[0]}
    if case != "soft":
        others["the base"] = plain
    for num_beams in (1, 2):
        tuned = mto_generate(model, tokenizer, sources, num_beams)
        assert tuned == hf_generate(model, tokenizer, sources, num_beams)
        for name, other in others.items():
            reference = mto_generate(other, tokenizer, sources, num_beams)
            assert len(set(map(tuple, reference))) >= 4, f"{name}: outputs should vary by input"
            assert differing(tuned, reference) >= len(sources) // 2, f"{num_beams} beams: same as {name}"
            assert reference == hf_generate(other, tokenizer, sources, num_beams)
    assert supports_greedy_generate(model) == (case in GREEDY_LOOP)


@pytest.mark.parametrize("case", sorted(GREEDY_LOOP))
def test_greedy_loop_gives_generate_tokens_with_the_adapter_on(base, case):
    model, tokenizer, sources = with_random_adapter(base, case)
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    ours = greedy_generate(model, batch["input_ids"], batch["attention_mask"], MAX_NEW)
    assert ours == hf_generate(model, tokenizer, sources)
    # ... and they are what the adapter's own forward (the one training uses) predicts, token by token.
    length = max(map(len, ours))
    padded = torch.tensor([row + [tokenizer.pad_token_id] * (length - len(row)) for row in ours])
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=padded[:, :-1]).logits
    for row, predicted in zip(ours, logits.argmax(-1).tolist(), strict=True):
        assert row[1:] == predicted[: len(row) - 1]


def test_a_saved_prefix_adapter_generates_with_its_prefix(base, tmp_path):
    _, _, plain = base
    model, tokenizer, sources = with_random_adapter(base, "prefix")
    tuning.peft_methods.save(model, tmp_path, "tiny")
    loaded = tuning.peft_methods.load(copy.deepcopy(plain), tmp_path).eval()
    expected = mto_generate(model, tokenizer, sources)
    assert differing(expected, mto_generate(plain, tokenizer, sources)) >= len(sources) // 2
    assert mto_generate(loaded, tokenizer, sources) == expected
    assert hf_generate(loaded, tokenizer, sources) == expected


# ---------------------------------------------------------------- the real CLI: no library noise
LIBRARY_NOISE = re.compile(r"warn|deprecat|\[transformers\]|\[peft\]", re.IGNORECASE)


@pytest.mark.slow
def test_train_and_eval_print_no_library_warning(tmp_path):
    for tuning_method in ("full", "prefix"):
        out = tmp_path / tuning_method
        out.mkdir()
        proc = mto("train", f"tuning={tuning_method}", *SMALL, "threads=1", cwd=out)
        assert not LIBRARY_NOISE.search(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    (trained,) = run_dirs(tmp_path / "prefix" / "outputs" / "train")
    proc = mto("eval", f"run={trained}", cwd=tmp_path / "prefix")
    assert not LIBRARY_NOISE.search(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    (evaluated,) = run_dirs(tmp_path / "prefix" / "outputs" / "eval")
    assert (evaluated / "predictions.jsonl").read_text() == (trained / "predictions.jsonl").read_text()
