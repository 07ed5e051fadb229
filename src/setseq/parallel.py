"""How a training run uses its hardware: several processes, sharding and compilation.

Data parallel (torchrun --nproc-per-node N): every rank runs the same trainer from the same seed,
so every random decision (which concept, frame or window, stitched or not, prompt dropout, token
masks, noise, timesteps, coefficient-dropout masks) comes out the same on every rank. Each rank
draws a whole micro-batch but encodes and runs only its own share of it, and the ranks sum their
gradients before the optimiser step, the arithmetic of DistributedDataParallel. A run on N
processes therefore trains on the very batches a single process would, and the weights stay equal
on every rank without being broadcast. Only rank 0 writes files.

Sharded (--shard): FSDP2 (`torch.distributed.fsdp.fully_shard`) splits the parameters of every
transformer block, and of the rest of the transformer, across the ranks; it gathers a block's
weights for its forward and backward passes and reduce-scatters the gradients itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from setseq.config import OptimConfig
from setseq.errors import SetseqError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when run alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, concept files, logs and progress bars."""
        return self.rank == 0


def launched_size() -> int:
    """The number of processes torchrun started (WORLD_SIZE), 1 without torchrun."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise SetseqError(f"WORLD_SIZE must be a whole number, got {os.environ['WORLD_SIZE']!r}.") from None


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def device_for(device: str | None) -> str | None:
    """Under torchrun, `cuda` means this rank's own GPU: cuda:LOCAL_RANK."""
    if device is None or launched_size() == 1 or torch.device(device).type != "cuda":
        return device
    index, local = torch.device(device).index, _local_rank()
    if index is not None and index != local:
        raise SetseqError(
            f"under torchrun each process trains on its own GPU, cuda:LOCAL_RANK; pass --device cuda, not {device!r}."
        )
    return f"cuda:{local}"


def setup(device: torch.device) -> World:
    """Join the process group torchrun describes (once: NCCL on CUDA, Gloo on the CPU), or return
    the group already joined; a lone process gets World()."""
    if not (dist.is_available() and dist.is_initialized()):
        if launched_size() == 1:
            return World()
        if not dist.is_available():
            raise SetseqError("this torch build has no torch.distributed, so it cannot train on several processes.")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), _local_rank())
    if device.type == "cuda" and device.index is not None and device.index != world.local_rank:
        raise SetseqError(
            f"rank {world.rank} has its model on {device}, but each process must train on its own GPU, "
            f"cuda:{world.local_rank}; pass --device cuda."
        )
    return world


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def same_start(world: World, found: tuple[int, int] | None, path: object) -> None:
    """Every rank must resume from the same checkpoint (stage, step), or their collectives would
    pair up wrongly and hang: say so instead (e.g. machines that do not share the output folder)."""
    starts = _gather(world, found)
    if len(set(starts)) > 1:
        said = ", ".join(
            f"rank {r}: {'none' if s is None else f'stage {s[0] + 1} step {s[1]}'}" for r, s in enumerate(starts)
        )
        raise SetseqError(
            f"the processes found different checkpoints at {path} ({said}); every process must see "
            f"the same output folder to resume."
        )


def on_every_rank(world: World, flag: bool) -> bool:
    """True where `flag` holds on every rank (e.g. a cache file every rank can read)."""
    return all(_gather(world, bool(flag)))


def on_any_rank(world: World, flag: bool) -> bool:
    """True where `flag` holds on some rank (e.g. a stop signal one process received)."""
    return any(_gather(world, bool(flag)))


def from_main(world: World, value: object) -> object:
    """Rank 0's `value` (picklable), on every rank (e.g. a check only the writing rank can make)."""
    return _gather(world, value)[0]


def _gather(world: World, value: object) -> list[object]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if world.size == 1:
        return [value]
    values: list[object] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def barrier(world: World) -> None:
    """Wait for every rank (a no-op alone)."""
    if world.size > 1:
        dist.barrier()


def check_batch(optim: OptimConfig, size: int) -> None:
    """Each rank takes an equal share of every global batch; its forward passes hold micro_batch."""
    if optim.batch_size % size:
        raise SetseqError(
            f"the batch size {optim.batch_size} cannot be split evenly over {size} processes; "
            f"use a batch size that is a multiple of {size}."
        )
    share = optim.batch_size // size
    if optim.micro_batch is not None and share % optim.micro_batch:
        raise SetseqError(
            f"each of the {size} processes gets {share} samples per step, which micro batch "
            f"{optim.micro_batch} does not divide; use a micro batch that divides {share}."
        )


def share(n: int, world: World) -> slice:
    """This rank's part of a micro-batch of n samples (n is a multiple of the world size)."""
    part = n // world.size
    return slice(world.rank * part, (world.rank + 1) * part)


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def sum_gradients(params: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Sum the gradients of `params` and `loss` over the ranks, in place, in one all-reduce (float32);
    returns the summed loss. FSDP-sharded parameters are reduced by FSDP and skipped. A gradient
    stays None only where it is None on every rank, as the optimiser then skips the parameter."""
    plain = [p for p in params if not _is_dtensor(p)]
    has = torch.tensor([float(p.grad is not None) for p in plain], device=loss.device)
    flat = torch.cat(
        [
            *(
                torch.zeros(p.numel(), device=loss.device) if p.grad is None else p.grad.float().reshape(-1)
                for p in plain
            ),
            loss.float().reshape(1),
            has,
        ]
    )
    dist.all_reduce(flat)
    # Which gradients some rank has: read (a host sync) only when this rank lacks one.
    seen = flat[-len(plain) :].tolist() if any(p.grad is None for p in plain) else [1.0] * len(plain)
    offset = 0
    for p, any_rank in zip(plain, seen):
        g = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        if p.grad is not None:
            p.grad.copy_(g)
        elif any_rank:
            p.grad = g.clone()
    return flat[offset].to(loss.dtype)


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """torch's clip_grad_norm_ for a mix of sharded (DTensor) and plain parameters."""
    from torch.distributed.tensor.experimental import implicit_replication

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = [torch.linalg.vector_norm(g.float()) for g in grads]
    norms = [n.full_tensor() if _is_dtensor(n) else n for n in norms]
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    with implicit_replication():  # the plain scalar multiplies the shards of every DTensor gradient
        for g in grads:
            g.mul_(coef.to(g.dtype))


# --------------------------------------------------------------------------------------------
# Blocks: sharding and compilation
# --------------------------------------------------------------------------------------------


def blocks(transformer: nn.Module) -> list[nn.Module]:
    """The transformer's blocks: those of its largest nn.ModuleList child (Wan and the toy DiT:
    `blocks`, LTX-Video: `transformer_blocks`), or those of each child that is such a transformer
    (Wan 2.2 T2V-A14B's two experts)."""
    lists = [m for m in transformer.children() if isinstance(m, nn.ModuleList)]
    if lists:
        return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))
    parts = [c for c in transformer.children() if any(isinstance(m, nn.ModuleList) for m in c.children())]
    if not parts:
        raise SetseqError(f"{type(transformer).__name__} has no list of blocks to shard or compile.")
    return [block for part in parts for block in blocks(part)]


def compile_blocks(transformer: nn.Module) -> None:
    """torch.compile each block in place (module names, and so concept files, stay the same)."""
    refuse_memory_flags(transformer, "--compile")
    import torch._dynamo  # only a --compile run needs dynamo

    # The blocks share one forward, compiled once per variant: with and without grad (the
    # self-conditioning pass), per stage's trained adapters, per clip length, times the blocks.
    # Past dynamo's default limit of 8 the rest ran eager, with only a log warning (seen 2026-12-08);
    # the limit is raised for the process, as --compile is a setting for the whole run.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for block in blocks(transformer):
        block.compile()


def refuse_memory_flags(transformer: nn.Module, flag: str) -> None:
    """setseq.memory's swapped blocks and float8 weights are not made for FSDP or torch.compile."""
    if any(hasattr(b, "setseq_swap_copies") for b in blocks(transformer)):
        raise SetseqError(f"{flag} does not work with --blocks-to-swap yet; use one of them.")
    if flag == "--shard" and any(p.element_size() == 1 for p in transformer.parameters()):
        raise SetseqError("--shard does not work with --fp8-base yet; use one of them.")


def shard(transformer: nn.Module) -> None:
    """FSDP2 over the ranks: each block is one unit, the rest of the transformer the root unit.
    Gradients are summed rather than averaged, as the trainer's loss is already divided by the
    global batch.

    Raises:
        SetseqError: for a module of several transformers (Wan 2.2 T2V-A14B's experts): each process
            runs the expert of its own samples' timesteps, but FSDP needs all to run the same blocks.
    """
    from torch.distributed.fsdp import fully_shard

    if not any(isinstance(m, nn.ModuleList) for m in transformer.children()):
        raise SetseqError(
            "--shard does not support a model of two experts (Wan 2.2 T2V-A14B) yet: each process runs "
            "the expert of its own samples' timesteps, and FSDP needs all to run the same blocks; "
            "train it without --shard."
        )
    refuse_memory_flags(transformer, "--shard")
    units = list(blocks(transformer))
    for block in units:
        fully_shard(block)
    fully_shard(transformer)
    for unit in [*units, transformer]:
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM: Gloo has no pre-multiplied sum


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded one (a collective: every rank must call it), else t."""
    return t.full_tensor() if _is_dtensor(t) else t


def full_optimizer_state(opt: torch.optim.Optimizer) -> dict:
    """opt.state_dict() with sharded states gathered whole (a collective), for a checkpoint."""
    sd = opt.state_dict()  # its per-parameter dicts are the optimiser's own: build new ones
    sd["state"] = {
        i: {key: full_tensor(value) if torch.is_tensor(value) else value for key, value in state.items()}
        for i, state in sd["state"].items()
    }
    return sd


def load_optimizer_state(opt: torch.optim.Optimizer, sd: dict) -> None:
    """Load a state from `full_optimizer_state`, cutting the states of sharded parameters to shards."""
    from torch.distributed.tensor import distribute_tensor

    opt.load_state_dict(sd)
    for group in opt.param_groups:
        for p in group["params"]:
            if not _is_dtensor(p):
                continue
            for key, value in opt.state[p].items():
                if torch.is_tensor(value) and not _is_dtensor(value) and value.shape == p.shape:
                    opt.state[p][key] = distribute_tensor(value.to(p.to_local().device), p.device_mesh, p.placements)
