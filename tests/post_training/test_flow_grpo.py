"""Flow-GRPO: the SDE step against closed forms, advantages, the clipped loss, a toy policy that learns its target,
and the trainer on the debug pipeline (exact resume, export)."""

import math

import pytest
import torch

from seedkit.pipelines import SeedkitTextToVideoPipeline
from seedkit.post_training.flow_grpo import (
    Trajectory,
    flow_sde_step,
    group_advantages,
    grpo_step_loss,
    sample_trajectory,
    sde_noise_scale,
)
from seedkit.post_training.grpo_trainer import FlowGRPOTrainer, GRPOConfig


def gaussian_data_velocity(data_std: float):
    """The exact rectified-flow velocity for data ~ N(0, s^2): E[noise - x0 | x_t] = (t - (1 - t) s^2) x / var_t."""

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        variance = (1 - sigma) ** 2 * data_std**2 + sigma**2
        return (sigma - (1 - sigma) * data_std**2) * x / variance

    return velocity


def test_sde_step_closed_form_and_density():
    x = torch.tensor([[0.5, -1.0]])
    v = torch.tensor([[0.2, 0.3]])
    sigma, sigma_next = torch.tensor(0.6), torch.tensor(0.5)
    a = 0.7
    step = flow_sde_step(v, x, sigma, sigma_next, a, max_sigma=0.9, generator=torch.Generator().manual_seed(0))
    g = a * math.sqrt(0.6 / 0.4)
    dt = -0.1
    expected_mean = x + (v + g**2 / (2 * 0.6) * (x + 0.4 * v)) * dt
    torch.testing.assert_close(step.mean, expected_mean)
    torch.testing.assert_close(step.std, torch.tensor(g * math.sqrt(0.1)))
    density = torch.distributions.Normal(expected_mean, g * math.sqrt(0.1)).log_prob(step.prev_sample).mean(dim=1)
    torch.testing.assert_close(step.log_prob, density)
    # Scoring a given next state reproduces the density the rollout recorded.
    rescored = flow_sde_step(v, x, sigma, sigma_next, a, max_sigma=0.9, prev_sample=step.prev_sample)
    torch.testing.assert_close(rescored.log_prob, step.log_prob)


def test_small_noise_level_approaches_the_euler_step():
    x, v = torch.randn(4, 3), torch.randn(4, 3)
    step = flow_sde_step(v, x, torch.tensor(0.8), torch.tensor(0.7), 1e-4, max_sigma=0.9)
    torch.testing.assert_close(step.mean, x - 0.1 * v, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="noise_level must be > 0"):
        flow_sde_step(v, x, torch.tensor(0.8), torch.tensor(0.7), 0.0, max_sigma=0.9)


def test_noise_scale_is_capped_where_it_diverges():
    assert torch.isfinite(sde_noise_scale(torch.tensor(1.0), 0.7, max_sigma=0.9))
    torch.testing.assert_close(sde_noise_scale(torch.tensor(1.0), 0.7, 0.9), torch.tensor(0.7 * 3.0))


def test_sde_rollout_keeps_the_flow_marginals():
    """With the exact velocity of Gaussian data, SDE samples end with the data's spread (the ODE's marginals)."""
    data_std = 0.5
    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    sigmas = torch.linspace(1.0, 0.0, 101)
    trajectory = sample_trajectory(
        gaussian_data_velocity(data_std), noise, sigmas, noise_level=0.7, generator=torch.Generator().manual_seed(1)
    )
    assert trajectory.states.shape == (101, 20000, 1) and trajectory.log_probs.shape == (100, 20000)
    for index in (50, 80):
        sigma = float(sigmas[index])
        expected = math.sqrt((1 - sigma) ** 2 * data_std**2 + sigma**2)
        assert abs(float(trajectory.states[index].std()) - expected) < 0.03 * expected
    assert abs(float(trajectory.samples.std()) - data_std) < 0.03 * data_std
    assert abs(float(trajectory.samples.mean())) < 0.02


def test_sample_trajectory_rejects_a_bad_schedule():
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_trajectory(lambda x, s: x, torch.zeros(1, 1), torch.tensor([0.0, 1.0]), 0.7)


def test_group_advantages():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    advantages = group_advantages(rewards, group_size=4)
    torch.testing.assert_close(advantages[:4], torch.tensor([1.0, -1.0, 1.0, -1.0]), atol=1e-3, rtol=0)
    assert torch.equal(advantages[4:], torch.zeros(4))  # no spread, no signal
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(6), group_size=4)


class ConstantTarget(torch.nn.Module):
    """The velocity of a flow whose data is the point `target`: v = (x - target) / sigma."""

    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = torch.nn.Parameter(torch.tensor(target))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (x - self.target) / sigma


def toy_rollout(policy, batch=8, seed=0):
    sigmas = torch.linspace(1.0, 0.0, 6)
    noise = torch.randn(batch, 1, generator=torch.Generator().manual_seed(seed))
    return sample_trajectory(policy, noise, sigmas, 0.7, generator=torch.Generator().manual_seed(seed + 1))


def test_loss_on_policy_is_the_policy_gradient():
    policy = ConstantTarget(0.0)
    trajectory = toy_rollout(policy)
    advantages = torch.linspace(-1, 1, 8)
    output = grpo_step_loss(policy, trajectory, 2, advantages, clip_range=0.2, noise_level=0.7)
    torch.testing.assert_close(output.ratio.detach(), torch.tensor(1.0))
    torch.testing.assert_close(output.loss.detach(), -advantages.mean())
    output.loss.backward()
    gradient = policy.target.grad.clone()
    policy.target.grad = None
    step = flow_sde_step(
        policy(trajectory.states[2], trajectory.sigmas[2]), trajectory.states[2], trajectory.sigmas[2],
        trajectory.sigmas[3], 0.7, 0.8, prev_sample=trajectory.states[3],
    )
    (-(advantages * step.log_prob).mean()).backward()
    torch.testing.assert_close(gradient, policy.target.grad)


def test_clipping_stops_the_gradient_outside_the_trust_region():
    """Outside [1 - eps, 1 + eps] PPO keeps the pessimistic term: the unclipped one (with its gradient) where the ratio
    moved against the advantage's sign, the clipped constant where it moved with it."""
    policy = ConstantTarget(0.0)
    trajectory = toy_rollout(policy)
    with torch.no_grad():
        policy.target.fill_(0.5)  # the policy moved since the rollout
    eps = 1e-6
    advantages = torch.tensor([1.0, -1.0] * 4)
    output = grpo_step_loss(policy, trajectory, 4, advantages, clip_range=eps, noise_level=0.7)
    assert float(output.clip_fraction) == 1.0
    output.loss.backward()
    gradient = policy.target.grad.clone()
    policy.target.grad = None
    sigmas, states = trajectory.sigmas, trajectory.states
    step = flow_sde_step(policy(states[4], sigmas[4]), states[4], sigmas[4], sigmas[5], 0.7, 0.8, prev_sample=states[5])
    ratio = torch.exp(step.log_prob - trajectory.log_probs[4])
    against = (advantages * (ratio.detach() - 1)) < 0
    assert bool(against.any()) and not bool(against.all())  # the case exercises both branches
    (-(advantages * ratio * against).mean()).backward()
    torch.testing.assert_close(gradient, policy.target.grad)


def test_kl_term_needs_a_reference_and_is_zero_against_itself():
    policy = ConstantTarget(0.3)
    trajectory = toy_rollout(policy)
    with pytest.raises(ValueError, match="reference_velocity_fn"):
        grpo_step_loss(policy, trajectory, 0, torch.ones(8), 0.2, 0.7, kl_coef=0.1)
    output = grpo_step_loss(policy, trajectory, 0, torch.ones(8), 0.2, 0.7, kl_coef=0.1, reference_velocity_fn=policy)
    assert float(output.kl) == 0.0
    moved = ConstantTarget(0.8)
    output = grpo_step_loss(moved, trajectory, 0, torch.ones(8), 0.2, 0.7, kl_coef=0.1, reference_velocity_fn=policy)
    assert float(output.kl) > 0.0


def test_grpo_moves_a_toy_policy_to_the_rewarded_target():
    """Reward -(x - 2)^2 on the final samples: GRPO steps move the policy's point from 0 towards 2."""
    policy = ConstantTarget(0.0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    rewards_seen = []
    for iteration in range(40):
        trajectory = toy_rollout(policy, batch=16, seed=iteration)
        rewards = -((trajectory.samples[:, 0] - 2.0) ** 2)
        rewards_seen.append(float(rewards.mean()))
        advantages = group_advantages(rewards, group_size=8)
        for step_index in range(trajectory.num_steps):
            grpo_step_loss(policy, trajectory, step_index, advantages, 0.2, 0.7).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert float(policy.target.detach()) > 1.0
    assert sum(rewards_seen[-5:]) / 5 > sum(rewards_seen[:5]) / 5 + 1.0


# -- the trainer on the debug pipeline ------------------------------------------------------------------------------


def debug_pipeline():
    pipe = SeedkitTextToVideoPipeline.from_flavor(
        "debug", seed=0, default_height=16, default_width=16, default_num_frames=5, max_sequence_length=16
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in pipe.transformer.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Prompt:
    def __init__(self, prompt: str) -> None:
        self.prompt = prompt


PROMPTS = [Prompt("a red circle moving left"), Prompt("a blue square"), Prompt("a green triangle bouncing")]


def prompt_source(iteration, count):
    return [PROMPTS[(iteration + index) % len(PROMPTS)] for index in range(count)]


def brightness_reward(items, videos):
    assert len(items) == videos.shape[0] and videos.shape[1:] == (3, 5, 16, 16)
    rewards = videos.mean(dim=(1, 2, 3, 4))
    return rewards, [{"brightness": float(value)} for value in rewards]


def make_trainer(output_dir, iterations):
    config = GRPOConfig(
        output_dir=str(output_dir), height=16, width=16, num_frames=5, num_steps=3, group_size=2,
        prompts_per_iteration=2, iterations=iterations, lr=1e-3, train_batch_size=3, timestep_fraction=0.7,
        checkpoint_every=2, guidance_scale=3.0,
    )
    return FlowGRPOTrainer(debug_pipeline(), config, prompt_source, brightness_reward)


def test_trainer_resume_is_exact_and_export_reloads(tmp_path):
    straight = make_trainer(tmp_path / "straight", iterations=3)
    history = straight.train(progress=False)
    assert [record["iteration"] for record in history] == [0, 1, 2]
    assert all(math.isfinite(record["loss"]) and record["grad_norm"] > 0 for record in history)
    assert "metric/brightness" in history[0]

    interrupted = make_trainer(tmp_path / "resumed", iterations=2)
    interrupted.train(progress=False)
    resumed = make_trainer(tmp_path / "resumed", iterations=3)
    assert resumed.resume() and resumed.iteration == 2
    resumed.train(progress=False)
    assert resumed.history[-1]["loss"] == history[-1]["loss"]
    for name, tensor in straight.pipeline.transformer.state_dict().items():
        assert torch.equal(tensor, resumed.pipeline.transformer.state_dict()[name]), name

    initial = debug_pipeline().transformer.state_dict()
    trained = straight.pipeline.transformer.state_dict()
    assert any(not torch.equal(initial[name], tensor) for name, tensor in trained.items())
    out = straight.export(tmp_path / "export", torch.float16)
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(out)
    for name, tensor in straight.pipeline.transformer.state_dict().items():
        torch.testing.assert_close(reloaded.transformer.state_dict()[name].float(), tensor.half().float())


def test_trainer_trains_both_experts_and_checks_its_config(tmp_path):
    base = debug_pipeline()
    import copy

    pipe = SeedkitTextToVideoPipeline(
        **(base.components | {"transformer_2": copy.deepcopy(base.transformer)}),
        **(base.pipeline_kwargs() | {"boundary_ratio": 0.5}),
    )
    pipe.set_progress_bar_config(disable=True)
    config = GRPOConfig(output_dir=str(tmp_path), height=16, width=16, num_frames=5, num_steps=4, group_size=2,
                        prompts_per_iteration=1, iterations=1, lr=1e-3, guidance_scale_2=1.0, kl_coef=0.1)
    with torch.no_grad():  # the experts differ, so a reference step run by the wrong expert would show as KL
        for parameter in pipe.transformer_2.parameters():
            parameter.add_(0.05)
    before = [copy.deepcopy(model.state_dict()) for model in (pipe.transformer, pipe.transformer_2)]
    history = FlowGRPOTrainer(pipe, config, prompt_source, brightness_reward).train(progress=False)
    assert history[0]["kl"] < 1e-6  # before its first step the policy is its reference, expert by expert
    for state, model in zip(before, (pipe.transformer, pipe.transformer_2)):
        assert any(not torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        GRPOConfig(group_size=1)


def test_trajectory_samples_are_the_last_states():
    trajectory = Trajectory(torch.arange(6.0).view(3, 2), torch.zeros(2, 2), torch.tensor([1.0, 0.5, 0.0]))
    assert torch.equal(trajectory.samples, torch.tensor([4.0, 5.0])) and trajectory.num_steps == 2


def test_sde_window_takes_euler_steps_outside_and_trains_only_inside():
    velocity = gaussian_data_velocity(0.5)
    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    sigmas = torch.linspace(1.0, 0.0, 6)  # steps start at 1.0, 0.8, 0.6, 0.4, 0.2
    generator = torch.Generator().manual_seed(1)
    trajectory = sample_trajectory(velocity, noise, sigmas, 0.7, generator, sde_window=(0.5, 1.0))
    assert trajectory.trainable_steps == [0, 1, 2]
    for index in (3, 4):
        euler = trajectory.states[index] + (sigmas[index + 1] - sigmas[index]) * velocity(trajectory.states[index],
                                                                                        sigmas[index])
        torch.testing.assert_close(trajectory.states[index + 1], euler)
        assert torch.equal(trajectory.log_probs[index], torch.zeros(64))
    with pytest.raises(ValueError, match="deterministic"):
        grpo_step_loss(velocity, trajectory, 3, torch.ones(64), 0.2, 0.7)
    with pytest.raises(ValueError, match="contains no step"):
        sample_trajectory(velocity, noise, sigmas, 0.7, sde_window=(0.9, 0.95))


def test_trainer_with_an_sde_window_trains_the_window_only(tmp_path):
    config = GRPOConfig(output_dir=str(tmp_path), height=16, width=16, num_frames=5, num_steps=4, group_size=2,
                        prompts_per_iteration=1, iterations=1, lr=1e-3, sde_window=[0.5, 1.0])
    trainer = FlowGRPOTrainer(debug_pipeline(), config, prompt_source, brightness_reward)
    seen = []
    original = trainer.velocity_fn

    def recording_velocity_fn(*args, **kwargs):
        inner = original(*args, **kwargs)

        def velocity(latents, sigma):
            if torch.is_grad_enabled():
                seen.append(round(float(sigma), 3))
            return inner(latents, sigma)

        return velocity

    trainer.velocity_fn = recording_velocity_fn
    trainer.train(progress=False)
    assert seen and min(seen) >= 0.5
    with pytest.raises(ValueError, match="sde_window"):
        GRPOConfig(sde_window=[0.9, 0.1])
