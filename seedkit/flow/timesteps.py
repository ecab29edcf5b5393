"""Noise-level (sigma) sampling for training and sigma schedules for inference.

Training samplers draw one sigma per sample:

* :class:`UniformSampler`: sigma ~ U(0, 1), the plain rectified-flow choice.
* :class:`LogitNormalSampler`: sigma = sigmoid(n), n ~ N(mean, std^2), which puts more weight on the middle of the
  path (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis", SD3).

Both can be confined to a noise interval ``sigma_range = (low, high)``: the drawn (and shifted) sigma is mapped
affinely onto it, which trains an expert for one part of the path (eDiff-I's expert denoisers, Balaji et al. 2022;
Wan 2.2's high-noise expert, which lays out the scene and its motion, and low-noise expert, which refines detail).

Both accept a ``shift``: larger images and longer videos keep more signal at a given sigma, so SD3 / Flux shift
sigma towards the noise end by ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)``. The shift can be fixed, or
resolution-aware: :func:`resolution_shift_mu` interpolates ``mu = log(shift)`` linearly in the token count as Flux
does, and :func:`time_shift` applies it exactly as diffusers' ``FlowMatchEulerDiscreteScheduler`` does with
``use_dynamic_shifting=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "shift_sigmas",
    "time_shift",
    "resolution_shift_mu",
    "resolution_shift",
    "flow_sigmas",
    "TimestepSampler",
    "UniformSampler",
    "LogitNormalSampler",
    "get_timestep_sampler",
]


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Shift noise levels towards the noise end: `shift * sigma / (1 + (shift - 1) * sigma)`.

    `shift = 1` is the identity; `sigma = 0` and `sigma = 1` are fixed points. Same shape as `sigmas`.
    Equivalent to :func:`time_shift` with `mu = log(shift)`.
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0; got {shift}")
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def time_shift(sigmas: torch.Tensor, mu: float, exponent: float = 1.0) -> torch.Tensor:
    """Flux's exponential time shift: `e^mu / (e^mu + (1 / sigma - 1) ** exponent)`. Same shape as `sigmas`.

    With `exponent = 1` this is :func:`shift_sigmas` with `shift = e^mu`; it is what diffusers'
    `FlowMatchEulerDiscreteScheduler.set_timesteps(mu=...)` applies when `use_dynamic_shifting` is on.
    """
    return math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0) ** exponent)


def resolution_shift_mu(
    num_tokens: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """`mu = log(shift)` for a sequence of `num_tokens` visual tokens (Flux's linear rule, extrapolated outside).

    The defaults are diffusers' `FlowMatchEulerDiscreteScheduler` defaults, so pipelines may pass the scheduler's
    `base_image_seq_len`, `max_image_seq_len`, `base_shift` and `max_shift` config values straight through.
    """
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive; got {num_tokens}")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (num_tokens - base_seq_len)


def resolution_shift(num_tokens: int, **kwargs) -> float:
    """The multiplicative shift `e^mu` for `num_tokens` visual tokens; kwargs as :func:`resolution_shift_mu`."""
    return math.exp(resolution_shift_mu(num_tokens, **kwargs))


def flow_sigmas(
    num_inference_steps: int,
    shift: float = 1.0,
    mu: float | None = None,
    sigma_max: float = 1.0,
    sigma_min: float = 1e-3,
) -> torch.Tensor:
    """The inference schedule: `num_inference_steps + 1` decreasing sigmas ending in 0.

    Sigmas are spaced linearly from `sigma_max` to `sigma_min`, then shifted, by `time_shift(mu)` when `mu` is
    given (resolution-aware) or by `shift_sigmas(shift)` otherwise; a terminal 0 is appended. This reproduces
    diffusers' `FlowMatchEulerDiscreteScheduler.sigmas` when given that scheduler's `sigma_max` / `sigma_min`.

    Returns:
        `[num_inference_steps + 1]` float32 sigmas.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1; got {num_inference_steps}")
    sigmas = torch.linspace(sigma_max, sigma_min, num_inference_steps, dtype=torch.float64)
    sigmas = time_shift(sigmas, mu) if mu is not None else shift_sigmas(sigmas, shift)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


@dataclass
class TimestepSampler:
    """Base class: draws training noise levels. Subclasses implement :meth:`sample_unshifted`.

    Attributes:
        shift: fixed multiplicative shift applied after sampling (1.0: none). Ignored when :meth:`sample` gets a
            `num_tokens`, which selects the resolution-aware shift instead.
        sigma_range: ``(low, high)``, ``0 <= low < high <= 1``: shifted sigmas ``s`` become ``low + (high - low) *
            s`` (:meth:`to_range`), so only that part of the path is trained.
    """

    shift: float = 1.0
    sigma_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        low, high = self.sigma_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"sigma_range must satisfy 0 <= low < high <= 1; got {tuple(self.sigma_range)}")

    def to_range(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Map sigmas in (0, 1) affinely onto ``sigma_range``."""
        low, high = self.sigma_range
        return low + (high - low) * sigmas

    def sample_unshifted(self, batch_size: int, generator: torch.Generator | None, device) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        num_tokens: int | None = None,
    ) -> torch.Tensor:
        """Draw `[batch_size]` sigmas in (0, 1) (in ``sigma_range``).

        Args:
            num_tokens: visual tokens per sample; when given, the shift is `resolution_shift(num_tokens)`
                (SD3 / Flux resolution-aware shifting) rather than `self.shift`.
        """
        sigmas = self.sample_unshifted(batch_size, generator, device)
        shift = resolution_shift(num_tokens) if num_tokens is not None else self.shift
        return self.to_range(shift_sigmas(sigmas, shift))


@dataclass
class UniformSampler(TimestepSampler):
    """sigma ~ U(0, 1) (then shifted)."""

    def sample_unshifted(self, batch_size, generator, device):
        return torch.rand(batch_size, generator=generator, device=device)


@dataclass
class LogitNormalSampler(TimestepSampler):
    """sigma = sigmoid(n), n ~ N(mean, std^2) (then shifted); SD3's default is mean 0, std 1."""

    mean: float = 0.0
    std: float = 1.0

    def sample_unshifted(self, batch_size, generator, device):
        normal = torch.randn(batch_size, generator=generator, device=device)
        return torch.sigmoid(self.mean + self.std * normal)


_SAMPLERS = {"uniform": UniformSampler, "logit_normal": LogitNormalSampler}


def get_timestep_sampler(name: str, **kwargs) -> TimestepSampler:
    """Build a sampler by name ("uniform" or "logit_normal"); kwargs go to its dataclass."""
    if name not in _SAMPLERS:
        raise ValueError(f"unknown timestep sampler {name!r}; valid names: {', '.join(_SAMPLERS)}")
    return _SAMPLERS[name](**kwargs)
