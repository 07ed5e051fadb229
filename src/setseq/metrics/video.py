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


def patch_grid_ratio(video: torch.Tensor, patch: int, ignore: torch.Tensor | None = None) -> float:
    """How much stronger the image gradient is across patch borders than inside patches, on the
    worst alignment of a patch grid.

    A patchifying model (DiT's p x p patches) that is undertrained draws each patch on its own, so
    its frames show the patch grid: steps in colour where patches meet, flat colour inside. This
    compares the mean absolute difference of neighbouring pixels whose pair straddles a grid line
    (columns or rows k * patch - 1 + offset and k * patch + offset) with that of pairs inside a
    cell, over both axes and every frame and channel, and returns the largest over the patch^2
    offsets of the grid: a sampler that moves the model's grid (`setseq.patch_shift`) can leave
    its seams anywhere, and they count wherever they are. A rendered clip, which knows no grid,
    scores about 1.2 (the worst of 16 offsets on the toy world; about 1.0 at any one); a blocky
    one scores well above that. (Before 2026-12-07 the measure read the model's own grid only: the
    same on a fixed grid's samples, about 1.0 on rendered truth.)

    Args:
        video: clip (F, 3, H, W) in [-1, 1]; H and W need not be multiples of the patch.
        patch: the model's spatial patch size in pixels (>= 2).
        ignore: optional (F, H, W) bool pixels to leave out, e.g. the object, so that the measure
            reads flat background (a pair counts only when neither pixel is ignored).

    Returns:
        The ratio border / inside at the worst offset (1.0 when both are zero, e.g. a flat frame).

    Raises:
        SetseqError: for a patch below 2, a clip with fewer than 2 x patch rows or columns, or an
            `ignore` mask of another shape.
    """
    video = check_video(video)
    frames, _, height, width = video.shape
    if patch < 2:
        raise SetseqError(f"the patch must be at least 2 pixels to have borders, got {patch}.")
    if height < 2 * patch or width < 2 * patch:
        raise SetseqError(f"a {height}x{width} clip holds no patch border for patch {patch}.")
    keep = torch.ones(frames, height, width, dtype=torch.bool)
    if ignore is not None:
        ignore = torch.as_tensor(ignore, dtype=torch.bool)
        if tuple(ignore.shape) != (frames, height, width):
            raise SetseqError(f"the ignore mask must be shaped {(frames, height, width)}, got {tuple(ignore.shape)}.")
        keep = ~ignore
    # per axis: each pair's difference, whether it counts, and its place within a patch
    axes = []
    for axis in (-1, -2):  # differences along columns, then along rows
        n = video.shape[axis]
        diff = (video.narrow(axis, 1, n - 1) - video.narrow(axis, 0, n - 1)).abs().mean(1)  # (F, ., .)
        pair = keep.narrow(axis, 1, n - 1) & keep.narrow(axis, 0, n - 1)
        place = torch.arange(n - 1) % patch  # pair (i, i + 1) crosses a grid line at offset o when place == o - 1
        axes.append((diff, pair, place.view(-1, 1) if axis == -2 else place))
    worst = 0.0
    for ox in range(patch):
        for oy in range(patch):
            border, inside = [], []
            for (diff, pair, place), o in zip(axes, (ox, oy)):
                across = place == (o - 1) % patch
                border.append(diff[pair & across])
                inside.append(diff[pair & ~across])
            b, i = torch.cat(border), torch.cat(inside)
            b_mean = float(b.mean()) if b.numel() else 0.0
            i_mean = float(i.mean()) if i.numel() else 0.0
            if i_mean == 0.0:
                ratio = 1.0 if b_mean == 0.0 else float("inf")
            else:
                ratio = b_mean / i_mean
            worst = max(worst, ratio)
    return worst
