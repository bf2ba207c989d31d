"""Training and evaluation speed of `mto` against the baseline a user would otherwise write.

    python scripts/bench_train.py                 # the full version (a few minutes per workload)
    python scripts/bench_train.py --quick         # `make bench`: fewer steps, under 10 minutes
    python scripts/bench_train.py --workloads tiny --steps tiny=100

For each workload, both contenders start from the same weights (built with `mto.models`, saved with
`save_pretrained` into a temporary folder) and see the same text (pairs rendered with mto's own template
code), with the same number of steps, batch sizes, learning rate and schedule (mto's defaults: lr 1e-3,
30 warm-up steps, linear decay, gradient clipping at 1.0), generation cap and thread count:

- baseline: `scripts/hf_baseline.py` (Seq2SeqTrainer as in Hugging Face's summarization example, fp32),
  one subprocess for training and prediction;
- contender: the real command line, `mto train ... eval.after_train=false` then `mto eval run=<dir>`,
  each in its own subprocess.

Reported side by side: training tokens/s (source + target tokens without padding) and examples/s, evaluation
examples/s (the span of generation only, in both), peak RSS per process (`os.wait4`'s rusage), wall time,
the final training loss (mean over the last 50 steps, in both), exact match of the predictions (a sanity
check that both trained alike), and the ratio contender/baseline; the model FLOP/s against the machine's
matrix-multiply peak (fp32 and bf16 `torch.matmul` of large square matrices, measured here), and the
tokenisation time of mto's feature cache on a first (miss) and second (hit) run.

Model FLOPs per training example: 6 x (N_enc x source tokens + N_dec x target tokens), where N_enc counts
the encoder's parameters without the token embedding (a lookup, no FLOPs), and N_dec the decoder's without
the token embedding plus the LM head's d_model x vocab (a matrix multiply per target token, whether or not
it is tied to the embedding). Padding is not counted (it is work, but not useful work), nor is attention's
score/context arithmetic (under 1% at these sequence lengths).

Writes `report.md` and `report.json` into `--out` (default `outputs/bench/<date>/`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATOMIC = ROOT.parent / "shared" / "data" / "atomic2020"

BF16_SLOW = (
    "; bf16 is slower than fp32 on this CPU (no AVX-512 BF16/AMX): mto's precision=auto trains in fp32 "
    "here, so the fp32 peak is the one that counts"
)
TARGETS = {"train_speedup": 1.5, "loss_tolerance": 0.02, "eval_speedup": 2.0, "mfu": 0.40}

T5_SMALL_DIMS = [
    "model.build.d_model=512",
    "model.build.d_ff=2048",
    "model.build.d_kv=64",
    "model.build.num_heads=8",
    "model.build.num_layers=6",
    "model.build.num_decoder_layers=6",
    "model.tokenizer_vocab_size=8000",
]

# name -> (title, mto overrides selecting data + model, steps full, steps quick, eval examples full/quick)
WORKLOADS = {
    "tiny": {
        "title": "(a) tiny T5 (model=tiny) on the synthetic default (data=synthetic)",
        "overrides": ["model=tiny", "data=synthetic"],
        "steps": 300,
        "quick_steps": 200,
        "eval_examples": None,
        "quick_eval_examples": None,
    },
    "t5-small": {
        "title": "(b) T5 with t5-small dimensions (random init, mto's built-model defaults: ReLU, "
        "no dropout, tied embeddings) on ATOMIC-2020",
        "overrides": ["model=tiny", *T5_SMALL_DIMS, "data=atomic", f"data.path={ATOMIC}"],
        "steps": 200,
        "quick_steps": 100,
        "eval_examples": 1024,
        "quick_eval_examples": 512,
    },
}


# ---------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "flags": [], "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name") and info["cpu"] in ("", platform.machine()):
            info["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
            info["flags"] = [f for f in wanted if f in flags]
            break
    if hasattr(os, "sched_getaffinity"):
        info["cores"] = len(os.sched_getaffinity(0))
    import torch

    info["torch"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    info["python"] = platform.python_version()
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def load() -> float:
    return os.getloadavg()[0]


def cpu_busy(seconds: float = 2.0) -> float:
    """Cores busy over the next `seconds` (from /proc/stat), while this script itself sleeps."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
    return busy * (os.cpu_count() or 1)


def wait_quiet(max_busy: float, max_wait: float) -> float:
    """Wait (at most `max_wait` s) until other processes use under `max_busy` cores; return their use."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = cpu_busy()
        if busy < max_busy or time.monotonic() > deadline:
            return busy
        print(f"  waiting: other processes use {busy:.2f} cores", flush=True)
        time.sleep(10)


def matmul_peak(dtype_name: str, budget_s: float = 1.5) -> dict:
    """The best FLOP/s of `torch.matmul` on square matrices (sizes 1024-4096, best of several runs)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    best = {"flops": 0.0, "n": 0}
    for n in (1024, 2048, 4096):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.matmul(a, b)  # warm-up
        start = time.perf_counter()
        reps = 0
        while True:
            t0 = time.perf_counter()
            torch.matmul(a, b)
            seconds = time.perf_counter() - t0
            reps += 1
            flops = 2 * n**3 / seconds
            if flops > best["flops"]:
                best = {"flops": flops, "n": n}
            if reps >= 2 and time.perf_counter() - start > budget_s / 3:
                break
        if seconds > budget_s:  # slow dtype on this CPU: larger sizes would take minutes
            break
    return best


# ---------------------------------------------------------------------------------------------- prepare
@contextmanager
def env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    plain = time.perf_counter() - t0
    cache = {"tokenize_s": plain}
    with tempfile.TemporaryDirectory(prefix="mto-bench-cache-") as tmp, env(MTO_CACHE_DIR=tmp):
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
        "train_cfg": {
            "batch_size": int(cfg.train.batch_size),
            "lr": float(cfg.train.lr),
            "warmup_steps": int(cfg.train.warmup_steps),
            "max_source_length": int(max_src),
            "max_target_length": int(max_tgt),
            "eval_batch_size": int(cfg.eval.batch_size),
            "max_new_tokens": int(cfg.eval.max_new_tokens),
            "log_every": int(cfg.train.log_every),
        },  # fmt: skip
    }


# ---------------------------------------------------------------------------------------------- run
QUIET = {"max_busy": 0.0, "max_wait": 0.0}  # set from --quiet / --max-wait


def run_process(cmd: list[str], log_path: Path, timeout: float) -> dict:
    """Run `cmd`, its output into `log_path`; wall seconds, exit code and peak RSS (MiB) of that process.
    With --quiet, first wait until other processes leave the CPU (mostly) idle."""
    others = wait_quiet(QUIET["max_busy"], QUIET["max_wait"]) if QUIET["max_busy"] else cpu_busy(1.0)
    start, load_start = time.perf_counter(), load()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kib = usage.ru_maxrss  # KiB on Linux
    result = {
        "rc": proc.returncode, "wall_s": time.perf_counter() - start, "peak_rss_mib": rss_kib / 1024,
        "load": f"{load_start:.2f} / {load():.2f}", "others_busy": others,
    }  # fmt: skip
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n" + "\n".join(tail))
    return result


def run_baseline(prep: dict, work: Path, steps: int, timeout: float) -> dict:
    t = prep["train_cfg"]
    out = work / "baseline.json"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "hf_baseline.py"),
        "--model", prep["model_dir"], "--train", str(work / "train.jsonl"),
        "--eval", str(work / "test.jsonl"), "--out", str(out), "--steps", str(steps),
        "--batch-size", str(t["batch_size"]), "--eval-batch-size", str(t["eval_batch_size"]),
        "--lr", str(t["lr"]), "--warmup-steps", str(t["warmup_steps"]),
        "--max-source-length", str(t["max_source_length"]),
        "--max-target-length", str(t["max_target_length"]),
        "--max-new-tokens", str(t["max_new_tokens"]), "--logging-steps", str(t["log_every"]),
        "--work-dir", str(work / "baseline-trainer"), "--save-model", str(work / "baseline-model"),
    ]  # fmt: skip
    proc = run_process(cmd, work / "baseline.log", timeout)
    res = json.loads(out.read_text())
    src_share = res["train_source_tokens"] / max(1, res["train_tokens"])
    return {
        "train_tokens_per_s": res["train_tokens_per_s"],
        "train_examples_per_s": res["train_examples_per_s"],
        "train_seconds": res["train_seconds"],
        "source_share": src_share,
        "padding_share": 1 - res["train_tokens"] / max(1, res["train_padded_tokens"]),
        "final_loss": res["final_loss"],
        "eval_examples_per_s": res["eval_examples_per_s"],
        "eval_seconds": res["eval_seconds"],
        "prediction_ids": res["prediction_ids"],
        "peak_rss_mib": proc["peak_rss_mib"],
        "wall_s": proc["wall_s"],
        "load": proc["load"],
        "others_busy": f"{proc['others_busy']:.2f}",
        "threads": res["threads"],
        "optim": res["optim"],
    }


def mto_exe() -> list[str]:
    exe = Path(sys.executable).with_name("mto")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mto.cli"]


def run_contender(prep: dict, work: Path, steps: int, extra: list[str], timeout: float) -> dict:
    t = prep["train_cfg"]
    train_dir, eval_dir = work / "mto-train", work / "mto-eval"
    data = [o for o in prep["overrides"] if o.startswith("data")]
    model = ["model=tiny", f"model.name_or_path={prep['model_dir']}", "model.build=null"]
    eval_cap = [f"eval.max_examples={prep['eval_examples']}"]
    train = run_process(
        [*mto_exe(), "train", *model, *data, f"train.steps={steps}", f"train.batch_size={t['batch_size']}",
         f"train.lr={t['lr']}", "eval.after_train=false", *eval_cap, *extra, f"hydra.run.dir={train_dir}"],
        work / "mto-train.log", timeout,
    )  # fmt: skip
    evaluation = run_process(
        [*mto_exe(), "eval", f"run={train_dir}", *extra, f"hydra.run.dir={eval_dir}"],
        work / "mto-eval.log",
        timeout,
    )
    fig = json.loads((train_dir / "run.json").read_text())["figures"]
    efig = json.loads((eval_dir / "run.json").read_text())["figures"]
    preds = [json.loads(line)["prediction"] for line in (eval_dir / "predictions.jsonl").open()]
    if "train_examples_per_s" in fig:
        examples_per_s = fig["train_examples_per_s"]
    else:  # steps x batch size: exact but for the one short batch per epoch
        examples_per_s = fig["train_steps"] * t["batch_size"] / fig["train_seconds"]
    return {
        "train_tokens_per_s": fig["train_tokens_per_s"],
        "train_examples_per_s": examples_per_s,
        "train_seconds": fig["train_seconds"],
        "source_share": prep["source_share"],
        "final_loss": fig["train_loss"],
        "precision": fig.get("precision"),
        "eval_examples_per_s": efig["eval_examples_per_s"],
        "eval_seconds": prep["eval_examples"] / efig["eval_examples_per_s"],
        "exact_match": efig.get("exact_match"),
        "predictions": preds,
        "peak_rss_mib": max(train["peak_rss_mib"], evaluation["peak_rss_mib"]),
        "peak_rss_train_mib": train["peak_rss_mib"],
        "peak_rss_eval_mib": evaluation["peak_rss_mib"],
        "wall_s": train["wall_s"] + evaluation["wall_s"],
        "load": f"{train['load']}, {evaluation['load']}",
        "others_busy": f"{train['others_busy']:.2f}, {evaluation['others_busy']:.2f}",
    }


def model_flops_per_s(prep: dict, res: dict) -> float:
    """6 x (N_enc x source tokens + N_dec x target tokens) per second of training."""
    share = res["source_share"]
    per_token = 6 * (prep["n_enc"] * share + prep["n_dec"] * (1 - share))
    return per_token * res["train_tokens_per_s"]


def heldout_loss(model_dir: Path, work: Path, prep: dict) -> float:
    """Token-weighted mean loss on the evaluation pairs, the same code for both trained models: the
    training losses are means of batch means over differently composed batches (length-grouped or not)."""
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


def score_baseline(prep: dict, base: dict) -> float | None:
    """Exact match of the baseline's predictions, decoded and scored as mto scores its own."""
    from transformers import AutoTokenizer

    from mto.metrics import score_generation
    from mto.templates import decode_answer

    tokenizer = AutoTokenizer.from_pretrained(prep["model_dir"])
    preds = [decode_answer(ids, tokenizer) for ids in base["prediction_ids"]]
    base["predictions"] = preds
    try:
        summary, _ = score_generation(preds, prep["eval_records"])
    except (KeyError, ValueError):
        return None
    return summary.get("exact_match")


# ---------------------------------------------------------------------------------------------- report
def verdict(value: float | None, target: float, what: str, higher: bool = True) -> str:
    if value is None:
        return "n/a"
    if higher:
        shown = (lambda v: f"{v:.1%}") if target < 1 else (lambda v: f"{v:.2f}x")
        if value >= target:
            return f"met ({what} {shown(value)} >= {shown(target)})"
        return f"MISSED by {(target - value) / target:.0%} ({what} {shown(value)} < {shown(target)})"
    if value <= target:
        return f"met ({what} {value:.1%} <= {target:.0%})"
    return f"MISSED ({what} {value:.1%} > {target:.0%})"


def loss_verdict(diff: float | None, tolerance: float) -> str:
    if diff is None:
        return "n/a"
    side = "lower" if diff < 0 else "higher"
    if diff <= tolerance:
        return f"met (mto {abs(diff):.1%} {side})"
    return f"MISSED (mto {diff:.1%} higher > {tolerance:.0%})"


def fmt(value, spec: str = ".1f") -> str:
    if value is None:
        return "–"
    return format(value, spec)


def workload_section(w: dict, peaks: dict) -> tuple[list[str], dict]:
    prep, base, mto = w["prep"], w["baseline"], w["mto"]
    fp32, bf16 = peaks["fp32"]["flops"], peaks["bf16"]["flops"]
    for res in (base, mto):
        res["model_flops_per_s"] = model_flops_per_s(prep, res)
        res["mfu_fp32"] = res["model_flops_per_s"] / fp32
        res["mfu_bf16"] = res["model_flops_per_s"] / bf16

    def ratio(key: str) -> float:
        return mto[key] / base[key]

    # Signed: the target guards against speed bought with worse training, so a lower loss meets it.
    loss_diff = None  # the baseline logs its loss every 50 steps: none below that
    if base["final_loss"] is not None and mto["final_loss"] is not None:
        loss_diff = (mto["final_loss"] - base["final_loss"]) / base["final_loss"]
    # Utilisation counts against the peak of the precision mto trained in (bf16 where it is fast).
    peak_name = "bf16" if mto.get("precision") == "bf16" else "fp32"
    heldout_diff = (mto["heldout_loss"] - base["heldout_loss"]) / base["heldout_loss"]
    checks = {
        "heldout_rel_diff": heldout_diff,
        "train_speedup": ratio("train_tokens_per_s"),
        "eval_speedup": ratio("eval_examples_per_s"),
        "loss_rel_diff": loss_diff,
        "mfu_fp32": mto["mfu_fp32"],
        "mfu": mto[f"mfu_{peak_name}"],
    }
    rows = [
        ("training tokens/s", "train_tokens_per_s", ".0f", True),
        ("training examples/s", "train_examples_per_s", ".1f", True),
        ("training loop seconds", "train_seconds", ".1f", True),
        ("final training loss (mean of last 50 steps)", "final_loss", ".4f", True),
        ("held-out loss on the evaluation pairs (same code for both)", "heldout_loss", ".4f", True),
        ("evaluation examples/s (generation)", "eval_examples_per_s", ".1f", True),
        ("exact match (sanity check)", "exact_match", ".4f", True),
        ("peak RSS, MiB (max over processes)", "peak_rss_mib", ".0f", True),
        ("wall seconds, processes end to end (mto: train + eval)", "wall_s", ".1f", True),
        ("model GFLOP/s (training)", "model_flops_per_s", ".2e", True),
        ("utilisation vs fp32 matmul peak", "mfu_fp32", ".1%", False),
    ]
    if bf16 >= fp32:  # where bf16 is slower than fp32 a share of its peak means nothing
        rows.append(("utilisation vs bf16 matmul peak", "mfu_bf16", ".1%", False))
    lines = [
        f"### {prep['title']}",
        "",
        f"{prep['parameters'] / 1e6:.2f}M parameters (vocabulary {prep['vocab']}; FLOP count: "
        f"N_enc {prep['n_enc'] / 1e6:.2f}M, N_dec incl. LM head {prep['n_dec'] / 1e6:.2f}M), "
        f"{prep['train_examples']} training pairs (mean {prep['mean_source_tokens']:.1f} source + "
        f"{prep['mean_target_tokens']:.1f} target tokens), {w['steps']} steps x batch "
        f"{prep['train_cfg']['batch_size']}, lr {prep['train_cfg']['lr']:g} (both), "
        f"{prep['eval_examples']} evaluation examples (batch {prep['train_cfg']['eval_batch_size']}, "
        f"max {prep['train_cfg']['max_new_tokens']} new tokens, greedy). Baseline padding share in "
        f"training batches: {base.get('padding_share', 0):.0%}.",
        "",
        "| figure | HF Seq2SeqTrainer (baseline) | mto | mto / baseline |",
        "|---|---:|---:|---:|",
    ]
    for label, key, spec, show_ratio in rows:
        b, m = base.get(key), mto.get(key)
        if key == "model_flops_per_s":
            b, m = (None if b is None else b / 1e9), (None if m is None else m / 1e9)
            spec = ".2f"
        r = f"{m / b:.2f}x" if show_ratio and b and m is not None else ""
        lines.append(f"| {label} | {fmt(b, spec)} | {fmt(m, spec)} | {r} |")
    lines.append(f"| load average (1 min), start / end of each process | {base['load']} | {mto['load']} | |")
    lines.append(
        f"| cores used by other processes just before each | {base['others_busy']} | {mto['others_busy']} | |"
    )
    lines.append("")
    c = prep["cache"]
    if "cached_first_s" in c:
        lines.append(
            f"Tokenisation of the {prep['train_examples']} training pairs: {c['tokenize_s']:.3f} s plain; "
            f"with mto's feature cache {c['cached_first_s']:.3f} s on a first run (miss: tokenise, hash, "
            f"write) and {c['cached_second_s']:.3f} s on a second (hit: hash and load), "
            f"{c['tokenize_s'] / c['cached_second_s']:.1f}x faster."
        )
        lines.append("")
    targets = [
        f"- training speed (tokens/s) >= {TARGETS['train_speedup']}x: "
        + verdict(checks["train_speedup"], TARGETS["train_speedup"], "ratio"),
        f"- final loss at most {TARGETS['loss_tolerance']:.0%} above the baseline's: "
        + loss_verdict(loss_diff, TARGETS["loss_tolerance"])
        + f"; held-out loss: mto {heldout_diff:+.1%} against the baseline",
        f"- evaluation speed >= {TARGETS['eval_speedup']}x: "
        + verdict(checks["eval_speedup"], TARGETS["eval_speedup"], "ratio"),
    ]
    if w["name"] == "t5-small":
        targets.append(
            f"- model FLOP utilisation >= {TARGETS['mfu']:.0%} of the {peak_name} matmul peak: "
            + verdict(checks["mfu"], TARGETS["mfu"], "utilisation")
        )
    lines += ["Targets:", "", *targets, ""]
    return lines, checks


def report(info: dict, peaks: dict, workloads: list[dict], skipped: list[str], args, out: Path) -> str:
    today = dt.datetime.now().astimezone()
    lines = [
        f"# mto training and evaluation speed vs Hugging Face Seq2SeqTrainer ({today:%Y-%m-%d %H:%M %Z})",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores available, flags: {', '.join(info['flags'])}",
        f"- torch {info['torch']} ({info['threads']} threads), transformers {info.get('transformers')}, "
        f"Python {info['python']}",
        f"- load average (1 min) before / after: {info['load_before']:.2f} / {info['load_after']:.2f}",
        f"- matmul peak (torch.matmul, square, best of the start and end of the run): "
        f"fp32 {peaks['fp32']['flops'] / 1e9:.1f} GFLOP/s "
        f"(n={peaks['fp32']['n']}), bf16 {peaks['bf16']['flops'] / 1e9:.1f} GFLOP/s (n={peaks['bf16']['n']})"
        + (BF16_SLOW if peaks["bf16"]["flops"] < peaks["fp32"]["flops"] else ""),
        f"- command: `{' '.join(['python scripts/bench_train.py', *sys.argv[1:]])}`",
        "",
    ]  # fmt: skip
    summary = []
    for w in workloads:
        section, checks = workload_section(w, peaks)
        lines += section
        summary.append({"workload": w["name"], **checks})
    for message in skipped:
        lines += [f"- skipped: {message}", ""]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    dump = {
        "machine": info,
        "peaks": peaks,
        "summary": summary,
        "workloads": [
            {
                "name": w["name"],
                "steps": w["steps"],
                "prep": {k: v for k, v in w["prep"].items() if k != "eval_records"},
                **{
                    side: {k: v for k, v in w[side].items() if k not in ("prediction_ids", "predictions")}
                    for side in ("baseline", "mto")
                },
            }
            for w in workloads
        ],
        "skipped": skipped,
    }
    (out / "report.json").write_text(json.dumps(dump, indent=1, default=str) + "\n")
    return text


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and evaluation examples")
    parser.add_argument("--workloads", default="tiny,t5-small", help="comma-separated: tiny, t5-small")
    parser.add_argument("--steps", action="append", default=[], metavar="NAME=N", help="e.g. tiny=100")
    parser.add_argument("--eval-examples", action="append", default=[], metavar="NAME=N")
    parser.add_argument("--mto-overrides", nargs="*", default=[], help="extra mto overrides (both stages)")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/bench/<date>")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.0,
        metavar="CORES",
        help="before each process, wait until other processes use fewer than CORES cores (0: do not wait)",
    )
    parser.add_argument("--max-wait", type=float, default=600, help="seconds to wait for --quiet each time")
    args = parser.parse_args(argv)

    QUIET.update(max_busy=args.quiet, max_wait=args.max_wait)
    steps_of = {k: int(v) for k, v in (s.split("=", 1) for s in args.steps)}
    evals_of = {k: int(v) for k, v in (s.split("=", 1) for s in args.eval_examples)}
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)} (valid: {', '.join(WORKLOADS)})")
    out = args.out or ROOT / "outputs" / "bench" / dt.date.today().isoformat()

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    import logging

    logging.basicConfig(level=logging.WARNING)
    info = machine()
    info["load_before"] = load()
    print(f"machine: {info['cpu']} ({info['cores']} cores), load {info['load_before']:.2f}", flush=True)
    if args.quiet:
        wait_quiet(args.quiet, args.max_wait)
    peaks = {"fp32": matmul_peak("fp32"), "bf16": matmul_peak("bf16")}
    print(
        f"matmul peak: fp32 {peaks['fp32']['flops'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {peaks['bf16']['flops'] / 1e9:.1f} GFLOP/s",
        flush=True,
    )
    workloads, skipped = [], []
    work_root = args.work or Path(tempfile.mkdtemp(prefix="mto-bench-"))
    try:
        for name in names:
            spec = WORKLOADS[name]
            if name == "t5-small" and not (ATOMIC / "train.tsv").is_file():
                msg = f"{name}: ATOMIC-2020 not found at {ATOMIC}"
                print(f"skipping {msg}", flush=True)
                skipped.append(msg)
                continue
            steps = steps_of.get(name, spec["quick_steps"] if args.quick else spec["steps"])
            n_eval = evals_of.get(name, spec["quick_eval_examples"] if args.quick else spec["eval_examples"])
            work = work_root / name
            work.mkdir(parents=True, exist_ok=True)
            print(f"[{name}] preparing model and data", flush=True)
            prep = prepare(name, spec, work, n_eval)
            print(f"[{name}] baseline: HF Seq2SeqTrainer, {steps} steps (load {load():.2f})", flush=True)
            base = run_baseline(prep, work, steps, args.timeout)
            base["exact_match"] = score_baseline(prep, base)
            print(f"[{name}] mto train + mto eval, {steps} steps (load {load():.2f})", flush=True)
            mto = run_contender(prep, work, steps, args.mto_overrides, args.timeout)
            base["heldout_loss"] = heldout_loss(work / "baseline-model", work, prep)
            mto["heldout_loss"] = heldout_loss(work / "mto-train" / "model", work, prep)
            workloads.append({"name": name, "steps": steps, "prep": prep, "baseline": base, "mto": mto})
            print(
                f"[{name}] train tokens/s {base['train_tokens_per_s']:.0f} -> "
                f"{mto['train_tokens_per_s']:.0f}, "
                f"eval examples/s {base['eval_examples_per_s']:.1f} -> {mto['eval_examples_per_s']:.1f}, "
                f"loss {base['final_loss']} / {mto['final_loss']}",
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(work_root, ignore_errors=True)
    info["load_after"] = load()
    if workloads:  # the peak again at the end (less likely disturbed by both): keep the better figure
        if args.quiet:
            wait_quiet(args.quiet, args.max_wait)
        again = matmul_peak("fp32")
        info["fp32_peak_start_end"] = [peaks["fp32"]["flops"], again["flops"]]
        if again["flops"] > peaks["fp32"]["flops"]:
            peaks["fp32"] = again
    text = report(info, peaks, workloads, skipped, args, out)
    print(text)
    print(f"written: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
