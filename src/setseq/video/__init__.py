"""Video input and output, one concern per module; a clip's journey from path to tensor runs downwards.

- ``clip``: the entry point, ``load_clip`` (and ``probe_clip``), called once per clip by the CLI,
  concept specs and the UI; frame sets and windows drawn from a loaded clip;
- ``captions``: the files beside a clip (prompt file, sidecars) and the prompt-file format;
- ``masks``: mask videos beside a clip and the alpha channel as a mask;
- ``decode``: a file or frame folder decoded into a ``Video`` (streaming, alpha, damaged files);
- ``timing``: timestamps, excerpts and windows;
- ``display``: rotation, mirroring, pixel aspect and resizing, as a player shows a frame;
- ``frames``: folders of still images;
- ``write``: encoding videos and previews.

Frames in memory are float32 (F, C, H, W), C = 3 (RGB), values in [-1, 1].
"""

from setseq.video.captions import find_sidecar, parse_clip_text, parse_prompts, read_clip_file, read_prompt_file
from setseq.video.clip import Clip, clip_excerpt, load_clip, probe_clip, random_window, sample_frames
from setseq.video.decode import Probe, Video, load_video, probe_video
from setseq.video.frames import IMAGE_SUFFIXES
from setseq.video.masks import MASK_SUFFIXES, clip_mask, find_mask, is_mask_path, load_mask
from setseq.video.timing import (
    DEFAULT_FPS,
    EXCERPT_KEYS,
    SELECTIONS,
    Excerpt,
    excerpt_settings,
)
from setseq.video.write import make_test_video, write_preview, write_video

__all__ = [
    "Clip",
    "DEFAULT_FPS",
    "EXCERPT_KEYS",
    "Excerpt",
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "Probe",
    "SELECTIONS",
    "Video",
    "clip_excerpt",
    "clip_mask",
    "excerpt_settings",
    "find_mask",
    "find_sidecar",
    "is_mask_path",
    "load_clip",
    "load_mask",
    "load_video",
    "make_test_video",
    "parse_clip_text",
    "parse_prompts",
    "probe_clip",
    "probe_video",
    "random_window",
    "read_clip_file",
    "read_prompt_file",
    "sample_frames",
    "write_preview",
    "write_video",
]
