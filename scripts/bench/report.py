"""report.md and report.json of the benchmark: per workload, each figure as the median (min–max) of the
interleaved repeats per arm, the ratios against the baseline as the median (min–max) of the per-repeat
ratios, the padding share, the held-out loss, the model FLOP utilisation, each run's load record and the
targets of issue 16 with by how much each is missed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from bench.arms import ARMS
from bench.stats import paired_ratios, relative_spread, show, summary, unreliable_reasons

# Issue 16's targets: training tokens/s against the baseline per workload, held-out loss at most 0.5%
# above the baseline's, evaluation 2x (issue 4 kept), model FLOP utilisation of the fp32 matmul peak.
TARGETS = {"speedup": {"t5-small": 1.5, "tiny": 1.2}, "heldout": 0.005, "eval_speedup": 2.0, "mfu": 0.50}
BF16_SLOW = (
    "; bf16 is slower than fp32 on this CPU (no AVX-512 BF16/AMX): mto's precision=auto trains in fp32 "
    "here, so the fp32 peak is the one that counts"
)
ROWS = [  # label, key, format, scale, ratio against the baseline
    ("training tokens/s (source + target, no padding)", "train_tokens_per_s", ".0f", 1, True),
    ("training examples/s", "train_examples_per_s", ".1f", 1, True),
    ("seconds per training step", "step_s", ".3f", 1, True),
    ("evaluation examples/s (generation)", "eval_examples_per_s", ".1f", 1, True),
    ("final training loss (mean of the last logged steps)", "final_loss", ".4f", 1, False),
    ("held-out loss (the same code for every arm)", "heldout_loss", ".4f", 1, False),
    ("exact match (sanity check)", "exact_match", ".4f", 1, False),
    ("peak RSS, MiB (max over the arm's processes)", "peak_rss_mib", ".0f", 1, True),
    ("wall seconds of the arm's processes", "wall_s", ".1f", 1, True),
    ("model GFLOP/s (training, non-padding tokens)", "model_flops_per_s", ".2f", 1e-9, True),
    ("share of the fp32 matmul peak", "mfu_fp32", ".1%", 1, False),
]


def model_flops_per_s(prep: dict, run: dict) -> float:
    """6 x (N_enc x source tokens + N_dec x target tokens) per second of training."""
    share = run["source_share"]
    return 6 * (prep["n_enc"] * share + prep["n_dec"] * (1 - share)) * run["train_tokens_per_s"]


def annotate(w: dict, peaks: dict, threads: int) -> None:
    """Per run: model FLOP/s, utilisation, and why it is unreliable (an empty list when it is not)."""
    for run in w["runs"]:
        run["model_flops_per_s"] = model_flops_per_s(w["prep"], run)
        run["mfu_fp32"] = run["model_flops_per_s"] / peaks["fp32"]["flops"]
        run["unreliable"] = {
            name: unreliable_reasons(proc, threads) for name, proc in run["processes"].items()
        }
        run["unreliable"] = {name: reasons for name, reasons in run["unreliable"].items() if reasons}


def verdict(value: float | None, target: float, unit: str = "x") -> str:
    if value is None:
        return "n/a (arm not run)"
    places = 3 if unit == "%" else 2  # decimal places of the value as a fraction / a ratio
    while value < target and round(value, places) == round(target, places) and places < 6:
        places += 1  # a shortfall the rounding would hide (1.198x "< 1.20x") gets more digits
    shown = (lambda v: f"{v:.{places - 2}%}") if unit == "%" else (lambda v: f"{v:.{places}f}x")
    if value >= target:
        return f"met ({shown(value)} >= {shown(target)})"
    short = (target - value) / target
    return f"MISSED by {short:.{0 if short >= 0.01 else 1}%} ({shown(value)} < {shown(target)})"


def figures_of(w: dict) -> dict:
    """{arm: {key: summary}} and {arm: {key: summary of the per-repeat ratios against the baseline}}."""
    arms = list(dict.fromkeys(r["arm"] for r in w["runs"]))
    stats, ratios = {}, {}
    for arm in arms:
        mine = [r for r in w["runs"] if r["arm"] == arm]
        stats[arm] = {key: summary([r.get(key) for r in mine]) for _, key, *_ in ROWS}
        if arm != "baseline" and "baseline" in arms:
            ratios[arm] = {
                key: summary(paired_ratios(w["runs"], key, arm, "baseline")) for _, key, *_ in ROWS
            }
            ratios[arm]["heldout_rel"] = summary(
                [x - 1 for x in paired_ratios(w["runs"], "heldout_loss", arm, "baseline")]
            )
    return {"arms": arms, "stats": stats, "ratios": ratios}


def median(d: dict, *keys):
    for k in keys:
        d = (d or {}).get(k)
    return d["median"] if isinstance(d, dict) and "median" in d else None


def packed_vs_mto(runs: list[dict]) -> float | None:
    """Median relative difference of the held-out loss, packed against unpacked mto, per repeat."""
    return (summary([x - 1 for x in paired_ratios(runs, "heldout_loss", "packed", "mto")]) or {}).get(
        "median"
    )


def checks_of(w: dict, f: dict) -> dict:
    """The figures the targets are judged on: the packed arm's where it ran (the issue's lever), else
    mto's."""
    best = "packed" if "packed" in f["arms"] else "mto"
    evaluated = "mto" if "mto" in f["arms"] else "packed"
    pad = w["padding"]
    predicted = (1 - pad["packed"]) / (1 - pad["baseline"]) if pad.get("baseline") is not None else None
    return {
        "arm": best,
        "train_speedup": median(f["ratios"], best, "train_tokens_per_s"),
        "heldout_rel_diff": median(f["ratios"], best, "heldout_rel"),
        "eval_speedup": median(f["ratios"], evaluated, "eval_examples_per_s"),
        "mfu_fp32": median(f["stats"], best, "mfu_fp32"),
        "heldout_packed_vs_mto": packed_vs_mto(w["runs"]) if {"mto", "packed"} <= set(f["arms"]) else None,
        "padding_predicted_speedup": predicted,
        "no_padding_cap": 1 / (1 - pad["baseline"]) if pad.get("baseline") is not None else None,
    }


def targets_lines(w: dict, c: dict) -> list[str]:
    name, pad = w["name"], w["padding"]
    goal = TARGETS["speedup"].get(name)
    lines = ["Targets (issue 16), judged on the " + ARMS.get(c["arm"], c["arm"]) + " arm:", ""]
    if goal:
        lines.append(f"- training tokens/s >= {goal}x the baseline: " + verdict(c["train_speedup"], goal))
    packed = c["arm"] == "packed"
    if packed and c["padding_predicted_speedup"] is not None and c["train_speedup"] is not None:
        why = "why" if c["train_speedup"] < goal else "for scale"
        lines.append(
            f"  - {why}: padding falls {pad['baseline']:.0%} -> {pad['packed']:.0%} of the computed "
            f"positions, which predicts {c['padding_predicted_speedup']:.2f}x if time followed the positions "
            f"({c['train_speedup'] / c['padding_predicted_speedup']:.0%} of it realised); no padding at all "
            f"would cap it at {c['no_padding_cap']:.2f}x"
            + (
                f"; the time is mostly outside the matrix products here (utilisation {c['mfu_fp32']:.0%})"
                if c["mfu_fp32"] is not None and c["mfu_fp32"] < 0.15
                else ""
            )
        )
    diff = c["heldout_rel_diff"]
    if diff is not None:
        state = "met" if diff <= TARGETS["heldout"] else f"MISSED by {diff - TARGETS['heldout']:.2%}"
        lines.append(
            f"- held-out loss at most {TARGETS['heldout']:.1%} above the baseline's: {state} ({diff:+.2%})"
        )
    same = c.get("heldout_packed_vs_mto")
    if packed and same is not None:
        lines.append(
            f"  - packed against mto unpacked (the same batches in the same order): {same:+.2%}; against "
            "the baseline the batches differ (its sampler's order), which alone moves a short run's loss"
        )
    lines.append(
        f"- evaluation examples/s >= {TARGETS['eval_speedup']}x: "
        + verdict(c["eval_speedup"], TARGETS["eval_speedup"])
    )
    if name == "t5-small":
        lines.append(
            f"- model FLOP utilisation >= {TARGETS['mfu']:.0%} of the fp32 matmul peak: "
            + verdict(c["mfu_fp32"], TARGETS["mfu"], "%")
        )
        if packed and c["mfu_fp32"] is not None and c["mfu_fp32"] < TARGETS["mfu"]:
            lines.append(
                f"  - why: the count takes non-padding tokens only ({pad['packed']:.0%} of the packed "
                "positions are still padding), and the matrix products of a batch (a few hundred "
                "rows) run below the large square matmul's peak"
            )
    return lines + [""]


def workload_section(w: dict, peaks: dict) -> tuple[list[str], dict]:
    prep, f = w["prep"], figures_of(w)
    arms = f["arms"]
    t = prep["train_cfg"]
    order = " ".join(r["arm"] for r in w["runs"][: 2 * len(arms)])
    spreads = [relative_spread(f["stats"][a]["train_tokens_per_s"]) for a in arms]
    spread_max = max((s for s in spreads if s is not None), default=None)
    spread = "–" if spread_max is None else f"{spread_max:.0%} (max - min)"
    lines = [
        f"### {prep['title']}",
        "",
        f"{prep['parameters'] / 1e6:.2f}M parameters (vocabulary {prep['vocab']}; FLOP count: N_enc "
        f"{prep['n_enc'] / 1e6:.2f}M, N_dec incl. LM head {prep['n_dec'] / 1e6:.2f}M), "
        f"{prep['train_examples']} training pairs (mean {prep['mean_source_tokens']:.1f} source + "
        f"{prep['mean_target_tokens']:.1f} target tokens), {w['steps']} steps x batch {t['batch_size']}, "
        f"lr {t['lr']:g}, {prep['eval_examples']} evaluation examples (batch {t['eval_batch_size']}, "
        f"max {t['max_new_tokens']} new tokens, greedy).",
        "",
        f"{w['repeats']} repeats, run in the order {order} ...; each cell: median (min–max) over the "
        "repeats; each ratio: median (min–max) of the per-repeat ratios (the arms of a repeat ran one "
        f"after the other); training tokens/s of the repeats lie within {spread} of their median.",
        "",
        "| figure | "
        + " | ".join(ARMS[a] for a in arms)
        + " | "
        + " | ".join(f"{a} / baseline" for a in f["ratios"])
        + " |",
        "|---|" + "---:|" * (len(arms) + len(f["ratios"])),
    ]
    for label, key, spec, scale, with_ratio in ROWS:
        cells = [show(f["stats"][a][key], spec, scale) for a in arms]
        if all(c == "–" for c in cells):
            continue
        if key == "heldout_loss":
            rel = [show(f["ratios"][a]["heldout_rel"], "+.2%") for a in f["ratios"]]
        else:
            rel = [show(f["ratios"][a][key], ".2f", suffix="x") if with_ratio else "" for a in f["ratios"]]
        lines.append(f"| {label} | " + " | ".join(cells + rel) + " |")
    pad = w["padding"]
    lines.append(
        "| padding share of the computed training positions | "
        + " | ".join(f"{pad[a]:.0%}" if pad.get(a) is not None else "–" for a in arms)
        + " |" * (len(f["ratios"]) + 1)
    )
    lines += [
        "",
        "Padding: the baseline's as its collator counted it; mto's recomputed with mto's own batcher, "
        "seed and packer over the same steps. Evaluation speed depends on how long each trained model's "
        "outputs are (greedy decoding stops at EOS): after few steps the models differ, and so may it."
        + (
            " The packed arm is not evaluated: packing does not touch decoding, timed in the mto arm."
            if "packed" in arms and "mto" in arms
            else ""
        ),
        "",
    ]
    c = prep["cache"]
    lines += [
        f"Tokenisation of the {prep['train_examples']} training pairs: {c['tokenize_s']:.3f} s plain; "
        f"with mto's feature cache {c['cached_first_s']:.3f} s on a first run (miss) and "
        f"{c['cached_second_s']:.3f} s on a second (hit).",
        "",
    ]
    checks = checks_of(w, f)
    lines += targets_lines(w, checks)
    lines += runs_table(w)
    checks["unreliable"] = any(r["unreliable"] for r in w["runs"])
    checks["max_relative_spread_tokens_per_s"] = spread_max
    return lines, checks


def runs_table(w: dict) -> list[str]:
    lines = [
        "Runs, in order (load: the 1-min load average before / highest / after; others: cores other "
        "processes used on average over the run, and the busiest of them):",
        "",
        "| # | repeat | arm | process | wall s | load | others | busiest others | unreliable because |",
        "|---:|---:|---|---|---:|---|---:|---|---|",
    ]
    for i, run in enumerate(w["runs"], 1):
        for name, p in run["processes"].items():
            reasons = "; ".join(run["unreliable"].get(name, []))
            lines.append(
                f"| {i} | {run['repeat'] + 1} | {run['arm']} | {name} | {p['wall_s']:.1f} | "
                f"{p['load_before']:.2f} / {p['load_max']:.2f} / {p['load_after']:.2f} | "
                f"{p['others_cores']:.2f} | {', '.join(p['top_others']) or '–'} | {reasons} |"
            )
    return lines + [""]


def report(
    info: dict, peaks: dict, workloads: list[dict], skipped: list[str], command: str, out: Path
) -> str:
    now = dt.datetime.now().astimezone()
    sections, summary_rows = [], []
    for w in workloads:
        annotate(w, peaks, info["threads"])
        section, checks = workload_section(w, peaks)
        sections += section
        summary_rows.append({"workload": w["name"], **checks})
    bad = [
        f"{w['name']} run {i} ({r['arm']} {name}, repeat {r['repeat'] + 1}): {'; '.join(reasons)}"
        for w in workloads
        for i, r in enumerate(w["runs"], 1)
        for name, reasons in r["unreliable"].items()
    ]
    lines = [
        f"# mto training and evaluation speed vs Hugging Face Seq2SeqTrainer ({now:%Y-%m-%d %H:%M %Z})",
        "",
        (
            "**UNRELIABLE**: other processes used the cores during " + f"{len(bad)} run(s); read the ratios "
            "with care and rerun on a quiet machine:"
            if bad
            else "Reliable: no run saw the 1-min load exceed "
            f"the {info['threads']} threads used by more than 0.5, nor other processes use over 0.5 cores."
        ),
        *[f"- {b}" for b in bad],
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores available, flags: {', '.join(info['flags'])}",
        f"- versions: torch {info['torch']}, transformers {info['transformers']}, datasets "
        f"{info['datasets']}, Python {info['python']}; every process ran with {info['threads']} "
        "torch threads",
        f"- load average (1 min) at the start / end of the benchmark: {info['load_before']:.2f} / "
        f"{info['load_after']:.2f}; waited {info.get('waited_s', 0):.0f} s for a quiet machine; the whole "
        f"benchmark took {info.get('benchmark_s', 0) / 60:.1f} min",
        f"- matmul peak (torch.matmul, square, best of the start and end of the benchmark): fp32 "
        f"{peaks['fp32']['flops'] / 1e9:.1f} GFLOP/s (n={peaks['fp32']['n']}), bf16 "
        f"{peaks['bf16']['flops'] / 1e9:.1f} GFLOP/s (n={peaks['bf16']['n']})"
        + (BF16_SLOW if peaks["bf16"]["flops"] < peaks["fp32"]["flops"] else ""),
        f"- command: `{command}`",
        "",
    ]
    lines += sections + [f"- skipped: {m}" for m in skipped]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    dump = {
        "machine": info,
        "peaks": peaks,
        "summary": summary_rows,
        "skipped": skipped,
        "workloads": [
            {
                "name": w["name"],
                "steps": w["steps"],
                "repeats": w["repeats"],
                "padding": w["padding"],
                "prep": {k: v for k, v in w["prep"].items() if k not in ("eval_records", "features")},
                "runs": w["runs"],
            }
            for w in workloads
        ],
    }
    (out / "report.json").write_text(json.dumps(dump, indent=1, default=str) + "\n")
    return text
