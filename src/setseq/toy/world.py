"""The toy world: a seeded generator of short dynamic scenes with two-part captions.

The toy video DiT is pretrained on these clips. Because the world knows the truth behind every
pixel, generated videos can be scored (see `setseq.toy.checker`). A clip is a float32 tensor
(F, 3, H, W) in [-1, 1]; everything is drawn in normalised coordinates, so any size works.

Three kinds of scene:
  * "sprite": a textured shape moving over a striped (optionally gradient) background, filmed by a
    still, panning or zooming camera;
  * "waves": bands of a wave texture, crest in front, rolling left or right (the paper's ocean);
  * "fire": a flickering bonfire rising from the bottom of the frame (the paper's bonfire).

Coordinates: world x and y run over [0, 1] across the frame width and height at zoom 1 (y points
down); lengths such as `size` are fractions of the frame's shorter side.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import torch

from setseq.errors import SetseqError

KINDS = ("sprite", "waves", "fire")
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
# Sampled sprite textures; "custom" (a three-colour swirl) is reserved for the concept sprite.
TEXTURES = ("solid", "striped", "dotted", "checked", "shaded", "spots")
SPRITE_MOTIONS = (
    "left", "right", "up", "down", "circle", "bounce", "zigzag", "figure-eight",
    "spin", "pulse", "wobble", "still",
)  # fmt: skip
LINEAR_MOTIONS = ("left", "right", "up", "down", "still")  # the ones a checker can name
WAVE_MOTIONS = ("left", "right")  # the direction the waves roll
FIRE_MOTIONS = ("flicker",)
CAMERAS = ("still", "pan-left", "pan-right", "zoom-in", "zoom-out")
CUSTOM = "custom"  # texture/motion of the concept scenes: no caption names it
CONCEPTS = ("sprite", "waves", "flicker")
CONCEPT_TOKENS = ("[v]", "[u]")  # appearance and motion placeholders in concept prompts

# RGB in [0, 1]. Every pair is about 0.45 apart or more (the closest are yellow/orange and
# red/orange), which lets a nearest-colour checker survive noise and blur.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.88, 0.08, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.95),
    "yellow": (0.95, 0.95, 0.12),
    "purple": (0.55, 0.15, 0.75),
    "orange": (1.00, 0.52, 0.00),
    "white": (0.96, 0.96, 0.96),
    "black": (0.05, 0.05, 0.05),
    "cyan": (0.10, 0.85, 0.90),
    "pink": (1.00, 0.45, 0.75),
}
COLORS = tuple(PALETTE)
# Second tone of striped/dotted/checked/shaded sprites: a signed mix towards white (+) or black
# (-), as strong as it can be while the tone stays nearest to its own colour by a margin of 0.15,
# so that a textured sprite keeps its colour name.
TONE_MIX = {
    "red": -0.35, "green": 0.30, "blue": -0.35, "yellow": 0.35, "purple": -0.35,
    "orange": -0.15, "white": -0.15, "black": 0.20, "cyan": 0.35, "pink": -0.15,
}  # fmt: skip

# Held-out attribute combinations (never in pretraining): (colour, shape) pairs, where a texture's
# "shape" is its kind, and (motion, background) pairs, where background is the top colour.
HELDOUT_COLOR_SHAPE = frozenset({
    ("red", "triangle"), ("blue", "circle"), ("green", "square"), ("yellow", "diamond"),
    ("purple", "ring"), ("orange", "cross"), ("cyan", "waves"), ("orange", "fire"),
})  # fmt: skip
HELDOUT_MOTION_BACKGROUND = frozenset({
    ("right", "white"), ("left", "blue"), ("up", "green"), ("down", "purple"),
    ("circle", "black"), ("bounce", "yellow"), ("spin", "pink"), ("zigzag", "cyan"),
})  # fmt: skip

SIZE_RANGE = (0.12, 0.17)  # sprite radius / fire scale
SPEED_RANGE = (0.75, 1.25)  # travel multiplier for sprites, cycles multiplier for textures
WAVELENGTH_RANGE = (0.25, 0.45)
TRAVEL = 0.38  # a linear mover crosses ~1/3 of the frame over the clip at speed 1
PAN = 0.2  # a pan moves the camera by a fifth of the frame over the clip
ZOOM = 1.25  # zoom factor reached at the end of a zoom-in (1 / ZOOM for a zoom-out)
STRIPE_MIX = 0.15  # background stripe strength: faint, but enough to make pans measurable
# Minimum RGB distance between foreground colours and any background colour, so nothing vanishes.
MIN_CONTRAST = 0.45


@dataclass(frozen=True)
class Scene:
    """All parameters of one clip; rendering is a pure function of them.

    Fields that do not apply to a kind keep their defaults. Construction validates every field and
    raises `SetseqError` on a bad value, so any Scene that exists can be rendered and captioned.
    """

    kind: str = "sprite"  # one of KINDS
    color: str = "red"  # sprite colour | wave body | outer flame
    color2: str | None = None  # spots / swirl second colour | wave crests | flame core
    color3: str | None = None  # spots / swirl third colour (sprites only)
    shape: str = "circle"  # sprites only
    texture: str = "solid"  # sprites only: TEXTURES or "custom"
    size: float = 0.145  # sprite radius or fire scale, fraction of the frame's shorter side
    background: str = "black"  # top colour (the only colour when solid)
    background2: str | None = None  # bottom colour of a vertical gradient; None = solid
    motion: str = "still"  # SPRITE_MOTIONS | WAVE_MOTIONS | FIRE_MOTIONS | "custom"
    camera: str = "still"  # one of CAMERAS
    speed: float = 1.0  # see SPEED_RANGE
    phase: float = 0.0  # radians: start angle of periodic motions, wave phase
    x: float = 0.5  # centre of a sprite's path, world units
    y: float = 0.5
    wavelength: float = 0.3  # waves only, world units
    seed: int = 0  # fire flicker noise

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class Render:
    """One rendered clip and its ground truth."""

    video: torch.Tensor  # (F, 3, H, W) float32 in [-1, 1]
    mask: torch.Tensor  # (F, H, W) bool: object pixels (for textures: the drawn texture)
    trajectory: torch.Tensor  # (F, 2) float32: object centre (column, row) in pixels; NaN: textures


# --------------------------------------------------------------------------------------------
# validation


def _validate(s: Scene) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise SetseqError(f"invalid scene: {what} (got {s})")

    need(s.kind in KINDS, f"kind must be one of {KINDS}")
    for name in ("color", "background"):
        need(getattr(s, name) in PALETTE, f"{name} must be one of {COLORS}")
    for name in ("color2", "color3", "background2"):
        value = getattr(s, name)
        need(value is None or value in PALETTE, f"{name} must be None or one of {COLORS}")
    need(s.camera in CAMERAS, f"camera must be one of {CAMERAS}")
    need(s.background2 != s.background, "a gradient needs two different colours")
    backgrounds = {s.background, s.background2}
    foreground = [c for c in (s.color, s.color2, s.color3) if c is not None]
    need(not backgrounds & set(foreground), "foreground colours must differ from the background")
    need(len(set(foreground)) == len(foreground), "foreground colours must differ")
    need(0.02 <= s.size <= 0.3, "size must lie in [0.02, 0.3]")
    need(0.0 < s.speed <= 3.0, "speed must lie in (0, 3]")
    need(0.05 <= s.wavelength <= 1.0, "wavelength must lie in [0.05, 1]")
    if s.kind == "sprite":
        need(s.shape in SHAPES, f"shape must be one of {SHAPES}")
        need(s.texture in TEXTURES + (CUSTOM,), f"texture must be one of {TEXTURES} or 'custom'")
        need(s.motion in SPRITE_MOTIONS + (CUSTOM,), f"motion must be one of {SPRITE_MOTIONS}")
        many = s.texture in ("spots", CUSTOM)
        need(many == (s.color2 is not None and s.color3 is not None),
             "color2 and color3 are set exactly for 'spots' and 'custom' textures")  # fmt: skip
    else:
        motions = WAVE_MOTIONS if s.kind == "waves" else FIRE_MOTIONS
        need(s.motion in motions + (CUSTOM,), f"{s.kind} motion must be one of {motions}")
        need(s.color2 is not None and s.color3 is None, f"{s.kind} needs color2 and no color3")


# --------------------------------------------------------------------------------------------
# held-out split and sampling


def is_heldout(scene: Scene) -> bool:
    """Whether the scene shows a combination kept out of pretraining.

    Args:
        scene: any scene.

    Returns:
        True if (colour, shape) - with a texture's kind as its shape - is in HELDOUT_COLOR_SHAPE,
        or (motion, top background colour) is in HELDOUT_MOTION_BACKGROUND.
    """
    shape = scene.shape if scene.kind == "sprite" else scene.kind
    color_shape = (scene.color, shape) in HELDOUT_COLOR_SHAPE
    motion_background = (scene.motion, scene.background) in HELDOUT_MOTION_BACKGROUND
    return color_shape or motion_background


def _rgb(name: str) -> np.ndarray:
    return np.asarray(PALETTE[name], dtype=np.float32)


def _tone(name: str) -> np.ndarray:
    mix = TONE_MIX[name]
    target = np.ones(3, np.float32) if mix > 0 else np.zeros(3, np.float32)
    return _rgb(name) + abs(mix) * (target - _rgb(name))


def _distance_to_background(rgb: np.ndarray, top: str, bottom: str | None) -> float:
    """RGB distance from a colour to the segment of colours a (gradient) background spans."""
    a, b = _rgb(top), _rgb(bottom or top)
    ab = b - a
    t = float(np.clip(np.dot(rgb - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(rgb - (a + t * ab)))


def _visible(scene: Scene) -> bool:
    """Every foreground colour (and a sprite's tone) stands out from every background colour."""
    colours = [_rgb(c) for c in (scene.color, scene.color2, scene.color3) if c is not None]
    if scene.kind == "sprite" and scene.texture not in ("solid", "spots"):
        colours.append(_tone(scene.color))
    return all(
        _distance_to_background(c, scene.background, scene.background2) >= MIN_CONTRAST
        for c in colours
    )


def _draw_scene(rng: np.random.Generator) -> Scene:
    """One scene from the full (train + held-out) distribution; may be invisible, see `_visible`."""
    kind = rng.choice(KINDS, p=[0.7, 0.15, 0.15])
    colors = [str(c) for c in rng.permutation(COLORS)]
    gradient = rng.random() < 0.3
    common = dict(
        kind=str(kind),
        color=colors[0],
        background=colors[3],
        background2=colors[4] if gradient else None,
        speed=float(rng.uniform(*SPEED_RANGE)),
        phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        size=float(rng.uniform(*SIZE_RANGE)),
    )
    if kind == "waves":
        return Scene(
            **common,
            color2=colors[1],
            motion=str(rng.choice(WAVE_MOTIONS)),
            wavelength=float(rng.uniform(*WAVELENGTH_RANGE)),
        )
    if kind == "fire":
        return Scene(**common, color2=colors[1], motion="flicker", seed=int(rng.integers(2**31)))
    texture = str(rng.choice(TEXTURES))
    shape = str(rng.choice(SHAPES))
    motion = str(rng.choice(SPRITE_MOTIONS))
    if motion == "spin" and shape in ("circle", "ring") and texture == "solid":
        texture = "striped"  # a plain disc spinning in place would look still
    spots = texture == "spots"
    return Scene(
        **common,
        shape=shape,
        texture=texture,
        color2=colors[1] if spots else None,
        color3=colors[2] if spots else None,
        motion=motion,
        camera=str(rng.choice(CAMERAS, p=[0.5, 0.125, 0.125, 0.125, 0.125])),
        x=float(rng.uniform(0.42, 0.58)),
        y=float(rng.uniform(0.42, 0.58)),
    )


def sample_scene(rng: np.random.Generator, split: str = "train") -> Scene:
    """Draw a random scene from one split.

    Args:
        rng: the only source of randomness; the same generator state gives the same scene.
        split: "train" (never held-out), "heldout" (only held-out combinations) or "all".

    Returns:
        A visible scene (foreground colours contrast with the background) of the requested split.
    """
    if split not in ("train", "heldout", "all"):
        raise SetseqError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    while True:  # rejection sampling: about 1 in 6 draws is held-out, most are visible
        scene = _draw_scene(rng)
        if _visible(scene) and (split == "all" or is_heldout(scene) == (split == "heldout")):
            return scene


def edit_scene(scene: Scene, **changes) -> Scene:
    """Copy a scene with some fields changed, validating the result.

    Args:
        scene: the scene to copy.
        **changes: field names and new values, e.g. color="blue", camera="pan-left".

    Returns:
        The edited scene; raises `SetseqError` on an unknown field or an invalid combination.
    """
    unknown = set(changes) - {f.name for f in dataclasses.fields(Scene)}
    if unknown:
        raise SetseqError(f"unknown scene fields {sorted(unknown)}")
    return dataclasses.replace(scene, **changes)


# --------------------------------------------------------------------------------------------
# captions

SIZE_WORDS = {"small": 0.135, "large": 0.155}  # below / above these sizes; between: no word
SPEED_WORDS = {"slowly": 0.9, "quickly": 1.1}  # below / above these speeds
WAVELENGTH_WORDS = {"short": 0.31, "long": 0.39}
TEXTURE_WORDS = {"solid": "", "striped": "striped", "dotted": "dotted", "checked": "checked",
                 "shaded": "shaded", "spots": "", CUSTOM: "patterned"}  # fmt: skip
# (verb, rest) of a sprite's motion clause; a speed adverb goes between them.
MOTION_PHRASES = {
    "left": ("moves", "to the left"),
    "right": ("moves", "to the right"),
    "up": ("moves", "up"),
    "down": ("moves", "down"),
    "circle": ("moves", "in a circle"),
    "bounce": ("bounces", "up and down"),
    "zigzag": ("zigzags", "to the right"),
    "figure-eight": ("moves", "in a figure eight"),
    "spin": ("spins", "in place"),
    "pulse": ("pulses", "in place"),
    "wobble": ("wobbles", "in place"),
    "still": ("stays", "still"),
    CUSTOM: ("moves", ""),  # the concept's motion has no name: "it moves."
}
CAMERA_PHRASES = {
    "still": "",
    "pan-left": ", as the camera pans left",
    "pan-right": ", as the camera pans right",
    "zoom-in": ", as the camera zooms in",
    "zoom-out": ", as the camera zooms out",
}
_TOKEN = re.compile(r"[^\s.,]+|[.,]")


def tokenize(text: str) -> list[str]:
    """Split a caption or prompt into words and the punctuation tokens "." and ","."""
    return _TOKEN.findall(text)


def _join(*words: str) -> str:
    return " ".join(w for w in words if w)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _binned(value: float, words: dict[str, float]) -> str:
    (low, low_at), (high, high_at) = words.items()
    return low if value < low_at else high if value > high_at else ""


def _background_phrase(scene: Scene) -> str:
    if scene.background2 is None:
        return _article(f"{scene.background} background")
    return _article(f"{scene.background} to {scene.background2} gradient background")


def _static_caption(scene: Scene) -> str:
    where = "on " + _background_phrase(scene)
    if scene.kind == "waves":
        length = _binned(scene.wavelength, WAVELENGTH_WORDS)
        return _join(length, scene.color, "and", scene.color2, "waves", where) + "."
    if scene.kind == "fire":
        size = _binned(scene.size, SIZE_WORDS)
        return _join(size, scene.color, "and", scene.color2, "flames", where) + "."
    size = _binned(scene.size, SIZE_WORDS)
    thing = _join(size, scene.color, TEXTURE_WORDS[scene.texture], scene.shape)
    if scene.texture == "spots":
        thing = _join(thing, "with", scene.color2, "and", scene.color3, "spots")
    return _join(_article(thing), where) + "."


def _motion_caption(scene: Scene) -> str:
    speed = "" if scene.motion in ("still", CUSTOM) else _binned(scene.speed, SPEED_WORDS)
    if scene.kind == "waves":
        rest = "" if scene.motion == CUSTOM else f"to the {scene.motion}"
        clause = _join("the waves roll", speed, rest)
    elif scene.kind == "fire":
        clause = _join("the flames flicker", speed)
    else:
        verb, rest = MOTION_PHRASES[scene.motion]
        clause = _join("it", verb, speed, rest)
    return clause + CAMERA_PHRASES[scene.camera] + "."


def caption(scene: Scene) -> tuple[str, str]:
    """Describe a scene in words, appearance first, then motion.

    Args:
        scene: the scene to describe.

    Returns:
        (static, motion), e.g. ("a red striped triangle on a blue background.",
        "it moves in a circle, as the camera pans left."). Lowercase words and "." / "," only.
    """
    return _static_caption(scene), _motion_caption(scene)


def caption_text(scene: Scene) -> str:
    """The two caption parts joined by a space.

    Args:
        scene: the scene to describe.
    """
    return " ".join(caption(scene))


def concept_prompts(name: str) -> tuple[str, str]:
    """Static and dynamic training prompts of an example concept, with the tokens [v] and [u].

    Args:
        name: one of CONCEPTS ("sprite", "waves", "flicker").

    Returns:
        e.g. ("a [v] diamond on a blue background.", "it moves in [u] motion.").
    """
    scene = concept_scene(name)
    thing = {"sprite": scene.shape, "waves": "sea", "flicker": "fire"}[name]
    return f"a [v] {thing} on {_background_phrase(scene)}.", "it moves in [u] motion."


def vocabulary() -> list[str]:
    """Every token a caption or concept prompt can contain, except the concept tokens [v] and [u].

    Returns:
        Sorted unique words and the punctuation tokens "." and ",".
    """
    phrases = [
        *COLORS, *SHAPES, *TEXTURE_WORDS.values(), *SIZE_WORDS, *SPEED_WORDS, *WAVELENGTH_WORDS,
        *(" ".join(p) for p in MOTION_PHRASES.values()), *CAMERA_PHRASES.values(), *WAVE_MOTIONS,
        "a an on to with and gradient background spots waves flames . it the roll flicker",
        "in motion sea fire",  # concept prompts
    ]  # fmt: skip
    return sorted({token for phrase in phrases for token in tokenize(phrase)})


def prior_prompts(n: int, seed: int) -> list[tuple[str, str]]:
    """Generic (static, motion) prompts from the training distribution, for prior preservation.

    Args:
        n: how many prompts.
        seed: seeds the scene sampler; the same seed gives the same prompts.
    """
    rng = np.random.default_rng(seed)
    return [caption(sample_scene(rng, "train")) for _ in range(n)]


def concept_scene(name: str) -> Scene:
    """One of three fixed example concepts that no caption of the world can ask for.

    Args:
        name: "sprite" (a three-colour swirl diamond on a looping path with a wobble), "waves"
            (crossing wave trains that surge in a rhythm of their own) or "flicker" (a fire that
            beats in bursts).
    """
    if name == "sprite":
        return Scene(
            kind="sprite", shape="diamond", texture=CUSTOM, color="orange", color2="white",
            color3="pink", size=0.14, background="blue", motion=CUSTOM, speed=1.0,
        )  # fmt: skip
    if name == "waves":
        return Scene(
            kind="waves", color="cyan", color2="white", background="purple", motion=CUSTOM,
            wavelength=0.3, speed=1.0,
        )  # fmt: skip
    if name == "flicker":
        return Scene(
            kind="fire", color="pink", color2="yellow", background="black",
            background2="blue", motion=CUSTOM, size=0.13, speed=1.0, seed=7,
        )  # fmt: skip
    raise SetseqError(f"unknown concept {name!r}; choose one of {CONCEPTS}")


# --------------------------------------------------------------------------------------------
# rendering


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
        x = x + 0.17 * s * np.cos(p + 2 * np.pi * t)
        y = y + 0.17 * s * np.sin(p + 2 * np.pi * t)
    elif m == "bounce":  # two hops off a floor below the centre
        y = y + 0.14 - 0.3 * s * np.abs(np.sin(2 * np.pi * t))
    elif m == "zigzag":
        x = x + travel
        y = y + 0.1 * s * (2 * np.abs(2 * ((1.5 * t + 0.25) % 1.0) - 1) - 1)  # 1.5 triangle periods
    elif m == "figure-eight":
        x = x + 0.2 * s * np.sin(p + 2 * np.pi * t)
        y = y + 0.12 * s * np.sin(2 * p + 4 * np.pi * t)
    elif m == "spin":
        angle = p + np.pi * s * t
    elif m == "pulse":
        scale = 1.0 + 0.25 * s * np.sin(4 * np.pi * t)
    elif m == "wobble":
        angle = 0.5 * s * np.sin(4 * np.pi * t)
        x = x + 0.07 * s * np.sin(4 * np.pi * t)
    elif m == CUSTOM:  # a 3:2 Lissajous loop plus a rocking wobble: no caption names it
        x = x + 0.18 * s * np.sin(p + 6 * np.pi * t)
        y = y + 0.14 * s * np.sin(4 * np.pi * t)
        angle = 0.6 * np.sin(8 * np.pi * t)
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


def render_background(
    scene: Scene, frames: int = 8, height: int = 32, width: int = 32
) -> torch.Tensor:
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
        raise SetseqError(
            f"a clip needs frames >= 1 and height, width >= 2; got {frames}x{height}x{width}"
        )


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
        t, frames = t[only:only + 1], 1
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
