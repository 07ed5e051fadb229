"""The spatio-temporal LoRA layer of Set-and-Sequence (paper sec. 3.2-3.4, eqs. 3 and 6).

One adapted linear layer computes

    y = W x + s * A ( g (.) s_id * (B_id (.) M_id) + sum_c w_c * (B_mo[c] (.) M_mo) ) x

    A       (out x R)  the identity *basis*            (paper A1; PEFT's lora_B, "up")
    B_id    (R x in)   the identity *coefficients*     (paper B1; PEFT's lora_A, "down")
    B_mo[c] (R x in)   the motion coefficients of concept c (paper B2), a residual in span(A)
    M       Bernoulli dropout masks on the coefficient matrices only, in training only (sec. 3.4.2)
    s       the LoRA scale alpha / R;  s_id, w_c  identity and per-concept motion scales
    g       (R,) per-component weights on the identity part (stylisation by reweighting)

Stage 1 trains A and B_id (A starts at zero, so step 0 is the base model). Stage 2 freezes them
and trains B_mo[c], which starts at zero, so step 0 is the stage-1 model. The layer knows nothing
of any backbone: `inject` wraps whichever `nn.Linear` modules match the given name patterns.

The adapter's tensors are float32 whatever the base's dtype, and so are their gradients and AdamW's
moments; the forward casts them to the input's dtype, so a bf16 base computes in bf16. In bf16 (8
bits of mantissa) an update of 1e-4 to a weight of 0.1 rounds away; in float32 it stays.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from setseq.errors import SetseqError


def _drop(b: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Element-wise Bernoulli mask on a coefficient matrix, rescaled so its mean is unchanged."""
    if not training or p <= 0.0:
        return b
    keep = torch.bernoulli(torch.full_like(b, 1.0 - p))
    return b * keep / (1.0 - p)


def combine(
    identity: torch.Tensor,
    motion: Mapping[str, torch.Tensor],
    identity_scale: float = 1.0,
    motion_scales: Mapping[str, float] | None = None,
    rank_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The adapter's coefficients g (.) s_id B_id + sum_c w_c B_mo[c]: (R, in).

    The one formula behind the layer's forward, its merge and unmerge, and every export format.

    Args:
        identity: B_id (R, in), already masked by dropout when training.
        motion: B_mo[c] (R, in) by concept name, likewise.
        identity_scale: s_id.
        motion_scales: w_c by concept name; a concept not named has scale 1.
        rank_weights: g (R,), per-component weights on the identity part (None: all ones).
    """
    scale = identity_scale if rank_weights is None else identity_scale * rank_weights
    coef = (scale[:, None] if torch.is_tensor(scale) else scale) * identity
    for name, b in motion.items():
        w = (motion_scales or {}).get(name, 1.0)
        if w != 0.0:
            coef = coef + w * b
    return coef


class MotionCoefficients(nn.Module):
    """B_mo[c] of one layer by concept name, a dict of parameters. Names are data, never
    attributes: each is stored under its own safe attribute (``c0``, ``c1``, ... in the order
    added), so a concept named ``train``, ``keys`` or ``to`` cannot collide with a module's
    attributes as it would in an ``nn.ParameterDict``. Concept files name tensors by concept
    name (``<module>.motion.<concept>``), never by these attributes."""

    def __init__(self):
        super().__init__()
        self._slots: dict[str, str] = {}  # concept name -> attribute

    def __setitem__(self, name: str, value: nn.Parameter) -> None:
        slot = self._slots.setdefault(name, f"c{len(self._slots)}")
        self.register_parameter(slot, value)

    def __getitem__(self, name: str) -> nn.Parameter:
        return self._parameters[self._slots[name]]

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def __iter__(self):
        return iter(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def keys(self):
        return self._slots.keys()

    def values(self) -> list[nn.Parameter]:
        return [self[name] for name in self._slots]

    def items(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, self[name]) for name in self._slots]


class SetSeqLinear(nn.Module):
    """An `nn.Linear` plus a shared identity basis, identity coefficients and per-concept motion."""

    def __init__(self, base_layer: nn.Linear, rank: int, scale: float = 1.0):
        super().__init__()
        out_features, in_features = base_layer.weight.shape
        self.base_layer = base_layer
        self.rank, self.scale = rank, scale
        # Beside the base weight, unless the base layer says it computes elsewhere (setseq.memory: a
        # block kept in CPU memory), and float32 whatever the base's dtype (module docstring).
        where = {"device": getattr(base_layer, "compute_device", base_layer.weight.device), "dtype": torch.float32}
        # Init as PEFT does for (lora_B, lora_A): the basis is zero so the adapter starts as a no-op,
        # the coefficients are random so the basis receives a gradient at step 0.
        identity = nn.init.kaiming_uniform_(torch.empty(rank, in_features), a=math.sqrt(5))
        self.basis = nn.Parameter(torch.zeros(out_features, rank, **where))  # A: (out, R)
        self.identity = nn.Parameter(identity.to(**where))  # B_id: (R, in)
        self.motion = MotionCoefficients()  # B_mo[c]: (R, in) each, by concept name
        # Inference-time controls.
        self.identity_scale = 1.0
        self.motion_scales: dict[str, float] = {}
        self.register_buffer("rank_weights", torch.ones(rank, **where), persistent=False)  # g: (R,)
        # Training-time dropout probabilities, set by the trainer per stage.
        self.identity_dropout = 0.0
        self.motion_dropout = 0.0
        self.merged = False

    def add_motion(self, concept: str) -> None:
        """A zero motion residual for `concept`, so adding it leaves the output unchanged."""
        if concept in self.motion:
            raise SetseqError(f"motion coefficients for concept {concept!r} already exist.")
        self.motion[concept] = nn.Parameter(torch.zeros_like(self.identity))

    def coefficients(self) -> torch.Tensor:
        """g (.) s_id B_id (.) M_id + sum_c w_c B_mo[c] (.) M_mo: (R, in)."""
        ident = _drop(self.identity, self.identity_dropout, self.training)
        motion = {
            c: _drop(b, self.motion_dropout, self.training)
            for c, b in self.motion.items()
            if self.motion_scales.get(c, 1.0) != 0.0
        }
        return combine(ident, motion, self.identity_scale, self.motion_scales, self.rank_weights)

    def delta_weight(self) -> torch.Tensor:
        """s * A @ coefficients: (out, in); serves both merge and unmerge."""
        return self.scale * self.basis @ self.coefficients()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        # Two thin matmuls, (.., in) -> (.., R) -> (.., out), never the full (out, in) delta. The
        # float32 weights are cast to the input's dtype (PEFT instead casts the input up to the
        # adapter's float32): the matmuls run at the base's speed, the gradients reach float32. The
        # scale s goes on A (out x R), not on the (.., out) output, one pass over T x out values fewer.
        coef, basis = self.coefficients().to(x.dtype), self.basis.to(x.dtype)
        if self.scale != 1.0:
            basis = self.scale * basis
        return y + F.linear(F.linear(x, coef), basis)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        if self.training:
            raise SetseqError("cannot merge an adapter in training mode: dropout would be baked in.")
        if self.base_layer.weight.element_size() == 1:
            raise SetseqError(
                "cannot merge an adapter into a float8 base weight (--fp8-base); load the base without it."
            )
        self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale}, motion={list(self.motion)}"


# --------------------------------------------------------------------------------------------
# Injection and model-wide controls
# --------------------------------------------------------------------------------------------


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def inject(model: nn.Module, patterns: list[str], rank: int, scale: float = 1.0) -> dict[str, SetSeqLinear]:
    """Wrap every `nn.Linear` of `model` whose qualified name matches a pattern (fnmatch, `*` any).

    Returns the adapters by module name, on each base layer's device and in float32 whatever the
    base's dtype (see the module docstring). Raises if nothing matches, with a few names that exist.
    """
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and matches(n, patterns)]
    if not targets:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise SetseqError(f"no linear layer matches the target patterns {patterns}; some that exist: {linear[:6]}.")
    out: dict[str, SetSeqLinear] = {}
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = SetSeqLinear(getattr(parent, child), rank, scale)
        setattr(parent, child, layer)
        out[name] = layer
    return out


def adapters(model: nn.Module) -> dict[str, SetSeqLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SetSeqLinear)}


def set_scales(
    model: nn.Module,
    identity: float | None = None,
    motion: dict[str, float] | float | None = None,
    rank_weights: torch.Tensor | None = None,
) -> None:
    """Inference controls of every adapter in `model`; prefer the scoped `scales`, which undoes them.

    Args:
        identity: s_id, the scale of the identity coefficients (None: leave it).
        motion: w_c, one number for every concept or a scale per concept name (None: leave them).
        rank_weights: g (R,), per-component weights on the identity part (None: leave them).

    Raises:
        SetseqError: while the model is merged (unmerge would then subtract another delta than the
            one merge added), for a concept name no adapter has, or rank weights of the wrong length.
    """
    layers = list(adapters(model).values())
    if any(layer.merged for layer in layers):
        raise SetseqError(
            "cannot change adapter scales while the adapters are merged into the base weights; "
            "unmerge first (lora.unmerge), then set the scales and merge again."
        )
    per_concept = motion is not None and not isinstance(motion, (int, float))
    for layer in layers:  # check every layer before changing any, so that a refusal changes nothing
        unknown = set(motion) - set(layer.motion) if per_concept else set()
        if unknown:
            raise SetseqError(f"no motion for concept(s) {sorted(unknown)}; this concept set has {list(layer.motion)}.")
        if rank_weights is not None and rank_weights.shape != (layer.rank,):
            raise SetseqError(f"rank weights must have {layer.rank} entries, got {tuple(rank_weights.shape)}.")
    for layer in layers:
        if identity is not None:
            layer.identity_scale = float(identity)
        if isinstance(motion, (int, float)):
            layer.motion_scales = {c: float(motion) for c in layer.motion}
        elif motion is not None:
            layer.motion_scales.update({c: float(w) for c, w in motion.items()})
        if rank_weights is not None:
            layer.rank_weights.copy_(rank_weights)


@contextlib.contextmanager
def scales(
    model: nn.Module,
    identity: float | None = None,
    motion: dict[str, float] | float | None = None,
    rank_weights: torch.Tensor | None = None,
) -> Iterator[None]:
    """`set_scales` for the duration of a `with` block, the way diffusers scopes a LoRA scale around a
    forward: on exit, normal or by an exception, every adapter's s_id, w_c and g are what they were.

    Args:
        model, identity, motion, rank_weights: as in `set_scales` (None leaves a control as it is).

    Raises:
        SetseqError: as `set_scales` on entry; on exit, when the block left the adapters merged (the
            merged delta was made with the block's scales, so restoring them would corrupt unmerge).
    """
    # g is restored only when the block sets it: writing a buffer in place bumps its version, which
    # breaks the backward of a compiled forward that saved it, even when the values are the same.
    saved = [
        (
            layer,
            layer.identity_scale,
            dict(layer.motion_scales),
            None if rank_weights is None else layer.rank_weights.clone(),
        )
        for layer in adapters(model).values()
    ]
    set_scales(model, identity, motion, rank_weights)  # a refusal here has changed nothing
    try:
        yield
    finally:
        if any(layer.merged for layer, *_ in saved):
            raise SetseqError(
                "the adapters were left merged at the end of a `lora.scales` block; "
                "unmerge them inside the block, with the scales they were merged with."
            )
        for layer, s_id, w, g in saved:
            layer.identity_scale, layer.motion_scales = s_id, w
            if g is not None:
                layer.rank_weights.copy_(g)


def set_dropout(model: nn.Module, identity: float = 0.0, motion: float = 0.0) -> None:
    for layer in adapters(model).values():
        layer.identity_dropout, layer.motion_dropout = identity, motion


def merge(model: nn.Module) -> None:
    for layer in adapters(model).values():
        layer.merge()


def unmerge(model: nn.Module) -> None:
    for layer in adapters(model).values():
        layer.unmerge()
