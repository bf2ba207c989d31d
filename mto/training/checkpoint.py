"""Checkpoints of the training loop: the folder a run resumes from, and the signals that ask for one."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import torch

from mto.errors import Interrupted

log = logging.getLogger("mto")


class StopSignals:
    """Turns SIGTERM, SIGUSR1 and SIGUSR2 (what SLURM sends before preemption or the time limit;
    submitit asks SLURM for USR2) into a flag the loop reads between steps, so a checkpoint is only
    ever taken of a consistent state. After the checkpoint, the previous handler (e.g. submitit's,
    which requeues the job) gets the signal."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("received signal %d: checkpointing at the end of this step", signum)
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        """Hand the received signal to the handler that was there before us, or stop."""
        handler = self.previous.get(self.received)
        if callable(handler):
            handler(self.received, None)
        raise Interrupted(f"stopped by signal {self.received} after a checkpoint")


class Checkpoint:
    """`<run dir>/checkpoint/`: the trainable weights (safetensors), optimiser and scheduler states,
    RNG states and the data position (remaining batches of the epoch and the sampler's state), written
    to a temporary folder and renamed over the previous checkpoint, so a kill never leaves half of one.
    Everything but the weights is loaded with `torch.load(weights_only=True)`."""

    def __init__(self, folder: Path, every: int = 0):
        self.folder = Path(folder)
        self.every = every

    def exists(self) -> bool:
        return (self.folder / "state.pt").is_file()

    def save(self, model, optimizer, scheduler, state: dict) -> None:
        from safetensors.torch import save_file

        tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=self.folder.parent))
        try:
            weights = {
                n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
            }
            save_file(weights, str(tmp / "trainable.safetensors"))
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    **state,
                },
                tmp / "state.pt",
            )
            old = self.folder.with_name(".checkpoint-old")
            if self.folder.exists():
                os.replace(self.folder, old)
            os.replace(tmp, self.folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("checkpoint at step %d -> %s", state["step"], self.folder)

    def load(self, model, optimizer, scheduler) -> dict:
        from safetensors.torch import load_file

        weights = load_file(str(self.folder / "trainable.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        state = torch.load(self.folder / "state.pt", weights_only=True)
        optimizer.load_state_dict(state.pop("optimizer"))
        scheduler.load_state_dict(state.pop("scheduler"))
        torch.set_rng_state(state.pop("torch_rng"))
        cuda_rng = state.pop("cuda_rng")
        if cuda_rng:
            torch.cuda.set_rng_state_all(cuda_rng)
        return state


def rng_state(rng: random.Random) -> list:
    """The state of a `random.Random` as a list `torch.load(weights_only=True)` reads back."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))
