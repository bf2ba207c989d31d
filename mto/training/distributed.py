"""Several processes training one model, on Hugging Face accelerate: the `Accelerator` a run trains with
(DDP, or FSDP / DeepSpeed through accelerate's plugins), how a global batch is split into micro-batches and
weighted, and the few collectives the loop and evaluation need (torch.distributed's object collectives).

The global batch (`train.batch_size`) is the same whatever runs it: `grad_accum x processes` micro-batches,
micro-batch `g x processes + rank` being the g-th that process accumulates. Every process knows the whole
global batch (the batches come from the run's seed, not from a sharded DataLoader), so the label tokens of
the global batch are counted without a collective, and each micro-batch's mean loss is weighted by its share
of them: the gradient is that of the summed token loss over the global batch divided by its token count,
whatever the split (transformers' Trainer gathers the count across devices for the same reason:
`average_tokens_across_devices`, `num_items_in_batch`; a mean per micro-batch would weigh a short
micro-batch's tokens more, and 1 and 2 processes would train differently).
"""

from __future__ import annotations

import importlib.util
import os
import random
from typing import Any

import torch

from mto import world
from mto.errors import ConfigError


def check_split(cfg, processes: int) -> None:
    """One line naming the key unless the global batch divides into grad_accum x processes micro-batches."""
    parts = int(cfg.grad_accum) * processes
    if int(cfg.batch_size) % parts:
        raise ConfigError(
            f"train.batch_size={cfg.batch_size}: expected a multiple of train.grad_accum x processes = "
            f"{cfg.grad_accum} x {processes} = {parts} (the global batch is split into that many "
            "micro-batches)"
        )


def micro_batches(batch: list[int], parts: int) -> list[list[int]]:
    """`batch` in `parts` consecutive micro-batches as even as can be (an epoch's short last batch may
    leave some empty)."""
    size, extra = divmod(len(batch), parts)
    out, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        out.append(batch[start:end])
        start = end
    return out


def token_weight(n_tokens: int, n_total: int, parts: int) -> float:
    """What a micro-batch's mean loss is multiplied by: its share of the global batch's label tokens, times
    the `parts` (processes x grad_accum) that DDP and accelerate's `backward` average over."""
    return n_tokens * parts / n_total


def micro_seed(seed: int, step: int, micro: int) -> int:
    """The torch seed of micro-batch `micro` of step `step`: dropout draws the same masks for the same
    micro-batch whichever process runs it, and different ones on different processes."""
    return random.Random(f"{seed}/{step}/{micro}").getrandbits(63)


# ---------------------------------------------------------------------------- the accelerator


def make_accelerator(cfg, precision: str, dev: torch.device):
    """The `Accelerator` of a training: this process's place in the job (joined by `join`), bf16 autocast
    when `precision` is bf16, `train.grad_accum` micro-batches per step, `train.strategy`'s plugin. The
    scheduler is stepped by the loop once per optimiser step (a prepared one steps once per process)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    strategy = str(cfg.strategy)
    if strategy != "ddp" and dev.type != "cuda":
        # accelerate would quietly train DDP on a CPU (FSDP with cpu=True becomes DDP)
        raise ConfigError(f"train.strategy={strategy}: needs CUDA GPUs (this process runs on {dev.type}); "
                          "use train.strategy=ddp")  # fmt: skip
    mixed = "bf16" if precision == "bf16" else "no"
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed) and world.world_size() == 1:
        # accelerate keeps one precision per process; a process running one training after another (tests,
        # `mto match`'s fine-tunings) may change it, so the one-process state is started afresh.
        AcceleratorState._reset_state()
    accum = cfg.grad_accum
    plugins: dict[str, Any] = {}
    if strategy == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin

        # Each transformer block its own shard unit (the model's `_no_split_modules`), the optimiser built
        # before wrapping kept (use_orig_params), full weights gathered for saving.
        plugins["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            sharding_strategy="FULL_SHARD", auto_wrap_policy="transformer_based_wrap",
            state_dict_type="FULL_STATE_DICT", use_orig_params=True, sync_module_states=True,
        )  # fmt: skip
    elif strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("train.strategy=deepspeed: the deepspeed package is not installed "
                              "(pip install deepspeed)")  # fmt: skip
        from accelerate.utils import DeepSpeedPlugin

        # ZeRO stage 2: optimiser states and gradients sharded, the weights whole on every GPU (so the
        # trained model evaluates as it is); DeepSpeed clips and accumulates itself.
        plugin = DeepSpeedPlugin(zero_stage=2, gradient_accumulation_steps=accum,
                                 gradient_clipping=float(cfg.grad_clip) or None)  # fmt: skip
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = max(
            1, int(cfg.batch_size) // (accum * world.world_size())
        )
        plugins["deepspeed_plugin"] = plugin
    return Accelerator(cpu=dev.type == "cpu", mixed_precision=mixed, gradient_accumulation_steps=accum,
                       step_scheduler_with_optimizer=False, **plugins)  # fmt: skip


def sharded(accelerator) -> bool:
    """Whether the prepared model is sharded (FSDP) or wrapped in a DeepSpeed engine: its checkpoint is
    accelerate's `save_state`, and the plain model gets its weights back after training."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def full_weights(accelerator, prepared) -> dict[str, torch.Tensor]:
    """The whole model's weights on every process, from a sharded (FSDP) or DeepSpeed model."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(offload_to_cpu=True, rank0_only=False)
        with FSDP.state_dict_type(prepared, StateDictType.FULL_STATE_DICT, config):
            return prepared.state_dict()
    return accelerator.unwrap_model(prepared).state_dict()  # ZeRO stage 2: the weights are whole


# ---------------------------------------------------------------------------- processes and collectives


def join(dev: torch.device) -> None:
    """Join the job's other processes (gloo on a CPU, nccl on GPUs) when there are any."""
    if world.world_size() > 1:
        from accelerate import PartialState

        from mto.training.runtime import cores_per_process

        # accelerate would otherwise warn and set its own count; `set_threads` sets mto's.
        os.environ.setdefault("OMP_NUM_THREADS", str(cores_per_process()))
        PartialState(cpu=dev.type == "cpu")


def size() -> int:
    """Processes in the joined job (1 when none was joined)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def index() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def barrier() -> None:
    if size() > 1:
        torch.distributed.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every process."""
    if size() == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: Any) -> list:
    """Every process's `value`, in rank order, on every process."""
    if size() == 1:
        return [value]
    out: list = [None] * size()
    torch.distributed.all_gather_object(out, value)
    return out


def shard(items: list) -> list:
    """This process's consecutive share of `items` (accelerate's `split_between_processes`)."""
    if size() == 1:
        return items
    from accelerate import PartialState

    with PartialState().split_between_processes(items) as mine:
        return list(mine)


def step_figures(accelerator, loss_sum: torch.Tensor, stop: int | None) -> tuple[float, int]:
    """One collective per step: (the label-token-summed loss of the global batch, the stop signal any
    process received, 0 if none), so every process logs the same loss and stops at the same step."""
    flag = torch.tensor(float(stop or 0), dtype=torch.float64, device=loss_sum.device)
    mine = torch.stack([loss_sum.detach().to(torch.float64).reshape(()), flag])
    every = accelerator.gather(mine.to(accelerator.device)).reshape(-1, 2)
    return float(every[:, 0].sum()), int(every[:, 1].max())
