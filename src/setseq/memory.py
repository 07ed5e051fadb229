"""Memory for big bases on small GPUs: float8 base weights (`--fp8-base`) and block swapping
(`--blocks-to-swap N`). Both act on the frozen base only; the adapters stay in their own dtype and
on the GPU.

float8 base. Every `nn.Linear` of the transformer's blocks (nearly all its weights) becomes a
`Float8Linear`: the weight is stored as float8 e4m3 (1 byte a number; Micikevicius et al. 2022,
"FP8 Formats for Deep Learning") times one float32 scale per tensor, `W ~ s Q` with
`s = max|W| / 448`, so the largest weight lands on e4m3's largest value and small weights keep
their 3 mantissa bits instead of falling into its subnormals. Each call multiplies out `s Q` in the
model's dtype (bf16) and runs an ordinary matmul: no float8 kernels, so it runs on any GPU and the
CPU. The backward pass saves `Q` (1 byte a weight), not the bf16 product (2 bytes), and multiplies
it out again. That last point is why this is not torchao's `Float8WeightOnlyConfig` or diffusers'
layerwise casting: both keep a bf16 copy of every weight alive from the forward to the backward
pass of a training step, more memory than a bf16 base without checkpointing (docs/benchmarks.md
has the measurement), and layerwise casting also drops the scale.

Block swapping. The last N blocks of the transformer keep their frozen tensors in (pinned) CPU
memory; each time such a block runs, its tensors are copied to the GPU for that call and dropped
after it, in the forward pass and again when the backward pass recomputes the block. The copies of
the next block are made on a side CUDA stream while the current one computes (`Prefetcher`), so the
GPU waits on PCIe only where a block computes faster than its weights cross it. A swapped
block is always gradient-checkpointed (by diffusers' own checkpointing when that is on, else by its
own `torch.utils.checkpoint`), because autograd would otherwise keep the copied weights alive until
the backward pass and nothing would be saved. The copies are new tensors, never `param.data`
swapped in place, so whatever autograd saved inside a block stays valid however its recomputation
ends. The flag's name is kohya-ss's (sd-scripts, musubi-tuner), which swap blocks the same way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from setseq.errors import SetseqError
from setseq.parallel import blocks as block_list

FLOAT8 = torch.float8_e4m3fn
FLOAT8_MAX = torch.finfo(FLOAT8).max  # 448


# --------------------------------------------------------------------------------------------
# float8 base weights
# --------------------------------------------------------------------------------------------


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (out, in) -> (Q (out, in) float8 e4m3, s () float32) with W ~ s Q and s = max|W| / 448."""
    w = w.detach().float()
    scale = w.abs().amax().clamp(min=1e-12) / FLOAT8_MAX
    return (w / scale).to(FLOAT8), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """s Q in `dtype`: (out, in)."""
    return q.to(dtype) * scale.to(dtype)


class _Float8Matmul(torch.autograd.Function):
    """y = x (s Q)^T + b that saves Q, not the dequantised weight, for the backward pass."""

    @staticmethod
    def forward(ctx, x, q, scale, bias):
        ctx.save_for_backward(q, scale)
        return F.linear(x, dequantize(q, scale, x.dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        q, scale = ctx.saved_tensors
        grad_x = grad @ dequantize(q, scale, grad.dtype) if ctx.needs_input_grad[0] else None
        grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0) if ctx.needs_input_grad[3] else None
        return grad_x, None, None, grad_bias


class Float8Linear(nn.Linear):
    """A frozen `nn.Linear` whose weight is float8 e4m3 times a per-tensor scale; it computes in its
    input's dtype, which is `compute_dtype`, the dtype the weight had, in a model loaded in one dtype.
    Still an `nn.Linear`, so `lora.inject` wraps it like any other (its adapter is float32)."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a full-precision weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = linear.weight.dtype
        q, scale = quantize(linear.weight)
        self.weight = nn.Parameter(q, requires_grad=False)  # Q: (out, in)
        self.register_buffer("weight_scale", scale)  # s: ()
        self.bias = linear.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Float8Matmul.apply(x, self.weight, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, float8 e4m3 x per-tensor scale, computes in {self.compute_dtype}"


def to_float8(model: nn.Module, patterns: list[str] | None = None) -> int:
    """Replace every `nn.Linear` of `model` whose name matches a pattern (fnmatch; None: all) by a
    `Float8Linear`, where it is (on its device). Returns how many were replaced.

    Raises:
        SetseqError: when nothing matches.
    """
    names = [
        n
        for n, m in model.named_modules()
        if type(m) is nn.Linear and (patterns is None or any(fnmatch.fnmatchcase(n, p) for p in patterns))
    ]
    if not names and patterns is not None:
        raise SetseqError(f"no linear layer matches {patterns} for float8 storage.")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Float8Linear(getattr(parent, child)))
    return len(names)


# --------------------------------------------------------------------------------------------
# Block swapping
# --------------------------------------------------------------------------------------------

Slot = tuple[dict, str]  # (a module's _parameters or _buffers, name): where one swapped tensor lives


def _own_tensors(module: nn.Module) -> list[Slot]:
    return [
        (store, name) for store in (module._parameters, module._buffers) for name, t in store.items() if t is not None
    ]


def _move_own(module: nn.Module, device: torch.device, pin: bool = False) -> None:
    """Move `module`'s own parameters and buffers (not its children's) to `device`."""
    for store, name in _own_tensors(module):
        t = store[name].detach().to(device)
        t = t.pin_memory() if pin else t
        if isinstance(store[name], nn.Parameter):
            store[name].data = t  # the same Parameter object: optimisers and inject keep theirs
        else:
            store[name] = t


class Prefetcher:
    """Copies the next swapped block's tensors to the GPU while the current block computes.

    The swapped blocks run in order in the forward pass and in reverse order when the backward pass
    recomputes them, so the block after block i is i + 1 when i follows the block that ran before it
    (or is the first), else i - 1. Its copies are made on a side CUDA stream from pinned memory and
    an event marks their end, which the block's own stream waits for before it uses them; a guess
    that proves wrong costs one block's copies, never a wrong number. On the CPU the copies are made
    at once, in the same order of calls: the numbers are the same either way.

    Args:
        slots: per swapped block, in order, where each of its tensors lives (`Slot`).
        device: where the blocks compute.
    """

    def __init__(self, slots: list[list[Slot]], device: torch.device):
        self.slots, self.device = slots, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.ready: dict[int, tuple[list[torch.Tensor], object]] = {}  # block -> (copies, event), at most one
        self.last: int | None = None
        self.hits = 0  # calls that found their copies made ahead

    def _copy(self, i: int) -> tuple[list[torch.Tensor], object]:
        if self.stream is None:
            return [store[name].to(self.device, copy=True) for store, name in self.slots[i]], None
        with torch.cuda.stream(self.stream):
            copies = [store[name].to(self.device, non_blocking=True, copy=True) for store, name in self.slots[i]]
            event = torch.cuda.Event()
            event.record(self.stream)
        return copies, event

    def take(self, i: int) -> list[torch.Tensor]:
        """Block i's tensors on the device, ready for the current stream; starts copying the next block's."""
        copies, event = self.ready.pop(i, None) or (None, None)
        self.ready.clear()  # a wrong guess: its copies are dropped
        if copies is None:
            copies, event = self._copy(i)
        else:
            self.hits += 1
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in copies:  # made on the side stream, used and freed on this one
                t.record_stream(current)
        forward = self.last is None or i == 0 or i > self.last
        self.last, nxt = i, i + 1 if forward else i - 1
        if 0 <= nxt < len(self.slots):
            self.ready[nxt] = self._copy(nxt)
        return copies


def offload_block(
    block: nn.Module,
    device: torch.device | str,
    checkpointing: Callable[[], bool],
    prefetcher: Prefetcher | None = None,
) -> list[Slot]:
    """Keep `block`'s tensors in CPU memory and run it with copies of them on `device`.

    Args:
        block: a transformer block; its parameters and buffers now (the frozen base) move to the CPU,
            pinned when `device` is a GPU. Tensors added later, such as the adapters `lora.inject`
            makes on `device` (its `nn.Linear` modules carry `compute_device`), stay where they are.
        device: where the block computes.
        checkpointing: says whether the caller already checkpoints the block (diffusers' own gradient
            checkpointing); if not, the block checkpoints itself whenever gradients are on.
        prefetcher: takes the block's copies (made ahead while the block before computed), with the
            block's index as the `slots` it was built with; None: each call copies for itself.

    Returns:
        Where each of the block's swapped tensors lives (for a `Prefetcher`).

    The block counts its calls in `setseq_swap_copies` (each runs on one set of copies).
    """
    device = torch.device(device)
    slots: list[Slot] = []
    for module in block.modules():
        _move_own(module, torch.device("cpu"), pin=device.type == "cuda")
        slots += _own_tensors(module)
        if isinstance(module, nn.Linear):
            module.compute_device = device
    forward = block.forward

    def run(*args, **kwargs):
        # Copies, not `param.data` swapped in place: autograd may have saved a parameter itself
        # (a norm's weight), and it must still hold the copy when the block's backward runs.
        offloaded = [(store, name, store[name]) for store, name in slots]
        if prefetcher is not None:
            copies = prefetcher.take(block.setseq_swap_index)
        else:
            copies = [t.to(device, non_blocking=True, copy=True) for _, _, t in offloaded]
        try:
            for (store, name, _), copy in zip(offloaded, copies):
                store[name] = copy
            block.setseq_swap_copies += 1
            return forward(*args, **kwargs)
        finally:
            for store, name, t in offloaded:
                store[name] = t

    def swapped_forward(*args, **kwargs):
        if torch.is_grad_enabled() and not checkpointing():
            return checkpoint(run, *args, use_reentrant=False, **kwargs)
        return run(*args, **kwargs)

    block.forward = swapped_forward  # an instance attribute: names, and so concept files, stay the same
    block.setseq_swap_copies = 0
    return slots


def place(
    transformer: nn.Module, device: torch.device | str | None, fp8_base: bool = False, blocks_to_swap: int = 0
) -> None:
    """Put `transformer` on `device` with its base in float8 and its last `blocks_to_swap` blocks in
    CPU memory, block by block, so that the whole bf16 model never has to fit on the GPU at once.

    Args:
        transformer: a diffusers video transformer (or any model with one `nn.ModuleList` of blocks).
        device: where it computes (None: where it is).
        fp8_base: store every block's linear weights as float8 x scale (`Float8Linear`).
        blocks_to_swap: how many blocks, from the last, live in CPU memory between their calls.

    Raises:
        SetseqError: for a `blocks_to_swap` outside 0 .. the number of blocks.
    """
    blocks = block_list(transformer)
    if not 0 <= blocks_to_swap <= len(blocks):
        raise SetseqError(
            f"--blocks-to-swap must be between 0 and the transformer's {len(blocks)} blocks, got {blocks_to_swap}."
        )
    device = torch.device(device) if device is not None else next(transformer.parameters()).device
    inside = {id(m) for block in blocks for m in block.modules()}
    for module in transformer.modules():  # all but the blocks, as a whole
        if id(module) not in inside:
            _move_own(module, device)
    first_swapped = len(blocks) - blocks_to_swap
    slots: list[list[Slot]] = []  # the swapped blocks', in order: the prefetcher copies from them
    prefetcher = Prefetcher(slots, device) if blocks_to_swap else None
    for i, block in enumerate(blocks):  # one block at a time on the GPU before it is stored
        block.to(device)
        if fp8_base:
            to_float8(block)
        if i >= first_swapped:
            block.setseq_swap_index = i - first_swapped
            checkpointing = lambda: getattr(transformer, "gradient_checkpointing", False)  # noqa: E731
            slots.append(offload_block(block, device, checkpointing, prefetcher))
    transformer.setseq_prefetcher = prefetcher


# --------------------------------------------------------------------------------------------
# Activation offload
# --------------------------------------------------------------------------------------------


def _tensors_of(out) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(t for t in out if isinstance(t, torch.Tensor))


class _OffloadedCheckpoint(torch.autograd.Function):
    """A checkpointed block whose input waits in CPU memory: the forward pass runs the block without
    keeping anything but a (pinned) CPU copy of its input; the backward pass copies it back, runs the
    block again with gradients, from the random state the first run had, and back-propagates through it."""

    @staticmethod
    def forward(ctx, block, hidden_states, always, *args):
        device = hidden_states.device
        pin = device.type == "cuda"
        stored = torch.empty(hidden_states.shape, dtype=hidden_states.dtype, device="cpu", pin_memory=pin)
        stored.copy_(hidden_states.detach(), non_blocking=pin)  # pinned: the copy overlaps what follows
        ctx.block, ctx.stored, ctx.device, ctx.args = block, stored, device, args
        ctx.rng = torch.get_rng_state(), (torch.cuda.get_rng_state(device) if pin else None)
        with torch.no_grad():
            return block(hidden_states, *args)

    @staticmethod
    def backward(ctx, *grads):
        x = ctx.stored.to(ctx.device, non_blocking=True).requires_grad_(ctx.needs_input_grad[1])
        args = [
            a.detach().requires_grad_(need) if isinstance(a, torch.Tensor) else a
            for a, need in zip(ctx.args, ctx.needs_input_grad[3:])
        ]
        cuda = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the same dropout masks as the first run
            torch.set_rng_state(ctx.rng[0])
            if cuda:
                torch.cuda.set_rng_state(ctx.rng[1], ctx.device)
            with torch.enable_grad():
                out = _tensors_of(ctx.block(x, *args))
        pairs = [(o, g) for o, g in zip(out, grads) if o.requires_grad and g is not None]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        del ctx.block, ctx.stored, ctx.args
        input_grads = [a.grad if isinstance(a, torch.Tensor) and a.requires_grad else None for a in args]
        return None, x.grad if x.requires_grad else None, None, *input_grads


def offloaded_checkpoint(block: Callable, hidden_states: torch.Tensor, *args):
    """diffusers' gradient-checkpointing function (`enable_gradient_checkpointing(gradient_checkpointing_func=...)`)
    with each block's input kept in pinned CPU memory until the backward pass recomputes the block
    (`--offload-activations`): what a checkpointed step keeps on the GPU per block, T x D numbers, goes
    to the host (14B at 480x832x81: 12.5 GiB over 40 blocks). The block is the first argument, its
    input the second, as diffusers calls it; other tensor arguments (the text, the time embedding)
    are the same for every block and stay where they are. On the CPU the copy is an ordinary one.

    Losses and gradients are those of torch's checkpointing: the recomputation starts from the random
    state of the first run (reentrant-style, like torch's `checkpoint(use_reentrant=True)`, whose
    inputs would stay on the GPU). The same idea as torch's `autograd.graph.save_on_cpu`, which cannot
    reach a non-reentrant checkpoint's inputs (they are held by its closure, not saved by autograd).
    """
    # `always` requires a gradient, so that autograd records the block even when nothing it is given
    # does (the first block's input, frozen text): its adapters' gradients come from the backward pass
    always = torch.empty(0, device=hidden_states.device, requires_grad=True)
    return _OffloadedCheckpoint.apply(block, hidden_states, always, *args)
