"""What the trainer and the sampler need from a video model. Each backbone is one file behind this.

Videos cross this boundary as (B, F, C, H, W) float tensors in [-1, 1]; latents are whatever the
backbone makes of them (the flow code works for any rank). Text crosses as a `Text` batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from setseq.backbones.scheduling import PipelineSampler

# A concept token as prompts write it: "[v]", "[u1]". Backbones skip these when looking for unknown
# words (they are added to the vocabulary later); the sampler checks that each one is known.
TOKEN = re.compile(r"\[[A-Za-z]+\d*\]")


@dataclass(frozen=True)
class Geometry:
    """Frames, size and frame rate of the clips a backbone models."""

    frames: int
    height: int
    width: int
    fps: float


@dataclass
class Text:
    """Encoded prompts: embeddings (B, T, D) and a key mask (B, T), True where a token is real."""

    emb: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.emb.shape[0]

    @staticmethod
    def cat(items: list[Text]) -> Text:
        """Concatenate along the batch, padding to the longest token count."""
        t = max(x.emb.shape[1] for x in items)
        emb = [torch.nn.functional.pad(x.emb, (0, 0, 0, t - x.emb.shape[1])) for x in items]
        mask = [torch.nn.functional.pad(x.mask, (0, t - x.mask.shape[1])) for x in items]
        return Text(torch.cat(emb), torch.cat(mask))


@dataclass(frozen=True)
class SamplingDefaults:
    steps: int = 30
    guidance: float = 8.0  # the paper samples with cfg 8
    shift: float = 1.0
    # Noise levels (lo, hi] at which guidance applies; elsewhere the conditional velocity alone
    # (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"). (0, 1): every step.
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    # Largest patch-grid offset in pixels, drawn afresh at every step (`setseq.patch_shift`): a
    # pixel-space DiT's patch (the toy's 4) so that its patch seams do not add up; 0: off, for
    # latent models, whose VAE decoder hides the grid.
    patch_shift: int = 0


@runtime_checkable
class Backbone(Protocol):
    """A text-to-video flow model that setseq can personalise."""

    name: str  # written into concept files ("toy", a model id or path)
    geometry: Geometry  # default clip geometry
    transformer: nn.Module  # the network whose linear layers receive adapters
    lora_targets: list[str]  # default module-name patterns (fnmatch) to adapt
    frame_step: int  # frames per latent frame after the first (the VAE's temporal compression; 1 in pixels)
    supports_self_conditioning: bool
    # The space the training loss is taken in: "velocity" (flow matching's v = noise - x0, what
    # real video DiTs predict) or "x0" (the clean clip implied by the velocity, x_t - t v: for
    # models that predict x0, where the velocity loss would weigh low noise by 1/t^2).
    loss_space: str
    sampling: SamplingDefaults  # the Euler sampler's defaults
    # The sampler the model's diffusers pipeline runs (its folder's scheduler and the pipeline's defaults),
    # `setseq.generate`'s default; None where there is none (the toy samples with Euler).
    pipeline_sampler: PipelineSampler | None

    def fingerprint(self) -> str:
        """A stable hash of the base weights, so a concept can refuse a different base."""

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Recompute the transformer's block activations in the backward pass (on) or keep them (off);
        a backbone for which it does not pay may ignore it."""

    def check_geometry(self, geometry: Geometry) -> None:
        """Raise SetseqError if the backbone cannot model clips of this geometry."""

    def fit_geometry(self, shown: tuple[float, float] | None, frames: int | None = None) -> Geometry:
        """The geometry to train a clip shown at (height, width) `shown` and holding `frames` frames at
        the default frame rate (None: unknown) at; a backbone of one fixed geometry returns it."""

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, F, C, H, W) in [-1, 1] -> latents."""

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> (B, F, C, H, W) in [-1, 1]."""

    def latent_shape(self, geometry: Geometry) -> tuple[int, ...]:
        """Shape of one sample's latents (no batch dimension) for clips of this geometry."""

    def add_concept_tokens(self, tokens: list[str]) -> None:
        """Make tokens such as "[v]" known to the text encoder, with zero embeddings (sec. 3.2)."""

    def concept_token_parameters(self) -> list[nn.Parameter]:
        """The trainable tensors that hold the concept-token embeddings."""

    def token_embeddings(self) -> dict[str, torch.Tensor]:
        """Current embedding of every concept token, by token."""

    def load_token_embeddings(self, embeddings: dict[str, torch.Tensor]) -> None:
        """Set concept-token embeddings (adding unknown tokens first)."""

    def encode_text(self, prompts: list[str]) -> Text:
        """Encode prompts; concept tokens map to their embeddings."""

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of the prompt the text encoder cannot represent (for a warning), else []."""

    def velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, text: Text, self_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v_theta(x_t, t, text); t of shape (B,) in [0, 1]; self_cond an x_0 estimate or None."""

    def prior_prompts(self, n: int, seed: int) -> list[tuple[str, str]]:
        """Generic two-part (appearance, motion) prompts for prior preservation."""
