"""Checkpoints of the training loop: the folders a run resumes from, swapped so that a kill at any
instant leaves the newest complete one in place. The signals that ask for one are in mto/signals.py.
Written by rank 0 alone (every process holds the same weights and optimiser state under DDP); a sharded
model's (FSDP, DeepSpeed) is accelerate's `save_state`, to which every process writes its shard."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import uuid
from pathlib import Path

import torch

from mto import world
from mto.errors import MtoError
from mto.runs import follow_umask, fsync_path, make_temp_dir
from mto.signals import StopSignals, test_hook
from mto.training import distributed

__all__ = ["CHECKPOINTS", "Checkpoint", "StopSignals", "rng_state", "set_rng_state", "test_hook"]

log = logging.getLogger("mto")

CHECKPOINTS = "checkpoints"  # the folder in a run directory
STEP_DIR = re.compile(r"step-(\d+)")
SHARDED = "accelerate"  # the folder of a sharded model's state in a checkpoint (`Accelerator.save_state`)


class Checkpoint:
    """`<run dir>/checkpoints/step-<N>/`: the trainable weights (safetensors), optimiser and scheduler
    states, RNG states and the data position (remaining batches of the epoch and the sampler's state)
    after N steps. Everything but the weights is loaded with `torch.load(weights_only=True)`.

    A save writes a temporary folder (`.tmp-*`), fsyncs its files and itself, renames it to `step-<N>`,
    fsyncs the parent, and only then removes the older checkpoints (each renamed to `.trash-*` first). So
    a `step-*` folder is always complete, the newest one is never removed before a newer one is durable,
    and a kill at any instant leaves at worst a hidden leftover, removed by the next save or load. A
    resume takes the newest `step-*` folder that reads back (an unreadable one is set aside as
    `.unreadable-*`, kept for inspection). Written by hand: no library swaps folders crash-safely."""

    def __init__(self, folder: Path, every: int = 0):
        self.folder = Path(folder)
        self.every = every

    def complete(self) -> list[tuple[int, Path]]:
        """(step, folder) of every complete checkpoint, newest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.folder.iterdir() if (m := STEP_DIR.fullmatch(p.name))]
        return sorted(found, reverse=True)

    def exists(self) -> bool:
        return bool(self.complete())

    def clean(self) -> None:
        """Remove what a killed save left behind (temporary and half-removed folders)."""
        if self.folder.is_dir():
            for path in [*self.folder.glob(".tmp-*"), *self.folder.glob(".trash-*")]:
                shutil.rmtree(path, ignore_errors=True)

    def save(self, model, optimizer, scheduler, state: dict, accelerator=None) -> None:
        """Called by every process: rank 0 writes (with a sharded `accelerator`, every process writes its
        shard into the folder rank 0 made)."""
        from safetensors.torch import save_file

        shards = accelerator is not None and distributed.sharded(accelerator)
        if not shards and not world.is_main():
            return
        step = int(state["step"])
        tmp = None
        if world.is_main():
            if not self.folder.is_dir():
                self.folder.mkdir(parents=True, exist_ok=True)
                fsync_path(self.folder.parent)
            self.clean()
            tmp = make_temp_dir(self.folder, ".tmp-")
        if shards:
            tmp = Path(distributed.broadcast(str(tmp)))
            accelerator.save_state(str(tmp / SHARDED))
            distributed.barrier()
            if not world.is_main():
                return
        final = self.folder / f"step-{step}"
        try:
            if not shards:
                weights = {
                    n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
                }
                save_file(weights, str(tmp / "trainable.safetensors"))
            torch.save(
                {
                    **({} if shards else {"optimizer": optimizer.state_dict()}),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    **state,
                },
                tmp / "state.pt",
            )
            follow_umask(tmp)
            for path in tmp.rglob("*"):
                fsync_path(path)
            fsync_path(tmp)
            test_hook(f"checkpoint-written-{step}")
            if final.exists():  # the same step again (after an unreadable newer one was set aside)
                self._discard(final, step)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_path(self.folder)
        test_hook(f"checkpoint-renamed-{step}")
        for _, older in self.complete():
            if older != final:
                self._discard(older, step)
        log.info("checkpoint at step %d -> %s", step, final)

    def _discard(self, path: Path, step: int) -> None:
        """Remove a checkpoint folder: renamed first (atomic), so no `step-*` folder is ever partial."""
        trash = self.folder / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        os.replace(path, trash)
        test_hook(f"checkpoint-pruned-{step}")
        shutil.rmtree(trash, ignore_errors=True)

    def load(self, model, optimizer, scheduler, accelerator=None) -> dict:
        """Restore the newest readable checkpoint into model, optimiser and scheduler; return its state.
        Every process reads it (the same one: the unreadable ones fail alike); rank 0 alone tidies and
        sets aside. With a sharded `accelerator` the model and optimiser come from `load_state`."""
        from safetensors.torch import load_file

        shards = accelerator is not None and distributed.sharded(accelerator)
        if world.is_main():
            self.clean()
        for _, path in self.complete():
            try:  # both files are read before anything is restored
                weights = {} if shards else load_file(str(path / "trainable.safetensors"))
                state = torch.load(path / "state.pt", weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unreadable file: the next older checkpoint
                if world.is_main():
                    aside = path.with_name(f".unreadable-{path.name}-{uuid.uuid4().hex[:8]}")
                    log.warning("checkpoint %s cannot be read (%s); set aside as %s", path, err, aside.name)
                    os.replace(path, aside)
                continue
            if shards:  # accelerate's own files, which this run wrote (its RNG states are pickled)
                accelerator.load_state(str(path / SHARDED))
            else:
                self._restore_weights(model, weights, path)
                optimizer.load_state_dict(state.pop("optimizer"))
            scheduler.load_state_dict(state.pop("scheduler"))
            torch.set_rng_state(state.pop("torch_rng"))
            cuda_rng = state.pop("cuda_rng")
            if cuda_rng:
                torch.cuda.set_rng_state_all(cuda_rng)
            return state
        raise MtoError(f"{self.folder}: no readable checkpoint (the unreadable ones are set aside there)")

    @staticmethod
    def _restore_weights(model, weights: dict, path: Path) -> None:
        params = dict(model.named_parameters())
        for name, value in weights.items():
            if name not in params or params[name].shape != value.shape:
                raise MtoError(f"{path}: {name} {tuple(value.shape)} does not fit this run's model")
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)


def rng_state(rng: random.Random) -> list:
    """The state of a `random.Random` as a list `torch.load(weights_only=True)` reads back."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))
