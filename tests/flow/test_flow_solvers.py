"""Euler and Heun solvers: closed-form ODEs, convergence orders, and parity with diffusers' scheduler."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from seedkit.flow import flow_sigmas, resolution_shift_mu, sample_euler, sample_heun


def linear_field(rate):
    """dx/dsigma = rate * x: exact solution x(sigma) = x(1) * exp(rate * (sigma - 1))."""
    return lambda x, sigma: rate * x


@pytest.mark.parametrize("solver,order", [(sample_euler, 1), (sample_heun, 2)])
def test_convergence_order_on_linear_ode(solver, order):
    rate = 1.3
    noise = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    exact = noise * math.exp(-rate)
    errors = []
    for steps in (8, 16, 32, 64):
        sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        errors.append(float((solver(linear_field(rate), noise, sigmas) - exact).abs().max()))
    observed_orders = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    for observed in observed_orders:
        assert abs(observed - order) < 0.15, (observed_orders, errors)


def test_heun_transports_gaussian_noise_to_gaussian_data_exactly():
    """For x_0 ~ N(mean, std^2) the exact velocity field's flow maps noise z to mean + std * z."""
    mean, std = 1.5, 0.5

    def velocity(x, sigma):
        sigma = sigma.reshape(-1, 1)
        variance = (1 - sigma) ** 2 * std**2 + sigma**2
        centred = x - (1 - sigma) * mean
        return sigma / variance * centred - (mean + (1 - sigma) * std**2 / variance * centred)

    noise = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = sample_heun(velocity, noise, torch.linspace(1, 0, 101, dtype=torch.float64))
    torch.testing.assert_close(result, mean + std * noise, atol=1e-4, rtol=0)  # O(h^2) = 1e-4 at 100 steps
    coarse_euler = sample_euler(velocity, noise, torch.linspace(1, 0, 11, dtype=torch.float64))
    assert float((coarse_euler - (mean + std * noise)).abs().max()) > 1e-3  # Euler at 10 steps is visibly off


def test_callback_sees_every_step():
    seen = []
    sample_heun(linear_field(1.0), torch.ones(2, 3), torch.linspace(1, 0, 5), callback=seen.append)
    assert [step.index for step in seen] == [0, 1, 2, 3]
    assert seen[-1].sigma_next == 0 and seen[0].sample.shape == (2, 3)
    with pytest.raises(ValueError, match="at least 2"):
        sample_euler(linear_field(1.0), torch.ones(1), torch.ones(1))


@pytest.mark.parametrize("solver", [sample_euler, sample_heun])
def test_per_row_schedules_equal_each_row_solved_alone(solver):
    """A [N + 1, B] schedule brings each row from its own start level to its own end level."""
    schedules = torch.stack(
        [torch.linspace(1.0, 0.0, 6), torch.linspace(0.6, 0.2, 6), torch.linspace(0.3, 0.3, 6)], dim=1
    ).double()
    start = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    together = solver(_velocity, start, schedules)
    for row in range(3):
        alone = solver(_velocity, start[row : row + 1], schedules[:, row])
        torch.testing.assert_close(together[row : row + 1], alone, atol=1e-12, rtol=0)
    torch.testing.assert_close(together[2], start[2])  # a row whose levels do not change does not move
    with pytest.raises(ValueError, match="columns"):
        solver(_velocity, start, schedules[:, :2])


def _velocity(x, sigma):
    # a nonlinear, sigma-dependent field so any schedule mismatch shows up
    return torch.sin(3 * x) * sigma.reshape(-1, *([1] * (x.ndim - 1))) - 0.5 * x


@pytest.mark.parametrize(
    "scheduler_kwargs,set_timesteps_kwargs",
    [
        ({"shift": 1.0}, {}),
        ({"shift": 3.0}, {}),
        ({"use_dynamic_shifting": True}, {"mu": resolution_shift_mu(1024)}),
    ],
)
def test_euler_matches_diffusers_scheduler_step_for_step(scheduler_kwargs, set_timesteps_kwargs):
    scheduler = FlowMatchEulerDiscreteScheduler(**scheduler_kwargs)
    scheduler.set_timesteps(num_inference_steps=7, **set_timesteps_kwargs)
    ours_schedule = flow_sigmas(
        7,
        shift=scheduler_kwargs.get("shift", 1.0),
        mu=set_timesteps_kwargs.get("mu"),
        sigma_max=float(scheduler.sigma_max),
        sigma_min=float(scheduler.sigma_min),
    )
    torch.testing.assert_close(ours_schedule, scheduler.sigmas, atol=1e-6, rtol=1e-6)

    noise = torch.randn(2, 4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    reference_trajectory = []
    sample = noise
    for timestep in scheduler.timesteps:
        velocity = _velocity(sample, (timestep / 1000).expand(sample.shape[0]))
        sample = scheduler.step(velocity, timestep, sample, return_dict=False)[0]
        reference_trajectory.append(sample)
    our_trajectory = []
    result = sample_euler(_velocity, noise, ours_schedule, callback=lambda step: our_trajectory.append(step.sample))
    assert len(our_trajectory) == len(reference_trajectory) == 7
    for ours, reference in zip(our_trajectory, reference_trajectory):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result, reference_trajectory[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_heun_matches_diffusers_heun_scheduler(shift):
    from diffusers import FlowMatchHeunDiscreteScheduler

    scheduler = FlowMatchHeunDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(num_inference_steps=5)
    noise = torch.randn(2, 4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    reference = noise
    for timestep in scheduler.timesteps:  # the scheduler repeats each timestep for its corrector evaluation
        velocity = _velocity(reference, (timestep / 1000).expand(reference.shape[0]))
        reference = scheduler.step(velocity, timestep, reference, return_dict=False)[0]
    unique_sigmas = torch.unique_consecutive(scheduler.sigmas)
    ours = sample_heun(_velocity, noise, unique_sigmas, euler_last_step=True)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # the default full last Heun step differs slightly: the comparison above is not vacuous
    assert not torch.allclose(sample_heun(_velocity, noise, unique_sigmas), reference, atol=1e-6, rtol=0)


def test_heun_with_euler_last_step_is_still_second_order():
    noise = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    exact = noise * math.exp(-1.3)
    errors = [
        float((sample_heun(linear_field(1.3), noise, torch.linspace(1, 0, n + 1, dtype=torch.float64),
                           euler_last_step=True) - exact).abs().max())
        for n in (16, 32, 64)
    ]
    assert all(abs(math.log2(errors[i] / errors[i + 1]) - 2) < 0.2 for i in range(2)), errors
