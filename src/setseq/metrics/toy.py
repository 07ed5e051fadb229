"""Toy-world metrics: what the paper's metrics measure, read with what the toy world knows.

The toy world (`setseq.toy.world`) draws one object or texture over a known kind of background,
so a clip's concept can be segmented and compared without any learned model:

  * identity: the concept's colours. Object pixels are unmixed from their row's background and
    vote for a palette colour; two clips are compared by histogram intersection of the votes.
  * motion: for a sprite, the cosine between the centroid velocities of the two clips; for a
    texture (waves, fire), the cosine between the magnitude spectra of the two masks' motion
    (3D FFT over time and space), which ignores where the pattern starts but not which way it
    travels, so a time-reversed clip scores lower.
  * edits: which of background, colour and camera `setseq.toy.checker` reads differently from the
    reference, and whether the prompt's requested ones happened.
  * temporal coherence and MSE: the model-free ones of `setseq.metrics.video`.

The reference is segmented with the render's mask when given (it is the truth); generated clips
with background subtraction, as the checker does.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from setseq.errors import SetseqError
from setseq.metrics.video import check_video, match_reference, mse, patch_grid_ratio, pixel_coherence
from setseq.toy import checker, world

Mask = np.ndarray | torch.Tensor  # (F, H, W) bool object pixels
# A reference this far (MSE on [0, 1] pixels) from its concept's render is another clip.
REFERENCE_TOLERANCE = 0.01
_BACKGROUND = re.compile(r"\bon an? (\w+)(?: to (\w+) gradient)? background\b")


# --------------------------------------------------------------------------------------------
# segmentation and identity


def _rgb_and_backs(video: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (F, H, W, 3) in [0, 1] and each pixel's row background, as the checker reads them."""
    return checker.row_backgrounds(check_video(video))


def segment(video: torch.Tensor) -> np.ndarray:
    """Object (or texture) pixels by background subtraction: (F, 3, H, W) -> (F, H, W) bool.

    Args:
        video: clip in [-1, 1].
    """
    return checker.foreground(*_rgb_and_backs(video))


def colour_histogram(video: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """Share of the object's colour per palette entry, (K,) summing to 1 (zeros without pixels).

    Each masked pixel is explained as back + alpha * (colour - back) for every palette colour,
    like the checker's colour reading; the best-fitting colour gets a vote of alpha^2. So pixels
    on an edge count little and vote for their own colour, not for the blend's nearest one.

    Args:
        video: clip (F, 3, H, W) in [-1, 1].
        mask: (F, H, W) bool object pixels.
    """
    rgb, backs = _rgb_and_backs(video)
    votes = checker.palette_votes(rgb[mask], backs[mask])  # (K,)
    return votes / votes.sum() if votes.sum() > 0 else votes


def identity_score(video: torch.Tensor, reference: torch.Tensor, reference_mask: Mask | None = None) -> float:
    """Histogram intersection of the two clips' object colours: 1 for the same colours in the
    same proportions, 0 for no colour in common (or no object found).

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: reference clip (F', 3, H', W') in [-1, 1]; need not be aligned.
        reference_mask: (F', H', W') bool object pixels of the reference (e.g. the render's mask);
            None segments it like the generated clip.
    """
    ref_mask = segment(reference) if reference_mask is None else np.asarray(reference_mask, bool)
    ours, theirs = colour_histogram(video, segment(video)), colour_histogram(reference, ref_mask)
    return float(np.minimum(ours, theirs).sum())


def coverage(video: torch.Tensor, reference: torch.Tensor, reference_mask: Mask | None = None) -> float:
    """How much object (or texture) the clip draws, against the reference: the share of its frames
    that its foreground covers over the reference's share. 1 for as much, 0 for nothing, above 1
    for more. `identity_score` compares colour proportions only, so a clip that draws a few specks
    in the right colours scores well on it; this says how much was drawn (read them together).

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: reference clip (F', 3, H', W') in [-1, 1]; need not be aligned.
        reference_mask: (F', H', W') bool object pixels of the reference; None segments it.
    """
    ref_mask = segment(reference) if reference_mask is None else np.asarray(reference_mask, bool)
    ours, theirs = float(segment(video).mean()), float(ref_mask.mean())
    return ours / theirs if theirs > 0 else float(ours == 0)


# --------------------------------------------------------------------------------------------
# motion


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two flattened arrays; two zero arrays agree (1), one zero array does not (0)."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-8 or nb < 1e-8:
        return float(na < 1e-8 and nb < 1e-8)
    return float(a.ravel() @ b.ravel() / (na * nb))


def _velocities(mask: np.ndarray) -> np.ndarray:
    """Centroid velocity (F - 1, 2) in fractions of the frame per frame; NaN where not found."""
    _, H, W = mask.shape
    count = mask.sum((1, 2))[:, None]  # (F, 1)
    cols = (mask * (np.arange(W) / W)).sum((1, 2))
    rows = (mask * (np.arange(H)[:, None] / H)).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.stack([cols, rows], axis=1) / count  # (F, 2) (column, row)
    return np.diff(centre, axis=0)


def _motion_spectrum(mask: np.ndarray) -> np.ndarray:
    """Magnitude of the 3D FFT of a mask's changes over time: (F, H, W) -> (F, H, W)."""
    m = mask.astype(np.float32)
    return np.abs(np.fft.fftn(m - m.mean(0)))  # removing each pixel's mean keeps only motion


def motion_score(video: torch.Tensor, reference: torch.Tensor, kind: str, reference_mask: Mask | None = None) -> float:
    """How closely the generated clip's motion follows the reference's, in [-1, 1].

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: reference clip (F, 3, h, w), same frame count (resized to the clip's size).
        kind: the world's scene kind, "sprite" (centroid velocities are compared, frame by
            frame) or "waves" / "fire" (motion spectra are compared).
        reference_mask: (F, h, w) bool object pixels of the reference; None segments it.
    """
    if kind not in world.KINDS:
        raise SetseqError(f"unknown scene kind {kind!r}; use one of {world.KINDS}.")
    ref_mask = segment(reference) if reference_mask is None else np.asarray(reference_mask, bool)
    ref_mask = _resize_mask(ref_mask, tuple(video.shape[-2:]))
    match_reference(video, reference)  # raises unless the frame counts match
    mask = segment(video)
    if kind != "sprite":
        return _cosine(_motion_spectrum(mask), _motion_spectrum(ref_mask))
    ours, theirs = _velocities(mask), _velocities(ref_mask)  # (F - 1, 2)
    seen = ~(np.isnan(ours).any(1) | np.isnan(theirs).any(1))
    return _cosine(ours[seen], theirs[seen]) if seen.any() else 0.0


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape[-2:] == size:
        return mask
    m = torch.from_numpy(mask.astype(np.float32))[:, None]  # (F, 1, h, w)
    return F.interpolate(m, size=size, mode="nearest")[:, 0].numpy() > 0.5


# --------------------------------------------------------------------------------------------
# edits


def read_attributes(video: torch.Tensor) -> dict[str, str | None]:
    """What the checker reads from a clip: background ("blue", or "black to blue" for a gradient,
    top to bottom), object colour and camera.

    Args:
        video: clip (F, 3, H, W) in [-1, 1].
    """
    found = checker.check(check_video(video))
    top, bottom = found["background_top"], found["background_bottom"]
    background = top if top == bottom else f"{top} to {bottom}"
    return {"background": background, "color": found["color"], "camera": found["camera"]}


def detected_edits(video: torch.Tensor, reference: torch.Tensor) -> dict[str, str | None]:
    """The attributes the checker reads differently in the generated clip than in the reference.

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: reference clip (F', 3, H', W') in [-1, 1].

    Returns:
        {attribute: value seen in the generated clip}, e.g. {"background": "green"}.
    """
    ours, theirs = read_attributes(video), read_attributes(reference)
    return {k: v for k, v in ours.items() if v != theirs[k]}


def requested_edits(prompt: str, reference: torch.Tensor) -> dict[str, str]:
    """The background, object colour and camera a prompt names in the world's words, where they
    differ from what the reference shows.

    Args:
        prompt: e.g. "a [v] diamond on a green background. it moves in [u] motion, as the camera
            pans left."
        reference: reference clip (F, 3, H, W) in [-1, 1].

    Returns:
        {attribute: requested value}, e.g. {"background": "green", "camera": "pan-left"}.
    """
    text = prompt.lower()
    named = {}
    if match := _BACKGROUND.search(text):
        top, bottom = match.groups()
        named["background"] = top if bottom is None else f"{top} to {bottom}"
        text = text[: match.start()] + text[match.end() :]
    colours = [w for w in world.tokenize(text) if w in world.PALETTE]
    if colours:
        named["color"] = colours[0]
    for camera, phrase in world.CAMERA_PHRASES.items():
        if phrase and phrase.strip(", ") in text:
            named["camera"] = camera
    seen = read_attributes(reference)
    return {k: v for k, v in named.items() if v != seen[k]}


def edit_adherence(video: torch.Tensor, requested: dict[str, str]) -> float:
    """Share of the requested edits that the checker reads in the generated clip.

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        requested: {attribute: value}, attributes "background", "color", "camera" (see
            `requested_edits`); at least one.
    """
    unknown = set(requested) - {"background", "color", "camera"}
    if not requested or unknown:
        raise SetseqError(f"requested edits must name background, color or camera, got {sorted(requested)}.")
    seen = read_attributes(video)
    return float(np.mean([seen[k] == v for k, v in requested.items()]))


# --------------------------------------------------------------------------------------------
# sharpness


def background_grid(video: torch.Tensor, patch: int = 4) -> float:
    """`patch_grid_ratio` on the clip's background: the object (background subtraction, grown by a
    pixel so that its edges do not count) left out. About 1.2 for rendered truth; well above where a
    model draws its patch grid. patch: the toy DiT's patch (4 for the shipped preset)."""
    video = check_video(video)
    return patch_grid_ratio(video, patch, ignore=torch.from_numpy(checker.grow(segment(video))))


# --------------------------------------------------------------------------------------------
# all together


def toy_metrics(
    video: torch.Tensor,
    reference: torch.Tensor,
    kind: str,
    *,
    reference_mask: Mask | None = None,
    prompt: str | None = None,
) -> dict:
    """Every toy metric of a generated clip against its reference.

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: reference clip (F, 3, h, w) in [-1, 1], same frame count.
        kind: the reference's scene kind: "sprite", "waves" or "fire".
        reference_mask: (F, h, w) bool object pixels of the reference; None segments it.
        prompt: the generation prompt; when it names a background, colour or camera other than
            the reference's, "toy_edit" says which share of them the clip shows.

    Returns:
        {"mse", "tc_pixel", "toy_identity", "toy_coverage", "toy_motion", "toy_edits", "grid",
        "grid_truth", and "toy_edit" when the prompt requests an edit}; "toy_edits" maps the attributes read
        differently from the reference to their new values; "grid" is the clip's `background_grid`
        and "grid_truth" the reference's (about 1.2 for a render: a sharp sample stays near it).
    """
    out = {
        "mse": mse(video, reference),
        "tc_pixel": pixel_coherence(video),
        "toy_identity": identity_score(video, reference, reference_mask),
        "toy_coverage": coverage(video, reference, reference_mask),
        "toy_motion": motion_score(video, reference, kind, reference_mask),
        "toy_edits": detected_edits(video, reference),
        "grid": background_grid(video),
        "grid_truth": background_grid(reference),
    }
    requested = requested_edits(prompt, reference) if prompt else {}
    if requested:
        out["toy_edit"] = edit_adherence(video, requested)
    return out


def concept_metrics(video: torch.Tensor, reference: torch.Tensor, name: str, prompt: str | None = None) -> dict:
    """`toy_metrics` against one of the world's example concepts, its render's mask as the truth.

    Args:
        video: generated clip (F, 3, H, W) in [-1, 1].
        reference: the example concept's clip (F, 3, h, w), e.g. `setseq toy examples`' NAME.mp4.
        name: "sprite", "waves" or "flicker".
        prompt: the generation prompt (see `toy_metrics`).
    """
    scene = world.concept_scene(name)
    reference = check_video(reference, "reference")
    frames, _, height, width = reference.shape
    truth = world.render(scene, frames, height, width)
    if mse(truth.video, reference) > REFERENCE_TOLERANCE:
        raise SetseqError(
            f"the reference is not the example concept {name!r}; pass its video "
            "(`setseq toy examples`) or leave out --toy-scene."
        )
    return toy_metrics(video, reference, scene.kind, reference_mask=truth.mask.numpy(), prompt=prompt)
