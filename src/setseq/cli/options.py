"""What every command shares: the parser whose errors are one line, flag types that check their
range at parse time, device flags, and the parsing of list-valued flags (--seeds, --scale,
--rank-weights, --dropout)."""

from __future__ import annotations

import argparse
import math

from setseq.errors import SetseqError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line ("setseq: error: argument --lr: ...") and exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"setseq: error: {message}.\n")


# ============================================================================================
# flag ranges: checked at parse time, one sentence naming the flag and what it accepts
# ============================================================================================


def _number(kind: type, low: float | None = None, *, above: bool = False, what: str):
    """An argparse ``type=``: parse ``kind`` (int or float), finite, at least (or above) ``low``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and (low is None or (value > low if above else value >= low))
        if not ok:
            raise argparse.ArgumentTypeError(f"takes {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


COUNT = _number(int, 1, what="a whole number >= 1")
STEPS = _number(int, 0, what="a whole number >= 0")
SEED = _number(int, 0, what="a whole number >= 0")
POSITIVE = _number(float, 0, above=True, what="a number > 0")
SECONDS = _number(float, 0, what="a number of seconds >= 0")
DURATION = _number(float, 0, above=True, what="a number of seconds > 0")
SCALE = _number(float, what="a finite number")
GUIDANCE = _number(float, 0, what="a number >= 0")
PIXELS = _number(int, 0, what="a whole number of pixels >= 0")
PATCH_SHIFT_HELP = (
    "move the model's patch grid by a random offset below PIXELS at every sampling step, so that a "
    "pixel-space model's patch seams do not add up (default: the base model's; toy: 4; 0: off)"
)


def dropouts(text: str) -> list[float]:
    """An argparse ``type=`` for --dropout: comma-separated probabilities in [0, 1), one per stage."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"takes one number in [0, 1) per stage, separated by commas, got {text!r}")
    return values


dropouts.__name__ = "dropout"


def interval(text: str) -> tuple[float, float]:
    """An argparse ``type=`` for --guidance-interval: "LO,HI" with 0 <= LO < HI <= 1."""
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        lo, hi = 1.0, 0.0
    if not 0.0 <= lo < hi <= 1.0:
        raise argparse.ArgumentTypeError(f"takes two noise levels LO,HI with 0 <= LO < HI <= 1, got {text!r}")
    return lo, hi


interval.__name__ = "guidance interval"


# ============================================================================================
# list-valued flags read inside a command (their errors name the flag)
# ============================================================================================


def parse_seeds(text: str) -> list[int]:
    """--seeds "0,1,2" -> [0, 1, 2]; SetseqError on anything else."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise SetseqError(f"--seeds takes comma-separated integers, got {text!r}.") from None


def parse_scales(text: str | None) -> dict[str, float]:
    """--scale "u1=1.0,u2=0.5" -> {"u1": 1.0, "u2": 0.5}; {} for None; SetseqError on a bad pair."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise SetseqError(f"--scale takes name=number pairs separated by commas, got {item!r}.") from None
        if not sep:
            raise SetseqError(f"--scale takes name=number pairs separated by commas, got {item!r}.")
    return out


def parse_numbers(text: str, flag: str) -> list[float]:
    """ "1,0.5,0" -> [1.0, 0.5, 0.0]; SetseqError naming `flag` on anything else."""
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise SetseqError(f"{flag} takes comma-separated numbers, got {text!r}.") from None


# ============================================================================================
# device flags of the commands that load a model
# ============================================================================================

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def device_args(p: argparse.ArgumentParser) -> None:
    """Add --device, --dtype and the memory flags (--fp8-base, --blocks-to-swap) to a command."""
    p.add_argument("--device", help="device for a local model folder, e.g. cuda or cuda:1 (default: cpu)")
    p.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        help="weights dtype for a local model folder (default float32; bfloat16 halves memory)",
    )
    p.add_argument(
        "--fp8-base",
        action="store_true",
        help="store the transformer blocks' frozen linear weights in float8 with a per-tensor scale, computed "
        "in --dtype (half the memory of bf16 weights; the adapters stay float32)",
    )
    p.add_argument(
        "--blocks-to-swap",
        type=STEPS,
        metavar="N",
        help="keep N transformer blocks in CPU memory and copy each to the GPU as it runs (forward and "
        "backward; those blocks are gradient-checkpointed)",
    )


def device_options(a: argparse.Namespace) -> dict:
    """{device, dtype, fp8_base, blocks_to_swap} for ``load_backbone`` from the device flags."""
    import torch

    return {
        "device": a.device,
        "dtype": getattr(torch, DTYPES[a.dtype]) if a.dtype else None,
        "fp8_base": a.fp8_base or None,
        "blocks_to_swap": a.blocks_to_swap or None,
    }
