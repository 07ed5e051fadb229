"""What the diffusers backbones share: diffusers components behind the `Backbone` protocol.

A `DiffusersBackbone` holds a diffusers video transformer and VAE and a transformers text encoder
(T5-family, Gemma 3, Qwen2.5-VL) with its tokenizer. The subclasses (`wan.py`, `ltx.py`, `ltx2.py`,
`hunyuan15.py`) supply what differs: the latent normalisation, how prompts are encoded and padded,
and the transformer call. Everything here is
model-agnostic: concept tokens, the geometry rules, the weights fingerprint, on-disk caching of
latents and text embeddings, loading the parts of a local diffusers-format folder and building tiny
random ones. Which backbone a folder is, `setseq.backbones.load_backbone` decides.

diffusers and transformers are imported lazily (only where a backbone is built), so the core package
runs without the `[diffusers]` extra.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from setseq import memory
from setseq.backbones.base import TOKEN, Geometry, SamplingDefaults, Text
from setseq.backbones.scheduling import PipelineSampler
from setseq.errors import SetseqError
from setseq.fileio import atomic_path, cache_root

EXTRA_HINT = "install the extra with: pip install 'setseq[diffusers]'"


def require_diffusers() -> None:
    """Raise one sentence, not an ImportError, when diffusers or transformers is missing."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise SetseqError(
            f"the diffusers backbones (Wan, LTX-Video, LTX-2, HunyuanVideo 1.5) need diffusers and transformers "
            f"({e.name} is missing); {EXTRA_HINT}."
        ) from None


# --------------------------------------------------------------------------------------------
# Concept tokens
# --------------------------------------------------------------------------------------------


class ConceptEmbedding(nn.Module):
    """The text encoder's input embedding, with a small trainable table for the concept tokens.

    This is equivalent to appending zero rows for the new tokens to the vocabulary matrix and
    training only those rows (sec. 3.2), but the base matrix is never resized or written: the
    fingerprint of the base stays the same, the optimiser sees only the (K, D) table, and a
    tokenizer whose vocabulary is shorter than the matrix (T5's is) needs no special case.
    """

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.table = nn.ParameterList()  # K rows of (D,), one per concept token, fp32
        self.ids: list[int] = []  # the tokenizer id of each row

    @property
    def weight(self) -> torch.Tensor:
        """The base matrix, for callers that read the embedding's dtype or size."""
        return self.base.weight

    def add(self, token_id: int) -> None:
        if token_id in self.ids:
            return
        self.ids.append(token_id)
        self.table.append(
            nn.Parameter(torch.zeros(self.base.embedding_dim, device=self.base.weight.device), requires_grad=False)
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_concept = torch.zeros_like(ids, dtype=torch.bool)
        for tid in self.ids:
            is_concept |= ids == tid
        emb = self.base(ids.masked_fill(is_concept, 0))  # (B, T, D); concept ids may lie past the matrix
        for tid, row in zip(self.ids, self.table):
            emb = torch.where((ids == tid)[..., None], row.to(emb.dtype), emb)
        return emb


def word_tokenizer(words: list[str]):
    """A tiny whitespace word-level tokenizer with T5's special tokens (<pad> 0, </s> 1, <unk> 2)
    that appends </s> like T5's; for tests and `--tiny` models, since none can be downloaded."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


# --------------------------------------------------------------------------------------------
# Fingerprint and cache
# --------------------------------------------------------------------------------------------


def weights_fingerprint(modules: dict[str, nn.Module], samples: int = 4096) -> str:
    """A hash of every tensor's name and shape and of up to `samples` evenly spaced values of it.

    Hashing all of a 1.3B-parameter model takes seconds; a strided sample catches a different
    checkpoint (the purpose: a concept refuses a base it was not trained on), not a deliberate
    edit of unsampled values. Values are rounded to bfloat16 first, so the same weights loaded in
    fp32 or in bf16 give the same fingerprint.
    """
    h = hashlib.sha256()
    for prefix, module in modules.items():
        for name, t in sorted(module.state_dict().items()):
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            values = flat[::step][:samples].to(torch.bfloat16).float().cpu()
            h.update(f"{prefix}.{name}:{tuple(t.shape)}".encode())
            h.update(values.numpy().tobytes())
    return h.hexdigest()[:16]


class EncodingCache:
    """Latents and text embeddings on disk, keyed by a hash of what produced them."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def get_or_make(self, kind: str, key: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        path = self.folder / kind / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
        if path.is_file():
            return torch.load(path)
        value = make()
        with atomic_path(path) as tmp:
            torch.save(value.detach().cpu(), tmp)
        return value


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _nearest_multiple(x: int, m: int) -> int:
    return max(m, m * round(x / m))


def check_frames_and_size(g: Geometry, model: str, frame_step: int, size_step: int) -> None:
    """Frames must be frame_step * N + 1 and sizes multiples of size_step; the error names the
    nearest valid values."""
    frames_ok = g.frames >= 1 and (g.frames - 1) % frame_step == 0
    size_ok = g.height > 0 and g.width > 0 and g.height % size_step == 0 and g.width % size_step == 0
    if frames_ok and size_ok:
        return
    frames = frame_step * max(0, round((g.frames - 1) / frame_step)) + 1
    h, w = _nearest_multiple(g.height, size_step), _nearest_multiple(g.width, size_step)
    raise SetseqError(
        f"{model} needs {frame_step}N+1 frames and a height and width that are multiples of "
        f"{size_step}; got {g.frames} frames at {g.height}x{g.width}, the nearest valid "
        f"geometry is {frames} frames at {h}x{w}."
    )


def fit_geometry(
    default: Geometry,
    size_step: int,
    frame_step: int,
    shown: tuple[float, float] | None = None,
    frames: int | None = None,
    max_aspect: float | None = None,
) -> Geometry:
    """The geometry that follows a clip: its shape at the model's pixel budget, its length up to the model's.

    Size: the clip's displayed aspect ratio r = height / width, held within [1 / max_aspect,
    max_aspect], at the area of the default geometry: height = sqrt(area r), width = sqrt(area / r),
    each rounded to a whole pixel and then down to the size grid (the rule of diffusers' Wan
    image-to-video example), so the area never exceeds the budget. For Wan at 480p (area 832 x 480,
    grid 16, max_aspect 832 / 480): 16:9 -> 832 wide x 480 high, 9:16 -> 480 x 832, square -> 624 x
    624, 4:3 -> 720 x 544.
    Frames: the default, or when the clip holds fewer, the most of frame_step N + 1 it holds.

    Args:
        default: the model's default geometry (its area, frame count and frame rate).
        size_step, frame_step: the model's size grid and temporal compression.
        shown: (height, width) the clip is shown at; None keeps the default size.
        frames: frames the clip holds at the default frame rate; None keeps the default count.
        max_aspect: the most elongated shape, long side over short (None: the default geometry's own).

    Returns:
        The geometry, with the default's frame rate.
    """
    height, width, count = default.height, default.width, default.frames
    if shown is not None and min(shown) > 0:
        widest = max_aspect or max(height / width, width / height)
        r = min(max(shown[0] / shown[1], 1 / widest), widest)
        area = height * width
        height = max(size_step, round(math.sqrt(area * r)) // size_step * size_step)
        width = max(size_step, round(math.sqrt(area / r)) // size_step * size_step)
    if frames is not None and 1 <= frames < count:
        count = (frames - 1) // frame_step * frame_step + 1
    return Geometry(count, height, width, default.fps)


# --------------------------------------------------------------------------------------------
# Prior-preservation prompts
# --------------------------------------------------------------------------------------------

SUBJECTS = [
    "a man in a grey coat in a park",
    "a woman in a red dress in a kitchen",
    "a brown dog on a lawn",
    "a white cat on a wooden floor",
    "a small boat on a lake",
    "tall grass in a field",
    "a candle on a dark table",
    "a child in a yellow jacket on a street",
]
MOTIONS = [
    "it moves slowly from left to right.",
    "it turns around in place.",
    "it sways gently back and forth.",
    "it moves towards the camera.",
    "it bounces up and down.",
    "it shakes quickly.",
    "it moves in a wide circle.",
    "it leans to one side and back.",
]


def prior_prompts(n: int, seed: int) -> list[tuple[str, str]]:
    """n generic (appearance, motion) prompt pairs, a seeded draw."""
    g = torch.Generator().manual_seed(seed)
    subj = torch.randint(len(SUBJECTS), (n,), generator=g).tolist()
    mot = torch.randint(len(MOTIONS), (n,), generator=g).tolist()
    return [(f"{SUBJECTS[i]}.", MOTIONS[j]) for i, j in zip(subj, mot)]


# --------------------------------------------------------------------------------------------
# The shared backbone
# --------------------------------------------------------------------------------------------


def clean_prompt(text: str) -> str:
    """Collapse whitespace, as the diffusers pipelines do before tokenising."""
    return re.sub(r"\s+", " ", text).strip()


class DiffusersBackbone:
    """A diffusers video transformer + VAE and a T5-family text encoder behind `Backbone`.

    Latents are (C, F', h, w) per sample, the diffusers layout. Subclasses set `model`,
    `lora_targets`, `frame_step` and `size_step`, and implement `_normalise`, `_denormalise`,
    `_vae_decode`, `_encode_ids` and `_forward`; where a prompt takes more than one encoder call
    (LTX-2's connectors, HunyuanVideo 1.5's chat template), they replace `_encode_prompts` instead.
    """

    model = "diffusers model"  # for messages
    lora_targets: list[str] = []
    supports_self_conditioning = False  # none of these models has an x_0 input
    loss_space = "velocity"
    frame_step = 1  # frames must be frame_step * N + 1 (the VAE's temporal compression)
    size_step = 1  # height and width must be multiples of this (VAE stride x patch size)
    max_aspect: float | None = None  # the most elongated clip shape (None: the default geometry's)

    def __init__(
        self,
        name: str,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        geometry: Geometry,
        sampling: SamplingDefaults,
        *,
        text_len: int,
        pipeline_sampler: PipelineSampler | None = None,
        device: torch.device | str | None = None,
        cache_dir: str | Path | None = None,
        gradient_checkpointing: bool = False,
        fp8_base: bool = False,
        blocks_to_swap: int = 0,
        offload_activations: bool = False,
        extras: dict[str, nn.Module] | None = None,
    ):
        """
        Args:
            name: written into concept files; a local model folder, so that `--base NAME` reloads it.
            transformer, vae, text_encoder, tokenizer: the diffusers / transformers components.
            extras: further frozen components by pipeline name (LTX-2's text connectors): they are
                fingerprinted, frozen and placed like the text encoder.
            geometry: default clip geometry; sampling: default sampling settings.
            text_len: the prompt length in tokens that the pipeline pads or truncates to.
            pipeline_sampler: the folder's scheduler and the pipeline's defaults (`scheduling`), the
                default sampler of `setseq.generate`; None: the Euler sampler only.
            device: where the components run (default: where they are).
            cache_dir: keep VAE latents and text embeddings of frozen prompts on disk there (None: off).
            gradient_checkpointing: recompute each transformer block's activations in the backward
                pass (less memory, about a third more compute).
            fp8_base: store the transformer blocks' linear weights in float8 with a per-tensor scale,
                computed in the model's dtype (`setseq.memory`; half the memory of bf16 weights).
            blocks_to_swap: keep this many transformer blocks in CPU memory, copied to `device` as
                they run (`setseq.memory`).
            offload_activations: with gradient checkpointing, keep each block's input in pinned CPU
                memory until the backward pass (`memory.offloaded_checkpoint`).
        """
        self.name, self.geometry, self.sampling, self.text_len = name, geometry, sampling, text_len
        self.pipeline_sampler = pipeline_sampler
        self.offload_activations = offload_activations
        self.transformer, self.vae, self.text_encoder, self.tokenizer = transformer, vae, text_encoder, tokenizer
        # of the weights as loaded: a concept trained on a float8 base fits the same base without it
        self.extras = extras = extras or {}
        self._fingerprint = weights_fingerprint(
            {"transformer": transformer, "text_encoder": text_encoder, "vae": vae, **extras}
        )
        for m in (transformer, vae, text_encoder, *extras.values()):
            m.requires_grad_(False)
            m.eval()
            if m is transformer and (fp8_base or blocks_to_swap):
                memory.place(transformer, device, fp8_base=fp8_base, blocks_to_swap=blocks_to_swap)
            elif device is not None:
                m.to(device)
        self.set_gradient_checkpointing(gradient_checkpointing)
        self.concepts = ConceptEmbedding(text_encoder.get_input_embeddings())
        text_encoder.set_input_embeddings(self.concepts)
        self.cache = EncodingCache(cache_dir) if cache_dir is not None else None

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    # -- the encoders' place ---------------------------------------------------------------
    def park_encoders(self, device: torch.device | str = "cpu", text: bool = True, vae: bool = True) -> None:
        """Move the text encoder (`text`) and the VAE (`vae`) to `device`, CPU memory by default: a
        training run whose prompts and clip windows are all encoded needs neither on the GPU (Wan's
        UMT5 in bf16: 10.6 GiB). The concept tokens' table stays where it is (its rows are the
        concept's). `unpark_encoders` brings them back."""
        table = id(self.concepts.table)
        text_side = [self.text_encoder, *self.extras.values()] if text else []  # LTX-2's connectors too
        for module in [*(m for part in text_side for m in part.modules()), *(self.vae.modules() if vae else ())]:
            if id(module) != table:  # nn.Module.to's own rule, module by module
                module._apply(lambda t: t.to(device), recurse=False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand the freed blocks back, so that the peak reads what a step holds

    def unpark_encoders(self) -> None:
        """The text encoder and the VAE back on the transformer's device (for sampling)."""
        self.park_encoders(self.device)

    def fingerprint(self) -> str:
        return self._fingerprint

    def set_gradient_checkpointing(self, on: bool) -> None:
        """diffusers' own block checkpointing (non-reentrant, RNG state preserved, so dropout masks
        are redrawn the same in the recomputation); it acts only while gradients are computed."""
        if on:  # with --offload-activations, each block's input waits in CPU memory
            self.transformer.enable_gradient_checkpointing(
                memory.offloaded_checkpoint if self.offload_activations else None
            )
        else:
            self.transformer.disable_gradient_checkpointing()

    # -- geometry and video ----------------------------------------------------------------
    def check_geometry(self, g: Geometry) -> None:
        check_frames_and_size(g, self.model, self.frame_step, self.size_step)

    def fit_geometry(self, shown: tuple[float, float] | None, frames: int | None = None) -> Geometry:
        """The clip's shape at this model's pixel budget and its length up to the default (`fit_geometry`)."""
        return fit_geometry(self.geometry, self.size_step, self.frame_step, shown, frames, self.max_aspect)

    def latent_shape(self, g: Geometry) -> tuple[int, ...]:
        s = self.vae_stride
        return (self.latent_channels, (g.frames - 1) // self.frame_step + 1, g.height // s, g.width // s)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, F, C, H, W) in [-1, 1] -> normalised latents (B, C', F', h, w), one clip at a time
        (the VAE's memory grows with the clip) and from the cache when one is set."""
        out = []
        for clip in video:  # (F, C, H, W)

            def make(clip=clip):
                x = clip.permute(1, 0, 2, 3)[None].to(self.device, self.vae.dtype)  # (1, C, F, H, W)
                # the posterior's mode, not a sample: deterministic, so a clip's latents can be cached
                return self._normalise(self.vae.encode(x).latent_dist.mode().float())[0]

            if self.cache is None:
                out.append(make())
            else:
                key = f"{self._fingerprint}|{tuple(clip.shape)}|{tensor_digest(clip)}"
                out.append(self.cache.get_or_make("latents", key, make).to(self.device))
        return torch.stack(out)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C', F', h, w) -> (B, F, C, H, W) in [-1, 1], on the CPU."""
        videos = [self._vae_decode(self._denormalise(z[None].float()).to(self.vae.dtype)) for z in latents]
        return torch.cat(videos).float().clamp(-1, 1).permute(0, 2, 1, 3, 4).cpu()

    # -- concept tokens --------------------------------------------------------------------
    def add_concept_tokens(self, tokens: list[str]) -> None:
        for tok in tokens:
            if not tok.strip() or any(c.isspace() for c in tok):
                raise SetseqError(f"a concept token must be one word without spaces, got {tok!r}.")
            self.tokenizer.add_tokens([tok])
            self.concepts.add(self.tokenizer.convert_tokens_to_ids(tok))

    def _token_ids(self) -> dict[str, int]:
        ids = set(self.concepts.ids)
        return {t: i for t, i in self.tokenizer.get_added_vocab().items() if i in ids}

    def concept_token_parameters(self) -> list[nn.Parameter]:
        return list(self.concepts.table)

    def token_embeddings(self) -> dict[str, torch.Tensor]:
        rows = dict(zip(self.concepts.ids, self.concepts.table))
        return {t: rows[i].detach().cpu().clone() for t, i in self._token_ids().items()}

    def load_token_embeddings(self, embeddings: dict[str, torch.Tensor]) -> None:
        self.add_concept_tokens([t for t in embeddings if t not in self._token_ids()])
        rows = dict(zip(self.concepts.ids, self.concepts.table))
        with torch.no_grad():
            for tok, emb in embeddings.items():
                row = rows[self._token_ids()[tok]]
                if emb.shape != row.shape:
                    raise SetseqError(
                        f"the embedding of {tok} has shape {tuple(emb.shape)}, but this text "
                        f"encoder needs {tuple(row.shape)}; was the concept trained on another base?"
                    )
                row.copy_(emb)

    def unknown_words(self, prompt: str) -> list[str]:
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return []
        words = [w for w in prompt.split() if not TOKEN.fullmatch(w.strip(".,!?"))]  # concept tokens are added later
        return [w for w in words if unk in self.tokenizer(w, add_special_tokens=False).input_ids]

    # -- text ------------------------------------------------------------------------------
    def encode_text(self, prompts: list[str]) -> Text:
        """Encode prompts; with a cache and no gradient needed, each prompt's embedding is stored
        under the model fingerprint, the prompt and the current concept-token embeddings."""
        prompts = [clean_prompt(p) for p in prompts]
        if self.cache is None or torch.is_grad_enabled():
            return self._encode_prompts(prompts)
        tokens = "".join(tensor_digest(r) for r in self.concepts.table)
        items = []
        for p in prompts:

            def make(p=p):
                t = self._encode_prompts([p])
                return torch.cat([t.emb.float(), t.mask[..., None].float()], -1)[0]  # (T, D + 1)

            both = self.cache.get_or_make("text", f"{self._fingerprint}|{tokens}|{p}", make).to(self.device)
            items.append(Text(both[None, :, :-1], both[None, :, -1] > 0))
        return Text.cat(items)

    def _encode_prompts(self, prompts: list[str]) -> Text:
        batch = self.tokenizer(
            prompts,
            **self._tokenizer_options(),
            truncation=True,
            max_length=self.text_len,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device).bool()
        return Text(self._encode_ids(ids, mask).float(), mask)

    # -- the model -------------------------------------------------------------------------
    def velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, text: Text, self_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """setseq's v = eps - x_0 at time t in [0, 1]: both models are trained on x_t = (1 - s) x_0
        + s eps with s = timestep / 1000 and predict eps - x_0, so the only change is t -> 1000 t."""
        if self_cond is not None:
            raise SetseqError(f"{self.model} has no self-conditioning input.")
        dtype = self.transformer.dtype
        v = self._forward(
            x_t.to(self.device, dtype),
            (1000.0 * t).to(self.device, torch.float32),
            text.emb.to(self.device, dtype),
            text.mask.to(self.device),
        )
        return v.float()

    def prior_prompts(self, n: int, seed: int) -> list[tuple[str, str]]:
        return prior_prompts(n, seed)

    # -- for the subclasses ----------------------------------------------------------------
    latent_channels: int
    vae_stride: int

    def _tokenizer_options(self) -> dict:
        raise NotImplementedError

    def _encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _normalise(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Loading a local diffusers-format folder
# --------------------------------------------------------------------------------------------


def read_model_index(path: str | Path) -> dict:
    """The pipeline index of a local diffusers folder, or one sentence saying why there is none."""
    root = Path(path)
    if not root.exists():
        raise SetseqError(f"base model folder {str(root)!r} does not exist.")
    index = root / "model_index.json"
    if not root.is_dir() or not index.is_file():
        raise SetseqError(
            f"{str(root)!r} is not a diffusers model folder (it has no model_index.json); pass the "
            f"folder of a Diffusers-format checkpoint such as Wan2.1-T2V-1.3B-Diffusers."
        )
    try:
        return json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SetseqError(f"{str(index)!r} cannot be read ({e}).") from None


def read_config(root: str | Path, subfolder: str) -> dict:
    """`root/subfolder/config.json` of a local diffusers folder, read without loading any weight; a
    missing or unreadable one becomes one sentence naming it."""
    path = Path(root) / subfolder / "config.json"
    if not path.is_file():
        raise SetseqError(f"the model folder {str(root)!r} has no {subfolder}/config.json.")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SetseqError(f"{str(path)!r} cannot be read ({e}).") from None


def load_part(load: Callable, root: Path, subfolder: str, **kwargs):
    """`load(root / subfolder, local_files_only=True, ...)`: never a download; a missing or broken
    part becomes one sentence naming it."""
    folder = root / subfolder
    if not folder.is_dir():
        raise SetseqError(f"the model folder {str(root)!r} has no {subfolder}/ subfolder.")
    try:
        return load(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SetseqError(
            f"cannot load the {subfolder} from {str(folder)!r} ({reason}); are its weights downloaded?"
        ) from None


def default_cache_dir() -> Path:
    return cache_root() / "encodings"


def load_components(
    path: str | Path, transformer_class, vae_class, text_encoder_class, dtype: torch.dtype = torch.float32
) -> tuple[Path, dict]:
    """The four parts of a local diffusers folder, never downloaded: the transformer and text encoder
    in `dtype`, the VAE in float32, the tokenizer.

    Args:
        path: folder with model_index.json and transformer/, vae/, text_encoder/, tokenizer/.
        transformer_class, vae_class, text_encoder_class: the diffusers / transformers classes.
        dtype: dtype of the transformer and the text encoder.

    Returns:
        (the folder's resolved path, {transformer, vae, text_encoder, tokenizer}).

    Raises:
        SetseqError: naming the missing folder or part, or the part that cannot be read.
    """
    require_diffusers()
    from transformers import AutoTokenizer

    root = Path(path).resolve()
    read_model_index(root)
    return root, dict(
        transformer=load_part(transformer_class.from_pretrained, root, "transformer", torch_dtype=dtype),
        vae=load_part(vae_class.from_pretrained, root, "vae", torch_dtype=torch.float32),
        text_encoder=load_part(text_encoder_class.from_pretrained, root, "text_encoder", dtype=dtype),
        tokenizer=load_part(AutoTokenizer.from_pretrained, root, "tokenizer"),
    )


# --------------------------------------------------------------------------------------------
# Tiny random components, for tests and smoke runs
# --------------------------------------------------------------------------------------------

TINY_WORDS = (
    "a an the red blue green square circle dancer man woman dog on in of at with and is it he she moves "
    "motion dancing background bridge beach slowly left right . ,"
).split()  # the tiny tokenizer's vocabulary


def build_tiny(
    seed: int,
    words: list[str] | None,
    transformer: Callable[[], nn.Module],
    vae: Callable[[], nn.Module],
    text_encoder: Callable[[int], nn.Module],
) -> dict:
    """Seeded random tiny components {transformer, vae, text_encoder, tokenizer}, built in that order
    under `seed` without touching the global random stream.

    Args:
        seed: seeds the random weights.
        words: the word tokenizer's vocabulary (default: TINY_WORDS).
        transformer, vae: build the random transformer and VAE.
        text_encoder: builds the random text encoder for a vocabulary of the given size.
    """
    tokenizer = word_tokenizer(words or TINY_WORDS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dict(
            transformer=transformer(), vae=vae(), text_encoder=text_encoder(len(tokenizer)), tokenizer=tokenizer
        )
