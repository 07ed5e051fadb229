"""A video DiT of the paper's architecture in miniature (paper sec. 7, Table 5), in pixel space.

    video (B, F, C, H, W) --patchify 1 x p x p--> tokens (B, T, D)
      (+ a fixed sin-cos position embedding when cfg.abs_pos, as in DiT)
      -> N x [ self-attention (QK-norm, 3D RoPE 2:1:1)  -> cross-attention to text -> MLP x4 ]
         each with adaLN timestep modulation (zero-initialised gates, as in DiT)
      -> final adaLN + linear -> unpatchify (-> + a 3 x 3 convolutional head, cfg.refine)
      -> velocity (B, F, C, H, W), or the clean clip x0 turned into a velocity v = (x_t - x0) / t
         (`prediction = "x0"`, what the shipped model uses)

Self-conditioning (Chen et al. 2023): the previous x_0 estimate is concatenated to x_t on the
channel axis before patchifying (zeros when absent). The text encoder is a small transformer over
the toy world's word vocabulary, with reserved, zero-initialised slots for concept tokens.

Pixel space rather than a latent autoencoder: the toy clips are 32 x 32, already as small as a real
model's latents, so an autoencoder would add a second model to pretrain and blur every measurement.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DiTConfig:
    channels: int = 3
    patch: int = 4  # spatial patch; temporal patch is 1 so single frames are valid clips (stage 1)
    dim: int = 192
    depth: int = 6
    heads: int = 6
    mlp_ratio: int = 4
    text_dim: int = 128
    text_depth: int = 2
    text_heads: int = 4
    max_text_len: int = 40
    concept_slots: int = 16
    rope_theta: float = 100.0
    # Add DiT's fixed sin-cos position embedding (Peebles and Xie 2023) over (time, height, width)
    # to the patch tokens, beside the paper's 3D RoPE. RoPE only tells a token where the others are;
    # a small model also needs to know where the frame's edges and its first frame are, or from
    # pure noise it cannot place an object, start a path on one side or draw a gradient
    # (docs/toy-model.md). A large model learns this from attention at the borders.
    abs_pos: bool = False
    # A fixed word table (orthogonal rows, never trained), as a real video DiT reads its prompt
    # through a frozen pretrained text encoder (T5, umT5) in which every word is distinct from the
    # start. Trained jointly from scratch, the toy's table let words the DiT did not yet use drift
    # together: "left" and "right" ended 0.985 cosine-similar and the base ignored its direction
    # words (docs/toy-model.md). The encoder's layers and the concept tokens still train.
    frozen_words: bool = False
    # What the output layer predicts. "x0": the clean clip, turned into a velocity as
    # v = (x_t - x0) / t (Li and He 2025, "Back to Basics": a small pixel-space model need not learn
    # to pass the noise through, so its early estimates are clean). "velocity": v directly.
    prediction: str = "velocity"
    # Hidden channels of a small convolutional head on the unpatchified output (0: none): three
    # 3 x 3 convolutions per frame, added residually, the last zero-initialised so that the model
    # starts as it was. A latent video DiT's patch seams are smoothed by its VAE decoder's
    # convolutions; a pixel-space DiT has none and shows its patch grid (U-ViT, Bao et al. 2023,
    # adds a 3 x 3 convolution after the output layer for the same reason).
    refine: int = 0
    vocab: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ============================================================================================
# Tokenizer and text encoder
# ============================================================================================

SPECIAL = ["[pad]", "[bos]", "[unk]"]
CONCEPT_TOKEN = re.compile(r"\[[a-z]+\d*\]")
_SPLIT = re.compile(r"\[[a-z]+\d*\]|[a-z0-9\-']+|[.,]")


class Tokenizer:
    """Word-level tokenizer: lower-cased words, "." and "," as tokens, concept tokens like [v]."""

    def __init__(self, vocab: list[str], concept_slots: int):
        self.words = SPECIAL + [w for w in vocab if w not in SPECIAL]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.concept_slots = concept_slots
        self.concepts: dict[str, int] = {}  # token -> slot

    def add(self, token: str) -> int:
        if not CONCEPT_TOKEN.fullmatch(token):
            raise ValueError(f"concept tokens look like [v] or [u2], got {token!r}")
        if token not in self.concepts:
            if len(self.concepts) >= self.concept_slots:
                raise ValueError(f"all {self.concept_slots} concept-token slots are in use")
            self.concepts[token] = len(self.concepts)
        return self.concepts[token]

    def split(self, text: str) -> list[str]:
        return _SPLIT.findall(text.lower())

    def unknown(self, text: str) -> list[str]:
        return [w for w in self.split(text) if w not in self.index and not CONCEPT_TOKEN.fullmatch(w)]

    def encode(self, text: str, max_len: int) -> list[int]:
        """Ids: words in [0, V), concept token slot k at V + k; [bos] first so no prompt is empty."""
        v = len(self.words)
        ids = [self.index["[bos]"]]
        for w in self.split(text):
            if w in self.concepts:
                ids.append(v + self.concepts[w])
            else:
                ids.append(self.index.get(w, self.index["[unk]"]))
        return ids[:max_len]


class TextEncoder(nn.Module):
    """Embeddings (words + concept slots) -> pre-norm transformer encoder -> (B, T, text_dim)."""

    def __init__(self, cfg: DiTConfig, vocab_size: int):
        super().__init__()
        d = cfg.text_dim
        self.words = nn.Embedding(vocab_size, d)
        self.concepts = nn.Parameter(torch.zeros(cfg.concept_slots, d))  # [v], [u], ...: zero init
        self.pos = nn.Parameter(torch.zeros(cfg.max_text_len, d))
        layer = nn.TransformerEncoderLayer(
            d, cfg.text_heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.text_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        nn.init.normal_(self.pos, std=0.02)
        if cfg.frozen_words:
            # orthogonal rows of norm sqrt(d) (unit variance a channel) where vocab_size <= d
            nn.init.orthogonal_(self.words.weight, gain=d**0.5)
            self.words.weight.requires_grad_(False)
        else:
            nn.init.normal_(self.words.weight, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.words.weight, self.concepts])  # (V + S, D)
        x = F.embedding(ids, table) + self.pos[: ids.shape[1]]  # (B, T, D)
        x = self.encoder(x, src_key_padding_mask=~mask)
        return self.norm(x)


# ============================================================================================
# 3D rotary position embedding, head channels split 2:1:1 over (time, height, width)
# ============================================================================================


def rope_split(head_dim: int) -> tuple[int, int, int]:
    if head_dim % 8:
        raise ValueError(f"head dim must be a multiple of 8 for a 2:1:1 RoPE split, got {head_dim}")
    return head_dim // 2, head_dim // 4, head_dim // 4


def rope_angles(
    f: int, h: int, w: int, head_dim: int, theta: float, device=None, offset: tuple[float, float] = (0.0, 0.0)
) -> torch.Tensor:
    """Rotation angles (T, head_dim / 2) for a (f, h, w) token grid, T = f * h * w. offset: the
    (row, column) position of the first token in tokens, fractional where the patch grid is moved
    (`setseq.patch_shift`); positions are offset + 0, 1, ..."""
    parts = []
    for n, d, axis, start in zip((f, h, w), rope_split(head_dim), range(3), (0.0, *offset)):
        freqs = theta ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)  # (d/2,)
        pos = torch.arange(n, device=device, dtype=torch.float32) + start
        ang = pos[:, None] * freqs[None]  # (n, d/2)
        shape = [1, 1, 1, d // 2]
        shape[axis] = n
        parts.append(ang.view(shape).expand(f, h, w, d // 2))
    return torch.cat(parts, -1).reshape(f * h * w, head_dim // 2)


def sincos_embedding(
    f: int, h: int, w: int, dim: int, theta: float, device=None, offset: tuple[float, float] = (0.0, 0.0)
) -> torch.Tensor:
    """Fixed absolute position embedding (T, dim) for a (f, h, w) token grid: the sines and cosines
    of the RoPE angles with the channels split 2:1:1 the same way (DiT's sin-cos embedding, in 3D);
    offset as `rope_angles`."""
    angles = rope_angles(f, h, w, dim, theta, device, offset)  # (T, dim / 2)
    return torch.cat([angles.sin(), angles.cos()], -1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, heads, T, hd) by angles (T, hd / 2)."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, heads, T, hd/2) each
    cos, sin = angles.cos(), angles.sin()
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)
    return out.flatten(-2).to(x.dtype)


# ============================================================================================
# Blocks
# ============================================================================================


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


TRAIN_ATTENTION_FP32 = True  # see Attention.forward


class Attention(nn.Module):
    """Multi-head attention with QK-normalisation; RoPE on self-attention only."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim or dim, dim)
        self.v = nn.Linear(kv_dim or dim, dim)
        self.o = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)

    def forward(self, x, context=None, angles=None, key_mask=None):
        ctx = x if context is None else context
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, T, hd)
        k = self.k(ctx).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, S, hd)
        v = self.v(ctx).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        dtype = q.dtype
        # Under CPU bf16 autocast, training computes attention in float32: torch's CPU flash kernel
        # runs its backward slower in bf16 than in float32 at these head sizes (2026-12-08, 2 cores,
        # 4 x 8 heads x 512 tokens x 32 channels, forward + backward: 34 ms against 25 for
        # self-attention, 17 against 3.4 for cross-attention to 24 masked text tokens). Sampling,
        # which has no backward, stays bf16. TRAIN_ATTENTION_FP32 switches it (benchmarks).
        fp32 = TRAIN_ATTENTION_FP32 and dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled()
        # QK-norm in float32 (a no-op in float32; under bf16 autocast it keeps the fused kernel)
        q, k = self.q_norm(q.float()), self.k_norm(k.float())
        if not fp32:
            q, k = q.to(dtype), k.to(dtype)
        if angles is not None:
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
        if fp32:
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q, k, v.float(), attn_mask=mask).to(dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(out.transpose(1, 2).flatten(2))  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.fc2 = nn.Linear(ratio * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """self-attention -> cross-attention to text -> MLP; adaLN shift/scale/gate from the timestep."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.cross = Attention(d, cfg.heads, kv_dim=cfg.text_dim)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(d, cfg.mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c, text, text_mask, angles):
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, -1)  # each (B, D)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1), angles=angles)
        x = x + self.cross(self.norm2(x), context=text, key_mask=text_mask)
        x = x + g2[:, None] * self.mlp(modulate(self.norm3(x), sh2, sc2))
        return x


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half); t in [0, 1] scaled like DDPM's
        return self.mlp(torch.cat([args.cos(), args.sin()], -1))


# ============================================================================================
# The model
# ============================================================================================


class ToyDiT(nn.Module):
    """Maps (x_t, t, text, self_cond) to a velocity; every clip shape (F, H, W) with H, W % p == 0."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        if cfg.prediction not in ("velocity", "x0"):
            raise ValueError(f"prediction must be 'velocity' or 'x0', got {cfg.prediction!r}")
        self.cfg = cfg
        c, p, d = cfg.channels, cfg.patch, cfg.dim
        # 1. inputs: x_t and the self-conditioning estimate, patchified together
        self.patch_embed = nn.Linear(2 * c * p * p, d)
        self.t_embed = TimestepEmbedder(d)
        # 2. blocks
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        # 3. output
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, c * p * p)
        # 4. the convolutional head over whole frames (cfg.refine)
        r = cfg.refine
        self.refine = (
            nn.Sequential(
                nn.Conv2d(c, r, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(r, r, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(r, c, 3, padding=1),
            )  # fmt: skip
            if r
            else None
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier for linears; adaLN and the output layer zeroed so every block starts as identity
        and the output layer starts at 0 (DiT, Peebles and Xie 2023): v = 0, or x0 = 0 under x0-prediction."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        for m in (self.final_ada[-1], self.final) + ((self.refine[-1],) if self.refine is not None else ()):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # x0-prediction divides by t; below this the division is clamped (sampling ends at t = 0)
    MIN_T = 0.05

    def forward(self, x_t, t, text, text_mask, self_cond=None, grid_offset=(0.0, 0.0)):
        """Velocity (B, F, C, H, W) at time t (B,), whichever quantity the output layer predicts.
        grid_offset: (row, column) position of the first patch in patches, where the frame was
        extended to move the patch grid (`setseq.patch_shift`): the content keeps its positions."""
        out = self.predict(x_t, t, text, text_mask, self_cond, grid_offset)
        if self.cfg.prediction == "x0":
            t_ = t.to(out.dtype).clamp(min=self.MIN_T).view(-1, 1, 1, 1, 1)
            return (x_t - out) / t_  # x_t = (1 - t) x0 + t n  =>  v = n - x0 = (x_t - x0) / t
        return out

    def predict(self, x_t, t, text, text_mask, self_cond=None, grid_offset=(0.0, 0.0)):
        B, Fr, C, H, W = x_t.shape
        p = self.cfg.patch
        h, w = H // p, W // p
        sc = torch.zeros_like(x_t) if self_cond is None else self_cond.to(x_t.dtype)
        x = torch.cat([x_t, sc], 2)  # (B, F, 2C, H, W)
        # 1. patchify
        x = x.view(B, Fr, 2 * C, h, p, w, p)  # (B, F, 2C, h, p, w, p)
        x = x.permute(0, 1, 3, 5, 2, 4, 6).reshape(B, Fr * h * w, 2 * C * p * p)  # (B, T, 2C p p)
        x = self.patch_embed(x)  # (B, T, D)
        if self.cfg.abs_pos:
            x = x + sincos_embedding(Fr, h, w, self.cfg.dim, self.cfg.rope_theta, x.device, grid_offset).to(x.dtype)
        c = self.t_embed(t)  # (B, D)
        head_dim = self.cfg.dim // self.cfg.heads
        angles = rope_angles(Fr, h, w, head_dim, self.cfg.rope_theta, x.device, grid_offset)
        # 2. blocks
        for blk in self.blocks:
            x = blk(x, c, text, text_mask, angles)
        # 3. output and unpatchify
        # The output layer in float32 even under bf16 autocast: x0-prediction divides its output by t.
        with torch.autocast(x.device.type, enabled=False):
            shift, scale = self.final_ada(c.float()).chunk(2, -1)
            x = self.final(modulate(self.final_norm(x.float()), shift, scale))  # (B, T, C p p)
            x = x.view(B, Fr, h, w, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)  # (B, F, C, h, p, w, p)
            x = x.reshape(B, Fr, C, H, W)
            if self.refine is not None:  # 4. across the patch borders, frame by frame
                x = x + self.refine(x.flatten(0, 1)).view_as(x)
        return x
