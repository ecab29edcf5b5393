"""Classifier-free guidance (Ho & Salimans 2022) and guidance rescale (Lin et al. 2024, "Common Diffusion Noise
Schedules and Sample Steps are Flawed", section 3.4)."""

from __future__ import annotations

import torch

__all__ = ["classifier_free_guidance", "rescale_guidance"]


def rescale_guidance(guided: torch.Tensor, conditional: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Pull the guided prediction's per-sample standard deviation back to the conditional one's.

    A large guidance scale inflates the prediction's scale and over-saturates outputs; rescaling matches the
    standard deviation (over all non-batch axes) to the conditional prediction and blends with the original by
    `guidance_rescale` in [0, 1]. Shapes `[B, ...]`.
    """
    if not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"guidance_rescale must be in [0, 1]; got {guidance_rescale}")
    dims = tuple(range(1, guided.ndim))
    std_conditional = conditional.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_conditional / std_guided)
    return guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided


def classifier_free_guidance(
    conditional: torch.Tensor,
    unconditional: torch.Tensor,
    guidance_scale: float,
    guidance_rescale: float = 0.0,
) -> torch.Tensor:
    """`uncond + scale * (cond - uncond)`, optionally rescaled (see :func:`rescale_guidance`).

    Works on any prediction type (velocity here). `guidance_scale = 1` returns the conditional prediction.
    Shapes `[B, ...]`.
    """
    guided = unconditional + guidance_scale * (conditional - unconditional)
    if guidance_rescale > 0.0:
        guided = rescale_guidance(guided, conditional, guidance_rescale)
    return guided
