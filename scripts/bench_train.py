"""Training and evaluation speed of `mto` against the baseline a user would otherwise write.

    python scripts/bench_train.py                 # the full version (see README: Speed)
    python scripts/bench_train.py --quick         # `make bench`: fewer steps, under 10 minutes when quiet
    python scripts/bench_train.py --workloads tiny --steps tiny=100 --repeats 5

Three arms start from the same weights (built with `mto.models`, saved with `save_pretrained`) and see the
same text (pairs rendered with mto's template code), with the same steps, batch sizes, learning rate and
schedule (mto's defaults: lr 1e-3, 30 warm-up steps, linear decay, clipping at 1.0), generation cap and
torch threads (`--threads`, default: the cores available):

- baseline: `scripts/hf_baseline.py` (Seq2SeqTrainer as in Hugging Face's summarization example, fp32);
- mto: the real command line, `mto train ... train.packing=false` then `mto eval run=<dir>`;
- mto packed: `mto train ... train.packing=true` (its decoding is mto's, timed once in the mto arm).

Steadiness: every figure comes from `--repeats` interleaved repeats (baseline, mto, packed, baseline, mto,
packed, ...), so a load that comes and goes touches every arm alike; the report gives each figure's
median (min–max) and each ratio as the median (min–max) of the per-repeat ratios of runs next to each
other. Before each run the script waits until other processes use under `--quiet` cores (all waits
together at most `--max-wait` s); during each run it samples the 1-min load average, and it counts the
cores other processes used (/proc) and names the busiest. A run is marked UNRELIABLE when the load
exceeded the threads used by more than 0.5, when others used over 0.5 cores on average, or when the wait
for a quiet machine timed out.

Reported per arm: training tokens/s (source + target tokens without padding), examples/s and seconds per
step, evaluation examples/s (the span of generation only), the padding share of the training batches,
the final training loss, the held-out loss on the evaluation pairs (the same code for every arm), exact
match (a sanity check), peak RSS, wall time, and the model FLOP/s against the fp32 matmul peak measured
here. Model FLOPs per training example: 6 x (N_enc x source tokens + N_dec x target tokens), N_enc without
the token embedding (a lookup), N_dec without it but with the LM head's d_model x vocab; padding is not
counted (work, not useful work), nor attention's score/context arithmetic (under 1% at these lengths).

Writes `report.md` and `report.json` into `--out` (default `outputs/bench/<date>/`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.arms import ARMS, Context, mto_padding, prepare, run_arm
from bench.machine import Quiet, load, machine, matmul_peak
from bench.report import report
from bench.stats import interleaved, summary

ROOT = Path(__file__).resolve().parents[1]
ATOMIC = ROOT.parent / "shared" / "data" / "atomic2020"
T5_SMALL_DIMS = [
    "model.build.d_model=512",
    "model.build.d_ff=2048",
    "model.build.d_kv=64",
    "model.build.num_heads=8",
    "model.build.num_layers=6",
    "model.build.num_decoder_layers=6",
    "model.tokenizer_vocab_size=8000",
]
# Steps and evaluation examples, full and --quick. Quick is sized for `make bench` in under 10 minutes on
# a quiet 2-core machine, estimated from one quick repeat measured on a busy one (README: Speed): 3
# repeats x 3 arms x 2 workloads start 24 processes of about 12 s each (imports, loading, saving), about
# 6 minutes before any step; t5-small steps cost about 1.4 s (baseline, mto) and tiny ones 0.06 s.
WORKLOADS = {
    "tiny": {
        "title": "(a) tiny T5 (model=tiny) on the synthetic default (data=synthetic)",
        "overrides": ["model=tiny", "data=synthetic"],
        "steps": 300,
        "quick_steps": 60,
        "eval_examples": None,
        "quick_eval_examples": 256,
    },
    "t5-small": {
        "title": "(b) T5 with t5-small dimensions (random init, mto's built-model defaults: ReLU, "
        "no dropout, tied embeddings) on ATOMIC-2020",
        "overrides": ["model=tiny", *T5_SMALL_DIMS, "data=atomic", f"data.path={ATOMIC}"],
        "steps": 200,
        "quick_steps": 10,
        "eval_examples": 1024,
        "quick_eval_examples": 128,
    },
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="fewer steps and evaluation examples (make bench)")
    add("--workloads", default="tiny,t5-small", help="comma-separated: " + ", ".join(WORKLOADS))
    add("--arms", default=",".join(ARMS), help="comma-separated: " + ", ".join(ARMS))
    add("--repeats", type=int, default=3, help="interleaved repeats of every arm (default 3)")
    add("--steps", action="append", default=[], metavar="NAME=N", help="e.g. tiny=100")
    add("--eval-examples", action="append", default=[], metavar="NAME=N")
    add("--threads", type=int, default=None, help="torch threads of every process (default: the cores)")
    add("--mto-overrides", nargs="*", default=[], help="extra mto overrides (train and eval)")
    add("--out", type=Path, default=None, help="default: outputs/bench/<date>")
    add("--work", type=Path, default=None, help="keep the runs' logs here (default: a temp dir)")
    add("--timeout", type=float, default=1800, help="seconds per subprocess")
    add(
        "--quiet",
        type=float,
        default=0.5,
        metavar="CORES",
        help="before each run wait until other processes use fewer than CORES cores (0: do not wait)",
    )
    add("--max-wait", type=float, default=600, help="seconds all waits for --quiet may take together")
    args = parser.parse_args(argv)
    for flag, value, valid in (("--workloads", args.workloads, WORKLOADS), ("--arms", args.arms, ARMS)):
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            parser.error(f"{flag}: unknown or none {unknown} (valid: {', '.join(valid)})")
        setattr(args, flag[2:].replace("-", "_"), names)
    if args.repeats < 1:
        parser.error(f"--repeats: expected an integer >= 1, got {args.repeats}")
    for flag in ("steps", "eval_examples"):
        try:
            setattr(args, flag, {k: int(v) for k, v in (s.split("=", 1) for s in getattr(args, flag))})
        except ValueError:
            parser.error(f"--{flag.replace('_', '-')}: expected NAME=N with an integer N")
    return args


def run_workload(name: str, args: argparse.Namespace, ctx: Context, work: Path, say) -> dict:
    """Prepare one workload, then run its arms interleaved, `args.repeats` times."""
    spec = WORKLOADS[name]
    steps = args.steps.get(name, spec["quick_steps"] if args.quick else spec["steps"])
    n_eval = args.eval_examples.get(
        name, spec["quick_eval_examples"] if args.quick else spec["eval_examples"]
    )
    work.mkdir(parents=True, exist_ok=True)
    say(f"[{name}] preparing model and data")
    t0 = time.monotonic()
    prep = prepare(name, spec, work, n_eval)
    prep["prepare_s"] = time.monotonic() - t0
    runs = []
    for repeat, arm in interleaved(args.arms, args.repeats):
        fig = run_arm(arm, prep, work / f"r{repeat + 1}-{arm}", steps, ctx, "mto" not in args.arms)
        runs.append({"repeat": repeat, "arm": arm, **fig})
        procs = fig["processes"].values()
        say(
            f"[{name}] repeat {repeat + 1}/{args.repeats} {arm:8s} {steps} steps: "
            f"{fig['train_tokens_per_s']:.0f} tokens/s, held-out loss {fig['heldout_loss']:.4f}, "
            f"load max {max(p['load_max'] for p in procs):.2f}, "
            f"others {max(p['others_cores'] for p in procs):.2f} cores"
        )
    padding = mto_padding(prep, steps)
    base = summary([r.get("padding_share") for r in runs if r["arm"] == "baseline"])
    padding["baseline"] = base["median"] if base else None
    return {
        "name": name,
        "steps": steps,
        "repeats": args.repeats,
        "prep": prep,
        "runs": runs,
        "padding": padding,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import logging

    import torch
    import transformers

    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{(time.monotonic() - started) / 60:5.1f} min] {text}", flush=True)

    info = machine()
    info["threads"] = args.threads or info["cores"]
    torch.set_num_threads(info["threads"])  # the held-out loss and the matmul peak: the runs' threads
    info["load_before"] = load()
    say(
        f"machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, transformers "
        f"{info['transformers']}, {info['threads']} threads, load {info['load_before']:.2f}"
    )
    quiet = Quiet(args.quiet, args.max_wait)
    ctx = Context(threads=info["threads"], timeout=args.timeout, quiet=quiet, extra=args.mto_overrides)
    quiet.wait()
    peaks = {"fp32": matmul_peak("fp32"), "bf16": matmul_peak("bf16")}
    say(
        f"matmul peak: fp32 {peaks['fp32']['flops'] / 1e9:.1f}, "
        f"bf16 {peaks['bf16']['flops'] / 1e9:.1f} GFLOP/s"
    )
    workloads, skipped = [], []
    work_root = args.work or Path(tempfile.mkdtemp(prefix="mto-bench-"))
    try:
        for name in args.workloads:
            if name == "t5-small" and not (ATOMIC / "train.tsv").is_file():
                skipped.append(f"{name}: ATOMIC-2020 not found at {ATOMIC}")
                say(f"skipping {skipped[-1]}")
                continue
            workloads.append(run_workload(name, args, ctx, work_root / name, say))
    finally:
        if args.work is None:
            shutil.rmtree(work_root, ignore_errors=True)
    info["load_after"] = load()
    if workloads:  # the peak again at the end (less likely disturbed by both): keep the better figure
        quiet.wait()
        again = matmul_peak("fp32")
        info["fp32_peak_start_end"] = [peaks["fp32"]["flops"], again["flops"]]
        if again["flops"] > peaks["fp32"]["flops"]:
            peaks["fp32"] = again
    info["waited_s"], info["benchmark_s"] = quiet.spent_s, time.monotonic() - started
    out = args.out or ROOT / "outputs" / "bench" / dt.date.today().isoformat()
    command = " ".join(["python scripts/bench_train.py", *(sys.argv[1:] if argv is None else argv)])
    print(report(info, peaks, workloads, skipped, command, out))
    say(f"written: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
