"""Training batches: which clips, prompts and loss weights a micro-batch holds (paper sec. 3.3-3.4),
and the loss taken on one.

A stage draws from its concepts' videos, as an unordered set of single frames ("frames", stage 1)
or as clips ("clip", stage 2), or a mix, with the regularisers of sec. 3.4 that act on the data:
prior-preservation videos, stitched pairs of concepts, prompt dropout and text-token masking.
`batch_loss` encodes a batch, noises it and takes flow matching's loss (eq. 1) on it, with the
concepts' motion scales and self-conditioning (sec. 3.4.3). Every random draw comes from torch's
global generator, in a fixed order, so that a checkpointed generator state resumes a run
bit-identically and every rank of a parallel run draws the same numbers.

Clip windows start on a grid of `stride` frames (the VAE's temporal compression: 4 for Wan), so a
clip of N frames has at most (N - F) / stride + 2 distinct windows of F frames, and `LatentCache`
encodes each of them once per run instead of on most steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from setseq import flow, lora, parallel, stitch
from setseq.backbones.base import Backbone, Text
from setseq.config import FlowConfig, RegConfig, StageConfig, TrainConfig


@dataclass
class ConceptSpec:
    """One dynamic concept: its clip (F, C, H, W) in [-1, 1], prompts, tokens and, optionally, a
    foreground mask (F, H, W) bool (True on the subject) for stitched clips without backgrounds."""

    name: str
    video: torch.Tensor
    prompt: str  # static, with the identity token: "a [v] ..."
    motion_prompt: str | None = None  # dynamic, with the motion token: "... [u] motion"
    identity_token: str = "[v]"
    motion_token: str = "[u]"
    source: str = ""
    mask: torch.Tensor | None = None
    windows: list[int] | None = None  # first frames of the windows clips are taken from (None: anywhere)

    @property
    def full_prompt(self) -> str:
        """T_motion = T_static U T_dynamic (eq. 7)."""
        return f"{self.prompt} {self.motion_prompt or ''}".strip()


@dataclass
class Batch:
    """A micro-batch of n samples, and the motion scales its loss is taken with."""

    clips: torch.Tensor  # (n, F', C, H, W), F' = 1 for a frame set
    prompts: list[str]  # n prompts, "" where prompt dropout struck
    weights: torch.Tensor  # (n,) loss weights (prior videos weigh reg.prior_weight)
    motion: dict[str, float] | float | None = None  # for lora.scales; None: leave the scales as they are
    # where each sample was cut from, e.g. ("concept", name, first, end), for LatentCache; None for a
    # stitched sample, which is made afresh each time
    keys: list[tuple | None] | None = None


def _randint(n: int) -> int:
    return int(torch.randint(n, ()).item())


class Batches:
    """Draws micro-batches of `concepts` (and of prior videos) for a stage.

    Args:
        concepts: the concepts being trained.
        frames: frames per clip (the geometry's).
        reg: the regulariser settings (prior ratio and weight, stitching, prompt dropout, token masking).
        prior: prior-preservation videos (N, F, C, H, W) and their (appearance, motion) prompts, or None.
        stride: clip windows start every `stride` frames, and at the clip's last window (1: anywhere).
    """

    def __init__(
        self,
        concepts: list[ConceptSpec],
        frames: int,
        reg: RegConfig,
        prior: tuple[torch.Tensor, list[tuple[str, str]]] | None = None,
        stride: int = 1,
    ):
        self.concepts, self.frames, self.reg, self.prior, self.stride = concepts, frames, reg, prior, stride

    def draw(self, stage: StageConfig, n: int, micro_index: int) -> Batch:
        """The micro-batch `micro_index` of a step: n samples of one shape.

        With several concepts, a stitched pair (probability reg.stitch_prob) trains every motion
        residual at once; otherwise a motion stage gives each micro-batch to one concept in turn, whose
        residual alone is on (its clips train its own motion only), and other stages mix concepts.
        """
        several = len(self.concepts) > 1
        motion: dict[str, float] | float | None = None
        if several and torch.rand(()).item() < self.reg.stitch_prob:
            if stage.train == "motion":  # both concepts move: both residuals on
                motion = 1.0
            clips, prompts, weights = self._stitched(stage, n)
            keys = [None] * n
        elif stage.train == "motion" and several:
            concept = self.concepts[micro_index % len(self.concepts)]
            motion = {c.name: float(c is concept) for c in self.concepts}
            clips, prompts, weights, keys = self._sample(stage, n, [concept])
        else:  # batches mix concepts
            clips, prompts, weights, keys = self._sample(stage, n, self.concepts)
        prompts = [("" if torch.rand(()).item() < self.reg.prompt_dropout else p) for p in prompts]
        return Batch(clips, prompts, weights, motion, keys)

    def micro_sizes(self, stage: StageConfig, batch_size: int, micro_batch: int | None, ranks: int) -> list[int]:
        """Sizes of one step's micro-batches (gradient accumulation), counted over all `ranks`: each
        rank's share of the batch is cut into forward passes of `micro_batch` samples (None: one pass).
        A motion stage with several concepts has one micro-batch per concept at least (see `draw`)."""
        share = batch_size // ranks
        micro = micro_batch or share
        sizes = [micro] * (share // micro)
        if stage.train == "motion" and len(self.concepts) > 1:
            parts = max(len(sizes), min(len(self.concepts), share))
            sizes = [len(range(i, share, parts)) for i in range(parts)]
        return [size * ranks for size in sizes]

    # -- everything a run can draw (to encode it all before the first step) ---------------
    # These mirror `_sample`, `_stitched` and `_window`: a prompt or window they can draw that is left
    # out here is encoded when drawn (`TextCache`, `LatentCache`), which needs the encoders.
    def prompts(self, stages: list[StageConfig]) -> list[str]:
        """Every prompt a micro-batch of `stages` can hold: each concept's and prior video's static and
        full prompts, those of stitched pairs, and the empty prompt of prompt dropout."""
        texts = [(c.prompt, c.motion_prompt or "") for c in self.concepts]
        texts += list(self.prior[1]) if self.prior is not None else []
        out = [""] + [p for static, dynamic in texts for p in (static, f"{static} {dynamic}".strip())]
        if len(self.concepts) > 1 and self.reg.stitch_prob > 0:
            for a in self.concepts:
                for b in self.concepts:
                    if a is not b:
                        bs = [b, replace(b, prompt=stitch.drop_background(b.prompt))]
                        out += [p for b in bs for p in (f"{a.full_prompt} {b.full_prompt}", f"{a.prompt} {b.prompt}")]
        return list(dict.fromkeys(out))

    def windows(self, stages: list[StageConfig]) -> list[tuple[tuple, torch.Tensor]]:
        """(key, clip (F', C, H, W)) of every window a micro-batch of `stages` can cut, keyed as in
        `Batch.keys`: single frames for a frame set, clip windows for clips, of concepts and prior videos."""
        frames = any(s.data in ("frames", "mixed") for s in stages)
        clips = any(s.data in ("clip", "mixed") for s in stages)
        sources = [(("concept", c.name), c.video, c.windows) for c in self.concepts]
        if self.prior is not None:
            sources += [(("prior", j), video, None) for j, video in enumerate(self.prior[0])]
        out = []
        for source, video, windows in sources:
            starts = []
            if clips:
                starts += [(w, w + self.frames) for w in windows or self._starts(video.shape[0])]
            if frames:
                starts += [(i, i + 1) for i in range(video.shape[0])]
            out += [((*source, a, b), video[a:b]) for a, b in dict.fromkeys(starts)]
        return out

    def _starts(self, count: int) -> list[int]:
        """First frames of the clip windows of a clip of `count` frames: on the grid of `stride`, and
        the last window, so that the clip's end is trained too."""
        starts = list(range(0, count - self.frames + 1, self.stride))
        if starts[-1] != count - self.frames:
            starts.append(count - self.frames)
        return starts

    # -- drawing ---------------------------------------------------------------------------
    def _as_frames(self, stage: StageConfig) -> bool:
        """Whether this micro-batch is single frames (the unordered set) rather than clips."""
        return stage.data == "frames" or (stage.data == "mixed" and torch.rand(()).item() >= stage.mixed_clip_prob)

    def _window(self, count: int, as_frames: bool, windows: list[int] | None = None) -> slice:
        if as_frames:  # stage 1: one frame of the unordered set, as a one-frame clip
            i = _randint(count)
            return slice(i, i + 1)
        f = self.frames  # the whole clip, or a random window of a longer one
        if windows:  # a clip loaded as separate windows: one of them, never across two
            start = windows[_randint(len(windows))]
        else:  # on the grid, and the last window so that the clip's end is trained too
            starts = self._starts(count)
            start = starts[_randint(len(starts))]
        return slice(start, start + f)

    def _sample(
        self, stage: StageConfig, n: int, concepts: list[ConceptSpec]
    ) -> tuple[torch.Tensor, list[str], torch.Tensor, list[tuple]]:
        """n samples, each of a random concept of `concepts` or a prior video: clips (n, F', C, H, W),
        prompts, loss weights (n,) and where each was cut from."""
        reg = self.reg
        as_frames = self._as_frames(stage)
        clips, prompts, weights, keys = [], [], [], []
        for _ in range(n):
            if self.prior is not None and torch.rand(()).item() < reg.prior_ratio:
                videos, texts = self.prior
                j = _randint(len(texts))
                video, (static, dynamic), w = videos[j], texts[j], reg.prior_weight
                windows, source = None, ("prior", j)
            else:
                c = concepts[_randint(len(concepts))]
                video, static, dynamic, w = c.video, c.prompt, c.motion_prompt or "", 1.0
                windows, source = c.windows, ("concept", c.name)
            window = self._window(video.shape[0], as_frames, windows)
            clips.append(video[window])
            keys.append((*source, window.start, window.stop))
            full = not as_frames and stage.prompt == "full"
            prompts.append(f"{static} {dynamic}".strip() if full else static)
            weights.append(w)
        return torch.stack(clips), prompts, torch.tensor(weights), keys

    def _stitched(self, stage: StageConfig, n: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """n samples of two different concepts side by side (or stacked), each squeezed into half
        the frame, with the composed prompt: the paper's stitched-video regulariser. When both have
        masks (and reg.stitch_remove_background), on the first one's background (see setseq.stitch)."""
        as_frames = self._as_frames(stage)
        clips, prompts = [], []
        for _ in range(n):
            i = _randint(len(self.concepts))
            j = (i + 1 + _randint(len(self.concepts) - 1)) % len(self.concepts)
            a, b = self.concepts[i], self.concepts[j]
            wa = self._window(a.video.shape[0], as_frames, a.windows)
            wb = self._window(b.video.shape[0], as_frames, b.windows)
            dim = 3 if torch.rand(()).item() < 0.5 else 2  # side by side, or one above the other
            remove = self.reg.stitch_remove_background and a.mask is not None and b.mask is not None
            masks = (a.mask[wa], b.mask[wb]) if remove else (None, None)
            clips.append(stitch.stitch(a.video[wa], b.video[wb], dim, *masks))  # (F', C, H, W)
            if remove:  # one background shown: the prompt names a's only
                b = replace(b, prompt=stitch.drop_background(b.prompt))
            full = not as_frames and stage.prompt == "full"
            prompts.append(f"{a.full_prompt} {b.full_prompt}" if full else f"{a.prompt} {b.prompt}")
        return torch.stack(clips), prompts, torch.ones(n)


class LatentCache:
    """The latents of every window a run draws, each encoded once: the key of a sample says where it
    was cut from (`Batch.keys`), so a window drawn again is not sent through the VAE again (nor
    hashed, as the backbone's disk cache would). Latents stay where `encode` puts them (an 81-frame
    480x832 Wan window: 16 x 21 x 60 x 104 float32, 8.4 MB). Stitched samples (key None) are encoded
    each time.

    Args:
        encode: the backbone's `encode_video`, (B, F, C, H, W) -> latents (B, ...).
    """

    def __init__(self, encode):
        self.encode = encode
        self.latents: dict[tuple, torch.Tensor] = {}
        self.encoded = 0  # samples sent to `encode`

    def fill(self, windows: list[tuple[tuple, torch.Tensor]]) -> None:
        """Encode each (key, clip (F, C, H, W)) not yet known, one at a time (`Batches.windows`)."""
        for key, clip in windows:
            if key not in self.latents:
                self(clip[None], [key])

    def __call__(self, clips: torch.Tensor, keys: list[tuple | None] | None) -> torch.Tensor:
        """Latents (B, ...) of clips (B, F, C, H, W), from the cache where their key is known."""
        keys = keys or [None] * len(clips)
        new = {}  # index of each sample to encode: stitched ones, and the first of each unknown key
        for i, k in enumerate(keys):
            if k is None or (k not in self.latents and k not in new.values()):
                new[i] = k
        fresh = {}
        if new:
            fresh = dict(zip(new, self.encode(clips if len(new) == len(keys) else clips[list(new)])))
            self.encoded += len(new)
            self.latents.update({k: fresh[i] for i, k in new.items() if k is not None})
        return torch.stack([fresh[i] if k is None else self.latents[k] for i, k in enumerate(keys)])


class TextCache:
    """The embedding of every prompt a run draws, each encoded once and kept on the device (a Wan
    prompt: at most 512 x 4096 float32, 8 MiB; a handful per run), so that the text encoder can
    leave the GPU. A prompt not yet known is encoded when asked for. Not for a run whose concept
    tokens train: their prompts' embeddings change every step.

    Args:
        encode: the backbone's `encode_text`, prompts -> Text (B, T, D).
    """

    def __init__(self, encode):
        self.encode = encode
        self.texts: dict[str, Text] = {}

    def fill(self, prompts: list[str]) -> None:
        with torch.no_grad():
            for p in prompts:
                if p not in self.texts:
                    self.texts[p] = self.encode([p])

    def __call__(self, prompts: list[str]) -> Text:
        """Text (B, T, D) of `prompts`, padded to the longest (`Text.cat`)."""
        self.fill(prompts)
        return Text.cat([self.texts[p] for p in prompts])


# ============================================================================================
# the loss taken on a batch
# ============================================================================================


def mask_tokens(mask: torch.Tensor, p: float) -> torch.Tensor:
    """Mask each text token with probability p (sec. 3.4.3), never all of a prompt's: (B, T) bool -> (B, T) bool."""
    if p <= 0:
        return mask
    kept = mask & (torch.rand(mask.shape, device=mask.device) >= p)
    empty = ~kept.any(1)
    kept[empty] = mask[empty]
    return kept


def training_timesteps(
    backbone: Backbone, fc: FlowConfig, n: int, first: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The timesteps (n,) of a micro-batch whose first sample is sample `first` of its stage.

    For a base of experts by timestep (`backbone.experts`, Wan 2.2 T2V-A14B), where a sample trains
    only the expert of its time, `fc.experts` decides which expert each sample is for: "balanced", the
    experts in turn by the sample's index in the stage (so each gets half of every batch of two or
    more, and alternate steps at batch 1); one expert's name, that expert alone. Its time is then drawn
    from the training distribution restricted to that expert's range (`flow.sample_timesteps_within`).
    Otherwise ("shared", or one model), every time comes from the whole distribution.
    """
    experts = getattr(backbone, "experts", None) or {}
    if not experts or fc.experts == "shared":
        return flow.sample_timesteps(n, fc.timesteps, fc.logit_mean, fc.logit_std, fc.shift, device=device)
    ranges = [e["t"] for e in experts.values()] if fc.experts == "balanced" else [experts[fc.experts]["t"]]
    chosen = [ranges[(first + i) % len(ranges)] for i in range(n)]
    lo, hi = [r[0] for r in chosen], [r[1] for r in chosen]
    return flow.sample_timesteps_within(lo, hi, fc.timesteps, fc.logit_mean, fc.logit_std, fc.shift, device=device)


def batch_loss(
    backbone: Backbone,
    batch: Batch,
    cfg: TrainConfig,
    world: parallel.World,
    train_tokens: bool = False,
    latents: LatentCache | None = None,
    first: int = 0,
    texts: TextCache | None = None,
) -> torch.Tensor:
    """The summed, weighted loss of this rank's share of `batch`, taken with the batch's motion scales.
    Every rank draws the random numbers of all n samples, so all ranks stay on one random stream (see
    setseq.parallel), but encodes and runs only its own share.

    Args:
        backbone: the model being trained, its adapters in place.
        batch: n samples (`Batches.draw`): clips (n, F', C, H, W), prompts, weights (n,), motion scales.
        cfg: the run's settings: timesteps (cfg.flow), token masking and self-conditioning (cfg.reg).
        world: this process among the training processes; n is a multiple of its size.
        train_tokens: whether the concept-token embeddings train (the text encoding keeps its graph).
        latents: the run's cache of window latents (None: every clip through the VAE).
        first: the index of the batch's first sample in its stage (`training_timesteps`).
        texts: the run's cache of prompt embeddings (None: the prompts through the text encoder).

    Returns:
        sum_i w_i L_i over this rank's samples, L_i flow matching's loss (eq. 1; `flow.training_loss`).
    """
    fc, reg, bb, n = cfg.flow, cfg.reg, backbone, len(batch.prompts)
    with lora.scales(bb.transformer, motion=batch.motion):  # this micro-batch's motion scales, reset on exit
        if texts is not None and not train_tokens:
            text = texts(batch.prompts)
        else:
            with torch.set_grad_enabled(train_tokens):  # all n prompts: the token mask's shape is the longest's
                text = bb.encode_text(batch.prompts)
        text.mask = mask_tokens(text.mask, reg.token_mask_prob)
        part = parallel.share(n, world)  # this rank's samples; all n when it runs alone
        text = Text(text.emb[part], text.mask[part])
        clips = batch.clips[part]
        x0 = latents(clips, batch.keys and batch.keys[part]) if latents is not None else bb.encode_video(clips)
        noise = torch.randn((n, *x0.shape[1:]), dtype=x0.dtype, device=x0.device)[part]
        t = training_timesteps(bb, fc, n, first, x0.device)[part]
        x_t = flow.interpolate(x0, noise, t)
        self_cond = None
        # self-conditioning (sec. 3.4.3): a first pass's x_0 estimate as input, for a share of the samples
        if reg.self_conditioning and bb.supports_self_conditioning:
            with torch.no_grad():
                x0_hat = flow.predict_x0(x_t, bb.velocity(x_t, t, text, None), t)
            use = (torch.rand(n, device=x0.device)[part] < reg.self_cond_prob).to(x0_hat.dtype)
            self_cond = x0_hat * use.view(len(x0), *([1] * (x0_hat.ndim - 1)))  # use (n',) as (n', 1, ..., 1)
        v = bb.velocity(x_t, t, text, self_cond)
        per_sample = flow.training_loss(v, x0, noise, t, getattr(bb, "loss_space", "velocity"))  # (n',)
        return (per_sample * batch.weights[part].to(v.device)).sum()
