"""The rectified-flow probability path.

seedkit follows diffusers' convention so its flow-matching schedulers drive our models unchanged:

    x_t = (1 - sigma) * x_0 + sigma * noise,        sigma in [0, 1], sigma = 1 is pure noise,
    velocity target u = d x_t / d sigma = noise - x_0.

This is the conditional optimal-transport path of Lipman et al. 2023 ("Flow Matching for Generative Modeling") and
the rectified flow of Liu et al. 2023 ("Flow Straight and Fast"), written with the time axis reversed (sigma = 1 - t).
Nothing here knows about networks: these are the small contracts the trainer, the pipelines and the solvers share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PathSample", "sample_path", "expand_sigma", "velocity_to_x0", "velocity_to_noise"]


@dataclass
class PathSample:
    """A point on the path and its regression target.

    Attributes:
        x_t: `[B, ...]` the noised sample `(1 - sigma) * x_0 + sigma * noise`.
        sigma: `[B]` the noise level of each sample, in [0, 1].
        target: `[B, ...]` the velocity `noise - x_0` the model is trained to predict.
        x_0: `[B, ...]` the clean sample.
        noise: `[B, ...]` the Gaussian noise endpoint.
    """

    x_t: torch.Tensor
    sigma: torch.Tensor
    target: torch.Tensor
    x_0: torch.Tensor
    noise: torch.Tensor

    @property
    def timestep(self) -> torch.Tensor:
        """`[B]` the transformer's timestep input: `sigma * 1000`, as diffusers' flow-matching schedulers emit it."""
        return self.sigma * 1000.0


def expand_sigma(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample `sigma` (`[B]` or a scalar) to broadcast against `like` (`[B, ...]`).

    Returns a tensor of shape `[B, 1, ..., 1]` (or `[]` for a scalar sigma) in `like`'s dtype and device.
    """
    sigma = torch.as_tensor(sigma, device=like.device, dtype=like.dtype)
    if sigma.ndim == 0:
        return sigma
    if sigma.ndim != 1 or sigma.shape[0] != like.shape[0]:
        raise ValueError(
            f"sigma must be a scalar or have shape [B] = [{like.shape[0]}] to match the sample batch; "
            f"got shape {tuple(sigma.shape)}"
        )
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


def sample_path(x_0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> PathSample:
    """Interpolate between data and noise at `sigma`.

    Args:
        x_0: `[B, ...]` clean samples (e.g. normalised latents `[B, C, F, H, W]`).
        noise: `[B, ...]` standard Gaussian noise, same shape as `x_0`.
        sigma: `[B]` noise levels in [0, 1].

    Returns:
        A :class:`PathSample` with `x_t` and the velocity target `noise - x_0`.
    """
    if x_0.shape != noise.shape:
        raise ValueError(f"x_0 and noise must have the same shape; got {tuple(x_0.shape)} and {tuple(noise.shape)}")
    sigma_b = expand_sigma(sigma, x_0)
    x_t = (1.0 - sigma_b) * x_0 + sigma_b * noise
    return PathSample(x_t=x_t, sigma=torch.as_tensor(sigma), target=noise - x_0, x_0=x_0, noise=noise)


def velocity_to_x0(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The clean-sample estimate implied by a velocity prediction: `x_0 = x_t - sigma * v`. Shapes `[B, ...]`."""
    return x_t - expand_sigma(sigma, x_t) * velocity


def velocity_to_noise(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The noise estimate implied by a velocity prediction: `noise = x_t + (1 - sigma) * v`. Shapes `[B, ...]`."""
    return x_t + (1.0 - expand_sigma(sigma, x_t)) * velocity
