"""Model-free video metrics: pixel MSE against a reference, and temporal coherence (TC) of a clip
under any frame embedder (CLIP in the paper, raw pixels as a model-free stand-in).

Videos are (F, C, H, W) float tensors in [-1, 1] with C = 3, the layout of `setseq.video`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from setseq.errors import SetseqError

# Maps frames (F, 3, H, W) in [-1, 1] to embeddings (F, D).
FrameEmbedder = Callable[[torch.Tensor], torch.Tensor]


def check_video(video: torch.Tensor, name: str = "video", *, min_frames: int = 1) -> torch.Tensor:
    """Check that a clip is (F, 3, H, W) with finite values and return it as float32 on the CPU.

    Args:
        video: the clip.
        name: how error messages name it.
        min_frames: fewer frames than this is an error.
    """
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise SetseqError(f"the {name} must be a clip shaped (F, 3, H, W), got {shape}.")
    if video.shape[0] < min_frames:
        raise SetseqError(f"the {name} has {video.shape[0]} frames but at least {min_frames} are needed.")
    video = video.detach().to("cpu", torch.float32)
    if not torch.isfinite(video).all():
        raise SetseqError(f"the {name} holds NaN or infinite values; check the generator's output.")
    return video


def match_reference(video: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The reference resized (bilinear) to the generated clip's height and width, frames aligned.

    Args:
        video: generated clip (F, 3, H, W).
        reference: reference clip (F, 3, h, w); its frame count must equal the generated one's.

    Returns:
        The reference as (F, 3, H, W).
    """
    video, reference = check_video(video), check_video(reference, "reference")
    if video.shape[0] != reference.shape[0]:
        raise SetseqError(
            f"the video has {video.shape[0]} frames but the reference has {reference.shape[0]}; "
            "generate as many frames as the reference (e.g. `setseq generate --frames`)."
        )
    size = tuple(video.shape[-2:])
    if tuple(reference.shape[-2:]) == size:
        return reference
    return F.interpolate(reference, size=size, mode="bilinear", align_corners=False, antialias=True)


def mse(video: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean squared pixel error between a generated clip and its reference (the paper's MSE).

    Pixels are compared on the [0, 1] scale, frame by frame; a reference of another size is
    resized to the generated one.

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: reference clip (F, 3, h, w) in [-1, 1], same frame count.
    """
    reference = match_reference(video, reference)
    video = check_video(video)
    return float(((video - reference) / 2).square().mean())  # / 2: [-1, 1] -> [0, 1] scale


def temporal_coherence(video: torch.Tensor, embed: FrameEmbedder) -> float:
    """Mean cosine similarity between the embeddings of consecutive frames (the paper's TC).

    Args:
        video: clip (F, 3, H, W) in [-1, 1], F >= 2.
        embed: maps (F, 3, H, W) frames to (F, D) embeddings, e.g. `CLIP.embed_frames`.
    """
    video = check_video(video, min_frames=2)
    z = embed(video)  # (F, D)
    return float(F.cosine_similarity(z[:-1], z[1:], dim=-1).mean())


def pixel_coherence(video: torch.Tensor) -> float:
    """Model-free temporal coherence: 1 - the mean absolute change between consecutive frames on
    the [0, 1] scale. 1 for a still clip, 0 when every pixel flips between black and white.

    Args:
        video: clip (F, 3, H, W) in [-1, 1], F >= 2.
    """
    video = check_video(video, min_frames=2)
    return float(1 - ((video[1:] - video[:-1]).abs() / 2).mean())
