"""Rectified flow: the probability path and its velocity target, noise-level sampling and schedules, the training
loss, classifier-free guidance, ODE solvers and the marginal-preserving SDE step. Knows nothing about networks
(DESIGN.md layering).

Convention (diffusers'): `x_t = (1 - sigma) x_0 + sigma noise`, target velocity `noise - x_0`, sampling runs sigma
from 1 to 0, and the transformer's timestep input is `sigma * 1000`.
"""

from seedkit.flow.conditioning import first_frame_condition, frame_condition
from seedkit.flow.guidance import classifier_free_guidance, rescale_guidance
from seedkit.flow.loss import FlowLossOutput, flow_matching_loss, temporal_difference_loss
from seedkit.flow.path import PathSample, expand_sigma, sample_path, velocity_to_noise, velocity_to_x0
from seedkit.flow.sde import SDEStepOutput, flow_sde_step, max_sigma_for, sde_noise_scale
from seedkit.flow.solvers import SolverStep, sample_euler, sample_heun
from seedkit.flow.timesteps import (
    LogitNormalSampler,
    TimestepSampler,
    UniformSampler,
    flow_sigmas,
    get_timestep_sampler,
    resolution_shift,
    resolution_shift_mu,
    shift_sigmas,
    time_shift,
)

__all__ = [
    "PathSample",
    "sample_path",
    "expand_sigma",
    "velocity_to_x0",
    "velocity_to_noise",
    "TimestepSampler",
    "UniformSampler",
    "LogitNormalSampler",
    "get_timestep_sampler",
    "shift_sigmas",
    "time_shift",
    "resolution_shift_mu",
    "resolution_shift",
    "flow_sigmas",
    "FlowLossOutput",
    "temporal_difference_loss",
    "flow_matching_loss",
    "classifier_free_guidance",
    "rescale_guidance",
    "first_frame_condition",
    "frame_condition",
    "SDEStepOutput",
    "flow_sde_step",
    "max_sigma_for",
    "sde_noise_scale",
    "SolverStep",
    "sample_euler",
    "sample_heun",
]
