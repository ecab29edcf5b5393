"""Group relative policy optimisation for rectified-flow models (Flow-GRPO).

Liu et al. 2025, "Flow-GRPO: Training Flow Matching Models via Online RL" (arXiv:2505.05470); DanceGRPO (Xue et al.
2025, arXiv:2505.07818) is the same recipe. An ODE sampler is deterministic, so it has no likelihood for a policy
gradient. Rollouts therefore run the reverse-time SDE that has the flow's marginals (:mod:`seedkit.flow.sde`),
discretised with Euler-Maruyama: every step is a Gaussian whose log-density the policy gradient differentiates.
Rewards are normalised within each group of samples of one prompt (GRPO's advantage), and the loss is PPO's
clipped ratio objective, optionally with a KL term to a frozen reference.

Everything here knows nothing about networks: a *velocity function* ``velocity_fn(latents, sigma) -> velocity``
(``[B, ...]``, ``[]`` -> ``[B, ...]``) is the policy. Models trained with this sample best with the plain ODE
sampler afterwards, as the paper reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from seedkit.flow.sde import SDEStepOutput, flow_sde_step, max_sigma_for, sde_noise_scale

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Trajectory:
    """A batch of SDE rollouts.

    Attributes:
        states: ``[T + 1, B, ...]`` visited states, the starting noise first and the samples last.
        log_probs: ``[T, B]`` the log-density of each transition under the rollout policy.
        sigmas: ``[T + 1]`` the schedule, decreasing to 0.
        stochastic: ``[T]`` bool, the transitions taken with the SDE (the others are deterministic Euler steps with
            no density: log-prob 0, std 0, never trained on). None: all of them.
    """

    states: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    stochastic: torch.Tensor | None = None

    @property
    def trainable_steps(self) -> list[int]:
        """Indices of the transitions that have a density (the SDE ones)."""
        if self.stochastic is None:
            return list(range(self.num_steps))
        return [index for index, flag in enumerate(self.stochastic.tolist()) if flag]

    @property
    def samples(self) -> torch.Tensor:
        """``[B, ...]`` the final states."""
        return self.states[-1]

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[0]


@torch.no_grad()
def sample_trajectory(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    noise_level: float,
    generator: torch.Generator | None = None,
    sde_window: tuple[float, float] | None = None,
) -> Trajectory:
    """Roll out the SDE from ``noise`` (``[B, ...]``) along ``sigmas`` (``[T + 1]``, decreasing, ending at 0).

    ``sde_window=(low, high)`` takes the SDE only on steps starting at a sigma in ``[low, high]`` and the Euler ODE
    step elsewhere (MixGRPO, Li et al. 2025, arXiv:2507.21802): the reward is then credited to the noise levels
    where the rewarded attributes are decided instead of being spread over every step.
    """
    if sigmas.ndim != 1 or len(sigmas) < 2 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"sigmas must be a strictly decreasing 1-D schedule of >= 2 values; got {sigmas.tolist()}")
    stochastic = torch.ones(len(sigmas) - 1, dtype=torch.bool)
    if sde_window is not None:
        low, high = sde_window
        stochastic = (sigmas[:-1] >= low) & (sigmas[:-1] <= high)
        if not bool(stochastic.any()):
            raise ValueError(f"sde_window {sde_window} contains no step of the schedule {sigmas.tolist()}")
    max_sigma = max_sigma_for(sigmas)
    states, log_probs = [noise.float()], []
    for sigma, sigma_next, is_stochastic in zip(sigmas[:-1], sigmas[1:], stochastic.tolist()):
        velocity = velocity_fn(states[-1], sigma)
        if is_stochastic:
            step = flow_sde_step(velocity, states[-1], sigma, sigma_next, noise_level, max_sigma, generator=generator)
        else:
            mean = states[-1] + (sigma_next - sigma) * velocity.float()
            step = SDEStepOutput(mean, mean, torch.zeros(()), torch.zeros(mean.shape[0]))
        states.append(step.prev_sample)
        log_probs.append(step.log_prob)
    return Trajectory(torch.stack(states), torch.stack(log_probs), sigmas, stochastic)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, over the group's standard deviation.

    Args:
        rewards: ``[B]`` with the ``group_size`` samples of each prompt contiguous.

    Returns:
        ``[B]``; a group whose rewards are all equal carries no signal and gets zeros.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be [B] with B a multiple of group_size={group_size}; got {tuple(rewards.shape)}"
        )
    groups = rewards.float().view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    spread = groups.std(dim=1, keepdim=True, unbiased=False)
    return torch.where(spread > eps, centred / (spread + eps), torch.zeros_like(centred)).view(-1)


@dataclass
class GRPOLossOutput:
    """The loss of one timestep's transitions and what to log about it (all ``[]``)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    ratio: torch.Tensor


def grpo_step_loss(
    velocity_fn: VelocityFn,
    trajectory: Trajectory,
    step_index: int,
    advantages: torch.Tensor,
    clip_range: float,
    noise_level: float,
    kl_coef: float = 0.0,
    reference_velocity_fn: VelocityFn | None = None,
) -> GRPOLossOutput:
    """PPO's clipped objective for transition ``step_index`` of every rollout, re-scored by the current policy.

    The KL between the current and the reference transition (two Gaussians with the same std) is
    ``|mean - mean_ref|^2 / (2 std^2)``, averaged like the log-probabilities.
    """
    if kl_coef > 0 and reference_velocity_fn is None:
        raise ValueError("kl_coef > 0 needs reference_velocity_fn, the frozen policy the KL term is measured against")
    if step_index not in trajectory.trainable_steps:
        raise ValueError(
            f"transition {step_index} was a deterministic (ODE) step with no density; train on "
            f"trajectory.trainable_steps = {trajectory.trainable_steps}"
        )
    sigma, sigma_next = trajectory.sigmas[step_index], trajectory.sigmas[step_index + 1]
    max_sigma = max_sigma_for(trajectory.sigmas)
    state = trajectory.states[step_index]
    step = flow_sde_step(
        velocity_fn(state, sigma), state, sigma, sigma_next, noise_level, max_sigma,
        prev_sample=trajectory.states[step_index + 1],
    )
    ratio = torch.exp(step.log_prob - trajectory.log_probs[step_index])
    advantages = advantages.to(ratio.device)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = torch.maximum(unclipped, clipped).mean()
    kl = torch.zeros((), device=ratio.device)
    if kl_coef > 0:
        with torch.no_grad():
            reference = flow_sde_step(
                reference_velocity_fn(state, sigma), state, sigma, sigma_next, noise_level, max_sigma,
                prev_sample=trajectory.states[step_index + 1],
            )
        kl = ((step.mean - reference.mean) ** 2).flatten(1).mean(dim=1).mean() / (2.0 * step.std**2)
    clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
    return GRPOLossOutput(policy_loss + kl_coef * kl, policy_loss.detach(), kl.detach(), clip_fraction, ratio.mean())
