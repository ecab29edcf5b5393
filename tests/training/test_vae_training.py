"""VAE training: the weight-free loss terms and a few real optimisation steps of the debug VAE."""

from __future__ import annotations

import json

import pytest
import torch

from seedkit.data.datasets import collate_videos
from seedkit.training.config import VAERecipeConfig, load_config
from seedkit.training.pixel_losses import foreground_weights, gradient_loss, laplacian_loss, laplacian_pyramid
from seedkit.training.vae_trainer import build_vae_trainer, export_vae, kl_loss


def test_loss_terms():
    torch.manual_seed(0)
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    assert gradient_loss(video, video) == 0 and laplacian_loss(video, video) == 0
    blurred = torch.nn.functional.avg_pool3d(video, (1, 3, 3), stride=1, padding=(0, 1, 1))
    shifted = video + 0.3  # a brightness offset changes no gradient and only the low-pass level
    assert gradient_loss(blurred, video) > 0.05 and gradient_loss(shifted, video) < 1e-6
    assert laplacian_loss(blurred, video) > laplacian_loss(shifted, video) / 8  # detail is weighted, not just offsets
    assert gradient_loss(video[:, :, :1], video[:, :, :1] * 0) > 0  # images use spatial differences only
    assert kl_loss(torch.zeros(4), torch.zeros(4)) == 0 and kl_loss(torch.ones(4), torch.zeros(4)) == 0.5


def test_laplacian_pyramid_reconstructs_exactly():
    images = torch.randn(3, 3, 16, 24, dtype=torch.float64)
    pyramid = laplacian_pyramid(images, levels=3)
    reconstruction = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        up = torch.nn.functional.interpolate(reconstruction, size=band.shape[-2:], mode="bilinear", align_corners=False)
        reconstruction = up + band
    torch.testing.assert_close(reconstruction, images)


def small_vae_recipe(tmp_path, *extra: str) -> VAERecipeConfig:
    return load_config(
        None,
        [
            f"train.output_dir={tmp_path}",
            "train.max_steps=4",
            "train.batch_size=2",
            "train.trackers=[]",
            "train.progress_bar=false",
            "train.checkpoint_every=4",
            "optim.lr=3e-3",
            "optim.warmup_steps=0",
            "optim.lr_scheduler=constant",
            "data.sizes=[[5, 16, 16], [1, 16, 16]]",
            "data.samples_per_epoch=8",
            "data.real_fraction=0",
            *extra,
        ],
        cls=VAERecipeConfig,
    )


@pytest.mark.parametrize(
    "extra",
    [(), ("loss.blend_weight=0.5",), ("loss.scale_equivariance_weight=0.5",)],
    ids=["plain", "latent_blend", "scale_equivariance"],
)
def test_vae_recipe_trains_and_exports(tmp_path, extra):
    trainer = build_vae_trainer(small_vae_recipe(tmp_path, *extra))
    probe = collate_videos([trainer.dataset[(index, 0)] for index in (0, 2)])  # two 5-frame clips

    def probe_loss() -> float:
        with torch.no_grad():
            return trainer.objective(trainer.model, probe, torch.Generator().manual_seed(0)).loss.item()

    before = probe_loss()
    trainer.train()
    assert len(trainer.losses) == 4 and all(torch.isfinite(torch.tensor(trainer.losses)))
    assert probe_loss() < before  # it learns
    path = export_vae(trainer, tmp_path / "final", num_samples=2)
    saved = json.loads((path / "config.json").read_text())
    assert saved["scaling_factor"] != 1.0 and saved["scaling_factor"] > 0
    from seedkit.models.autoencoder_causal import CausalVideoAutoencoder

    reloaded = CausalVideoAutoencoder.from_pretrained(path)
    for name, tensor in trainer.ema.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name.removeprefix("vae.")], tensor)


def test_training_wrapper_decodes_the_posterior_mean_when_asked():
    from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
    from seedkit.models.flavors import vae_config
    from seedkit.training.vae_trainer import VAETrainingWrapper

    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(**vae_config("debug")).eval()
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    expected = vae.decode(vae.encode(video).latent_dist.mode()).sample
    deterministic = VAETrainingWrapper(vae, sample_posterior=False)
    sampled = VAETrainingWrapper(vae, sample_posterior=True)
    first = deterministic(video, torch.Generator().manual_seed(1)).reconstruction
    second = deterministic(video, torch.Generator().manual_seed(2)).reconstruction
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    noisy = sampled(video, torch.Generator().manual_seed(1)).reconstruction
    assert (noisy - expected).abs().max() > 1e-3  # the default still samples


def debug_vae_recording_decodes(**config) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A debug-flavor VAE (with `config` overrides) and the list its `decode` calls append their latents to."""
    from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
    from seedkit.models.flavors import vae_config

    vae = CausalVideoAutoencoder(**{**vae_config("debug"), **config})
    decoded = []
    original_decode = vae.decode

    def recording_decode(latents, *args, **kwargs):
        decoded.append(latents.detach().clone())
        return original_decode(latents, *args, **kwargs)

    vae.decode = recording_decode
    return vae, decoded


def test_decoder_noise_perturbs_latents_in_training_only_at_the_configured_scale():
    from seedkit.training.vae_trainer import VAETrainingWrapper

    torch.manual_seed(0)
    vae, decoded = debug_vae_recording_decodes(scaling_factor=0.5)
    video = torch.rand(64, 3, 1, 16, 16) * 2 - 1
    mean = vae.encode(video).latent_dist.mode()
    wrapper = VAETrainingWrapper(vae, sample_posterior=False, decoder_noise=0.4).train()
    wrapper(video, torch.Generator().manual_seed(3))
    wrapper(video, torch.Generator().manual_seed(3))
    torch.testing.assert_close(decoded[0], decoded[1])  # the trainer's generator makes it reproducible
    per_sample_std = (decoded[0] - mean).flatten(1).std(dim=1)
    # s ~ U(0, 0.4 / scaling_factor) = U(0, 0.8) in the VAE's units: spread over the range, never beyond it.
    assert per_sample_std.max() < 0.8 * 1.2
    assert per_sample_std.min() < 0.2 and per_sample_std.max() > 0.6
    wrapper.eval()(video, torch.Generator().manual_seed(3))
    torch.testing.assert_close(decoded[2], mean)  # evaluation decodes the clean latents
    with pytest.raises(ValueError, match="decoder_noise"):
        VAETrainingWrapper(vae, decoder_noise=-0.1)


def test_latent_blend_decodes_a_blend_of_two_samples_latents_against_the_same_blend_of_pixels():
    from seedkit.training.vae_trainer import VAETrainingWrapper

    torch.manual_seed(0)
    vae, decoded = debug_vae_recording_decodes()
    video = torch.rand(3, 3, 5, 16, 16) * 2 - 1
    latents = vae.encode(video).latent_dist.mode()
    output = VAETrainingWrapper(vae, sample_posterior=False, latent_blend=True)(video, torch.Generator().manual_seed(4))
    torch.testing.assert_close(decoded[0], latents)
    # Recover each sample's weight from the pixel target, then check the decoded latents used the same weights with
    # the next sample in the batch (cyclic).
    partner = video.roll(-1, dims=0)
    weight = ((output.blend_target - partner) / (video - partner)).flatten(1).median(dim=1).values
    assert ((weight > 0) & (weight < 1)).all() and weight.std() > 0  # one weight per sample, drawn in (0, 1)
    weight = weight.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(output.blend_target, weight * video + (1 - weight) * partner)
    torch.testing.assert_close(decoded[1], weight * latents + (1 - weight) * latents.roll(-1, dims=0))
    torch.testing.assert_close(output.blend_reconstruction, vae.decode(decoded[1]).sample)
    assert VAETrainingWrapper(vae, sample_posterior=False)(video).blend_reconstruction is None
    with pytest.raises(ValueError, match="batch size of 2"):
        VAETrainingWrapper(vae, latent_blend=True)(video[:1])


def test_blend_term_is_the_reconstruction_pixel_error_of_the_blends():
    from seedkit.training.config import VAELossConfig
    from seedkit.training.vae_trainer import VAEForwardOutput, VAEObjective

    video = torch.rand(2, 3, 1, 8, 8) * 2 - 1
    target = video.flip(0)
    zeros = torch.zeros(2, 4, 1, 2, 2)

    def model(blend_offset: float):
        return lambda batch, generator: VAEForwardOutput(video, zeros, zeros, target + blend_offset, target)

    weights = VAELossConfig(l1_weight=1.0, mse_weight=4.0, blend_weight=0.5, gradient_weight=0, laplacian_weight=0)
    objective = VAEObjective(weights)
    exact = objective(model(0.0), {"video": video}, torch.Generator())
    off = objective(model(0.1), {"video": video}, torch.Generator())
    assert exact.logs["loss_blend"] == 0 and exact.loss.item() == 0  # a perfect reconstruction, zero-moment KL
    # |error| = 0.1 everywhere, foreground weight 0: L1 0.1 and MSE 0.01 at weights 1 and 4.
    assert off.logs["loss_blend"] == pytest.approx(0.1 + 4.0 * 0.01)
    assert off.loss.item() == pytest.approx(0.5 * (0.1 + 4.0 * 0.01))


def test_scale_equivariance_decodes_pooled_latents_against_pooled_pixels():
    from seedkit.training.vae_trainer import VAETrainingWrapper

    torch.manual_seed(0)
    vae, decoded = debug_vae_recording_decodes()
    video = torch.rand(2, 3, 5, 32, 16) * 2 - 1  # latents 4 x 2 (height x width)
    latents = vae.encode(video).latent_dist.mode()
    output = VAETrainingWrapper(vae, sample_posterior=False, scale_equivariance_factor=2)(video)
    pooled = torch.nn.functional.avg_pool3d(latents, (1, 2, 2))
    assert pooled.shape[-2:] == (2, 1)
    torch.testing.assert_close(decoded[1], pooled)
    torch.testing.assert_close(output.pooled_reconstruction, vae.decode(pooled).sample)
    assert output.pooled_reconstruction.shape == output.pooled_target.shape == (2, 3, 5, 16, 8)
    # Each target pixel is the mean of its 2 x 2 block, frame by frame.
    torch.testing.assert_close(output.pooled_target[:, :, 3, 1, 2], video[:, :, 3, 2:4, 4:6].mean(dim=(-2, -1)))
    assert VAETrainingWrapper(vae, sample_posterior=False)(video).pooled_reconstruction is None
    with pytest.raises(ValueError, match="divisible"):
        VAETrainingWrapper(vae, scale_equivariance_factor=2)(video[..., :24, :])  # latent height 3
    with pytest.raises(ValueError, match=">= 2"):
        VAETrainingWrapper(vae, scale_equivariance_factor=1)


def test_scale_equivariance_term_is_the_pixel_error_of_the_pooled_decode():
    from seedkit.training.config import VAELossConfig
    from seedkit.training.vae_trainer import VAEForwardOutput, VAEObjective

    video = torch.rand(2, 3, 1, 8, 8) * 2 - 1
    pooled = torch.nn.functional.avg_pool3d(video, (1, 2, 2))
    zeros = torch.zeros(2, 4, 1, 2, 2)

    def model(offset: float):
        return lambda batch, generator: VAEForwardOutput(
            video, zeros, zeros, pooled_reconstruction=pooled + offset, pooled_target=pooled
        )

    weights = VAELossConfig(
        l1_weight=1.0, mse_weight=4.0, scale_equivariance_weight=0.25, gradient_weight=0, laplacian_weight=0
    )
    exact = VAEObjective(weights)(model(0.0), {"video": video}, torch.Generator())
    off = VAEObjective(weights)(model(0.1), {"video": video}, torch.Generator())
    assert exact.logs["loss_scale_equivariance"] == 0 and exact.loss.item() == 0
    assert off.logs["loss_scale_equivariance"] == pytest.approx(0.1 + 4.0 * 0.01)
    assert off.loss.item() == pytest.approx(0.25 * (0.1 + 4.0 * 0.01))


def test_decoder_only_fine_tune_keeps_the_encoder_and_latent_statistics(tmp_path):
    from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
    from seedkit.models.flavors import vae_config

    torch.manual_seed(0)
    base = CausalVideoAutoencoder(**vae_config("debug"))
    base.register_to_config(shift_factor=0.25, scaling_factor=1.5)
    base.save_pretrained(tmp_path / "base")
    trainer = build_vae_trainer(
        small_vae_recipe(tmp_path / "run", f"model.vae_path={tmp_path / 'base'}", "model.freeze_vae_encoder=true")
    )
    trainer.train()
    tuned = CausalVideoAutoencoder.from_pretrained(export_vae(trainer, tmp_path / "final"))
    assert (tuned.config.shift_factor, tuned.config.scaling_factor) == (0.25, 1.5)
    for name, tensor in base.state_dict().items():
        if name.startswith("encoder."):
            torch.testing.assert_close(tuned.state_dict()[name], tensor)
    changed = [name for name, tensor in base.decoder.state_dict().items()
               if not torch.equal(tuned.decoder.state_dict()[name], tensor)]
    assert changed  # the decoder trained
    with pytest.raises(ValueError, match="vae_path"):
        build_vae_trainer(small_vae_recipe(tmp_path / "bad", "model.freeze_vae_encoder=true"))


def test_foreground_weights_emphasise_pixels_off_the_backdrop():
    video = torch.full((1, 3, 2, 8, 8), -0.5)
    video[:, :, :, 2:4, 2:4] = 0.5  # a 2x2 object, colour distance 1.0 from the backdrop
    weights = foreground_weights(video, 4.0)
    assert weights.shape == (1, 1, 2, 8, 8)
    assert (
        torch.allclose(weights[..., 2:4, 2:4], torch.tensor(5.0))
        and torch.allclose(weights[..., 0, 0], torch.tensor(1.0))
    )
    assert torch.equal(foreground_weights(video, 0.0), torch.ones(1, 1, 2, 8, 8))


def test_resume_when_some_parameters_never_had_a_gradient(tmp_path):
    # Images only: the VAE's temporal layers get no gradient, so the saved optimizer state has no entry for them.
    first = build_vae_trainer(small_vae_recipe(tmp_path, "data.sizes=[[1, 16, 16]]", "train.max_steps=2",
                                               "train.checkpoint_every=2"))
    first.train()
    resumed = build_vae_trainer(small_vae_recipe(tmp_path, "data.sizes=[[1, 16, 16]]", "train.checkpoint_every=2"))
    resumed.train()
    straight = build_vae_trainer(small_vae_recipe(tmp_path / "straight", "data.sizes=[[1, 16, 16]]"))
    straight.train()
    assert resumed.state.step == 4
    assert first.losses + resumed.losses == straight.losses  # bit-identical to an uninterrupted run
