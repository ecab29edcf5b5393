"""Post-training: online RL of flow models with Flow-GRPO (:mod:`~seedkit.post_training.flow_grpo` holds the
network-free math, :mod:`~seedkit.post_training.grpo_trainer` runs it over a seedkit pipeline), and offline preference
optimisation with Diffusion-DPO on self-play pairs (:mod:`~seedkit.post_training.diffusion_dpo`).

Entry point: ``recipes/grpo.py`` (the ShapesBench detector as the reward).
"""

from seedkit.post_training.diffusion_dpo import DPOLossOutput, flow_dpo_loss, self_play_sample
from seedkit.post_training.flow_grpo import (
    GRPOLossOutput,
    SDEStepOutput,
    Trajectory,
    flow_sde_step,
    group_advantages,
    grpo_step_loss,
    sample_trajectory,
)
from seedkit.post_training.grpo_trainer import FlowGRPOTrainer, GRPOConfig

__all__ = [
    "DPOLossOutput",
    "FlowGRPOTrainer",
    "GRPOConfig",
    "GRPOLossOutput",
    "SDEStepOutput",
    "Trajectory",
    "flow_dpo_loss",
    "flow_sde_step",
    "group_advantages",
    "grpo_step_loss",
    "sample_trajectory",
    "self_play_sample",
]
