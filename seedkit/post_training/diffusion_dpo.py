"""Preference optimisation for rectified-flow models (Diffusion-DPO), and self-play pairs (SPIN-Diffusion).

Wallace et al. 2024, "Diffusion Model Alignment Using Direct Preference Optimization" (CVPR; arXiv:2311.12908).
For a prompt with a preferred clean sample ``x_w`` and a dispreferred one ``x_l``, both noised to the same level
with the same noise, the loss is

    L = -log sigmoid(-beta / 2 * [(e_w(policy) - e_w(reference)) - (e_l(policy) - e_l(reference))]),

``e(.)`` being the flow-matching error ``|v(x_t) - (noise - x_0)|^2`` averaged over a sample's elements: the policy
is asked to fit the preferred sample better, and the dispreferred one worse, than a frozen reference does. The
paper writes it for noise prediction; the velocity error of a rectified flow is the same quantity up to a weight per
noise level.

Self-play pairs (Yuan et al. 2024, "Self-Play Fine-Tuning of Diffusion Models for Text-to-Image Generation",
arXiv:2402.10210) need no reward and no labels: the preferred sample is training data, the dispreferred one the
model's own sample for the same prompt. The update then targets exactly where the model's samples differ from the
data (for ShapesWorld: squares whose corners come out round), which the plain regression loss, spread over every
latent element, barely weighs.

Nothing here knows about networks: the loss takes predictions, and :func:`self_play_sample` takes a velocity function
``velocity_fn(latents, sigma) -> velocity`` (``[B, ...]``, ``[B]`` -> ``[B, ...]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from seedkit.flow import flow_matching_loss, sample_euler, sample_path

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["DPOLossOutput", "flow_dpo_loss", "self_play_sample"]


@dataclass
class DPOLossOutput:
    """Attributes:
    loss: ``[]`` the batch mean of the DPO loss.
    margin: ``[B]`` ``-beta / 2 * [...]``, the implicit reward margin of the preferred sample per pair.
    accuracy: share of pairs with a positive margin (the policy prefers ``x_w`` more than the reference does).
    policy_preferred_error, policy_dispreferred_error: ``[B]`` the policy's flow-matching errors ``e_w``, ``e_l``.
    """

    loss: torch.Tensor
    margin: torch.Tensor
    accuracy: float
    policy_preferred_error: torch.Tensor
    policy_dispreferred_error: torch.Tensor


def flow_dpo_loss(
    policy_preferred: torch.Tensor,
    policy_dispreferred: torch.Tensor,
    reference_preferred: torch.Tensor,
    reference_dispreferred: torch.Tensor,
    target_preferred: torch.Tensor,
    target_dispreferred: torch.Tensor,
    beta: float,
    mask: torch.Tensor | None = None,
) -> DPOLossOutput:
    """Diffusion-DPO on velocity predictions (Wallace et al. 2024, eq. 14).

    Args:
        policy_preferred, policy_dispreferred: ``[B, ...]`` the trained model's velocities at the noised preferred
            and dispreferred samples.
        reference_preferred, reference_dispreferred: ``[B, ...]`` the frozen reference's velocities there.
        target_preferred, target_dispreferred: ``[B, ...]`` the path targets ``noise - x_0`` of each.
        beta: the KL weight of the DPO objective; larger keeps the policy closer to the reference. Its scale goes with
            the per-element error: a thousand or more for errors of order 1e-3 between the two samples.
        mask: optional per-element weights broadcastable to the predictions (e.g. foreground weights), as
            :func:`seedkit.flow.flow_matching_loss` takes them.
    """

    def error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return flow_matching_loss(prediction, target, mask=mask).per_sample

    policy_w = error(policy_preferred, target_preferred)
    policy_l = error(policy_dispreferred, target_dispreferred)
    reference_w = error(reference_preferred.detach(), target_preferred)
    reference_l = error(reference_dispreferred.detach(), target_dispreferred)
    margin = -0.5 * beta * ((policy_w - reference_w) - (policy_l - reference_l))
    return DPOLossOutput(
        loss=-F.logsigmoid(margin).mean(),
        margin=margin.detach(),
        accuracy=(margin > 0).float().mean().item(),
        policy_preferred_error=policy_w.detach(),
        policy_dispreferred_error=policy_l.detach(),
    )


@torch.no_grad()
def self_play_sample(
    velocity_fn: VelocityFn,
    x_0: torch.Tensor,
    noise: torch.Tensor,
    start_sigma: torch.Tensor,
    num_steps: int,
) -> torch.Tensor:
    """The model's own clean sample for the data ``x_0``: SDEdit from ``x_0`` noised to ``start_sigma``.

    Euler steps of ``velocity_fn`` (guided or not, as the caller samples) from each row's ``start_sigma`` down to 0
    in ``num_steps`` equal steps. ``start_sigma`` ``[B]`` in ``(0, 1]``; 1 is a sample from pure noise, lower starts
    keep the data's layout and leave the model only the detail to make (and get wrong).

    Returns ``[B, ...]`` the dispreferred partner of ``x_0`` for :func:`flow_dpo_loss`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1; got {num_steps}")
    fractions = torch.linspace(1.0, 0.0, num_steps + 1, device=start_sigma.device, dtype=start_sigma.dtype)
    return sample_euler(velocity_fn, sample_path(x_0, noise, start_sigma).x_t, fractions[:, None] * start_sigma)
