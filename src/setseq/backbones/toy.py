"""The embedded default backbone: the toy DiT (setseq.toy.dit) over the toy world's vocabulary.

`--base toy` loads the pretrained weights shipped in `setseq/toy/weights/`, or the weights file
that the environment variable SETSEQ_TOY_WEIGHTS names (a base of one's own from `setseq toy
pretrain`, for every command at once); while none ship it builds the DiT with seeded random weights
and says so. `toy-v2` is the larger base pretrained by `setseq toy pretrain --plan v2`, from its own
shipped file. `toy-tiny` is a tiny random instance for tests and smoke runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, safe_open

from setseq import precision
from setseq.backbones.base import Geometry, SamplingDefaults, Text
from setseq.errors import SetseqError
from setseq.fileio import atomic_path
from setseq.log import note, warn
from setseq.toy.dit import DiTConfig, TextEncoder, Tokenizer, ToyDiT

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "toy" / "weights"

# name -> (model config, default geometry)
PRESETS: dict[str, tuple[DiTConfig, Geometry]] = {
    # 2.7 M parameters, 1 x 4 x 4 patches (512 tokens a clip: a sprite is three to four tokens wide
    # and moves most of a token a frame), predicting the clean clip (docs/toy-model.md)
    "toy": (
        DiTConfig(dim=128, depth=6, heads=4, patch=4, prediction="x0", abs_pos=True),
        Geometry(frames=8, height=32, width=32, fps=8.0),
    ),
    # 11.7 M parameters, 256 wide, 8 blocks, a frozen word table (`setseq toy pretrain --plan v2`;
    # docs/toy-model.md); the same world and geometry
    "toy-v2": (
        DiTConfig(dim=256, depth=8, heads=8, patch=4, prediction="x0", abs_pos=True, frozen_words=True),
        Geometry(frames=8, height=32, width=32, fps=8.0),
    ),
    "toy-tiny": (
        DiTConfig(dim=32, depth=2, heads=2, text_dim=32, text_depth=1, text_heads=2),
        Geometry(frames=4, height=16, width=16, fps=8.0),
    ),
}


class ToyBackbone:
    """The toy DiT and its text encoder behind the `Backbone` protocol."""

    supports_self_conditioning = True
    supports_patch_shift = True  # velocity() takes a grid_offset (`setseq.patch_shift`)
    pipeline_sampler = None  # no diffusers folder, no scheduler: the toy samples with setseq's Euler
    frame_step = 1  # pixel space: every frame is its own latent frame
    lora_targets = ["blocks.*.attn.[qkvo]", "blocks.*.cross.[qkvo]", "blocks.*.mlp.fc[12]"]

    def __init__(
        self,
        name: str,
        cfg: DiTConfig,
        geometry: Geometry,
        state: dict[str, torch.Tensor] | None = None,
        seed: int = 0,
        sampling: SamplingDefaults | None = None,
        pretrained_init: bool = False,
    ):
        self.name, self.cfg, self.geometry = name, cfg, geometry
        # pixel space: the patch grid moves at every sampling step (`setseq.patch_shift`)
        self.sampling = sampling or SamplingDefaults(steps=25, guidance=4.0, patch_shift=cfg.patch)
        if not cfg.vocab:
            from setseq.toy import world

            cfg.vocab = world.vocabulary()
        self.tokenizer = Tokenizer(cfg.vocab, cfg.concept_slots)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.text_encoder = TextEncoder(cfg, len(self.tokenizer.words))
            self.transformer = ToyDiT(cfg)
            if state is None and not pretrained_init:  # keep DiT's zero init only to pretrain
                randomise_zero_init(self.transformer)
        if state is not None:
            self.load_state_dict(state)
        for p in [*self.text_encoder.parameters(), *self.transformer.parameters()]:
            p.requires_grad_(False)
        self.text_encoder.eval()
        self.transformer.eval()
        self._fingerprint = _fingerprint(self.state_dict())
        # bf16 autocast on CPUs with bf16 matrix units, for models wide enough that it pays
        # (benchmarks/toy_step.py); SETSEQ_PRECISION=fp32|bf16 decides for any width.
        self.bf16 = precision.use_bf16("cpu", width=cfg.dim)

    @property
    def loss_space(self) -> str:
        """x0-predicting toy models train on the clean clip's error (see toy.pretrain)."""
        return "x0" if self.cfg.prediction == "x0" else "velocity"

    # -- weights ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {f"transformer.{k}": v for k, v in self.transformer.state_dict().items()}
        sd.update(
            {f"text_encoder.{k}": v for k, v in self.text_encoder.state_dict().items() if k != "concepts"}
        )  # concept slots belong to concepts, not to the base
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        tr = {k[len("transformer.") :]: v for k, v in sd.items() if k.startswith("transformer.")}
        te = {k[len("text_encoder.") :]: v for k, v in sd.items() if k.startswith("text_encoder.")}
        te["concepts"] = self.text_encoder.concepts.detach().clone()
        self.transformer.load_state_dict(tr)
        self.text_encoder.load_state_dict(te)

    def fingerprint(self) -> str:
        return self._fingerprint

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Ignored: the toy's activations fit without it, so recomputing them would only cost time."""

    def parameters(self):
        return [*self.transformer.parameters(), *self.text_encoder.parameters()]

    # -- geometry and video ----------------------------------------------------------------
    def check_geometry(self, g: Geometry) -> None:
        p = self.cfg.patch
        if g.height % p or g.width % p or g.height <= 0 or g.width <= 0:
            raise SetseqError(
                f"the toy model needs height and width that are positive multiples of {p}, got {g.height}x{g.width}."
            )
        if g.frames < 1:
            raise SetseqError(f"the clip needs at least one frame, got {g.frames}.")

    def fit_geometry(self, shown: tuple[float, float] | None, frames: int | None = None) -> Geometry:
        """The toy's fixed geometry, whatever the clip: it was pretrained on square clips of one size."""
        return self.geometry

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return video  # pixel space: (B, F, C, H, W)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)

    def latent_shape(self, g: Geometry) -> tuple[int, ...]:
        return (g.frames, self.cfg.channels, g.height, g.width)

    # -- text and concept tokens -----------------------------------------------------------
    def add_concept_tokens(self, tokens: list[str]) -> None:
        for tok in tokens:
            try:
                slot = self.tokenizer.add(tok)
            except ValueError as e:
                raise SetseqError(f"cannot add concept token {tok!r}: {e}.") from None
            with torch.no_grad():
                self.text_encoder.concepts[slot].zero_()

    def concept_token_parameters(self) -> list[nn.Parameter]:
        return [self.text_encoder.concepts]

    def token_embeddings(self) -> dict[str, torch.Tensor]:
        return {t: self.text_encoder.concepts[s].detach().clone() for t, s in self.tokenizer.concepts.items()}

    def load_token_embeddings(self, embeddings: dict[str, torch.Tensor]) -> None:
        for tok, emb in embeddings.items():
            if tok not in self.tokenizer.concepts:
                self.add_concept_tokens([tok])
            row = self.text_encoder.concepts[self.tokenizer.concepts[tok]]
            if emb.shape != row.shape:
                raise SetseqError(
                    f"the embedding of {tok} has shape {tuple(emb.shape)}, but this text encoder needs "
                    f"{tuple(row.shape)}; was the concept trained on another base?"
                )
            with torch.no_grad():
                row.copy_(emb)

    def unknown_words(self, prompt: str) -> list[str]:
        return self.tokenizer.unknown(prompt)

    def encode_text(self, prompts: list[str], pad_to_max: bool = False) -> Text:
        """Token embeddings (B, L, D) and mask (B, L) of the prompts, L the longest prompt's tokens, or
        with pad_to_max the model's max_text_len: one shape for every batch, which torch.compile
        needs (the padding is masked, so the result is the same up to rounding)."""
        ids = [self.tokenizer.encode(p, self.cfg.max_text_len) for p in prompts]
        n = self.cfg.max_text_len if pad_to_max else max(len(i) for i in ids)
        dev = self.text_encoder.words.weight.device
        tok = torch.zeros(len(ids), n, dtype=torch.long, device=dev)  # [pad] = 0
        mask = torch.zeros(len(ids), n, dtype=torch.bool, device=dev)
        for row, i in enumerate(ids):
            tok[row, : len(i)] = torch.tensor(i)
            mask[row, : len(i)] = True
        return Text(self.text_encoder(tok, mask), mask)

    # -- the model -------------------------------------------------------------------------
    def velocity(self, x_t, t, text: Text, self_cond=None, grid_offset=(0.0, 0.0)):
        """(B, F, C, H, W) float32, computed under bf16 autocast where `self.bf16` says so;
        grid_offset as `ToyDiT.forward` (`setseq.patch_shift` moves the patch grid)."""
        with precision.autocast(self.bf16 and x_t.device.type == "cpu"):
            return self.transformer(x_t, t, text.emb, text.mask, self_cond, grid_offset).float()

    def prior_prompts(self, n: int, seed: int) -> list[tuple[str, str]]:
        from setseq.toy import world

        return world.prior_prompts(n, seed)


def randomise_zero_init(model: nn.Module, std: float = 0.02) -> None:
    """Give the zero-initialised adaLN and output layers small random weights, so that a random
    (not pretrained) model is a non-trivial function whose adapters receive gradients."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and (name.endswith("ada.1") or name in ("final", "final_ada.1")):
                m.weight.normal_(0.0, std)


def _fingerprint(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def save_weights(backbone: ToyBackbone, path: Path, info: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write the backbone's weights and config to a safetensors file, atomically.

    Args:
        dtype: store floating-point tensors in this dtype (e.g. torch.bfloat16 to halve a shipped
            file); None keeps float32. Loading always computes in float32.
    """
    from safetensors.torch import save_file

    meta = {
        "config": json.dumps(backbone.cfg.to_dict()),
        "geometry": json.dumps(backbone.geometry.__dict__),
        "info": json.dumps(info or {}),
    }
    with atomic_path(path) as tmp:
        state = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
            for k, v in backbone.state_dict().items()
        }
        save_file(state, str(tmp), metadata=meta)


def load_file_weights(path: str | Path, name: str = "toy") -> ToyBackbone:
    """A toy backbone from a weights file written by `save_weights` (e.g. by pretraining)."""
    path = Path(path)
    if not path.is_file():
        raise SetseqError(f"weights file {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        cfg = DiTConfig(**json.loads(meta["config"]))
        geometry = Geometry(**json.loads(meta["geometry"]))
        state = load_file(str(path))
    except Exception as e:  # any unreadable or foreign file gets the same sentence
        raise SetseqError(f"{str(path)!r} is not a toy-model weights file ({type(e).__name__}: {e}).") from None
    return ToyBackbone(name, cfg, geometry, state=state)


def load(name: str = "toy", seed: int = 0) -> ToyBackbone:
    """The toy backbone `name`: for "toy" the weights file SETSEQ_TOY_WEIGHTS names when it is set,
    else the shipped weights when present, else seeded random ones (warned).

    Raises:
        SetseqError: for an unknown name, or a SETSEQ_TOY_WEIGHTS that is not a toy weights file.
    """
    if name not in PRESETS:
        raise SetseqError(f"unknown toy model {name!r}; choose one of {sorted(PRESETS)}.")
    own = os.environ.get("SETSEQ_TOY_WEIGHTS") if name == "toy" else None
    if own:
        note(f"toy base from SETSEQ_TOY_WEIGHTS={own}")
        return load_file_weights(own, name)
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if path.is_file():
        return load_file_weights(path, name)
    cfg, geometry = PRESETS[name]
    if name != "toy-tiny":
        warn(
            f"no pretrained {name} weights ship with this install; using the toy DiT with seeded "
            "random weights, so generated videos will be noise-like."
        )
    return ToyBackbone(name, DiTConfig(**cfg.to_dict()), geometry, seed=seed)
