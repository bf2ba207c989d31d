"""The training loop shared by `mto train` and `mto adapt`, and the decoding `mto eval` runs: tokenised
pairs in, a trained model out, generated token ids back. One module per job:

- `runtime`: threads, seeds, device, precision (`auto` -> bf16 | fp32), autocast, the progress bar;
- `features`: tokenised pairs, the per-epoch batches, padding (`collate`), the tokenised-feature cache;
- `checkpoint`: the run's checkpoint folder and the signals that ask for one (SIGTERM, SIGUSR1/2);
- `loop`: the optimiser and schedule, and `train_model` (on accelerate's `Accelerator`);
- `distributed`: several processes: the accelerator and its strategy, micro-batches and their token
  weights, the collectives the loop and decoding need;
- `decoding`: `generate` (batched, greedy by default) and the fast greedy path for T5 (plain, LoRA, prefix).

Nothing is re-exported here: import from the module that owns the function.
"""
