"""The reverse-time SDE with a rectified flow's marginals, one Euler-Maruyama step at a time.

For `x_t = (1 - t) x_0 + t * noise`, `v = noise - x_0` and `t` running from 1 to 0, the SDE

    dx = [v(x, t) + g(t)^2 / (2 t) * (x + (1 - t) v(x, t))] dt + g(t) dW,      g(t) = a * sqrt(t / (1 - t))

has the probability-flow ODE's marginals for any `a` (`x + (1 - t) v` is the predicted noise, `-noise / t` the
score; the form is Flow-GRPO's, Liu et al. 2025, arXiv:2505.05470). `a = 0` is the ODE. Each step is a Gaussian, so
it has a log-density (what a policy gradient needs, :mod:`seedkit.post_training.flow_grpo`), and the noise it
injects lets a sampler correct the errors of its earlier steps instead of carrying them (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", section 4: stochastic sampling helps imperfect
models). Knows nothing about networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SDEStepOutput", "flow_sde_step", "max_sigma_for", "sde_noise_scale"]


@dataclass
class SDEStepOutput:
    """One Euler-Maruyama step of the marginal-preserving SDE.

    Attributes:
        prev_sample: ``[B, ...]`` the state at the next (lower) noise level.
        mean: ``[B, ...]`` the Gaussian's mean.
        std: ``[]`` its standard deviation (the same for every element).
        log_prob: ``[B]`` log-density of ``prev_sample``, averaged over the non-batch elements (a per-element scale
            keeps the policy ratio well conditioned for any latent size, as Flow-GRPO does).
    """

    prev_sample: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    log_prob: torch.Tensor


def sde_noise_scale(sigma: torch.Tensor, noise_level: float, max_sigma: float) -> torch.Tensor:
    """``g(sigma) = a * sqrt(sigma / (1 - sigma))``, with sigma capped at ``max_sigma`` where it diverges (t = 1)."""
    sigma = torch.clamp(sigma, max=max_sigma)
    return noise_level * torch.sqrt(sigma / (1.0 - sigma))


def max_sigma_for(sigmas: torch.Tensor) -> float:
    """The largest sigma below 1 in a schedule: where ``g`` is evaluated at the first step (it diverges at 1)."""
    below_one = sigmas[sigmas < 1.0]
    if below_one.numel() == 0:
        raise ValueError("a schedule needs at least one sigma below 1")
    return float(below_one.max())


def flow_sde_step(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    noise_level: float,
    max_sigma: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> SDEStepOutput:
    """Step ``sample`` from ``sigma`` down to ``sigma_next`` along the SDE; score ``prev_sample`` when given.

    Args:
        velocity: ``[B, ...]`` the policy's velocity at ``(sample, sigma)``.
        sample: ``[B, ...]`` the current state ``x_sigma``.
        sigma, sigma_next: ``[]`` noise levels, ``sigma > sigma_next >= 0``.
        noise_level: ``a`` in ``g``; 0 would make the step the Euler ODE step (and the density degenerate).
        max_sigma: cap for sigma inside ``g`` (Flow-GRPO uses the schedule's second sigma).
        prev_sample: the next state to score (training); None draws it (rollout).
        generator: draws the step's standard normal noise when neither ``prev_sample`` nor ``noise`` is given.
        noise: ``[B, ...]`` that standard normal draw, made by the caller (e.g. with one generator per sample).
    """
    if noise_level <= 0:
        raise ValueError(f"noise_level must be > 0 for a stochastic step with a density; got {noise_level}")
    sigma = sigma.to(torch.float32)
    sigma_next = sigma_next.to(torch.float32)
    dt = sigma_next - sigma  # negative: noise goes down
    velocity = velocity.float()
    sample = sample.float()
    scale = sde_noise_scale(sigma, noise_level, max_sigma)
    predicted_noise = sample + (1.0 - sigma) * velocity
    mean = sample + (velocity + scale**2 / (2.0 * sigma) * predicted_noise) * dt
    std = scale * torch.sqrt(-dt)
    if prev_sample is None:
        if noise is None:
            noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        prev_sample = mean + std * noise
    log_density = -((prev_sample.detach() - mean) ** 2) / (2.0 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return SDEStepOutput(prev_sample, mean, std, log_density.flatten(1).mean(dim=1))
