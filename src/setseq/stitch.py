"""Stitched clips, the composition regulariser of paper sec. 4: two concepts' clips side by side
(or one above the other), each squeezed into half the frame, trained with the composed prompt.

Background removal (where both clips have foreground masks) puts the two subjects on **one**
background instead of two half-backgrounds. The background kept is the *first* clip's, at full
frame (not squeezed): its own pixels outside its subject, and where its subject was (mask dilated
by 1 px) each frame's median background colour. Each subject is squeezed into its half together
with its mask and laid over that background wherever its mask (dilated by 1 px, so that the
antialiased rim comes along) is set. The composed prompt then keeps the first concept's background
phrase and drops the second's (`drop_background`), so the text names the one background shown.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

# "... on a purple background", "in front of the grey background", "against a black to blue
# gradient background": a phrase that names the background, up to the word "background".
_BACKGROUND_PHRASE = re.compile(
    r"\s*\b(?:on|in front of|against|over)\s+(?:a|an|the)\s+[^.!?;,]*?\bbackground\b", re.IGNORECASE
)


def stitch(
    xa: torch.Tensor, xb: torch.Tensor, dim: int, mask_a: torch.Tensor | None = None, mask_b: torch.Tensor | None = None
) -> torch.Tensor:
    """Two clips in one frame, each squeezed into its half.

    Args:
        xa, xb: clips (F, C, H, W) of the same shape; `xa` takes the left (or top) half.
        dim: 3 for side by side, 2 for one above the other.
        mask_a, mask_b: foreground masks (F, H, W) bool; with both given, the backgrounds are
            replaced by `xa`'s (see the module docstring).

    Returns:
        (F, C, H, W).
    """
    H, W = xa.shape[-2:]
    remove = mask_a is not None and mask_b is not None
    plate = background_plate(xa, mask_a) if remove else None
    if remove:  # the masks ride along as one more channel, so they are squeezed exactly as the pixels
        xa = torch.cat([xa, mask_a[:, None].to(xa.dtype)], 1)  # (F, C + 1, H, W)
        xb = torch.cat([xb, mask_b[:, None].to(xb.dtype)], 1)
    half = (H, W // 2) if dim == 3 else (H // 2, W)
    xa, xb = (F.interpolate(x, size=half, mode="bilinear", antialias=True) for x in (xa, xb))
    clip = torch.cat([xa, xb], dim)
    clip = F.interpolate(clip, size=(H, W), mode="bilinear") if clip.shape[-2:] != (H, W) else clip
    if not remove:
        return clip
    subjects = dilate(clip[:, -1] > 0.5)  # (F, H, W)
    return torch.where(subjects[:, None], clip[:, :-1], plate)


def background_plate(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A clip's background alone: (F, C, H, W), the subject (mask (F, H, W), dilated by 1 px) painted
    over in each frame's median background colour (the whole clip's where a frame has no background
    left, mid-grey where none has)."""
    subject = dilate(mask)
    pixels = video.movedim(1, -1)  # (F, H, W, C)
    everywhere = pixels[~subject]  # (N, C)
    fallback = everywhere.median(0).values if len(everywhere) else video.new_zeros(video.shape[1])
    colours = torch.stack(
        [pixels[f][~subject[f]].median(0).values if (~subject[f]).any() else fallback for f in range(video.shape[0])]
    )  # (F, C)
    return torch.where(subject[:, None], colours[:, :, None, None], video)


def dilate(mask: torch.Tensor) -> torch.Tensor:
    """Grow a mask (F, H, W) bool by one pixel, diagonals included."""
    return F.max_pool2d(mask[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0


def drop_background(prompt: str) -> str:
    """A static prompt without the phrase that names its background ("a [v2] fire on a black
    background." -> "a [v2] fire."); unchanged when it has none."""
    return _BACKGROUND_PHRASE.sub("", prompt, count=1)
