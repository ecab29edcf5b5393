"""ODE solvers for the probability-flow ODE `dx / dsigma = v(x, sigma)`, integrated from sigma = 1 (noise) to 0.

The signature follows k-diffusion (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"): `sample_xxx(velocity_fn, noise, sigmas, callback=None)`, where `sigmas` is the full decreasing schedule
including the terminal value (e.g. diffusers' `FlowMatchEulerDiscreteScheduler.sigmas`, or
:func:`seedkit.flow.timesteps.flow_sigmas`), and `velocity_fn(x, sigma)` gets `x: [B, ...]` and `sigma: [B]`.

* :func:`sample_euler`: explicit Euler, first order; step for step what `FlowMatchEulerDiscreteScheduler.step` does.
* :func:`sample_heun`: Heun's method (explicit trapezoidal rule), second order, two velocity evaluations per step
  (Karras et al. 2022, Algorithm 1). Unlike diffusion denoisers, a velocity field is well defined at sigma = 0,
  so by default the last step is a full Heun step as well; `euler_last_step=True` ends with an Euler step into
  sigma = 0 as k-diffusion and diffusers' `FlowMatchHeunDiscreteScheduler` do (and then matches that scheduler).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from seedkit.flow.path import expand_sigma

__all__ = ["SolverStep", "sample_euler", "sample_heun"]

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SolverStep:
    """What a solver callback sees after each step.

    Attributes:
        index: the step number, from 0.
        sigma: `[]` (`[B]` for per-row schedules) the noise level the step started at.
        sigma_next: `[]` (`[B]`) the noise level the step ended at.
        sample: `[B, ...]` the state after the step.
        velocity: `[B, ...]` the velocity used for the update (Heun: the averaged one).
    """

    index: int
    sigma: torch.Tensor
    sigma_next: torch.Tensor
    sample: torch.Tensor
    velocity: torch.Tensor


def _check_sigmas(sigmas: torch.Tensor, x: torch.Tensor) -> None:
    if sigmas.ndim not in (1, 2) or sigmas.shape[0] < 2:
        raise ValueError(
            f"sigmas must be a schedule [N + 1] or one per row [N + 1, B] with at least 2 levels; got shape "
            f"{tuple(sigmas.shape)}"
        )
    if sigmas.ndim == 2 and sigmas.shape[1] != x.shape[0]:
        raise ValueError(f"per-row sigmas [N + 1, B] need B = {x.shape[0]} columns; got shape {tuple(sigmas.shape)}")


def _batch_sigma(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(device=x.device, dtype=x.dtype).expand(x.shape[0])


def _step_size(sigma: torch.Tensor, sigma_next: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sigma_next - sigma`` broadcastable against ``x [B, ...]`` (a scalar, or ``[B, 1, ..., 1]`` per row)."""
    return expand_sigma((sigma_next - sigma).to(x.dtype), x)


@torch.no_grad()
def sample_euler(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[SolverStep], None] | None = None,
) -> torch.Tensor:
    """Explicit Euler: `x <- x + (sigma_next - sigma) * v(x, sigma)`.

    Args:
        velocity_fn: `(x [B, ...], sigma [B]) -> velocity [B, ...]`.
        noise: `[B, ...]` the starting state at `sigmas[0]`.
        sigmas: `[N + 1]` decreasing noise levels, the last one usually 0; or `[N + 1, B]`, one schedule per row
            (e.g. each row brought from its own start level to its own end level).
        callback: called with a :class:`SolverStep` after each of the N steps.

    Returns:
        `[B, ...]` the state at `sigmas[-1]`.
    """
    _check_sigmas(sigmas, noise)
    x = noise
    for index in range(sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        velocity = velocity_fn(x, _batch_sigma(sigma, x))
        x = x + _step_size(sigma, sigma_next, x) * velocity
        if callback is not None:
            callback(SolverStep(index=index, sigma=sigma, sigma_next=sigma_next, sample=x, velocity=velocity))
    return x


@torch.no_grad()
def sample_heun(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[SolverStep], None] | None = None,
    euler_last_step: bool = False,
) -> torch.Tensor:
    """Heun's second-order method: an Euler predictor, then the trapezoidal corrector
    `x <- x + (sigma_next - sigma) * (v(x, sigma) + v(x_euler, sigma_next)) / 2`.

    Arguments and return value as :func:`sample_euler`; costs 2 velocity evaluations per step.
    `euler_last_step`: take a plain Euler step when `sigma_next == 0` (k-diffusion / diffusers behaviour; one
    velocity evaluation fewer, still second order overall since only one step is first order).
    """
    _check_sigmas(sigmas, noise)
    x = noise
    for index in range(sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        step = _step_size(sigma, sigma_next, x)
        velocity = velocity_fn(x, _batch_sigma(sigma, x))
        x_euler = x + step * velocity
        if euler_last_step and bool((sigma_next == 0.0).all()):
            x = x_euler
            if callback is not None:
                callback(SolverStep(index=index, sigma=sigma, sigma_next=sigma_next, sample=x, velocity=velocity))
            continue
        velocity_next = velocity_fn(x_euler, _batch_sigma(sigma_next, x))
        averaged_velocity = 0.5 * (velocity + velocity_next)
        x = x + step * averaged_velocity
        if callback is not None:
            callback(SolverStep(index=index, sigma=sigma, sigma_next=sigma_next, sample=x, velocity=averaged_velocity))
    return x
