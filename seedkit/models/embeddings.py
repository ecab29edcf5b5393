"""Embeddings of the MMDiT: 3D patchify, timestep (+ pooled text) conditioning and 3D / multimodal RoPE.

Rotary positions
----------------
Every token carries a position ``(t, h, w)``. The head dimension is split into three bands of
``rope_axes_dim = (d_t, d_h, d_w)`` channels, and band ``a`` is rotated by the token's coordinate on axis ``a``.

* Video token of latent patch ``(f, y, x)``: position ``(f, y, x)`` (0-based, in patch units).
* Text token ``i`` (multimodal RoPE, as Qwen2-VL's M-RoPE does for text that follows an image): position
  ``(s + i, s + i, s + i)`` with ``s = max(F', H', W')``, the size of the patch grid along its longest axis. Text
  therefore sits on the diagonal *after* the whole video grid on every axis: text-to-text offsets are ordinary 1D RoPE
  (all three bands see the same offset ``i - j``), text never collides with a video position, and the position of a
  real prompt token does not depend on how much padding follows it, so padded and unpadded prompts give the same
  output. Each sample of a packed batch gets its own positions (see ``forward_packed``).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import PixArtAlphaTextProjection, TimestepEmbedding, Timesteps
from einops import rearrange
from torch import nn


def patchify(latents: torch.Tensor, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """``[B, C, F, H, W] -> [B, (F/pt)(H/ph)(W/pw), C*pt*ph*pw]`` (tokens in frame, row, column order)."""
    patch_t, patch_h, patch_w = patch_size
    _, _, num_frames, height, width = latents.shape
    if num_frames % patch_t or height % patch_h or width % patch_w:
        raise ValueError(
            f"latent size (F={num_frames}, H={height}, W={width}) must be divisible by the patch size "
            f"{tuple(patch_size)}"
        )
    return rearrange(
        latents, "b c (f pt) (h ph) (w pw) -> b (f h w) (c pt ph pw)", pt=patch_t, ph=patch_h, pw=patch_w
    )


def unpatchify(tokens: torch.Tensor, grid_size: tuple[int, int, int], patch_size: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, F'H'W', C*pt*ph*pw] -> [B, C, F'pt, H'ph, W'pw]``."""
    grid_t, grid_h, grid_w = grid_size
    patch_t, patch_h, patch_w = patch_size
    return rearrange(
        tokens,
        "b (f h w) (c pt ph pw) -> b c (f pt) (h ph) (w pw)",
        f=grid_t,
        h=grid_h,
        w=grid_w,
        pt=patch_t,
        ph=patch_h,
        pw=patch_w,
    )


def video_position_ids(grid_size: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """``[F'H'W', 3]`` float32 positions ``(frame, row, column)`` of the patch grid, in patchify order."""
    grid_t, grid_h, grid_w = grid_size
    frames = torch.arange(grid_t, device=device, dtype=torch.float32)
    rows = torch.arange(grid_h, device=device, dtype=torch.float32)
    columns = torch.arange(grid_w, device=device, dtype=torch.float32)
    grid = torch.meshgrid(frames, rows, columns, indexing="ij")
    return torch.stack(grid, dim=-1).reshape(-1, 3)


def text_position_ids(
    num_text_tokens: int, grid_size: tuple[float, float, float], device: torch.device | None = None
) -> torch.Tensor:
    """``[L, 3]`` float32 positions of text tokens: the diagonal after the video grid (see the module docstring);
    ``grid_size`` is the extent RoPE sees, fractional when the grid's positions are scaled."""
    start = max(grid_size)
    diagonal = torch.arange(num_text_tokens, device=device, dtype=torch.float32) + start
    return diagonal[:, None].expand(num_text_tokens, 3).contiguous()


class RotaryPositionEmbedding3D(nn.Module):
    """cos / sin tables of 3D rotary embeddings for arbitrary ``(t, h, w)`` positions.

    Computed on the fly in float32 (no buffers), so the tables are exact whatever dtype or device the weights use.
    ``forward(position_ids [..., N, 3]) -> (cos, sin)``, each ``[..., N, head_dim / 2]``.
    """

    def __init__(self, axes_dim: tuple[int, int, int], theta: float = 10000.0):
        super().__init__()
        if len(axes_dim) != 3 or any(dim % 2 for dim in axes_dim):
            raise ValueError(f"rope_axes_dim must be three even numbers (t, h, w), got {tuple(axes_dim)}")
        self.axes_dim = tuple(int(dim) for dim in axes_dim)
        self.theta = theta

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = []
        for axis, axis_dim in enumerate(self.axes_dim):
            exponents = torch.arange(0, axis_dim, 2, device=position_ids.device, dtype=torch.float32) / axis_dim
            inverse_frequencies = self.theta**-exponents
            angles.append(position_ids[..., axis : axis + 1].float() * inverse_frequencies)
        angles = torch.cat(angles, dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary_embedding(hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i + 1)`` of ``hidden_states [B, L, heads, D]`` by the angles of ``cos`` / ``sin``
    (``[B or 1, L, D/2]``)."""
    cos = cos.unsqueeze(-2).to(hidden_states.dtype)
    sin = sin.unsqueeze(-2).to(hidden_states.dtype)
    real, imaginary = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((real * cos - imaginary * sin, real * sin + imaginary * cos), dim=-1)
    return rotated.flatten(-2)


class GridPositionEmbedding(nn.Module):
    """Absolute grid positions added to video tokens: ``[L, 3]`` positions in grids ``[L, 3]`` -> ``[L, dim]``.

    RoPE only tells attention the *offset* between two tokens, so a token does not know which frame it is in or how
    far it is from a frame edge. Drawing an object that moves with the prompt's direction needs both: frame ``t``
    must place it ``t`` steps further along than frame 0 (from a per-token score that RoPE makes a sum of one term per
    axis, a single head cannot prefer the row offset ``-v t`` for every ``t``), and a bounce happens at a wall. Each
    token gets sinusoidal features of its distance to both ends of every axis (``t, F'-1-t, y, H'-1-y, x, W'-1-x``,
    in patch units, so a 96-pixel frame's right edge is as recognisable as a 64-pixel one's), projected to ``dim``
    by a linear layer that starts at zero: a model grown with this embedding computes what it computed before.
    Latte and Open-Sora 1.0 add absolute temporal embeddings for the same reason. (Fine-tuning shapes-tiny with it,
    and training one from scratch, did not make the model follow direction words: issue 4's session-12 note.)
    """

    def __init__(self, dim: int, channels_per_distance: int = 32, max_period: float = 100.0):
        super().__init__()
        half = channels_per_distance // 2
        frequencies = max_period ** (-torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.projection = nn.Linear(6 * channels_per_distance, dim)
        nn.init.zeros_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def forward(self, positions: torch.Tensor, grid_sizes: torch.Tensor) -> torch.Tensor:
        distances = torch.cat([positions, grid_sizes - 1 - positions], dim=-1)  # [L, 6]
        angles = distances[..., None] * self.frequencies  # [L, 6, half]
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return self.projection(features.to(self.projection.weight.dtype))


class TimestepPooledTextEmbedding(nn.Module):
    """Conditioning vector ``c = MLP(sinusoid(timestep)) [+ MLP(pooled text)]``.

    ``forward(timestep [N] in [0, 1000], pooled_projections [N, P] | None) -> [N, dim]``.
    """

    def __init__(self, dim: int, pooled_projection_dim: int | None = None, frequency_dim: int = 256):
        super().__init__()
        self.timestep_sinusoid = Timesteps(frequency_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(frequency_dim, dim)
        self.pooled_text_embedder = (
            PixArtAlphaTextProjection(pooled_projection_dim, dim, act_fn="silu")
            if pooled_projection_dim is not None
            else None
        )

    def forward(self, timestep: torch.Tensor, pooled_projections: torch.Tensor | None = None) -> torch.Tensor:
        timestep_features = self.timestep_sinusoid(timestep)
        embedding = self.timestep_embedder(timestep_features.to(self.timestep_embedder.linear_1.weight.dtype))
        if self.pooled_text_embedder is not None:
            embedding = embedding + self.pooled_text_embedder(pooled_projections.to(embedding.dtype))
        return embedding
