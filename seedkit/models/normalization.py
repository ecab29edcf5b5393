"""Normalisation layers of the MMDiT: modulated LayerNorm (adaLN) and the QK-norm factory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QK_NORMS = ("rms_norm", "layer_norm", None)


class ModulatedLayerNorm(nn.Module):
    """LayerNorm without affine weights whose scale and shift come from the timestep (adaLN).

    ``forward(hidden_states [B, L, dim], shift [B, 1 | L, dim], scale [B, 1 | L, dim]) -> [B, L, dim]``; a shift
    and scale per token (``L`` rows) is what native-resolution packing uses, where tokens of different samples sit in
    one sequence and carry different timesteps.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # layer_norm accumulates in float32 internally for half inputs, so no explicit upcast is needed.
        normed = F.layer_norm(hidden_states, (self.dim,), eps=self.eps)
        return torch.addcmul(shift.to(normed.dtype), normed, 1 + scale.to(normed.dtype))


def build_qk_norm(qk_norm: str | None, head_dim: int, eps: float) -> nn.Module:
    """The per-head normalisation applied to queries and keys (``[..., head_dim]``)."""
    if qk_norm == "rms_norm":
        return nn.RMSNorm(head_dim, eps=eps)
    if qk_norm == "layer_norm":
        return nn.LayerNorm(head_dim, eps=eps)
    if qk_norm is None:
        return nn.Identity()
    raise ValueError(f"unknown qk_norm {qk_norm!r}; valid values: 'rms_norm', 'layer_norm', None")
