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

Layout: `scene` (attributes, validation, sampling, the example concepts), `captions` (words),
`render` (pixels); everything public is re-exported here.
"""

from setseq.toy.world.captions import (  # noqa: F401
    CAMERA_PHRASES,
    FIRE_SIZE_WORDS,
    MOTION_PHRASES,
    SIZE_WORDS,
    SPEED_WORDS,
    TEXTURE_WORDS,
    WAVELENGTH_WORDS,
    caption,
    caption_text,
    concept_prompts,
    prior_prompts,
    tokenize,
    vocabulary,
)  # fmt: skip
from setseq.toy.world.render import (  # noqa: F401
    Render,
    render,
    render_background,
)  # fmt: skip
from setseq.toy.world.scene import (  # noqa: F401
    CAMERAS,
    COLORS,
    CONCEPT_TOKENS,
    CONCEPTS,
    CUSTOM,
    FIRE_MOTIONS,
    FIRE_SIZE_RANGE,
    HELDOUT_COLOR_SHAPE,
    HELDOUT_MOTION_BACKGROUND,
    KINDS,
    LINEAR_MOTIONS,
    MIN_CONTRAST,
    MOTION_PROBS,
    PALETTE,
    PAN,
    SHAPES,
    SIZE_RANGE,
    SPEED_RANGE,
    SPRITE_MOTIONS,
    STRIPE_MIX,
    TEXTURES,
    TONE_MIX,
    TRAVEL,
    WAVE_MOTIONS,
    WAVELENGTH_RANGE,
    ZOOM,
    Scene,
    _tone,
    concept_scene,
    edit_scene,
    is_heldout,
    sample_scene,
    with_camera,
)  # fmt: skip
