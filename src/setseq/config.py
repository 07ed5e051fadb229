"""Typed training configuration and the method presets that reproduce the paper's rows.

Numbers are the paper's (Table 6 and section 8) unless a comment says otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setseq.errors import SetseqError

DATA_KINDS = ("frames", "clip", "mixed")  # unordered set of frames | whole clip | DreamMix mix
PROMPT_KINDS = ("static", "full")  # "a [v] ..." | static + dynamic ("... [u] motion")
TRAIN_KINDS = ("identity", "motion", "tokens")  # A1,B1 | B2 (A1,B1 frozen) | token embeddings only
OPTIMIZERS = ("adamw", "adamw8bit")  # torch's AdamW | bitsandbytes' AdamW8bit


@dataclass
class LoraConfig:
    # Table 1 ablates LoRA-1 against LoRA-8 and calls rank 8 "high rank"; the two-stage rows keep
    # "the same rank", so 8 is the default.
    rank: int = 8
    alpha: float | None = None  # scale s = alpha / rank; None means s = 1
    targets: list[str] | None = None  # module-name patterns; None = the backbone's default

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


@dataclass
class StageConfig:
    name: str
    data: str  # one of DATA_KINDS
    prompt: str  # one of PROMPT_KINDS
    train: str  # one of TRAIN_KINDS
    steps: int
    coef_dropout: float = 0.0  # Bernoulli drop probability on the trained coefficients (sec. 3.4.2)
    mixed_clip_prob: float = 0.5  # data="mixed": chance that a sample is the clip, not one frame
    # train="motion" only: also train the identity basis A. Not the paper's method, which freezes A1
    # so that motion is a residual in its span; on the toy base that span, learned from single
    # frames, could not hold the concept's path at rank 8 (2026-11-21; docs/research-notes.md).
    train_basis: bool = False


@dataclass
class RegConfig:
    """The paper's regularisers (sec. 3.4), each switchable."""

    prior_preservation: bool = True
    prior_videos: int = 8  # generated once by the base model, cached on disk
    prior_ratio: float = 0.25  # share of each batch drawn from the prior videos (ours)
    prior_weight: float = 1.0  # weight of their loss
    prior_steps: int = 20  # sampler steps used to make them
    token_mask_prob: float = 0.1  # random text tokens masked (ours: the paper gives no rate)
    prompt_dropout: float = 0.1  # whole prompt dropped, for classifier-free guidance
    self_conditioning: bool = True
    self_cond_prob: float = 0.9  # Table 5
    # Several concepts only (sec. 4, composition): share of micro-batches made of two concepts'
    # clips side by side or stacked, with the composed prompt, against identity leakage.
    stitch_prob: float = 0.2
    # ... and, when both stitched concepts have a foreground mask, on one shared background (the
    # first concept's) instead of two half-backgrounds (sec. 4: "optionally with backgrounds removed").
    stitch_remove_background: bool = True


@dataclass
class OptimConfig:
    lr: float = 1e-4  # constant
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    grad_clip: float = 0.05
    batch_size: int = 8
    micro_batch: int | None = None  # gradient accumulation when memory is short; None = batch_size
    token_lr: float | None = None  # train concept-token embeddings at this lr (paper: 1e-5); None = frozen
    optimizer: str = "adamw"  # one of OPTIMIZERS; adamw8bit keeps AdamW's moments in 8 bits (bitsandbytes)


@dataclass
class FlowConfig:
    timesteps: str = "logit-normal"  # or "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    # A base of experts by timestep (Wan 2.2 T2V-A14B): "balanced" gives the experts the samples of a
    # step in turn, each drawn from the distribution above restricted to its expert's range; "shared"
    # draws every sample from the whole distribution (an expert then gets the share its range holds);
    # an expert's name ("high_noise", "low_noise") trains that expert alone. Other bases ignore it.
    experts: str = "balanced"


EXPERT_MODES = ("balanced", "shared")


@dataclass
class TrainConfig:
    method: str = "setseq"
    lora: LoraConfig = field(default_factory=LoraConfig)
    stages: list[StageConfig] = field(default_factory=list)
    reg: RegConfig = field(default_factory=RegConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    seed: int = 0
    checkpoint_every: int = 50
    validate_every: int = 0  # write a sample video every N steps (0 = never)
    # How the run uses its hardware, not what it learns: a checkpoint resumes with either setting.
    compile: bool = False  # torch.compile each transformer block
    shard: bool = False  # under torchrun: FSDP2-shard the transformer's blocks across the processes
    # Recompute each transformer block's activations in the backward pass instead of keeping them:
    # a diffusers base at full geometry does not fit otherwise (docs/benchmarks.md). The toy ignores it.
    gradient_checkpointing: bool = True
    # Keep the text encoder and the VAE on the device for the whole run. Off: the run encodes every
    # prompt and clip window it can draw first, then parks both in CPU memory (a diffusers base).
    keep_encoders: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.lora.rank < 1:
            raise SetseqError(f"rank must be at least 1, got {self.lora.rank}.")
        if not self.stages:
            raise SetseqError("the configuration has no training stages.")
        for s in self.stages:
            if s.data not in DATA_KINDS or s.prompt not in PROMPT_KINDS or s.train not in TRAIN_KINDS:
                raise SetseqError(
                    f"stage {s.name!r} has data={s.data!r}, prompt={s.prompt!r}, train={s.train!r}; "
                    f"expected data in {DATA_KINDS}, prompt in {PROMPT_KINDS}, train in {TRAIN_KINDS}."
                )
            if s.steps < 0:
                raise SetseqError(f"stage {s.name!r} has {s.steps} steps; steps cannot be negative.")
            if s.train_basis and s.train != "motion":
                raise SetseqError(f"stage {s.name!r} trains {s.train!r}; train_basis applies to a motion stage only.")
            if not 0.0 <= s.coef_dropout < 1.0:
                raise SetseqError(f"stage {s.name!r} has dropout {s.coef_dropout}; use a value in [0, 1).")
        if self.optim.batch_size < 1:
            raise SetseqError(f"batch size must be at least 1, got {self.optim.batch_size}.")
        mb = self.optim.micro_batch
        if mb is not None and (mb < 1 or self.optim.batch_size % mb):
            raise SetseqError(f"micro batch {mb} must divide the batch size {self.optim.batch_size}.")
        if self.optim.optimizer not in OPTIMIZERS:
            raise SetseqError(f"unknown optimizer {self.optim.optimizer!r}; use one of {', '.join(OPTIMIZERS)}.")
        if self.flow.shift <= 0:
            raise SetseqError(f"the timestep shift must be positive, got {self.flow.shift}.")
        if self.flow.timesteps not in ("logit-normal", "uniform"):
            raise SetseqError(f"unknown timestep sampling {self.flow.timesteps!r}; use logit-normal or uniform.")


# --------------------------------------------------------------------------------------------
# Presets: the rows of the paper's Tables 1 and 2.
# --------------------------------------------------------------------------------------------


def _no_reg() -> RegConfig:
    return RegConfig(
        prior_preservation=False, token_mask_prob=0.0, prompt_dropout=0.0, self_conditioning=False, stitch_prob=0.0
    )


def preset_setseq() -> TrainConfig:
    """The full method: set stage then sequence stage, all four regularisers, 600 + 900 steps."""
    return TrainConfig(
        method="setseq",
        stages=[
            StageConfig("set", data="frames", prompt="static", train="identity", steps=600, coef_dropout=0.8),
            StageConfig("sequence", data="clip", prompt="full", train="motion", steps=900, coef_dropout=0.5),
        ],
    )


def preset_two_stage() -> TrainConfig:
    """Table 1 '+ Two-Stage': both stages, no regularisers; sec. 8 trains it 150 + 400 steps."""
    return TrainConfig(
        method="two-stage",
        reg=_no_reg(),
        stages=[
            StageConfig("set", data="frames", prompt="static", train="identity", steps=150),
            StageConfig("sequence", data="clip", prompt="full", train="motion", steps=400),
        ],
    )


def preset_lora() -> TrainConfig:
    """DreamBooth-LoRA (Table 1 LoRA-r, Table 2): one LoRA on the whole clip with the full prompt.

    Unregularised, with the unregularised budget of sec. 8 (150 + 400 steps) in one stage.
    """
    return TrainConfig(
        method="lora",
        reg=_no_reg(),
        stages=[
            StageConfig("lora", data="clip", prompt="full", train="identity", steps=550),
        ],
    )


def preset_dreammix() -> TrainConfig:
    """DreamMix: one LoRA trained on a mix of single frames (static prompt) and the clip."""
    return TrainConfig(
        method="dreammix",
        reg=_no_reg(),
        stages=[
            StageConfig("mixed", data="mixed", prompt="full", train="identity", steps=550),
        ],
    )


def preset_textual_inversion() -> TrainConfig:
    """Textual Inversion: only the concept-token embeddings are learned (no LoRA is applied)."""
    cfg = TrainConfig(
        method="textual-inversion",
        reg=_no_reg(),
        stages=[
            StageConfig("tokens", data="clip", prompt="full", train="tokens", steps=550),
        ],
    )
    cfg.optim.token_lr = 5e-3  # textual inversion's usual rate; embeddings move slowly at 1e-4
    return cfg


# Steps of a two-stage method (set, sequence) at the toy base's scale; a one-stage method trains
# their sum, so every row of a toy-scale ablation gets the same budget.
TOY_STEPS = (200, 550)


def toy_scale(cfg: TrainConfig) -> TrainConfig:
    """Move a method's preset to the embedded toy base's scale (a 2.7M-parameter DiT, not 11.5B).

    What changes is what suits a small model; the method (stages, what each trains, regularisers,
    dropout) stays:
    - rank x 8 (the paper's 8 becomes 64, half the toy's width of 128): stage 2's motion lives in
      span(A1), and at rank 8 or 32 that span, learned from single frames, cannot hold a concept's
      path (sec. 3.4.2's "high rank", read at this width; measured in docs/toy-model.md);
    - a 10x learning rate (the concept-token rate, where set, stays), gradient clip 1, batch 4;
    - twice the prompt dropout (0.2 for the paper's 0.1; none stays none): the concept must also be
      learned without its prompt, or guidance, which pushes along cond - uncond, pushes the
      training clip's background along with the concept, and a prompted new background is not
      drawn (measured in docs/toy-model.md);
    - TOY_STEPS: 200 + 550 steps for two stages, 750 for one (the full demo fits 10 minutes on 2
      CPU cores);
    - uniform timesteps, the base's own pretraining distribution (logit-normal rarely draws the high
      noise levels at which a path is decided).

    Args:
        cfg: a preset with one or two stages; changed in place.

    Returns:
        cfg.

    Raises:
        SetseqError: for a preset with more than two stages.
    """
    if len(cfg.stages) not in (1, 2):
        raise SetseqError(f"the toy scale knows one- and two-stage methods, not {len(cfg.stages)} stages.")
    cfg.lora.rank *= 8
    cfg.optim.lr *= 10
    cfg.optim.grad_clip, cfg.optim.batch_size = 1.0, 4
    cfg.reg.prompt_dropout *= 2
    cfg.flow.timesteps = "uniform"
    steps = TOY_STEPS if len(cfg.stages) == 2 else (sum(TOY_STEPS),)
    for stage, n in zip(cfg.stages, steps):
        stage.steps = n
    return cfg


def preset_toy() -> TrainConfig:
    """Set-and-Sequence at the embedded toy base's scale: `toy_scale(preset_setseq())`.

    Rank 64, lr 1e-3, prompt dropout 0.2, 200 + 550 steps; the paper's stages, regularisers and
    coefficient dropout (`toy_scale` says why).
    """
    cfg = toy_scale(preset_setseq())
    cfg.method = "toy"
    return cfg


PRESETS = {
    "setseq": preset_setseq,
    "toy": preset_toy,
    "lora": preset_lora,
    "two-stage": preset_two_stage,
    "dreammix": preset_dreammix,
    "textual-inversion": preset_textual_inversion,
}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise SetseqError(f"unknown method {name!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]()


# --------------------------------------------------------------------------------------------
# Config files (TOML): any field of TrainConfig, nested by section, e.g.
#   method = "setseq"
#   [lora]  rank = 16
#   [optim] batch_size = 4
#   [stages.sequence] coef_dropout = 0.3   (changes the preset's stage named "sequence")
#   [[stages]] name = "set" ...            (replaces the preset's stages)
# --------------------------------------------------------------------------------------------


def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise SetseqError(f"unknown setting {where}{key!r} in the config file; known: {', '.join(names)}.")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SetseqError(f"setting {where}{key!r} must be a table, got {value!r}.")
            _merge(current, value, f"{where}{key}.")
        elif key == "stages" and isinstance(value, dict):
            _merge_stages(obj, value)
        elif key == "stages":
            try:
                setattr(obj, key, [StageConfig(**s) for s in value])
            except TypeError as e:
                raise SetseqError(f"a [[stages]] entry in the config file is malformed: {e}.") from None
        elif key == "betas":
            setattr(obj, key, tuple(value))
        else:
            _check_type(current, value, f"{where}{key}")
            setattr(obj, key, value)


def _merge_stages(cfg: TrainConfig, tables: dict[str, Any]) -> None:
    """[stages.NAME] tables: each changes the preset's stage of that name, the others stay."""
    by_name = {s.name: s for s in cfg.stages}
    for name, table in tables.items():
        if name not in by_name:
            raise SetseqError(
                f"the config file sets [stages.{name}], but method {cfg.method!r} has no stage {name!r}; "
                f"its stages are {', '.join(by_name)}."
            )
        if not isinstance(table, dict):
            raise SetseqError(f"setting stages.{name} must be a table, got {table!r}.")
        _merge(by_name[name], table, f"stages.{name}.")


def _check_type(current: Any, value: Any, where: str) -> None:
    """A value of the setting's kind: a bool for a switch, a whole number for a count, a number for a
    rate, text for a choice (settings whose default is None take any value, as before)."""
    if isinstance(current, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(current, int):
        ok, what = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(current, float):
        ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(current, str):
        ok, what = isinstance(value, str), "text in quotes"
    else:
        ok, what = True, ""
    if not ok:
        raise SetseqError(f"setting {where!r} in the config file takes {what}, got {value!r}.")


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    p = Path(path)
    if not p.is_file():
        raise SetseqError(f"file {str(p)!r} does not exist.")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SetseqError(f"{str(p)!r} is not valid TOML: {e}.") from None


def load_config(path: str | Path | None, method: str | None = None, default: str = "setseq") -> TrainConfig:
    """The preset named by `method` (or by the file's `method`, else `default`), updated by the file.

    Args:
        path: a TOML file (see above), or None for the preset alone.
        method: a preset name that wins over the file's ``method``.
        default: the preset when neither names one.

    Raises:
        SetseqError: an unknown method, setting or stage name, or a value of the wrong kind.
    """
    values: dict[str, Any] = read_toml(path) if path is not None else {}
    cfg = preset(method or values.get("method", default))
    values = copy.deepcopy(values)
    values.pop("method", None)
    _merge(cfg, values, "")
    return cfg
