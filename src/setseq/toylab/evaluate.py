"""Base-model quality on the toy world: generate from held-out captions, read the pixels back.

The held-out split holds attribute combinations never seen in pretraining, so this measures
whether the model composes attributes from text rather than recalling clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from setseq import flow
from setseq.backbones.base import Backbone
from setseq.generate import generate
from setseq.metrics.toy import background_grid
from setseq.toy import checker, world

# A sample counts as sharp when its background's patch-grid ratio is within this factor of its
# rendered truth's (truths score about 1.2; an undertrained patchifying model well above).
GRID_TOLERANCE = 1.3


def attribute_accuracy(
    backbone: Backbone,
    n: int = 100,
    seed: int = 0,
    batch: int = 25,
    steps: int | None = None,
    guidance: float | None = None,
    progress: bool = True,
    guidance_interval: tuple[float, float] | None = None,
) -> dict:
    """Accuracy of background, colour, camera and direction over `n` held-out captions (sampled
    with `generate`'s steps, guidance and guidance interval; None: the model's).

    Returns:
        {"n": n, "accuracy": {attribute: share correct}, "mean": mean over attributes,
         "by_camera": {"still" | "pan" | "zoom": share of those clips whose camera was read right},
         "confusion": {"camera" | "direction": {truth: {what the checker read: count}}} over the
         clips the attribute applies to (None: the checker read no direction),
         "grid": {"median", "truth_median", "sharp"}: the samples' `background_grid` and their
         rendered truths', and the share of samples within GRID_TOLERANCE x their truth's,
         "samples": [{caption, found, correct, grid, grid_truth}, ...]}.
    """
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, "heldout") for _ in range(n)]
    captions = [world.caption_text(s) for s in scenes]
    videos = []
    for i in tqdm(range(0, n, batch), desc="held-out captions", disable=not progress):
        videos.append(
            generate(
                backbone,
                captions[i : i + batch],
                steps=steps,
                guidance=guidance,
                guidance_interval=guidance_interval,
                seed=seed + i,
            )
        )
    videos = torch.cat(videos)
    acc = checker.accuracy(videos, scenes)
    g = backbone.geometry
    grids = [background_grid(v) for v in videos]
    truths = [background_grid(world.render(s, g.frames, g.height, g.width).video) for s in scenes]
    samples = []
    confusion: dict[str, dict[str, dict[str, int]]] = {"camera": {}, "direction": {}}
    for cap, video, scene, grid, grid_truth in zip(captions, videos, scenes, grids, truths):
        found = checker.check(video)
        correct = checker.score(video, scene)
        for attr, truth in (("camera", scene.camera), ("direction", scene.motion)):
            if attr in correct:  # the attributes that apply to this scene
                row = confusion[attr].setdefault(truth, {})
                row[str(found[attr])] = row.get(str(found[attr]), 0) + 1
        samples.append(
            {
                "caption": cap,
                "correct": correct,
                "found": {k: found[k] for k in ("background", "color", "direction", "camera")},
                "grid": round(grid, 3),
                "grid_truth": round(grid_truth, 3),
            }
        )
    mean = float(np.mean(list(acc.values())))
    by_camera = {}  # share right by kind of camera move: the aims name pans and zooms apart
    for kind in ("still", "pan", "zoom"):
        rows = [(truth, found) for truth, found in confusion["camera"].items() if truth.split("-")[0] == kind]
        total = sum(sum(found.values()) for _, found in rows)
        if total:
            by_camera[kind] = sum(found.get(truth, 0) for truth, found in rows) / total
    sharp = float(np.mean([gr <= GRID_TOLERANCE * tr for gr, tr in zip(grids, truths)]))
    grid = {"median": float(np.median(grids)), "truth_median": float(np.median(truths)), "sharp": sharp}
    return {
        "n": n,
        "accuracy": acc,
        "mean": mean,
        "by_camera": by_camera,
        "confusion": confusion,
        "grid": grid,
        "samples": samples,
    }


def sample_strip(
    backbone: Backbone,
    path: str | Path,
    n: int = 4,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
) -> list[dict]:
    """Write a frame strip of the first `n` held-out captions `attribute_accuracy` draws with `seed`:
    for each, its rendered truth, then the base's sample beneath it (8 frames a row, 4 x pixels).

    Returns [{caption, grid, grid_truth}, ...]: the captions top to bottom and both rows'
    `background_grid` (the patch-grid ratio; truths score about 1.2).
    """
    from setseq.report import frame_strip

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng, "heldout") for _ in range(n)]
    captions = [world.caption_text(s) for s in scenes]
    samples = generate(
        backbone, captions, steps=steps, guidance=guidance, guidance_interval=guidance_interval, seed=seed
    ).cpu()  # a model pretraining on a GPU samples there
    g = backbone.geometry
    rows, out = [], []
    for cap, scene, sample in zip(captions, scenes, samples):
        truth = world.render(scene, g.frames, g.height, g.width).video
        rows += [truth, sample]
        out.append({"caption": cap, "grid": background_grid(sample), "grid_truth": background_grid(truth)})
    frame_strip(path, rows)
    return out


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def motion_words(
    backbone: Backbone,
    n: int = 32,
    start: float = 0.7,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
) -> dict:
    """Does the model read a caption's motion words, or only the clip in front of it?

    n training-split sprites moving left, right, up or down (camera still) are rendered, noised to
    `start` with one noise draw, and denoised three times: under their own caption, under the
    caption with the opposite direction, and under the appearance caption alone. The checker reads
    each result's direction. A model that reads the words turns part of the clips round under the
    opposite caption; one that does not gives the same shares under all three captions.

    Returns:
        {"n", "start", "rows": {caption: {"true": share moving the true way, "captioned": share
         moving the way the caption says (None for the appearance caption, which says none),
         "still": share read as still}}}.
    """
    rng = np.random.default_rng(seed)
    scenes = []
    while len(scenes) < n:
        s = world.sample_scene(rng, "train")
        if s.kind == "sprite" and s.motion in OPPOSITE:
            scenes.append(world.edit_scene(s, camera="still"))
    g = backbone.geometry
    clips = torch.stack([world.render(s, g.frames, g.height, g.width).video for s in scenes])
    # (captions, the direction each says; None: the caption names no motion)
    variants = {
        "true": ([world.caption_text(s) for s in scenes], [s.motion for s in scenes]),
        "opposite": (
            [world.caption_text(world.edit_scene(s, motion=OPPOSITE[s.motion])) for s in scenes],
            [OPPOSITE[s.motion] for s in scenes],
        ),
        "appearance only": ([world.caption(s)[0] for s in scenes], None),
    }
    rows = {}
    for name, (captions, said) in variants.items():
        # The same seed for every caption: the three runs start from the very same noised clips.
        videos = generate(backbone, captions, steps=steps, guidance=guidance, seed=seed, init=clips, start=start)
        found = [checker.check(v)["direction"] for v in videos]
        rows[name] = {
            "true": float(np.mean([f == s.motion for f, s in zip(found, scenes)])),
            "captioned": None if said is None else float(np.mean([f == d for f, d in zip(found, said)])),
            "still": float(np.mean([f == "still" for f in found])),
        }
    return {"n": n, "start": start, "rows": rows}


_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def _travel(videos: torch.Tensor, said: list[str]) -> np.ndarray:
    """Per clip, the least-squares speed (pixels a frame) of its foreground centroid along the
    direction `said` names. videos: (B, F, 3, H, W) in [-1, 1]. The foreground is soft: each
    pixel's distance from its row's median colour, so a faint, blurred estimate still counts."""
    out = []
    for video, d in zip(videos, said):
        rgb, backs = checker.row_backgrounds(video.clamp(-1, 1))
        weight = np.linalg.norm(rgb - backs, axis=-1)  # (F, H, W)
        f, h, w = weight.shape
        total = weight.sum((1, 2)) + 1e-8
        centre = np.stack(
            [(weight * np.arange(w)).sum((1, 2)) / total, (weight * np.arange(h)[:, None]).sum((1, 2)) / total], 1
        )  # (F, 2)
        slope = np.polyfit(np.arange(f), centre, 1)[0]  # (2,)
        out.append(float(slope @ np.array(_UNIT[d])))
    return np.array(out)


def _one_step_estimates(
    backbone: Backbone, scenes: list, variants: dict[str, list[str]], t: float, seed: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render `scenes`, noise them to t with one noise draw, and read the model's clean estimate
    x0 once per caption variant from the very same noised clips.

    Returns (clips (n, F, 3, H, W), {variant: x0 (n, F, 3, H, W)}), both in [-1, 1] units."""
    g = backbone.geometry
    clips = torch.stack([world.render(s, g.frames, g.height, g.width).video for s in scenes])
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(seed))
    tt = torch.full((len(scenes),), float(t))
    x_t = flow.interpolate(clips, noise, tt)
    out = {}
    with torch.no_grad():
        for name, captions in variants.items():
            out[name] = flow.predict_x0(x_t, backbone.velocity(x_t, tt, backbone.encode_text(captions), None), tt)
    return clips, out


def _sprites(rng: np.random.Generator, n: int) -> list:
    """n training-split sprite scenes."""
    scenes = []
    while len(scenes) < n:
        s = world.sample_scene(rng, "train")
        if s.kind == "sprite":
            scenes.append(s)
    return scenes


def direction_probe(backbone: Backbone, n: int = 16, t: float = 0.99, seed: int = 0) -> dict:
    """A one-step check of whether the model moves things the way their words say, from noise.

    n training-split sprites moving left, right, up and down (camera still, n / 4 each) are
    rendered and noised to t (0.99: almost pure noise); the model's clean estimate x0 is read under
    each clip's own caption and under the caption with the opposite direction, from the same noised
    clips. Motion is the foreground centroid's speed along the captioned direction (`_travel`).
    Cheap enough to log while pretraining; the full measure is `attribute_accuracy`.

    Returns:
        {"t", "n", "truth": mean speed of the rendered clips (pixels a frame),
         "own": of the estimates under their own captions, "opposite": under the opposite captions
         (along the opposite caption's direction), "follows": (own + opposite) / (2 truth):
         1 when the estimate moves as far as the truth the way the words say, 0 when the words do
         not move it (or, at high noise, when it does not move at all)}.
    """
    if n < 4 or n % 4:
        raise ValueError(f"n must be a positive multiple of 4, got {n}")
    rng = np.random.default_rng(seed)
    scenes = [world.edit_scene(s, motion=d, camera="still") for s, d in zip(_sprites(rng, n), [*_UNIT] * (n // 4))]
    own = [s.motion for s in scenes]
    opposite = [OPPOSITE[d] for d in own]
    clips, x0 = _one_step_estimates(
        backbone,
        scenes,
        {
            "own": [world.caption_text(s) for s in scenes],
            "opposite": [world.caption_text(world.edit_scene(s, motion=o)) for s, o in zip(scenes, opposite)],
        },
        t,
        seed,
    )
    result = {"t": float(t), "n": n, "truth": float(_travel(clips, own).mean())}
    result["own"] = float(_travel(x0["own"], own).mean())
    result["opposite"] = float(_travel(x0["opposite"], opposite).mean())
    result["follows"] = (result["own"] + result["opposite"]) / (2 * result["truth"])
    return result


CAMERA_OPPOSITE = {"pan-left": "pan-right", "pan-right": "pan-left", "zoom-in": "zoom-out", "zoom-out": "zoom-in"}


def _pan(video: torch.Tensor) -> float:
    """The camera's pan between the first and last frame of a clip, in frame widths (+: right),
    from the background's vertical stripes: a column profile per frame, the median over rows of
    each row less its mean (the object covers few rows of a column), with the sign of a row's
    stripes undone (the world draws them towards white on dark rows, towards black on light ones,
    which a gradient mixes); the last frame's profile is matched to the first one's shifted by
    whole pixels, at most 0.45 of the width (true pans: 0.35). Robust where the checker's 2-D fit
    (`checker.check`) is not: on the soft one-step estimates of a probe.
    video: (F, 3, H, W) in [-1, 1]."""
    rgb, _ = checker.row_backgrounds(video.clamp(-1, 1))  # (F, H, W, 3)
    mean = rgb.mean(2, keepdims=True)  # (F, H, 1, 3)
    sign = np.where(mean.mean(-1, keepdims=True) < 0.45, 1.0, -1.0)
    profile = np.median((rgb - mean) * sign, axis=1)  # (F, W, 3)
    first, last, width = profile[0], profile[-1], profile.shape[1]
    reach = int(0.45 * width)
    # content slides left when the camera pans right: last[x] = first[x + d], d > 0
    errors = [
        np.mean((first[max(0, d) : width + min(0, d)] - last[max(0, -d) : width - max(0, d)]) ** 2)
        for d in range(-reach, reach + 1)
    ]
    return (int(np.argmin(errors)) - reach) / width


def _camera_move(videos: torch.Tensor, said: list[str]) -> np.ndarray:
    """Per clip, how far the camera moves the way `said` names, between first and last frame: for
    a pan, the offset in frame widths (`_pan`; +: the named way); for a zoom, log of the zoom ratio
    the checker reads from the background (`checker.check`; +: the named way).
    videos: (B, F, 3, H, W) in [-1, 1]."""
    out = []
    for video, camera in zip(videos, said):
        sign = 1.0 if camera in ("pan-right", "zoom-in") else -1.0
        move = _pan(video) if camera.startswith("pan") else float(np.log(checker.check(video.clamp(-1, 1))["zoom"]))
        out.append(sign * move)
    return np.array(out)


def camera_probe(backbone: Backbone, n: int = 16, t: float = 0.99, seed: int = 0) -> dict:
    """The direction probe's twin for the camera words: a one-step check from noise.

    n training-split sprites filmed with a pan left, a pan right, a zoom in and a zoom out (n / 4
    each; the sprite's path re-centred as the world does for the pan) are noised to t; the clean
    estimate is read under each clip's own caption and under the caption with the opposite camera
    move (pan left <-> right, zoom in <-> out), from the same noised clips. The move is read from
    the background (`_camera_move`).

    Returns:
        {"t", "n", "pan": {...}, "zoom": {...}, "follows": mean of the two}, each of "pan" and
        "zoom" {"truth", "own", "opposite", "follows"} as in `direction_probe` (pans in frame
        widths, zooms as log ratios): 1 when the words move the camera as far as the truth, 0
        when they do not move it.
    """
    if n < 4 or n % 4:
        raise ValueError(f"n must be a positive multiple of 4, got {n}")
    rng = np.random.default_rng(seed)
    scenes = [world.with_camera(s, c) for s, c in zip(_sprites(rng, n), [*CAMERA_OPPOSITE] * (n // 4))]
    own = [s.camera for s in scenes]
    opposite = [CAMERA_OPPOSITE[c] for c in own]
    clips, x0 = _one_step_estimates(
        backbone,
        scenes,
        {
            "own": [world.caption_text(s) for s in scenes],
            "opposite": [world.caption_text(world.with_camera(s, o)) for s, o in zip(scenes, opposite)],
        },
        t,
        seed,
    )
    truth, mine, other = _camera_move(clips, own), _camera_move(x0["own"], own), _camera_move(x0["opposite"], opposite)
    result: dict = {"t": float(t), "n": n}
    for kind in ("pan", "zoom"):
        pick = np.array([c.startswith(kind) for c in own])
        r = {"truth": float(truth[pick].mean()), "own": float(mine[pick].mean()), "opposite": float(other[pick].mean())}
        r["follows"] = (r["own"] + r["opposite"]) / (2 * r["truth"])
        result[kind] = r
    result["follows"] = (result["pan"]["follows"] + result["zoom"]["follows"]) / 2
    return result
