"""What the backward pass keeps of a Wan2.1-T2V-1.3B block, and so what gradient checkpointing saves.

Builds the transformer with the 1.3B configuration (random weights) and one or two blocks, adapts it
with setseq's LoRA (rank 8, Wan's default targets; only the adapters train, as in a run) and counts
the bytes of every tensor autograd saves for the backward pass in one forward (storages counted once,
the model's own weights left out). The difference between two blocks and one is one block's share;
two token counts separate what grows with the clip from the text's fixed part. Extrapolated to 30
blocks and 32,760 tokens (480x832x81) in the docs.

    python benchmarks/saved_activations.py [--model 1.3b|14b|5b] [--rank 32] [--dtype bf16] [--tokens 260 520]

`setseq.plan` keeps the per-token figures it prints (`ACTIVATION_BYTES`).
"""

from __future__ import annotations

import argparse
import time

import torch

from setseq import lora
from setseq.backbones.wan import WAN_1_3B, WanBackbone

# the widths of Wan 2.1 1.3B, Wan 2.1 14B / Wan 2.2 T2V-A14B's experts, Wan 2.2 TI2V-5B
MODELS = {
    "1.3b": WAN_1_3B,
    "14b": dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40),
    "5b": dict(WAN_1_3B, num_attention_heads=24, ffn_dim=14336, in_channels=48, out_channels=48),
}


def saved_bytes(layers: int, tokens: int, dtype: torch.dtype, config: dict = WAN_1_3B, rank: int = 8) -> int:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(**{**config, "num_layers": layers}).to(dtype).requires_grad_(False)
    for name, module in model.named_modules():  # what from_pretrained(torch_dtype=...) keeps in float32
        if any(k in name for k in model._keep_in_fp32_modules):
            module.float()
    lora.inject(model, WanBackbone.lora_targets, rank=rank)
    model.train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    h = 2 * tokens // 26  # latents (1, 16, 1, h, 52): tokens = h / 2 * 26 (1 x 2 x 2 patches)
    x = torch.randn(1, config["in_channels"], 1, h, 52, dtype=dtype)
    text = torch.randn(1, 512, 4096, dtype=dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)
    return sum(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="1.3b", help="the width of which Wan")
    ap.add_argument("--rank", type=int, default=8, help="adapter rank")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--tokens", type=int, nargs=2, default=[260, 520], help="two token counts (multiples of 26)")
    a = ap.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    per_block = []
    for tokens in a.tokens:
        start = time.time()
        config = MODELS[a.model]
        one, two = (saved_bytes(n, tokens, dtype, config, a.rank) for n in (1, 2))
        per_block.append(two - one)
        print(
            f"{tokens} tokens: 1 block {one / 2**20:.1f} MiB, 2 blocks {two / 2**20:.1f} MiB ({time.time() - start:.0f} s)"
        )
    (t1, t2), (b1, b2) = a.tokens, per_block
    slope = (b2 - b1) / (t2 - t1)
    fixed = b1 - slope * t1
    print(f"per block: {slope:.0f} bytes a token + {fixed / 2**20:.2f} MiB")
    size = torch.finfo(dtype).bits // 8
    config = MODELS[a.model]
    width, n = config["attention_head_dim"] * config["num_attention_heads"], config["num_layers"]
    for tokens in (9360, 32760):
        block, inputs = slope * tokens + fixed, tokens * width * size
        print(
            f"{tokens} tokens: {block / 2**30:.2f} GiB a block, {n * block / 2**30:.1f} GiB for {n} blocks; "
            f"checkpointed: {n} block inputs of {inputs / 2**20:.0f} MiB + one block recomputed = "
            f"{(n * inputs + block) / 2**30:.1f} GiB"
        )


if __name__ == "__main__":
    main()
