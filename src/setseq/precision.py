"""Compute precision on the CPU: bf16 autocast over float32 master weights where it pays.

Xeons with AMX or AVX-512 BF16 run bf16 matrix products several times faster than float32 (on the
development machines, 2026-12-07: a 4096 x 1024 x 1024 matmul at about 900 GFLOP/s in bf16 against
144 in float32). Under `torch.autocast("cpu", torch.bfloat16)` the linear layers and attention
compute in bf16 while the weights, their gradients and the optimiser state stay float32 (mixed
precision as in Micikevicius et al. 2018, with bf16 needing no loss scaling). On a CPU without
these units bf16 is emulated and slower, so there everything stays float32.

`SETSEQ_PRECISION=fp32|bf16|auto` (default auto) overrides the detection; `describe()` says which
path runs. benchmarks/toy_step.py measures what it buys per model size (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from setseq.errors import SetseqError

CHOICES = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix units (AMX tiles or AVX-512 BF16), as torch sees them."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without the probes: read the kernel's flags
        try:
            flags = open("/proc/cpuinfo").read()
        except OSError:
            return False
        return " amx_bf16" in flags or " avx512_bf16" in flags


def choice() -> str:
    """The requested precision from SETSEQ_PRECISION, checked.

    Raises:
        SetseqError: for a value other than auto, fp32 or bf16.
    """
    value = os.environ.get("SETSEQ_PRECISION", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise SetseqError(f"SETSEQ_PRECISION must be one of {', '.join(CHOICES)}, got {value!r}.")
    return value


# Below this width bf16 autocast does not pay on the CPU: the matrices are too small for the bf16
# units to win back the casts (benchmarks/toy_step.py, docs/benchmarks.md).
MIN_WIDTH = 256


def use_bf16(device: str | torch.device = "cpu", width: int | None = None) -> bool:
    """Whether work on `device` runs under bf16 autocast: on a CPU with bf16 units, for a model of
    `width` >= MIN_WIDTH (None: any), or wherever SETSEQ_PRECISION=bf16 asks for it. Other devices
    keep their own dtype handling (the real backbones load their weights in the dtype their flags
    name)."""
    if torch.device(device).type != "cpu":
        return False
    want = choice()
    wide = width is None or width >= MIN_WIDTH
    return want == "bf16" or (want == "auto" and wide and cpu_has_bf16())


def describe(device: str | torch.device = "cpu", width: int | None = None) -> str:
    """One line saying which precision path runs, for logs and run summaries."""
    if use_bf16(device, width):
        return "bf16 autocast over float32 weights"
    if torch.device(device).type != "cpu" or choice() == "fp32":
        return "float32"
    if not cpu_has_bf16():
        return "float32 (this CPU has no bf16 matrix units)"
    return f"float32 (bf16 autocast pays from width {MIN_WIDTH}; this model is {width} wide)"


@contextlib.contextmanager
def autocast(enabled: bool) -> Iterator[None]:
    """bf16 autocast on the CPU when enabled, else nothing; the weights stay float32 either way."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
        yield
