"""The flow-matching training loss: mean squared error between predicted and target velocity."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FlowLossOutput", "flow_matching_loss"]


@dataclass
class FlowLossOutput:
    """Attributes:
    loss: `[]` the batch loss (weighted mean of `per_sample`).
    per_sample: `[B]` each sample's (masked) mean squared error, before weighting.
    """

    loss: torch.Tensor
    per_sample: torch.Tensor


def flow_matching_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    weighting: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> FlowLossOutput:
    """MSE on the velocity, averaged per sample, then (optionally weighted) over the batch.

    Args:
        prediction: `[B, ...]` the model's velocity prediction.
        target: `[B, ...]` the path target `noise - x_0` (see :func:`seedkit.flow.path.sample_path`).
        weighting: `[B]` optional per-sample weights (e.g. SD3's loss weighting by sigma); the batch loss is
            `sum(w * per_sample) / B`, so unit weights give the plain mean.
        mask: optional `{0, 1}` (or fractional) mask broadcastable to `prediction`, e.g. `[B, 1, F, H, W]` to drop
            padded latent frames or the conditioning first frame from the loss. Each sample's error is averaged
            over the elements the mask keeps; a sample with an all-zero mask contributes 0.

    Computed in float32 regardless of the input dtype, so bf16 training does not lose the loss's precision.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape; got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    squared_error = (prediction.float() - target.float()) ** 2
    reduce_dims = tuple(range(1, squared_error.ndim))
    if mask is None:
        per_sample = squared_error.mean(dim=reduce_dims)
    else:
        mask = torch.broadcast_to(mask.to(squared_error.dtype), squared_error.shape)
        kept = mask.sum(dim=reduce_dims)
        per_sample = (squared_error * mask).sum(dim=reduce_dims) / kept.clamp_min(1.0)
    if weighting is None:
        loss = per_sample.mean()
    else:
        weighting = weighting.to(per_sample.dtype).reshape(-1)
        if weighting.shape != per_sample.shape:
            raise ValueError(f"weighting must have shape [B] = [{per_sample.shape[0]}]; got {tuple(weighting.shape)}")
        loss = (weighting * per_sample).mean()
    return FlowLossOutput(loss=loss, per_sample=per_sample)
