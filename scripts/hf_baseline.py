"""The baseline a user would otherwise write: Hugging Face's `Seq2SeqTrainer`, as in its summarization
example (`examples/pytorch/summarization/run_summarization.py`), on pre-rendered (source, target) pairs.

    python scripts/hf_baseline.py --model DIR --train train.jsonl --eval test.jsonl --out result.json \
        --steps 300 --batch-size 32 --lr 1e-3 --warmup-steps 30

`--train`/`--eval` are JSON Lines files of {"source": ..., "target": ...}, rendered by mto's own template
code (scripts/bench_train.py writes them), so the baseline and `mto train` see identical text; `--model`
is a folder written by `save_pretrained` (model and tokenizer), so both start from the same weights.

What it does, setting by setting (the example script's behaviour unless marked "set to match mto"):

- Tokenisation: `datasets.Dataset.map(batched=True)` over `tokenizer(sources, max_length=max_source,
  truncation=True, padding=False)` and `tokenizer(text_target=targets, max_length=max_target,
  truncation=True)`, as the example's `preprocess_function` with `pad_to_max_length=False` (its default).
  Lengths set to match mto (`train.max_source_length` 64, `train.max_target_length` 32).
- Collation: `DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)`: dynamic padding
  to the longest in each batch, labels padded with -100, `decoder_input_ids` from the labels.
- Batches: the Trainer's default random sampler, no `group_by_length`, no `drop_last`,
  `dataloader_num_workers=0`: the `TrainingArguments` defaults.
- Optimiser: the `TrainingArguments` default (`optim=adamw_torch_fused`: torch AdamW, betas 0.9/0.999,
  eps 1e-8, weight decay 0), `max_grad_norm=1.0`, `lr_scheduler_type=linear` to 0 at `max_steps`.
  The learning rate and warm-up are set to match mto (`--lr`, `--warmup-steps`; the example's defaults are
  5e-5 and 0, which at a few hundred steps would leave the loss far from mto's and the comparison moot).
- Steps and batch size: set to match mto (`max_steps`, `per_device_train_batch_size`); the evaluation
  batch size too (`per_device_eval_batch_size`, default 8 otherwise).
- Precision: fp32 (`bf16=False`, `fp16=False`: the defaults). Threads: torch's default, or `--threads`
  (the benchmark sets the same count for every contender).
- Logging every 50 steps (`logging_steps`, default 500) so the final loss is the mean over the last 50
  steps, the figure mto reports (`train.log_every=50`); checkpoints as the defaults (`save_steps=500`).
- Evaluation: `trainer.predict(dataset, max_new_tokens=..., num_beams=1)` with `predict_with_generate=True`
  on the tokenised pairs (labels included, as in the example, which therefore also computes the loss on
  them). The generation cap is set to match mto's `eval.max_new_tokens` (the example caps at
  `val_max_target_length`, 128 by default); greedy (`num_beams=1`), no sampling.

Measured and written to `--out` (JSON): tokenisation seconds; the training loop's seconds (the span of
`trainer.train()`); examples and non-padding tokens (source + target, as mto counts them) the collator
produced; the final loss; prediction seconds (the span of `trainer.predict()`); the generated token ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def read_pairs(path: str) -> tuple[list[str], list[str]]:
    sources, targets = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                sources.append(row["source"])
                targets.append(row["target"])
    return sources, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a save_pretrained folder (model + tokenizer)")
    parser.add_argument("--train", required=True, help="JSON Lines of {source, target}")
    parser.add_argument("--eval", required=True, help="JSON Lines of {source, target}")
    parser.add_argument("--out", required=True, help="where to write the figures (JSON)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5, help="the example's default is 5e-5")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--max-source-length", type=int, default=64)
    parser.add_argument("--max-target-length", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--logging-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--work-dir", default=None, help="the Trainer's output_dir (default: a temp dir)")
    parser.add_argument("--save-model", default=None, help="save the trained model here (after timing)")
    args = parser.parse_args(argv)

    import datasets
    import torch
    import transformers
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)

    def preprocess(batch: dict) -> dict:
        inputs = tokenizer(batch["source"], max_length=args.max_source_length, padding=False, truncation=True)
        labels = tokenizer(text_target=batch["target"], max_length=args.max_target_length, truncation=True)
        inputs["labels"] = labels["input_ids"]
        return inputs

    start = time.perf_counter()
    train_src, train_tgt = read_pairs(args.train)
    eval_src, eval_tgt = read_pairs(args.eval)
    columns = ["source", "target"]
    train_ds = datasets.Dataset.from_dict({"source": train_src, "target": train_tgt})
    train_ds = train_ds.map(preprocess, batched=True, remove_columns=columns)
    eval_ds = datasets.Dataset.from_dict({"source": eval_src, "target": eval_tgt})
    eval_ds = eval_ds.map(preprocess, batched=True, remove_columns=columns)
    tokenize_seconds = time.perf_counter() - start

    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    counts = {"examples": 0, "tokens": 0, "source_tokens": 0, "target_tokens": 0, "padded_tokens": 0}

    def counting_collator(features):
        batch = collator(features)
        if model.training:  # count what the training loop sees (not the prediction batches)
            src = int(batch["attention_mask"].sum())
            tgt = int((batch["labels"] != -100).sum())
            counts["examples"] += len(features)
            counts["source_tokens"] += src
            counts["target_tokens"] += tgt
            counts["tokens"] += src + tgt
            counts["padded_tokens"] += batch["input_ids"].numel() + batch["labels"].numel()
        return batch

    with tempfile.TemporaryDirectory(prefix="hf-baseline-") as tmp:
        training_args = Seq2SeqTrainingArguments(
            output_dir=args.work_dir or tmp,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            learning_rate=args.lr,
            warmup_steps=args.warmup_steps,
            logging_steps=args.logging_steps,
            predict_with_generate=True,
            seed=args.seed,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = Seq2SeqTrainer(
            model=model,
            args=training_args,
            train_dataset=train_ds,
            data_collator=counting_collator,
            processing_class=tokenizer,
        )
        start = time.perf_counter()
        train_output = trainer.train()
        train_seconds = time.perf_counter() - start
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        if args.save_model:
            trainer.save_model(args.save_model)
        model.eval()
        start = time.perf_counter()
        predicted = trainer.predict(eval_ds, max_new_tokens=args.max_new_tokens, num_beams=1)
        predict_seconds = time.perf_counter() - start

    pred_ids = predicted.predictions
    pred_ids = [[int(t) for t in row if t >= 0] for row in pred_ids]  # -100 pads the gathered rows
    result = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "optim": str(training_args.optim),
        "steps": train_output.global_step,
        "tokenize_seconds": tokenize_seconds,
        "train_seconds": train_seconds,
        "train_runtime": train_output.metrics.get("train_runtime"),
        **{f"train_{k}": v for k, v in counts.items()},
        "train_examples_per_s": counts["examples"] / train_seconds,
        "train_tokens_per_s": counts["tokens"] / train_seconds,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "eval_examples": len(eval_src),
        "eval_seconds": predict_seconds,
        "eval_examples_per_s": len(eval_src) / predict_seconds,
        "prediction_ids": pred_ids,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
