"""Checks of a concept file, in one place: its safetensors header (``format``, ``format_version`` and
every field of the ``setseq`` metadata, by type and range) and its tensors (each one's name, shape and
dtype against the metadata). Every command that reads a concept file (info, generate, export, and any
user of ``concept.load``) goes through here, so a damaged or foreign file is refused in one sentence
instead of failing later with a traceback. The layout checked is the one ``concept``'s docstring
describes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from setseq.errors import SetseqError

FORMAT = "setseq.concept"
FORMAT_VERSION = 1
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # older files hold the base's dtype
# Generous bounds: a value past them is damage, not a model (ranks of real LoRAs are <= 256 or so).
MAX_RANK = 4096
MAX_GEOMETRY = {"frames": 100_000, "height": 16_384, "width": 16_384}
MAX_FPS = 1000.0


def _refuser(source: str):
    def refuse(what: str) -> None:
        raise SetseqError(
            f"{source} is damaged or not a setseq concept file: {what}; train it again or use an intact copy."
        )

    return refuse


def _whole(x: Any, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _text(x: Any) -> bool:
    return isinstance(x, str) and bool(x) and x.isprintable()


def _name(x: Any) -> bool:
    """A concept's name or token, an expert's name: printable, without spaces or dots."""
    return _text(x) and not any(c.isspace() or c == "." for c in x)


def read_header(header: dict[str, str], source: str) -> dict[str, Any]:
    """The ``setseq`` metadata of a concept file's safetensors header, every field checked.

    Args:
        header: the safetensors metadata (strings): ``format``, ``format_version``, ``setseq``.
        source: how to name the file in a message, e.g. ``'c.safetensors'`` quoted.

    Returns:
        The metadata: base {name, fingerprint}, rank, scale, concepts, and the optional fields
        (see ``check_meta``).

    Raises:
        SetseqError: a foreign file (no ``setseq.concept`` format), a newer or malformed format
            version, or metadata that is not JSON or fails ``check_meta``.
    """
    if header.get("format") != FORMAT:
        raise SetseqError(
            f"{source} is a .safetensors file but not a setseq concept (no '{FORMAT}' header); "
            "was it exported for another tool?"
        )
    refuse = _refuser(source)
    version = header.get("format_version", "0")
    if not (version.isascii() and version.isdigit()):
        refuse(f"its format_version is {version!r}, not a whole number")
    if int(version) > FORMAT_VERSION:
        raise SetseqError(
            f"{source} has concept format version {int(version)}; this setseq reads up to {FORMAT_VERSION}; "
            "upgrade setseq."
        )
    try:
        meta = json.loads(header["setseq"])
    except (KeyError, TypeError, ValueError, RecursionError):  # absent, not JSON, or nested past Python's stack
        refuse("its setseq metadata is missing or not JSON")
    check_meta(meta, source)
    return meta


def check_meta(meta: Any, source: str) -> None:
    """Check every field of a concept set's metadata by type and range.

    Required: base {name: str, fingerprint: str}; rank: int in [0, 4096]; concepts: a non-empty list
    of {name, identity_token, motion_token} (non-empty strings without spaces or dots, names
    unique), each with prompt, motion_prompt and video a string or null when present. Optional:
    scale (finite number), target_modules (list of str), method, stage, setseq_version (str),
    config (object; its ``stages`` a list of objects), geometry ({frames, height, width}: whole
    numbers >= 1, fps > 0, within generous bounds), losses ({stage: [numbers]}), experts ({name:
    {component: str, t: [from, to] with 0 <= from <= to <= 1}}).

    Raises:
        SetseqError: naming ``source`` and the first field out of type or range.
    """
    refuse = _refuser(source)
    if not isinstance(meta, dict):
        refuse("its metadata is not a JSON object")
    base = meta.get("base")
    if not (isinstance(base, dict) and _text(base.get("name")) and isinstance(base.get("fingerprint"), str)):
        refuse(f"its metadata names no base model (base {base!r})")
    rank = meta.get("rank")
    if not _whole(rank, 0, MAX_RANK):
        refuse(f"its metadata has rank {rank!r}, not a whole number from 0 to {MAX_RANK}")
    scale = meta.get("scale", 1.0)
    if not _number(scale):
        refuse(f"its metadata has LoRA scale {scale!r}, not a finite number")
    concepts = meta.get("concepts")
    keys = ("name", "identity_token", "motion_token")
    if not (isinstance(concepts, list) and concepts and all(isinstance(c, dict) for c in concepts)):
        refuse(f"its metadata lists no concepts with {', '.join(keys)}")
    for c in concepts:
        bad = [k for k in keys if not _name(c.get(k))]
        bad += [k for k in ("prompt", "motion_prompt", "video") if not isinstance(c.get(k), (str, type(None)))]
        if bad:
            refuse(f"its concept {c.get('name')!r} has {bad[0]} {c.get(bad[0])!r}")
    names = [c["name"] for c in concepts]
    if len(set(names)) != len(names):
        refuse(f"its concepts repeat a name ({names})")
    for key in ("method", "stage", "setseq_version"):
        if not isinstance(meta.get(key, ""), str):
            refuse(f"its metadata has {key} {meta[key]!r}, not a string")
    targets = meta.get("target_modules", [])
    if not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        refuse(f"its metadata has target_modules {targets!r}, not a list of module names")
    config = meta.get("config", {})
    if not (isinstance(config, dict) and isinstance(config.get("stages", []), list)):
        refuse("its metadata has a config that is not an object with a list of stages")
    if not all(isinstance(s, dict) for s in config.get("stages", [])):
        refuse("its metadata has a config stage that is not an object")
    _check_geometry(meta.get("geometry", {}), refuse)
    losses = meta.get("losses", {})
    if not (
        isinstance(losses, dict) and all(isinstance(v, list) and all(_number(x) for x in v) for v in losses.values())
    ):
        refuse("its metadata has losses that are not lists of numbers by stage")
    experts = meta.get("experts", {})
    if not (isinstance(experts, dict) and all(_name(k) for k in experts)):
        refuse(f"its metadata has experts {experts!r}, not a table of experts by name")
    for name, e in experts.items():
        t = e.get("t") if isinstance(e, dict) else None
        if not (
            isinstance(e, dict)
            and isinstance(e.get("component", ""), str)
            and isinstance(t, list)
            and len(t) == 2
            and all(_number(x) for x in t)
            and 0 <= t[0] <= t[1] <= 1
        ):
            refuse(f"its expert {name!r} is {e!r}, not {{component, t: [from, to]}} with 0 <= from <= to <= 1")


def _check_geometry(geometry: Any, refuse) -> None:
    sizes = tuple(MAX_GEOMETRY)
    fps = geometry.get("fps", 1.0) if isinstance(geometry, dict) else None
    if not (
        isinstance(geometry, dict)
        and set(geometry) <= {*sizes, "fps"}
        and all(_whole(geometry.get(k, 1), 1, MAX_GEOMETRY[k]) for k in sizes)
        and _number(fps)
        and 0 < fps <= MAX_FPS
    ):
        refuse(f"its metadata has geometry {geometry!r}, not positive frames, height, width and fps")


def validate(cs: Any, source: str = "the concept set") -> None:
    """Check that a concept set (a ``concept.ConceptSet``, not imported here: concept imports this
    module) is whole and consistent: its metadata (``check_meta``) and its tensors.

    Tensors: each is float32, float16, bfloat16 or float64, non-empty and finite; every adapted
    module has a basis (out x R) and identity coefficients (R x in) with R the recorded rank (>= 1
    when there are modules); motion coefficients (R x in) exist for known concepts only, in every
    module or in none; token embeddings are 1-D, of one width, and named after the concepts' tokens;
    the modules are the recorded target_modules and each begins with one of the recorded experts;
    nothing else is stored.

    Raises:
        SetseqError: naming ``source`` and the first inconsistency found.
    """
    refuse = _refuser(source)
    meta, tensors = cs.meta, cs.tensors
    check_meta(meta, source)
    rank, concepts = meta["rank"], meta["concepts"]
    names = [c["name"] for c in concepts]
    tokens = {c[k] for c in concepts for k in ("identity_token", "motion_token")}
    for key, t in tensors.items():
        if t.dtype not in DTYPES:
            refuse(f"tensor {key} holds {t.dtype}, not float32, float16, bfloat16 or float64 values")
        if t.numel() == 0:
            refuse(f"tensor {key} is empty (shape {tuple(t.shape)})")
        if not bool(torch.isfinite(t).all()):
            refuse(f"tensor {key} holds non-finite values (NaN or infinity)")
    modules = cs.modules()
    widths = {}
    for m in modules:
        basis, identity = tensors[f"{m}.basis"], tensors.get(f"{m}.identity")
        if identity is None:
            refuse(f"tensor {m}.identity is missing")
        if basis.ndim != 2 or basis.shape[1] != rank or identity.ndim != 2 or identity.shape[0] != rank:
            refuse(
                f"module {m} has basis {tuple(basis.shape)} and identity {tuple(identity.shape)}, "
                f"but rank {rank} needs (out, {rank}) and ({rank}, in)"
            )
        widths[m] = tuple(identity.shape)
    if modules and "target_modules" in meta and sorted(meta["target_modules"]) != modules:
        refuse(f"its metadata adapts {len(meta['target_modules'])} modules but it holds tensors for {len(modules)}")
    experts = meta.get("experts", {})
    strays = [m for m in modules if experts and m.partition(".")[0] not in experts]
    if strays:
        refuse(f"module {strays[0]} belongs to none of its experts {sorted(experts)}")
    motion: dict[str, set[str]] = {}
    token_widths = set()
    for key, t in tensors.items():
        if key.startswith("token."):
            if key[len("token.") :] not in tokens or t.ndim != 1:
                refuse(f"tensor {key} is not the embedding of one of its tokens {sorted(tokens)}")
            token_widths.add(t.shape[0])
            continue
        module, kind, rest = _split_key(key, modules)
        if module is None or kind not in ("basis", "identity", "motion") or (kind == "motion") != bool(rest):
            refuse(f"it holds tensor {key}, which no adapter or token of it uses")
        if kind == "motion":
            if rest not in names:
                refuse(f"tensor {key} is the motion of {rest!r}, which is not one of its concepts {names}")
            if tuple(t.shape) != widths[module]:
                refuse(f"tensor {key} has shape {tuple(t.shape)}, but {module}.identity is {widths[module]}")
            motion.setdefault(rest, set()).add(module)
    for name, where in motion.items():
        if where != set(modules):
            missing = sorted(set(modules) - where)
            refuse(f"the motion of {name!r} is missing from {len(missing)} module(s), e.g. {missing[0]}.motion.{name}")
    if len(token_widths) > 1:
        refuse(f"its token embeddings differ in width {sorted(token_widths)}")
    if not modules and not token_widths:
        refuse("it holds no adapter and no token embedding")


def _split_key(key: str, modules: list[str]) -> tuple[str | None, str, str]:
    """ "blocks.0.q.motion.a" -> ("blocks.0.q", "motion", "a"), for the longest module that prefixes it."""
    for m in sorted(modules, key=len, reverse=True):
        if key.startswith(m + "."):
            kind, _, rest = key[len(m) + 1 :].partition(".")
            return m, kind, rest
    return None, "", ""
