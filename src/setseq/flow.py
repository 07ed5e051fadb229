"""Rectified flow (flow matching with straight paths), model-agnostic and for tensors of any rank.

    x_t = (1 - t) x_0 + t eps,    t in [0, 1],  t = 0 data, t = 1 noise
    v   = d x_t / d t = eps - x_0                      (the regression target)
    L   = E || v_theta(x_t, t) - v ||^2                 (paper eq. 1; `training_loss`)

Sampling integrates dx/dt = v from t = 1 to t = 0 with Euler steps (`euler_sample`), or hands each
velocity to a diffusers scheduler (`scheduler_sample`: a model folder's own sampler, e.g. Wan's UniPC);
classifier-free guidance mixes the conditional and unconditional velocities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import torch


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against x."""
    return t.reshape(t.shape[0], *([1] * (x.ndim - 1))).to(x.dtype)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    tb = _bcast(t, x0)
    return (1.0 - tb) * x0 + tb * noise


def target_velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def predict_x0(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean sample implied by a velocity: x_0 = x_t - t v (used for self-conditioning)."""
    return x_t - _bcast(t, x_t) * v


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3-style resolution shift: more time near the noise end when shift > 1."""
    if shift == 1.0:
        return t
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_timesteps(
    n: int,
    kind: str = "logit-normal",
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training timesteps (n,) in (0, 1): uniform, or logit-normal (sigmoid of a Gaussian)."""
    if kind == "uniform":
        t = torch.rand(n, generator=generator, device=device)
    elif kind == "logit-normal":
        t = torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))
    else:
        raise ValueError(f"unknown timestep sampling {kind!r}")
    return shift_time(t, shift)


def fraction_at_least(
    t: float, kind: str = "logit-normal", mean: float = 0.0, std: float = 1.0, shift: float = 1.0
) -> float:
    """The probability that `sample_timesteps` (same settings) draws a time >= t, in closed form.

    The shift is increasing, so t' >= t exactly when the unshifted draw is >= `unshift_time(t)`.
    """
    if t <= 0.0 or t >= 1.0:
        return float(t <= 0.0)
    u = unshift_time(t, shift)
    if kind == "uniform":
        return 1.0 - u
    return 1.0 - NormalDist(mean, std).cdf(math.log(u / (1.0 - u)))  # sigmoid(mean + std z) >= u


def loss_per_sample(v_pred: torch.Tensor, v_target: torch.Tensor) -> torch.Tensor:
    """Mean squared velocity error per sample: (B, ...) -> (B,)."""
    return (v_pred.float() - v_target.float()).pow(2).flatten(1).mean(1)


LOSS_SPACES = ("velocity", "x0")


def training_loss(
    model_out: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, space: str = "velocity"
) -> torch.Tensor:
    """The training loss per sample, (B, ...) -> (B,), of a velocity prediction at x_t = interpolate(x0, noise, t).

    Args:
        model_out: v_theta(x_t, t) (B, ...).
        x0, noise: the clean sample and the noise x_t was made of (B, ...); t: (B,).
        space: "velocity", flow matching's || v_theta - (eps - x_0) ||^2 (eq. 1, what real video DiTs
            predict), or "x0", the error of the clean sample it implies, || x_t - t v_theta - x_0 ||^2
            (for models that predict x_0, where the velocity loss would weigh low noise by 1/t^2).

    Raises:
        ValueError: for another space.
    """
    if space == "velocity":
        return loss_per_sample(model_out, target_velocity(x0, noise))
    if space == "x0":
        return loss_per_sample(predict_x0(interpolate(x0, noise, t), model_out, t), x0)
    raise ValueError(f"unknown loss space {space!r}; one of {LOSS_SPACES}")


def guide(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + g (v_c - v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)


def unshift_time(t: float, shift: float) -> float:
    """The inverse of `shift_time`: the unshifted time that the shift maps to t."""
    return t / (shift - (shift - 1.0) * t)


def schedule(
    steps: int, shift: float = 1.0, device: torch.device | str | None = None, start: float = 1.0
) -> torch.Tensor:
    """Sampling times (steps + 1,) from `start` (1: pure noise) down to 0, evenly spaced before the shift."""
    return shift_time(torch.linspace(unshift_time(start, shift), 0.0, steps + 1, device=device), shift)


VelocityFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@torch.no_grad()
def euler_sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    shift: float = 1.0,
    self_condition: bool = False,
    callback: Callable[[int], None] | None = None,
    start: float = 1.0,
) -> torch.Tensor:
    """Integrate from noise (t = 1), or from a partly noised sample at t = `start`, to data (t = 0).

    Args:
        velocity: v(x_t, t, self_cond) with t of shape (B,); self_cond is the previous step's
            x_0 estimate when `self_condition` is set, else None. Guidance lives in this callable.
        noise: the starting sample (B, ...): pure noise, or x_start at t = `start` (SDEdit-style).
        steps: number of Euler steps.
        shift: timestep shift of the schedule.
        self_condition: feed each step's x_0 estimate back to the next (Chen et al. 2023).
        callback: called with the step index after each step (progress bars).
        start: the time of the starting sample, in (0, 1].
    """
    ts = schedule(steps, shift, noise.device, start)
    x, x0_prev = noise, None
    for i in range(steps):
        t = ts[i].expand(x.shape[0])
        v = velocity(x, t, x0_prev if self_condition else None)
        if self_condition:
            x0_prev = predict_x0(x, v, t)
        x = x + (ts[i + 1] - ts[i]) * v
        if callback is not None:
            callback(i)
    return x


@torch.no_grad()
def scheduler_sample(
    velocity: VelocityFn, noise: torch.Tensor, scheduler, callback: Callable[[int], None] | None = None
) -> torch.Tensor:
    """Integrate from noise to data with a diffusers scheduler whose timesteps are set, as a pipeline's loop does.

    At each of the scheduler's timesteps tau (diffusers' time, 1000 sigma) the model's velocity at t = tau /
    1000 goes to `scheduler.step`, which moves x to the next noise level (flow-match Euler: one Euler step
    between its sigmas; UniPC: a multistep predictor-corrector on the x_0 estimates x - sigma v). The
    model reads tau itself, not sigma: UniPC's timesteps are sigma * 1000 rounded down.

    Args:
        velocity: v(x_t, t, None) with t of shape (B,); guidance lives in this callable.
        noise: the starting sample (B, ...) at the scheduler's first sigma (1: pure noise).
        scheduler: a diffusers scheduler after `set_timesteps` (and `set_begin_index(0)`).
        callback: called with the step index after each step (progress bars).
    """
    # the times once, on the host and in float64, so that velocity's 1000 t is each timestep exactly
    ts = scheduler.timesteps.to("cpu", torch.float64) / 1000.0
    x = noise
    for i, timestep in enumerate(scheduler.timesteps):
        v = velocity(x, ts[i].expand(x.shape[0]), None)
        x = scheduler.step(v, timestep, x, return_dict=False)[0]
        if callback is not None:
            callback(i)
    return x
