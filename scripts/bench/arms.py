"""The contenders, each run as its own processes from the same saved weights on the same rendered text:

- `baseline`: scripts/hf_baseline.py (Seq2SeqTrainer as in Hugging Face's summarization example), one
  process for training and prediction;
- `mto`: `mto train ... train.packing=false eval.after_train=false`, then `mto eval run=<dir>`;
- `packed`: the same with `train.packing=true`; not evaluated when the `mto` arm runs too (packing does
  not touch decoding: the same code would be timed twice).

Also what is computed once per workload: the model and data (`prepare`), the padding share of mto's own
batches with and without packing (`mto_padding`), and per run the held-out loss of the trained model."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from bench.machine import Quiet, run_process

ROOT = Path(__file__).resolve().parents[2]
ARMS = {
    "baseline": "HF Seq2SeqTrainer (baseline)",
    "mto": "mto (train.packing=false)",
    "packed": "mto packed (train.packing=true)",
}


@dataclass
class Context:
    """What every run of one benchmark shares."""

    threads: int
    timeout: float
    quiet: Quiet
    extra: list[str] = field(default_factory=list)  # more mto overrides (train and eval)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mto.config import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return hydra_compose(config_name="train", overrides=overrides)


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for source, target in pairs:
            f.write(json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n")


def prepare(name: str, spec: dict, work: Path, eval_examples: int | None) -> dict:
    """Build the model and tokenizer with mto, save them, render the pairs, count FLOPs, time the cache."""
    from mto.models import load_tokenizer_and_model
    from mto.stages import steps
    from mto.training.features import cached_features, tokenize_pairs

    cfg = compose(spec["overrides"])
    task = steps.get_task(cfg)
    tokenizer, model = load_tokenizer_and_model(
        cfg.model, corpus=lambda: steps.tokenizer_corpus(cfg, task), seed=cfg.seed
    )
    template = steps.get_template(cfg, task)
    train_pairs = steps.render(template, task.train, tokenizer)
    test = task.split(cfg.eval.split)
    test = test[:eval_examples] if eval_examples else test
    test_pairs = steps.render(template, test, tokenizer)
    model_dir = work / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_pairs(work / "train.jsonl", train_pairs)
    write_pairs(work / "test.jsonl", test_pairs)

    # The feature cache: plain tokenisation, then a first (miss) and a second (hit) cached run.
    max_src, max_tgt = cfg.train.max_source_length, cfg.train.max_target_length
    tokenize_pairs(tokenizer, train_pairs[:64], max_src, max_tgt)  # warm-up
    t0 = time.perf_counter()
    features = tokenize_pairs(tokenizer, train_pairs, max_src, max_tgt)
    cache = {"tokenize_s": time.perf_counter() - t0}
    tmp_cache = tempfile.TemporaryDirectory(prefix="mto-bench-cache-")
    with tmp_cache as tmp, mock.patch.dict(os.environ, MTO_CACHE_DIR=tmp):
        for run in ("first", "second"):
            t0 = time.perf_counter()
            cached, _ = cached_features(tokenizer, train_pairs, max_src, max_tgt)
            cache[f"cached_{run}_s"] = time.perf_counter() - t0
            assert cached == features, "cached features differ from tokenize_pairs"

    src_tokens = sum(len(f["input_ids"]) for f in features)
    tgt_tokens = sum(len(f["labels"]) for f in features)
    embed = model.get_input_embeddings().weight
    n_enc = sum(p.numel() for p in model.get_encoder().parameters() if p is not embed)
    n_dec = sum(p.numel() for p in model.get_decoder().parameters() if p is not embed)
    n_head = model.config.d_model * model.config.vocab_size  # the LM head's matmul, tied or not
    return {
        "name": name,
        "title": spec["title"],
        "overrides": spec["overrides"],
        "model_dir": str(model_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": model.config.vocab_size,
        "n_enc": n_enc,
        "n_dec": n_dec + n_head,
        "train_examples": len(train_pairs),
        "eval_examples": len(test_pairs),
        "eval_records": test,
        "source_share": src_tokens / (src_tokens + tgt_tokens),
        "mean_source_tokens": src_tokens / len(features),
        "mean_target_tokens": tgt_tokens / len(features),
        "cache": cache,
        "features": features,
        "seed": int(cfg.seed),
        "pad_id": tokenizer.pad_token_id,
        "start_id": model.config.decoder_start_token_id,
        "train_cfg": {
            "batch_size": int(cfg.train.batch_size),
            "lr": float(cfg.train.lr),
            "warmup_steps": int(cfg.train.warmup_steps),
            "max_source_length": int(max_src),
            "max_target_length": int(max_tgt),
            "eval_batch_size": int(cfg.eval.batch_size),
            "max_new_tokens": int(cfg.eval.max_new_tokens),
            "log_every": int(cfg.train.log_every),
        },
    }


def mto_padding(prep: dict, steps: int) -> dict:
    """The share of padded positions (source + target) in the batches mto's loop trains on over `steps`
    steps, unpacked and packed: the same batcher, seed and packer as the run (mto.training), so the same
    batches, recomputed here because run.json does not record padding."""
    from mto.training.features import collate, epoch_batches
    from mto.training.packing import pack

    features, batch_size = prep["features"], prep["train_cfg"]["batch_size"]
    rng, batches = random.Random(prep["seed"]), []
    real = plain = packed = 0
    for _ in range(steps):
        if not batches:
            batches = epoch_batches(features, batch_size, rng, False)
        chosen = [features[i] for i in batches.pop()]
        real += sum(len(f["input_ids"]) + len(f["labels"]) for f in chosen)
        b = collate(chosen, prep["pad_id"])
        plain += b["input_ids"].numel() + b["labels"].numel()
        p = pack(chosen, prep["pad_id"], prep["start_id"])
        packed += p["input_ids"].numel() + p["labels"].numel()
    return {"mto": 1 - real / plain, "packed": 1 - real / packed}


def mto_exe() -> list[str]:
    exe = Path(sys.executable).with_name("mto")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mto.cli"]


def run_baseline(prep: dict, work: Path, steps: int, ctx: Context) -> dict:
    t = prep["train_cfg"]
    out, model_dir = work / "baseline.json", work / "baseline-model"
    flags = {
        "--model": prep["model_dir"], "--train": work.parent / "train.jsonl",
        "--eval": work.parent / "test.jsonl", "--out": out, "--steps": steps, "--batch-size": t["batch_size"],
        "--eval-batch-size": t["eval_batch_size"],
        "--lr": t["lr"], "--warmup-steps": t["warmup_steps"], "--max-source-length": t["max_source_length"],
        "--max-target-length": t["max_target_length"], "--max-new-tokens": t["max_new_tokens"],
        "--logging-steps": min(t["log_every"], steps), "--work-dir": work / "baseline-trainer",
        "--save-model": model_dir, "--threads": ctx.threads,
    }  # fmt: skip
    cmd = [sys.executable, str(ROOT / "scripts" / "hf_baseline.py")]
    cmd += [part for flag, value in flags.items() for part in (flag, str(value))]
    proc = run_process(cmd, work / "baseline.log", ctx.timeout, ROOT, ctx.quiet)
    res = json.loads(out.read_text())
    figures = {
        "train_tokens_per_s": res["train_tokens_per_s"],
        "train_examples_per_s": res["train_examples_per_s"],
        "train_seconds": res["train_seconds"],
        "step_s": res["train_seconds"] / max(1, res["steps"]),
        "source_share": res["train_source_tokens"] / max(1, res["train_tokens"]),
        "padding_share": 1 - res["train_tokens"] / max(1, res["train_padded_tokens"]),
        "final_loss": res["final_loss"],
        "eval_examples_per_s": res["eval_examples_per_s"],
        "exact_match": score_baseline(prep, res["prediction_ids"]),
        "heldout_loss": heldout_loss(model_dir, work.parent, prep),
        "precision": "fp32",
        "threads": res["threads"],
        "versions": {"torch": res["torch"], "transformers": res["transformers"]},
        "optim": res["optim"],
        "peak_rss_mib": proc["peak_rss_mib"],
        "wall_s": proc["wall_s"],
        "processes": {"baseline": proc},
    }
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.rmtree(work / "baseline-trainer", ignore_errors=True)
    return figures


def run_mto(prep: dict, work: Path, steps: int, ctx: Context, packing: bool, evaluate: bool) -> dict:
    t = prep["train_cfg"]
    train_dir, eval_dir = work / "mto-train", work / "mto-eval"
    data = [o for o in prep["overrides"] if o.startswith("data")]
    model = ["model=tiny", f"model.name_or_path={prep['model_dir']}", "model.build=null"]
    common = [f"threads={ctx.threads}", *ctx.extra]
    procs = {
        "train": run_process(
            [
                *mto_exe(),
                "train",
                *model,
                *data,
                f"train.steps={steps}",
                f"train.batch_size={t['batch_size']}",
                f"train.lr={t['lr']}",
                f"train.packing={str(packing).lower()}",
                "eval.after_train=false",
                f"eval.max_examples={prep['eval_examples']}",
                *common,
                f"hydra.run.dir={train_dir}",
            ],
            work / "mto-train.log",
            ctx.timeout,
            ROOT,
            ctx.quiet,
        )
    }
    fig = json.loads((train_dir / "run.json").read_text())["figures"]
    # mto records tokens/s; examples/s is steps x batch size: exact but for the one short batch per epoch
    examples_per_s = fig["train_steps"] * t["batch_size"] / fig["train_seconds"]
    figures = {
        "train_tokens_per_s": fig["train_tokens_per_s"],
        "train_examples_per_s": examples_per_s,
        "train_seconds": fig["train_seconds"],
        "step_s": fig["train_seconds"] / max(1, fig["train_steps"]),
        "source_share": prep["source_share"],
        "final_loss": fig["train_loss"],
        "precision": fig.get("precision"),
        "heldout_loss": heldout_loss(train_dir / "model", work.parent, prep),
    }
    if evaluate:
        procs["eval"] = run_process(
            [*mto_exe(), "eval", f"run={train_dir}", *common, f"hydra.run.dir={eval_dir}"],
            work / "mto-eval.log",
            ctx.timeout,
            ROOT,
            ctx.quiet,
        )
        efig = json.loads((eval_dir / "run.json").read_text())["figures"]
        figures.update(eval_examples_per_s=efig["eval_examples_per_s"], exact_match=efig.get("exact_match"))
    figures.update(
        peak_rss_mib=max(p["peak_rss_mib"] for p in procs.values()),
        wall_s=sum(p["wall_s"] for p in procs.values()),
        processes=procs,
    )
    shutil.rmtree(train_dir / "model", ignore_errors=True)
    return figures


def heldout_loss(model_dir: Path, work: Path, prep: dict) -> float:
    """Token-weighted mean loss on the evaluation pairs, the same code for every trained model: the
    training losses are means of batch means over differently composed batches."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from mto.training.features import collate, tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()
    pairs = [(r["source"], r["target"]) for r in map(json.loads, (work / "test.jsonl").open())]
    t = prep["train_cfg"]
    features = tokenize_pairs(tokenizer, pairs, t["max_source_length"], t["max_target_length"])
    total = tokens = 0.0
    with torch.inference_mode():
        for start in range(0, len(features), 64):
            batch = collate(features[start : start + 64], tokenizer.pad_token_id)
            n = int((batch["labels"] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens


def score_baseline(prep: dict, prediction_ids: list[list[int]]) -> float | None:
    """Exact match of the baseline's predictions, decoded and scored as mto scores its own."""
    from transformers import AutoTokenizer

    from mto.metrics import score_generation
    from mto.templates import decode_answer

    tokenizer = AutoTokenizer.from_pretrained(prep["model_dir"])
    preds = [decode_answer(ids, tokenizer) for ids in prediction_ids]
    try:
        summary, _ = score_generation(preds, prep["eval_records"])
    except (KeyError, ValueError):
        return None
    return summary.get("exact_match")


def run_arm(arm: str, prep: dict, work: Path, steps: int, ctx: Context, evaluate_packed: bool) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if arm == "baseline":
        return run_baseline(prep, work, steps, ctx)
    return run_mto(prep, work, steps, ctx, packing=arm == "packed", evaluate=arm == "mto" or evaluate_packed)
