"""Path, target, loss, guidance and timestep samplers, checked against closed forms."""

import math

import pytest
import torch

from seedkit.flow import (
    LogitNormalSampler,
    UniformSampler,
    classifier_free_guidance,
    flow_matching_loss,
    get_timestep_sampler,
    rescale_guidance,
    resolution_shift,
    resolution_shift_mu,
    sample_path,
    shift_sigmas,
    temporal_difference_loss,
    time_shift,
    velocity_to_noise,
    velocity_to_x0,
)


def gaussian_velocity(x_t, sigma, mean, std):
    """Exact E[noise - x_0 | x_t] for x_0 ~ N(mean, std^2), noise ~ N(0, 1) (jointly Gaussian regression)."""
    variance = (1 - sigma) ** 2 * std**2 + sigma**2
    centred = x_t - (1 - sigma) * mean
    expected_x0 = mean + (1 - sigma) * std**2 / variance * centred
    expected_noise = sigma / variance * centred
    return expected_noise - expected_x0


def test_path_endpoints_and_target():
    x_0, noise = torch.randn(3, 4, 2, 2, 2), torch.randn(3, 4, 2, 2, 2)
    sigma = torch.tensor([0.0, 0.3, 1.0])
    sample = sample_path(x_0, noise, sigma)
    torch.testing.assert_close(sample.x_t[0], x_0[0])
    torch.testing.assert_close(sample.x_t[2], noise[2])
    torch.testing.assert_close(sample.x_t[1], 0.7 * x_0[1] + 0.3 * noise[1])
    torch.testing.assert_close(sample.target, noise - x_0)
    torch.testing.assert_close(sample.timestep, sigma * 1000)
    # the target is the derivative of the path: a finite difference in sigma reproduces it
    eps = 1e-3
    forward = sample_path(x_0.double(), noise.double(), sigma.double() + eps).x_t
    here = sample_path(x_0.double(), noise.double(), sigma.double()).x_t
    torch.testing.assert_close(((forward - here) / eps).float(), sample.target, atol=1e-4, rtol=1e-4)
    # the x_0 / noise estimates of an exact velocity recover both endpoints
    torch.testing.assert_close(velocity_to_x0(sample.x_t, sample.target, sigma), x_0, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(velocity_to_noise(sample.x_t, sample.target, sigma), noise, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        sample_path(x_0, noise, torch.rand(2))


def test_loss_minimiser_is_the_exact_gaussian_velocity():
    """Regressing the path target on x_t at fixed sigma recovers the closed-form conditional velocity."""
    generator = torch.Generator().manual_seed(0)
    mean, std, sigma = 1.5, 0.5, 0.4
    x_0 = mean + std * torch.randn(400_000, generator=generator, dtype=torch.float64)
    noise = torch.randn(400_000, generator=generator, dtype=torch.float64)
    sample = sample_path(x_0, noise, torch.full((400_000,), sigma, dtype=torch.float64))
    # the conditional expectation is affine in x_t here, so least squares on [x_t, 1] is the loss minimiser
    design = torch.stack([sample.x_t, torch.ones_like(sample.x_t)], dim=1)
    coefficients = torch.linalg.lstsq(design, sample.target.unsqueeze(1)).solution.squeeze(1)
    grid = torch.linspace(-1, 3, 9, dtype=torch.float64)
    fitted = coefficients[0] * grid + coefficients[1]
    torch.testing.assert_close(fitted, gaussian_velocity(grid, sigma, mean, std), atol=0.02, rtol=0.0)
    # and its loss is lower than that of a perturbed field
    exact = gaussian_velocity(sample.x_t, sigma, mean, std)
    best = flow_matching_loss(exact, sample.target).loss
    worse = flow_matching_loss(exact + 0.1, sample.target).loss
    assert best < worse
    assert math.isclose(float(worse - best), 0.01, rel_tol=0.05)


def test_loss_weighting_and_mask():
    prediction = torch.zeros(2, 1, 2, 1, 1)
    target = torch.tensor([1.0, 3.0, 2.0, 2.0]).reshape(2, 1, 2, 1, 1)
    output = flow_matching_loss(prediction, target)
    torch.testing.assert_close(output.per_sample, torch.tensor([5.0, 4.0]))
    torch.testing.assert_close(output.loss, torch.tensor(4.5))
    weighted = flow_matching_loss(prediction, target, weighting=torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(weighted.loss, torch.tensor(5.0))
    # mask out the second frame of sample 0: its error is just the first frame's
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0]).reshape(2, 1, 2, 1, 1)
    masked = flow_matching_loss(prediction, target, mask=mask)
    torch.testing.assert_close(masked.per_sample, torch.tensor([1.0, 4.0]))
    with pytest.raises(ValueError, match="same shape"):
        flow_matching_loss(prediction, target[:1])


def test_temporal_difference_loss_closed_forms():
    target = torch.randn(3, 2, 4, 3, 3)
    error = torch.zeros(3, 2, 4, 3, 3)
    error[0] = 0.7  # the same error on every frame: no temporal change
    error[1, :, 1::2] = 0.5  # alternating 0, 0.5: every change is 0.5
    error[1, :, 0::2] = 0.0
    error[2] = torch.arange(4.0).view(1, 4, 1, 1) * 0.2  # a ramp: every change is 0.2
    output = temporal_difference_loss(target + error, target)
    torch.testing.assert_close(output.per_sample, torch.tensor([0.0, 0.25, 0.04]))
    torch.testing.assert_close(output.loss, torch.tensor(0.29 / 3))
    # A change is weighted by the mean of its two frames' weights: only the change into frame 3 counts here.
    mask = torch.zeros(3, 1, 4, 1, 1)
    mask[:, :, 3] = 2.0
    masked = temporal_difference_loss(target + error, target, mask=mask)
    torch.testing.assert_close(masked.per_sample, torch.tensor([0.0, 0.25, 0.04]))
    mask[1, :, 3] = 0.0  # a sample whose weights are all zero contributes 0
    torch.testing.assert_close(
        temporal_difference_loss(target + error, target, mask=mask).per_sample[1], torch.tensor(0.0)
    )


def test_temporal_difference_loss_is_zero_for_images_and_checks_shapes():
    prediction = torch.randn(2, 4, 1, 3, 3, requires_grad=True)
    output = temporal_difference_loss(prediction, torch.randn(2, 4, 1, 3, 3))
    assert output.loss.item() == 0.0 and output.per_sample.tolist() == [0.0, 0.0]
    output.loss.backward()  # still part of the graph, so a mixed image/video step backpropagates
    assert torch.equal(prediction.grad, torch.zeros_like(prediction))
    with pytest.raises(ValueError, match="same shape"):
        temporal_difference_loss(torch.zeros(1, 1, 2, 1, 1), torch.zeros(1, 1, 3, 1, 1))
    with pytest.raises(ValueError, match=r"\[B, C, F, H, W\]"):
        temporal_difference_loss(torch.zeros(2, 3), torch.zeros(2, 3))


def test_classifier_free_guidance_and_rescale():
    conditional, unconditional = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(classifier_free_guidance(conditional, unconditional, 1.0), conditional)
    torch.testing.assert_close(classifier_free_guidance(conditional, unconditional, 0.0), unconditional)
    guided = classifier_free_guidance(conditional, unconditional, 7.0)
    torch.testing.assert_close(guided, unconditional + 7.0 * (conditional - unconditional))
    fully_rescaled = classifier_free_guidance(conditional, unconditional, 7.0, guidance_rescale=1.0)
    torch.testing.assert_close(fully_rescaled.std(dim=(1, 2)), conditional.std(dim=(1, 2)))
    half = rescale_guidance(guided, conditional, 0.5)
    torch.testing.assert_close(half, 0.5 * fully_rescaled + 0.5 * guided)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rescale_guidance(guided, conditional, 1.5)


def test_shift_functions():
    sigmas = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(shift_sigmas(sigmas, 1.0), sigmas)
    shifted = shift_sigmas(sigmas, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted[1:-1] > sigmas[1:-1]).all())
    inner = sigmas[1:-1]
    torch.testing.assert_close(time_shift(inner, math.log(3.0)), shift_sigmas(inner, 3.0))
    # Flux's rule: mu = base_shift at 256 tokens and max_shift at 4096, monotone in between
    assert math.isclose(resolution_shift_mu(256), 0.5) and math.isclose(resolution_shift_mu(4096), 1.15)
    assert resolution_shift(1024) > resolution_shift(256)
    with pytest.raises(ValueError, match="shift must be > 0"):
        shift_sigmas(sigmas, 0.0)


def test_timestep_samplers():
    generator = torch.Generator().manual_seed(0)
    uniform = UniformSampler().sample(200_000, generator=generator)
    assert 0 < float(uniform.min()) and float(uniform.max()) < 1
    assert abs(float(uniform.mean()) - 0.5) < 0.01
    logit_normal = LogitNormalSampler(mean=0.0, std=1.0).sample(200_000, generator=generator)
    # median of sigmoid(N(0, 1)) is 0.5 and it is more concentrated than the uniform
    assert abs(float(logit_normal.median()) - 0.5) < 0.01 and float(logit_normal.std()) < float(uniform.std())
    shifted = UniformSampler(shift=3.0).sample(200_000, generator=torch.Generator().manual_seed(1))
    # P(shifted <= 0.5) = P(u <= 0.5 / (3 - 2 * 0.5)) = 0.25
    assert abs(float((shifted <= 0.5).double().mean()) - 0.25) < 0.01
    by_tokens = UniformSampler().sample(100_000, generator=torch.Generator().manual_seed(2), num_tokens=4096)
    assert float(by_tokens.mean()) > 0.55  # e^1.15 ~ 3.2 pushes towards noise
    assert isinstance(get_timestep_sampler("logit_normal", std=0.5), LogitNormalSampler)
    with pytest.raises(ValueError, match="valid names: uniform, logit_normal"):
        get_timestep_sampler("cosine")


def test_sigma_range_trains_one_part_of_the_path():
    expert = UniformSampler(sigma_range=(0.8, 1.0)).sample(100_000, generator=torch.Generator().manual_seed(0))
    assert 0.8 <= float(expert.min()) and float(expert.max()) <= 1.0
    # affine: a uniform draw stays uniform on the interval, with mean 0.9 and P(sigma <= 0.85) = 0.25
    assert abs(float(expert.mean()) - 0.9) < 0.002 and abs(float((expert <= 0.85).double().mean()) - 0.25) < 0.01
    plain = LogitNormalSampler(shift=3.0).sample(1000, generator=torch.Generator().manual_seed(1))
    low_noise = LogitNormalSampler(shift=3.0, sigma_range=(0.0, 0.8))
    ranged = low_noise.sample(1000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ranged, 0.8 * plain)  # the shift applies first, then the map
    with pytest.raises(ValueError, match="sigma_range"):
        UniformSampler(sigma_range=(0.9, 0.8))
