"""Diffusion-DPO on velocities and self-play pairs: closed-form values and the direction of an update."""

from __future__ import annotations

import math

import pytest
import torch

from seedkit.flow import sample_path
from seedkit.post_training.diffusion_dpo import flow_dpo_loss, self_play_sample


def test_a_policy_equal_to_its_reference_has_zero_margin_and_loss_log_two():
    prediction_w, prediction_l = torch.randn(3, 4, 2, 5), torch.randn(3, 4, 2, 5)
    target_w, target_l = torch.randn(3, 4, 2, 5), torch.randn(3, 4, 2, 5)
    output = flow_dpo_loss(prediction_w, prediction_l, prediction_w, prediction_l, target_w, target_l, beta=100.0)
    assert torch.equal(output.margin, torch.zeros(3)) and output.accuracy == 0.0
    assert output.loss.item() == pytest.approx(math.log(2.0))


def test_margin_is_half_beta_times_the_change_in_error_difference():
    target_w, target_l = torch.zeros(2, 8), torch.zeros(2, 8)
    reference_w, reference_l = torch.full((2, 8), 0.1), torch.full((2, 8), 0.1)  # errors 0.01 on both
    policy_w = torch.zeros(2, 8)  # fits the preferred sample exactly
    policy_l = torch.tensor([[0.2] * 8, [0.1] * 8])  # errors 0.04 and 0.01 on the dispreferred one
    output = flow_dpo_loss(policy_w, policy_l, reference_w, reference_l, target_w, target_l, beta=1000.0)
    # margin = -beta / 2 * ((0 - 0.01) - (e_l - 0.01))
    expected = torch.tensor([500.0 * (0.01 + 0.03), 500.0 * 0.01])
    torch.testing.assert_close(output.margin, expected)
    torch.testing.assert_close(output.loss, -torch.nn.functional.logsigmoid(expected).mean())
    assert output.accuracy == 1.0
    torch.testing.assert_close(output.policy_dispreferred_error, torch.tensor([0.04, 0.01]))


def test_a_gradient_step_moves_the_policy_towards_the_preferred_sample():
    preferred, dispreferred = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # a policy that predicts a learnable point for both inputs; the targets are the samples themselves
    point = torch.nn.Parameter(torch.tensor([[0.5, 0.5]]))
    reference = point.detach().clone()
    for _ in range(50):
        output = flow_dpo_loss(point, point, reference, reference, preferred, dispreferred, beta=10.0)
        (gradient,) = torch.autograd.grad(output.loss, point)
        point.data -= 0.1 * gradient
    assert (point - preferred).norm() < (point - dispreferred).norm()
    assert output.accuracy == 1.0 and output.loss.item() < math.log(2.0)


def test_masked_errors_only_count_the_kept_elements():
    target = torch.zeros(1, 2, 3)
    policy_w, policy_l = torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)
    policy_l[0, 1] = 5.0  # differs only where the mask drops it
    mask = torch.tensor([1.0, 0.0]).view(1, 2, 1)
    output = flow_dpo_loss(policy_w, policy_l, policy_w, policy_w, target, target, beta=1.0, mask=mask)
    assert output.margin.item() == 0.0


def test_self_play_sample_follows_the_velocity_field():
    x_0, noise = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    start = torch.tensor([0.2, 0.4, 0.6, 1.0])

    def exact(sample, sigma):  # the velocity field of data that is x_0 alone, row by row
        return (sample - x_0) / sigma.view(-1, 1, 1, 1)

    torch.testing.assert_close(self_play_sample(exact, x_0, noise, start, num_steps=3), x_0, rtol=1e-5, atol=1e-5)
    still = self_play_sample(lambda sample, sigma: torch.zeros_like(sample), x_0, noise, start, num_steps=3)
    torch.testing.assert_close(still, sample_path(x_0, noise, start).x_t)
    constant = self_play_sample(lambda sample, sigma: torch.ones_like(sample), x_0, noise, start, num_steps=5)
    torch.testing.assert_close(constant, sample_path(x_0, noise, start).x_t - start.view(-1, 1, 1, 1))
    with pytest.raises(ValueError, match="num_steps"):
        self_play_sample(exact, x_0, noise, start, num_steps=0)
