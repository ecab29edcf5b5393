"""FlowMatchSDEScheduler: the ODE when its noise is off, the flow's marginals with it on (Gaussian data, closed form),
its window, reproducibility through the pipeline's generator, config round trips and errors."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from seedkit.pipelines import SeedkitTextToImagePipeline, SeedkitTextToVideoPipeline
from seedkit.pipelines.schedulers import FlowMatchSDEScheduler, SDESampling

from .test_seedkit_pipelines import make_pipeline, seeded


def gaussian_data_velocity(x: torch.Tensor, sigma: float, data_std: float) -> torch.Tensor:
    """The exact rectified-flow velocity for data ~ N(0, s^2): E[noise - x0 | x_t] = (t - (1 - t) s^2) x / var_t."""
    variance = (1 - sigma) ** 2 * data_std**2 + sigma**2
    return (sigma - (1 - sigma) * data_std**2) * x / variance


def sample(scheduler, noise: torch.Tensor, steps: int, data_std: float, generator=None) -> list[torch.Tensor]:
    """Every state of a sampling loop driven by `scheduler` with the exact Gaussian-data velocity."""
    scheduler.set_timesteps(steps)
    states = [noise]
    for timestep in scheduler.timesteps:
        sigma = float(scheduler.sigmas[scheduler.step_index or 0])
        velocity = gaussian_data_velocity(states[-1], sigma, data_std)
        states.append(scheduler.step(velocity, timestep, states[-1], generator=generator, return_dict=False)[0])
    return states


def test_without_noise_it_is_diffusers_euler_scheduler():
    noise = torch.randn(64, 3, generator=seeded(0))
    ours = sample(FlowMatchSDEScheduler(shift=3.0), noise, 20, 0.5, generator=seeded(1))
    reference = sample(FlowMatchEulerDiscreteScheduler(shift=3.0), noise, 20, 0.5)
    for state, expected in zip(ours, reference):
        torch.testing.assert_close(state, expected, atol=0, rtol=0)


def test_sde_sampling_keeps_the_flow_marginals():
    """With the exact velocity of Gaussian data the SDE's states have the ODE's spread at every noise level."""
    data_std, steps = 0.5, 100
    noise = torch.randn(20000, 1, generator=seeded(0))
    scheduler = FlowMatchSDEScheduler(sde_noise_level=0.7)
    states = sample(scheduler, noise, steps, data_std, generator=seeded(1))
    ode = sample(FlowMatchEulerDiscreteScheduler(), noise, steps, data_std)
    for index in (50, 80, steps):
        sigma = float(scheduler.sigmas[index])
        expected = math.sqrt((1 - sigma) ** 2 * data_std**2 + sigma**2)
        assert abs(float(states[index].std()) - expected) < 0.03 * expected
    assert abs(float(states[-1].mean())) < 0.02
    # the same spread by another path: samples are not the ODE's
    assert float((states[-1] - ode[-1]).abs().mean()) > 0.05


def test_only_steps_in_the_window_are_stochastic():
    scheduler = FlowMatchSDEScheduler(sde_noise_level=0.5, sde_min_sigma=0.2, sde_max_sigma=0.6)
    euler = FlowMatchEulerDiscreteScheduler()
    noise = torch.randn(8, 4, generator=seeded(2))
    ours = sample(scheduler, noise, 10, 0.5, generator=seeded(3))
    sigmas = scheduler.sigmas
    euler.set_timesteps(10)
    for index, timestep in enumerate(euler.timesteps):
        sigma = float(sigmas[index])
        euler._step_index = index
        velocity = gaussian_data_velocity(ours[index], sigma, 0.5)
        euler_step = euler.step(velocity, timestep, ours[index], return_dict=False)[0]
        stochastic = 0.2 <= sigma <= 0.6
        assert scheduler.is_stochastic_step(sigma, float(sigmas[index + 1])) == stochastic
        assert torch.equal(ours[index + 1], euler_step) != stochastic, f"step {index} at sigma {sigma:.2f}"
    # the last step into sigma 0 is never stochastic, whatever the window
    assert not FlowMatchSDEScheduler(sde_noise_level=1.0).is_stochastic_step(0.1, 0.0)


def test_pipeline_samples_are_reproducible_and_differ_from_the_ode():
    pipe = make_pipeline()
    kwargs = dict(prompt="a red circle moving left", num_inference_steps=4, guidance_scale=3.0, output_type="latent")
    ode = pipe(**kwargs, generator=seeded(0)).frames
    pipe.scheduler = FlowMatchSDEScheduler.from_config(pipe.scheduler.config, sde_noise_level=0.0)
    torch.testing.assert_close(pipe(**kwargs, generator=seeded(0)).frames, ode, atol=0, rtol=0)
    pipe.scheduler = FlowMatchSDEScheduler.from_config(pipe.scheduler.config, sde_noise_level=0.8)
    first = pipe(**kwargs, generator=seeded(0)).frames
    torch.testing.assert_close(pipe(**kwargs, generator=seeded(0)).frames, first, atol=0, rtol=0)
    assert not torch.allclose(first, ode)
    # per-prompt generators: each sample's noise comes from its own generator
    batch = pipe(**{**kwargs, "prompt": ["a red circle", "a red circle"]}, generator=[seeded(0), seeded(0)]).frames
    torch.testing.assert_close(batch[0], batch[1], atol=1e-5, rtol=0)


def test_a_saved_pipeline_reloads_its_sde_scheduler(tmp_path):
    pipe = make_pipeline()
    pipe.scheduler = FlowMatchSDEScheduler.from_config(
        pipe.scheduler.config, sde_noise_level=0.4, sde_min_sigma=0.1, sde_max_sigma=0.6
    )
    pipe.save_pretrained(tmp_path / "model")
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(reloaded.scheduler, FlowMatchSDEScheduler)
    config = reloaded.scheduler.config
    assert (config.sde_noise_level, config.sde_min_sigma, config.sde_max_sigma) == (0.4, 0.1, 0.6)
    assert config.shift == pipe.scheduler.config.shift


def test_bad_settings_say_what_is_valid():
    with pytest.raises(ValueError, match="sde_noise_level must be >= 0"):
        FlowMatchSDEScheduler(sde_noise_level=-0.1)
    with pytest.raises(ValueError, match="0 <= sde_min_sigma <= sde_max_sigma <= 1"):
        FlowMatchSDEScheduler(sde_noise_level=0.5, sde_min_sigma=0.7, sde_max_sigma=0.6)
    with pytest.raises(ValueError, match="set one of them"):
        FlowMatchSDEScheduler(sde_noise_level=0.5, stochastic_sampling=True)


@pytest.mark.parametrize("passes", ["images", "videos"])
def test_sde_sampling_of_images_or_videos_only(passes, tmp_path):
    video = make_pipeline()
    image = SeedkitTextToImagePipeline(**video.components, **video.pipeline_kwargs())
    image.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a red circle", num_inference_steps=4, guidance_scale=3.0, output_type="latent")
    ode_video = video(**kwargs, generator=seeded(0)).frames
    ode_image = image(**kwargs, generator=seeded(0)).images
    SDESampling(0.8, passes=passes).apply(video)
    image = SeedkitTextToImagePipeline(**video.components, **video.pipeline_kwargs())
    image.set_progress_bar_config(disable=True)
    sde_video = video(**kwargs, generator=seeded(0)).frames
    sde_image = image(**kwargs, generator=seeded(0)).images
    assert torch.equal(sde_video, ode_video) == (passes == "images")
    assert torch.equal(sde_image, ode_image) == (passes == "videos")
    video.save_pretrained(tmp_path / "model")
    reloaded = SeedkitTextToImagePipeline.from_pretrained(tmp_path / "model")
    reloaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(reloaded(**kwargs, generator=seeded(0)).images, sde_image, atol=0, rtol=0)


def test_sde_sampling_of_everything_uses_one_scheduler():
    pipe = make_pipeline()
    SDESampling(0.5, window=(0.0, 0.6), passes="images").apply(pipe)
    SDESampling(0.3, window=(0.1, 0.5)).apply(pipe)
    assert pipe.image_scheduler is None and pipe.scheduler_for(image=True) is pipe.scheduler
    config = pipe.scheduler.config
    assert (config.sde_noise_level, config.sde_min_sigma, config.sde_max_sigma) == (0.3, 0.1, 0.5)
    with pytest.raises(ValueError, match="all, images, videos"):
        SDESampling(0.5, passes="frames")


def test_writing_a_sampler_into_a_model_directory_leaves_the_weights(tmp_path):
    import hashlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))
    from set_sampler import main

    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path / "model")

    def weights():
        files = (tmp_path / "model").rglob("*.safetensors")
        return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}

    before = weights()
    arguments = ["--sde-noise", "0.6", "--sde-window", "0", "0.8", "--sde-passes", "images"]
    assert main([str(tmp_path / "model"), *arguments]) == 0
    assert weights() == before
    reloaded = SeedkitTextToImagePipeline.from_pretrained(tmp_path / "model")
    reloaded.set_progress_bar_config(disable=True)
    SDESampling(0.6, (0.0, 0.8), "images").apply(pipe)
    expected = SeedkitTextToImagePipeline(**pipe.components, **pipe.pipeline_kwargs())
    expected.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a red circle", num_inference_steps=4, guidance_scale=3.0, output_type="latent")
    torch.testing.assert_close(
        reloaded(**kwargs, generator=seeded(0)).images, expected(**kwargs, generator=seeded(0)).images, atol=0, rtol=0
    )
    # "all" needs no image scheduler: its folder and entry go
    assert main([str(tmp_path / "model"), "--sde-noise", "0.3"]) == 0
    assert not (tmp_path / "model" / "image_scheduler").exists()
    reloaded = SeedkitTextToVideoPipeline.from_pretrained(tmp_path / "model")
    assert reloaded.image_scheduler is None and reloaded.scheduler.config.sde_noise_level == 0.3


def test_per_token_timesteps_are_refused_on_sde_steps():
    scheduler = FlowMatchSDEScheduler(sde_noise_level=0.5)
    scheduler.set_timesteps(4)
    sample = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="per_token_timesteps"):
        scheduler.step(torch.zeros_like(sample), scheduler.timesteps[0], sample, per_token_timesteps=torch.ones(1, 4))
