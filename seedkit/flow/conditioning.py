"""The frame-conditioning tensor shared by image-to-video training and sampling.

A model built with `condition_channels = latent_channels + 1` receives, concatenated to its noisy latents on the
channel axis, `[condition latents; mask]`: the clean (normalised) latents of the given frames at their positions and
zeros elsewhere, plus a mask channel that is 1 on given latent frames and 0 elsewhere. All zeros means "no frame
given" (plain text-to-video), so one model serves both tasks. Training and pipelines build it with the same
function so the two cannot drift apart.
"""

from __future__ import annotations

import torch

__all__ = ["first_frame_condition", "frame_condition"]


def frame_condition(latents: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Condition for arbitrary given latent frames.

    Args:
        latents: `[B, C, F, H, W]` clean normalised latents (values at unmasked frames are ignored).
        frame_mask: `[B, F]` (bool or {0, 1}): which latent frames are given.

    Returns:
        `[B, C + 1, F, H, W]`: the masked latents and the mask broadcast over space.
    """
    if frame_mask.shape != latents.shape[:1] + latents.shape[2:3]:
        raise ValueError(
            f"frame_mask must have shape [B, F] = {list(latents.shape[:1] + latents.shape[2:3])}; "
            f"got {list(frame_mask.shape)}"
        )
    mask = frame_mask.to(latents.dtype)[:, None, :, None, None]
    mask = mask.expand(-1, 1, -1, *latents.shape[3:])
    return torch.cat([latents * mask, mask], dim=1)


def first_frame_condition(first_frame_latents: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
    """Condition on the first latent frame (image-to-video).

    Args:
        first_frame_latents: `[B, C, 1, H, W]` clean normalised latents of the conditioning image (a VAE encodes a
            single image, `F = 1`, to exactly one causal latent frame).
        num_latent_frames: `F`, the latent frames of the video to generate.

    Returns:
        `[B, C + 1, F, H, W]`: first frame = the image's latents, other frames zero; mask channel 1 on frame 0.
    """
    if first_frame_latents.ndim != 5 or first_frame_latents.shape[2] != 1:
        raise ValueError(f"first_frame_latents must be [B, C, 1, H, W]; got {list(first_frame_latents.shape)}")
    batch, channels, _, height, width = first_frame_latents.shape
    latents = first_frame_latents.new_zeros(batch, channels, num_latent_frames, height, width)
    latents[:, :, :1] = first_frame_latents
    frame_mask = torch.zeros(batch, num_latent_frames, dtype=torch.bool, device=latents.device)
    frame_mask[:, 0] = True
    return frame_condition(latents, frame_mask)
