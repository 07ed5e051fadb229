"""Rendering the toy world: a scene to pixels (F, 3, H, W) in [-1, 1], with its object mask and
trajectory. Everything is drawn in normalised coordinates, so any size works."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from setseq.errors import SetseqError
from setseq.toy.world.scene import CUSTOM, PAN, STRIPE_MIX, TRAVEL, ZOOM, Scene, _rgb, _tone


@dataclass(frozen=True)
class Render:
    """One rendered clip and its ground truth."""

    video: torch.Tensor  # (F, 3, H, W) float32 in [-1, 1]
    mask: torch.Tensor  # (F, H, W) bool: object pixels (for textures: the drawn texture)
    trajectory: torch.Tensor  # (F, 2) float32: object centre (column, row) in pixels; NaN: textures


def _soft(signed_px: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by a region, given its signed distance in pixels (inside < 0)."""
    return np.clip(0.5 - signed_px, 0.0, 1.0)


def _times(frames: int) -> np.ndarray:
    # Clip time in [0, 1]: a motion spans the whole clip whatever the frame count.
    return np.linspace(0.0, 1.0 if frames > 1 else 0.0, frames, dtype=np.float32)


def _camera(camera: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame zoom (>1 magnifies) and horizontal pan offset of the camera, world units."""
    zoom, pan = np.ones_like(t), np.zeros_like(t)
    if camera == "pan-left":
        pan = -PAN * t
    elif camera == "pan-right":
        pan = PAN * t
    elif camera == "zoom-in":
        zoom = 1.0 + (ZOOM - 1.0) * t
    elif camera == "zoom-out":
        zoom = 1.0 / (1.0 + (ZOOM - 1.0) * t)
    return zoom, pan


def _world_grid(zoom: np.ndarray, pan: np.ndarray, height: int, width: int):
    """World coordinates seen by the pixel centres of every frame.

    Args:
        zoom, pan: (F,) camera zoom and pan offset from `_camera`.

    Returns:
        wx, wy: (F, H, W) world coordinates.
    """
    sx = (np.arange(width, dtype=np.float32) + 0.5) / width  # (W,) screen coords in [0, 1]
    sy = (np.arange(height, dtype=np.float32) + 0.5) / height  # (H,)
    z = zoom[:, None, None]
    wx = 0.5 + (sx[None, None, :] - 0.5) / z + pan[:, None, None]  # (F, 1, W)
    wy = 0.5 + (sy[None, :, None] - 0.5) / z  # (F, H, 1)
    shape = (len(zoom), height, width)
    return np.broadcast_to(wx, shape), np.broadcast_to(wy, shape)


def _background(scene: Scene, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    """Background colour at world coordinates: (F, H, W) -> (F, H, W, 3)."""
    top, bottom = _rgb(scene.background), _rgb(scene.background2 or scene.background)
    # Flat ends with a ramp in the middle, so the top and bottom rows show the named colours.
    g = np.clip((wy - 0.25) / 0.5, 0.0, 1.0)
    g = g * g * (3.0 - 2.0 * g)
    base = top + g[..., None] * (bottom - top)
    # Faint vertical stripes at two incommensurate periods: x-structure that makes pans and zooms
    # visible, without a period short enough to make the shift ambiguous.
    s = 0.5 + 0.25 * (np.sin(2 * np.pi * wx / 0.31 + 0.4) + np.sin(2 * np.pi * wx / 0.53 + 2.1))
    # Stripes move dark colours towards white and light ones towards black.
    target = (base.mean(-1, keepdims=True) < 0.45).astype(np.float32)
    return base + STRIPE_MIX * s[..., None] * (target - base)


def _sprite_path(scene: Scene, t: np.ndarray):
    """Per-frame centre (world), rotation angle (radians) and scale of a sprite; each (F,)."""
    x = np.full_like(t, scene.x)
    y = np.full_like(t, scene.y)
    angle = np.zeros_like(t)
    scale = np.ones_like(t)
    s, p, m = scene.speed, scene.phase, scene.motion
    travel = TRAVEL * s * (t - 0.5)
    if m == "right":
        x = x + travel
    elif m == "left":
        x = x - travel
    elif m == "down":
        y = y + travel
    elif m == "up":
        y = y - travel
    elif m == "circle":
        x = x + 0.25 * s * np.cos(p + 2 * np.pi * t)
        y = y + 0.25 * s * np.sin(p + 2 * np.pi * t)
    elif m == "bounce":  # two hops off a floor below the centre
        y = y + 0.2 - 0.4 * s * np.abs(np.sin(2 * np.pi * t))
    elif m == "zigzag":
        x = x + travel
        y = y + 0.15 * s * (2 * np.abs(2 * ((1.5 * t + 0.25) % 1.0) - 1) - 1)  # 1.5 triangle periods
    elif m == "figure-eight":
        x = x + 0.28 * s * np.sin(p + 2 * np.pi * t)
        y = y + 0.18 * s * np.sin(2 * p + 4 * np.pi * t)
    elif m == "spin":
        angle = p + np.pi * s * t
    elif m == "pulse":
        scale = 1.0 + 0.15 * s * np.sin(4 * np.pi * t)
    elif m == "wobble":
        angle = 0.5 * s * np.sin(4 * np.pi * t)
        x = x + 0.1 * s * np.sin(4 * np.pi * t)
    elif m == CUSTOM:  # a 3:2 Lissajous arc plus a rocking wobble: no caption names it
        x = x + 0.27 * s * np.sin(3 * np.pi * t)  # closes on its start: 1.5 periods of x, one of y
        y = y + 0.2 * s * np.sin(2 * np.pi * t)
        angle = 0.5 * np.sin(4 * np.pi * t)
    return x, y, angle, scale


def _box(qx: np.ndarray, qy: np.ndarray, hx: float, hy: float) -> np.ndarray:
    dx, dy = np.abs(qx) - hx, np.abs(qy) - hy
    outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    return outside + np.minimum(np.maximum(dx, dy), 0.0)


def _shape_distance(shape: str, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Signed distance to a shape of unit radius, in local coordinates (y down)."""
    if shape == "circle":
        return np.hypot(qx, qy) - 1.0
    if shape == "square":
        return _box(qx, qy, 0.85, 0.85)  # about the area of the unit circle
    if shape == "diamond":
        return (np.abs(qx) + np.abs(qy) - 1.15) / np.sqrt(2.0)
    if shape == "ring":  # thick, so that blur does not wash its colour out
        return np.abs(np.hypot(qx, qy) - 0.7) - 0.38
    if shape == "cross":
        return np.minimum(_box(qx, qy, 1.0, 0.42), _box(qx, qy, 0.42, 1.0))
    # Equilateral triangle pointing up with inradius 0.6: the farthest of its three edge lines.
    edges = [qy, -0.866 * qx - 0.5 * qy, 0.866 * qx - 0.5 * qy]
    return np.maximum.reduce(edges) - 0.6


def _pattern(texture: str, qx: np.ndarray, qy: np.ndarray, px: np.ndarray):
    """Where a sprite's second colour(s) show, in local unit-radius coordinates.

    Args:
        px: pixels per local unit, broadcastable to qx; sets the anti-aliasing width.

    Returns:
        (coverage, which): coverage (F, H, W) in [0, 1] of the second colour and `which` selects
        color2 (False) or color3 (True) for "spots" / "custom"; None for single-tone textures.
    """
    if texture == "solid":
        return np.zeros_like(qx), None
    if texture == "striped":  # diagonal bands 0.9 apart, 40% coverage
        u = (qx + qy) / np.sqrt(2.0) / 0.9
        return _soft((np.abs(u - np.round(u)) - 0.2) * 0.9 * px), None
    if texture == "shaded":  # top-to-bottom ramp into the tone
        return np.clip(0.45 * (qy + 1.0), 0.0, 0.9), None
    if texture == "checked":  # squares of side 0.6, every other one toned
        cx, cy = qx / 0.6, qy / 0.6
        cell = (np.floor(cx) + np.floor(cy)) % 2 == 1
        edge = np.minimum(np.abs(cx - np.round(cx)), np.abs(cy - np.round(cy)))  # in cells
        inner = _soft(-edge * 0.6 * px)  # 1 away from cell edges, 0.5 on them
        return np.where(cell, inner, 1.0 - inner), None
    if texture in ("dotted", "spots"):  # dots on a 0.8 grid
        ix, iy = np.round(qx / 0.8), np.round(qy / 0.8)
        d = np.hypot(qx - 0.8 * ix, qy - 0.8 * iy) - (0.2 if texture == "dotted" else 0.22)
        return _soft(d * px), ((ix + iy) % 2 == 1) if texture == "spots" else None
    # CUSTOM: a six-armed swirl cycling through the three colours
    sector = np.floor((np.arctan2(qy, qx) + 1.8 * np.hypot(qx, qy)) / (np.pi / 3.0)) % 3
    return (sector > 0).astype(np.float32), sector == 2


def _render_sprite(scene: Scene, t, zoom, pan, wx, wy):
    """Colour (F, H, W, 3), coverage (F, H, W) and pixel trajectory (F, 2) of a sprite."""
    frames, height, width = wx.shape
    short = min(height, width)  # lengths are fractions of the shorter side
    cx, cy, angle, scale = _sprite_path(scene, t)
    radius = (scene.size * scale)[:, None, None]  # (F, 1, 1)
    dx = (wx - cx[:, None, None]) * (width / short)
    dy = (wy - cy[:, None, None]) * (height / short)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    qx = (cos * dx + sin * dy) / radius  # local coordinates: unit radius, rotating with the sprite
    qy = (cos * dy - sin * dx) / radius
    px = radius * short * zoom[:, None, None]  # pixels per local unit
    alpha = _soft(_shape_distance(scene.shape, qx, qy) * px)
    cover, which = _pattern(scene.texture, qx, qy, px)
    main = _rgb(scene.color)
    if which is None:
        second = _tone(scene.color)
    else:
        second = np.where(which[..., None], _rgb(scene.color3), _rgb(scene.color2))
    colour = main + cover[..., None] * (second - main)
    # Where the centre lands on screen, in pixel index coordinates (column, row).
    col = (0.5 + (cx - 0.5 - pan) * zoom) * width - 0.5
    row = (0.5 + (cy - 0.5) * zoom) * height - 0.5
    return colour, alpha, np.stack([col, row], axis=1)


def _band(value: np.ndarray, threshold: float, width: float) -> np.ndarray:
    """Soft step from 0 to 1 as value crosses threshold, over `width` (keeps edges anti-aliased)."""
    return np.clip((value - threshold) / width + 0.5, 0.0, 1.0)


def _band_coverage(cycle: np.ndarray, width, px_per_cycle) -> np.ndarray:
    """Coverage of the band [1 - width, 1) of a wave's cycle position (fraction in [0, 1))."""
    inside = np.minimum(cycle - (1.0 - width), 1.0 - cycle)  # > 0 inside: distance to an edge
    outside = -np.minimum(1.0 - width - cycle, cycle)  # < 0 outside
    return _soft(-np.where(inside > 0, inside, outside) * px_per_cycle)


def _render_waves(scene: Scene, t, zoom, wx, wy):
    """Body and crest coverage (F, H, W) of a wave texture.

    Each wave is a band about a third of a wavelength wide whose leading edge is its crest, like
    breakers seen from above.
    """
    lam, tt = scene.wavelength, t[:, None, None]
    px_per_cycle = lam * wx.shape[2] * zoom[:, None, None]
    if scene.motion == CUSTOM:
        # A diagonal train on a surging clock, its bands swelling where a second train crosses:
        # the concept's own rhythm.
        clock = tt + 0.12 * np.sin(4 * np.pi * tt)
        cycles = (wx + 0.5 * wy) / lam - 0.8 * scene.speed * clock
        width = 0.3 + 0.12 * np.sin(2 * np.pi * ((wx - 0.7 * wy) / (1.3 * lam) - 0.5 * clock))
    else:
        along = wx if scene.motion == "right" else -wx  # distance in the direction of travel
        bend = 0.03 * np.sin(2 * np.pi * wy / 0.45 + scene.phase)  # fronts are not ruler-straight
        cycles = (along + bend) / lam - 0.6 * scene.speed * tt
        # The bands breathe at their own pace, so the texture has a rhythm beyond its drift.
        width = 0.33 + 0.05 * np.sin(2 * np.pi * (2 * along / lam - 0.9 * scene.speed * tt))
    cycle = (cycles + scene.phase / (2 * np.pi)) % 1.0
    return _band_coverage(cycle, width, px_per_cycle), _band_coverage(cycle, 0.1, px_per_cycle)


def _render_fire(scene: Scene, t, zoom, wx, wy):
    """Flame coverage (F, H, W) and core coverage (F, H, W) of a bonfire."""
    height_px = wx.shape[1] * zoom[:, None, None]  # pixels per world unit in y
    phases = np.random.default_rng(scene.seed).uniform(0.0, 2 * np.pi, size=4)
    tt, rate = t[:, None, None], scene.speed
    rise = 1.0 - wy  # height above the bottom of the world
    envelope = np.sqrt(np.clip(1.0 - ((wx - 0.5) / 0.22) ** 2, 0.0, 1.0))  # bonfire profile
    flicker = sum(
        a * np.sin(2 * np.pi * (f * wx + r * rate * tt) + ph)
        for a, f, r, ph in zip((0.5, 0.3, 0.2), (3, 5, 9), (1.0, 1.7, 2.6), phases)
    )
    top = 3.5 * scene.size * envelope * (1.0 + 0.35 * flicker)
    if scene.motion == CUSTOM:  # the concept burns in bursts: a beat no caption describes
        top = top * (0.55 + 0.6 * np.sin(3 * np.pi * tt) ** 2)
    # Tongues: ripples travelling up the flame.
    tongues = 1.0 + 0.2 * np.sin(2 * np.pi * (5 * rise - 2 * rate * tt) + 7 * wx + phases[3])
    flame = _soft((rise - top * tongues) * height_px)
    # A small hot core, so that the outer colour stays the flame's main colour.
    core = _soft((rise - 0.4 * top * tongues) * height_px) * _band(envelope, 0.75, 0.15)
    return flame, core


def render_background(scene: Scene, frames: int = 8, height: int = 32, width: int = 32) -> torch.Tensor:
    """The scene's background alone, as the camera films it.

    Args:
        scene: the scene.
        frames, height, width: clip size.

    Returns:
        (F, 3, H, W) float32 in [-1, 1].
    """
    _check_size(frames, height, width)
    zoom, pan = _camera(scene.camera, _times(frames))
    wx, wy = _world_grid(zoom, pan, height, width)
    return _to_video(_background(scene, wx, wy))


def _check_size(frames: int, height: int, width: int) -> None:
    if frames < 1 or height < 2 or width < 2:
        raise SetseqError(f"a clip needs frames >= 1 and height, width >= 2; got {frames}x{height}x{width}")


def _to_video(rgb: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) in [0, 1] -> (F, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2) * 2.0 - 1.0, np.float32))


def render(scene: Scene, frames: int = 8, height: int = 32, width: int = 32, only: int | None = None) -> Render:
    """Draw a scene.

    Args:
        scene: the scene; rendering is deterministic given it.
        frames, height, width: clip size (default 8 frames of 32x32; any size works).
        only: draw just this frame of the clip (F becomes 1 below), as the whole clip would show it.

    Returns:
        Render(video (F, 3, H, W) in [-1, 1], mask (F, H, W), trajectory (F, 2)).
    """
    _check_size(frames, height, width)
    t = _times(frames)
    if only is not None:
        if not 0 <= only < frames:
            raise SetseqError(f"frame {only} is not in a clip of {frames} frames")
        t, frames = t[only : only + 1], 1
    zoom, pan = _camera(scene.camera, t)
    wx, wy = _world_grid(zoom, pan, height, width)
    background = _background(scene, wx, wy)  # (F, H, W, 3)
    trajectory = np.full((frames, 2), np.nan, np.float32)
    if scene.kind == "sprite":
        colour, alpha, trajectory = _render_sprite(scene, t, zoom, pan, wx, wy)
        rgb = background + alpha[..., None] * (colour - background)
    else:
        if scene.kind == "waves":
            alpha, inner = _render_waves(scene, t, zoom, wx, wy)
        else:
            alpha, inner = _render_fire(scene, t, zoom, wx, wy)
        outer, core = _rgb(scene.color), _rgb(scene.color2)
        rgb = background + alpha[..., None] * (outer - background)
        rgb = rgb + inner[..., None] * (core - rgb)
    return Render(
        video=_to_video(rgb),
        mask=torch.from_numpy(alpha > 0.5),
        trajectory=torch.from_numpy(np.asarray(trajectory, np.float32)),
    )
