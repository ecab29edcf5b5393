"""The flow-matching training loss: mean squared error between predicted and target velocity."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FlowLossOutput", "flow_matching_loss", "temporal_difference_loss"]


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


def temporal_difference_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> FlowLossOutput:
    """MSE between the frame-to-frame differences of prediction and target, per sample.

    With the error ``e = prediction - target``, this is the mean of ``(e[:, :, f + 1] - e[:, :, f]) ** 2``: zero for
    an error that is the same on every frame (a wrong colour), largest for one that changes from frame to frame (an
    object in the wrong place on some frames, or moving the wrong way). Added to :func:`flow_matching_loss` it
    re-weights the velocity error towards its temporal changes without moving the minimiser (a positive definite
    quadratic form of the error is minimised by the same conditional mean). Motivation: a video model's motion is a
    small part of the plain MSE (most of a clip is static content), the same reasoning as VideoJAM's motion term
    (Chefer et al., 2025), here without any extra prediction head.

    Args:
        prediction, target: ``[B, C, F, H, W]``.
        mask: optional per-position weights broadcastable to ``[B, 1, F, H, W]``; a difference is weighted by the
            mean of its two frames' weights.

    Returns:
        :class:`FlowLossOutput`; samples with a single frame (images) contribute 0 (``per_sample`` 0).
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape; got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    if prediction.ndim != 5:
        raise ValueError(f"expected [B, C, F, H, W] video tensors, got shape {tuple(prediction.shape)}")
    if prediction.shape[2] < 2:
        per_sample = prediction.new_zeros(prediction.shape[0], dtype=torch.float32)
        return FlowLossOutput(loss=per_sample.sum() + 0.0 * prediction.float().sum(), per_sample=per_sample)
    error = prediction.float() - target.float()
    change = error[:, :, 1:] - error[:, :, :-1]
    difference_mask = None
    if mask is not None:
        mask = torch.broadcast_to(mask.float(), (prediction.shape[0], 1, *prediction.shape[2:]))
        difference_mask = (mask[:, :, 1:] + mask[:, :, :-1]) / 2.0
    return flow_matching_loss(change, torch.zeros_like(change), mask=difference_mask)
