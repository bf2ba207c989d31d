"""The parts of `scripts/bench_train.py`, one job per module: `stats` (medians, spreads, the interleaved
order, the reliability verdict: pure functions, unit-tested), `machine` (versions, matmul peak, load and
other processes, waiting for a quiet machine, running a timed subprocess), `arms` (the contenders: the
Hugging Face baseline, mto, mto packed), `report` (report.md and report.json)."""
