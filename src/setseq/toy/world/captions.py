"""The toy world's captions: two-part descriptions of a scene (appearance, then motion), the
vocabulary they use, prior-preservation prompts and the example concepts' prompts."""

from __future__ import annotations

import re

import numpy as np

from setseq.toy.world.scene import (
    COLORS,
    CUSTOM,
    SHAPES,
    WAVE_MOTIONS,
    Scene,
    concept_scene,
    sample_scene,
)  # fmt: skip

SIZE_WORDS = {"small": 0.175, "large": 0.195}  # sprites: below / above these sizes; between: no word
FIRE_SIZE_WORDS = {"small": 0.135, "large": 0.155}
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
        size = _binned(scene.size, FIRE_SIZE_WORDS)
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
