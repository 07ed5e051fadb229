"""The toy world's scenes: attributes, the palette, validation, the held-out split, sampling and
the example concepts. See `setseq.toy.world` for the overview."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

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
# Sampling weights of SPRITE_MOTIONS: half the sprites move in a straight line, so that the
# direction words, the motion a checker can name, get a large share of the training signal.
MOTION_PROBS = (0.125, 0.125, 0.125, 0.125, 0.07, 0.06, 0.06, 0.06, 0.05, 0.05, 0.05, 0.1)
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

# Sizes and travel put the toy in a real video DiT's regime (docs/toy-model.md): a sprite is
# about three 4 x 4 patches wide, and motion moves it by most of a patch a frame.
# A sprite's widest row stays under half the frame, so a row's median is its background (checker).
SIZE_RANGE = (0.16, 0.21)  # sprite radius, fraction of the frame's shorter side
FIRE_SIZE_RANGE = (0.12, 0.17)  # fire scale
SPEED_RANGE = (0.75, 1.25)  # travel multiplier for sprites, cycles multiplier for textures
WAVELENGTH_RANGE = (0.25, 0.45)
TRAVEL = 0.55  # a linear mover crosses over half the frame over the clip at speed 1
PAN = 0.35  # a pan moves the camera by a third of the frame over the clip
ZOOM = 1.35  # zoom factor reached at the end of a zoom-in (1 / ZOOM for a zoom-out)
STRIPE_MIX = 0.25  # background stripe strength: clear enough for pans to matter to the loss
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
    size: float = 0.185  # sprite radius or fire scale, fraction of the frame's shorter side
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
    return all(_distance_to_background(c, scene.background, scene.background2) >= MIN_CONTRAST for c in colours)


def _draw_scene(rng: np.random.Generator) -> Scene:
    """One scene from the full (train + held-out) distribution; may be invisible, see `_visible`."""
    kind = rng.choice(KINDS, p=[0.8, 0.1, 0.1])
    colors = [str(c) for c in rng.permutation(COLORS)]
    gradient = rng.random() < 0.3
    common = dict(
        kind=str(kind),
        color=colors[0],
        background=colors[3],
        background2=colors[4] if gradient else None,
        speed=float(rng.uniform(*SPEED_RANGE)),
        phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        size=float(rng.uniform(*(SIZE_RANGE if kind == "sprite" else FIRE_SIZE_RANGE))),
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
    motion = str(rng.choice(SPRITE_MOTIONS, p=MOTION_PROBS))
    camera = str(rng.choice(CAMERAS, p=[0.4, 0.2, 0.2, 0.1, 0.1]))
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
        camera=camera,
        x=float(rng.uniform(0.45, 0.55)) + _follow(camera),
        y=float(rng.uniform(0.45, 0.55)),
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


def _follow(camera: str) -> float:
    """Where a sprite's path is centred for a camera, across the frame from the middle: on what the
    camera sees over the clip, so that a pan keeps the sprite in view."""
    return {"pan-left": -PAN / 2, "pan-right": PAN / 2}.get(camera, 0.0)


def with_camera(scene: Scene, camera: str) -> Scene:
    """A sprite scene filmed by another camera (one of CAMERAS), its path re-centred on what the
    new camera sees, as `sample_scene` does; raises `SetseqError` for an unknown camera."""
    if camera not in CAMERAS:
        raise SetseqError(f"camera must be one of {CAMERAS}, got {camera!r}")
    return edit_scene(scene, camera=camera, x=scene.x - _follow(scene.camera) + _follow(camera))


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
            color3="pink", size=0.18, background="blue", motion=CUSTOM, speed=1.0,
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
