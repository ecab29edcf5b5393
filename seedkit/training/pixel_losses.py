"""Weight-free pixel losses shared by the VAE recipe and the transformer's decoder loss.

Videos are ``[B, C, F, H, W]`` in ``[-1, 1]``; none of these needs a downloaded network.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def gradient_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 between finite differences of ``[B, C, F, H, W]`` tensors along H, W (and F when F > 1)."""
    dims = [3, 4] + ([2] if target.shape[2] > 1 else [])
    losses = [(torch.diff(reconstruction, dim=d) - torch.diff(target, dim=d)).abs().mean() for d in dims]
    return torch.stack(losses).mean()


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels of ``[N, C, H, W]`` images (finest first) plus the low-pass residual, 2x2 average pooling."""
    pyramid = []
    current = images
    for _ in range(levels):
        if min(current.shape[-2:]) < 2:
            break
        low = F.avg_pool2d(current, 2, ceil_mode=True)
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        pyramid.append(current - up)
        current = low
    pyramid.append(current)
    return pyramid


def laplacian_loss(reconstruction: torch.Tensor, target: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Mean over levels of the L1 between Laplacian pyramids of every frame; level ``k`` is weighted ``2^k``."""
    def frames(video: torch.Tensor) -> torch.Tensor:
        return video.transpose(1, 2).flatten(0, 1)  # [B * F, C, H, W]

    pyramid_a = laplacian_pyramid(frames(reconstruction), levels)
    pyramid_b = laplacian_pyramid(frames(target), levels)
    losses = [(a - b).abs().mean() * 2.0**k for k, (a, b) in enumerate(zip(pyramid_a, pyramid_b))]
    return torch.stack(losses).mean()


def foreground_weights(video: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-pixel weights ``1 + strength * mean_c |x - median of its frame|``, shape ``[B, 1, F, H, W]``.

    Pixels that differ from the frame's dominant colour (objects on a backdrop, detail in real footage) weigh up to
    ``1 + 2 * strength``; with ``strength = 0`` every weight is 1.
    """
    if strength == 0:
        return torch.ones_like(video[:, :1])
    median = video.flatten(3).median(dim=-1).values[..., None, None]  # [B, C, F, 1, 1]
    return 1.0 + strength * (video - median).abs().mean(dim=1, keepdim=True)
