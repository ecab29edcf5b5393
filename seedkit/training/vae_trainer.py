"""Causal video VAE training: L1 / MSE + KL + weight-free perceptual terms, on ShapesWorld and real clips.

The loss needs no downloaded network:

* ``l1``, ``mse``: mean absolute and mean squared pixel error, optionally weighted towards pixels that differ from
  their frame's median (``foreground_weight``: objects are a few percent of a ShapesWorld frame);
* ``kl``: KL of the diagonal Gaussian posterior to N(0, I), averaged per latent element;
* ``gradient``: L1 between finite differences (height, width and, for videos, time) of input and reconstruction,
  which keeps edges sharp and motion consistent;
* ``laplacian``: L1 between Laplacian pyramid levels (per frame), which weights fine detail like a perceptual loss;
* ``blend`` (optional): the decoded blend of two samples' latents against the same blend of their pixels, so that
  a latent between two codes decodes to something between their pictures (what a diffusion model's uncertain
  predictions are), not to a third colour;
* ``scale_equivariance`` (optional; Skorokhodov et al. 2025, arXiv:2502.14831): the latents average-pooled in
  height and width decode to the video pooled by the same factor; the paper finds that this takes energy out of
  the latent's high spatial frequencies and that such a code is easier for a diffusion model to fit.

After training, :func:`export_vae` measures the latent mean / std on fresh samples and stores them as the VAE's
``shift_factor`` / ``scaling_factor``, so the transformer sees roughly unit-variance latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seedkit.data.buckets import BucketBatchSampler
from seedkit.data.datasets import (
    EpochKeyedBatchSampler,
    MixedVideoDataset,
    RealClipCrops,
    collate_videos,
    shared_videos_dir,
)
from seedkit.models import flavors

from .config import VAELossConfig, VAERecipeConfig, to_flat_dict
from .pixel_losses import foreground_weights, gradient_loss, laplacian_loss
from .trainer import StepOutput, Trainer, make_accelerator, seed_everything


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) averaged over every latent element."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


@dataclass
class VAEForwardOutput:
    """What :class:`VAETrainingWrapper` returns.

    Attributes:
        reconstruction: `[B, 3, F, H, W]` the decoded latents.
        mean, logvar: `[B, C, F', H', W']` the posterior's moments.
        blend_reconstruction: `[B, 3, F, H, W]` the decoded latent blends (with `latent_blend`), else None.
        blend_target: `[B, 3, F, H, W]` the same blends of the input pixels, else None.
        pooled_reconstruction: `[B, 3, F, H / s, W / s]` the decoded latents average-pooled by `s` in height and
            width (with `scale_equivariance_factor`), else None.
        pooled_target: `[B, 3, F, H / s, W / s]` the input pixels pooled the same way, else None.
    """

    reconstruction: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    blend_reconstruction: torch.Tensor | None = None
    blend_target: torch.Tensor | None = None
    pooled_reconstruction: torch.Tensor | None = None
    pooled_target: torch.Tensor | None = None


class VAETrainingWrapper(nn.Module):
    """``forward(video, generator) -> VAEForwardOutput`` so DDP / FSDP see one forward call.

    Args:
        vae: the :class:`~seedkit.models.autoencoder_causal.CausalVideoAutoencoder` being trained.
        sample_posterior: decode a posterior sample (True) or its mean.
        decoder_noise: in training mode, add ``N(0, s^2)`` to the latents before decoding, ``s ~ U(0, decoder_noise)``
            per sample, in normalised latent units (``decoder_noise / scaling_factor`` in the VAE's own units).
        latent_blend: also decode ``a * z_i + (1 - a) * z_j``, sample ``i`` blended with the next one in the batch
            (``j = i + 1``, cyclic), ``a ~ U(0, 1)`` per sample; the target is the same blend of the pixels.
        scale_equivariance_factor: also decode the latents average-pooled by this factor in height and width; the
            target is the video pooled by the same factor. ``None`` skips it.
    """

    def __init__(
        self,
        vae: nn.Module,
        sample_posterior: bool = True,
        decoder_noise: float = 0.0,
        latent_blend: bool = False,
        scale_equivariance_factor: int | None = None,
    ) -> None:
        super().__init__()
        if decoder_noise < 0:
            raise ValueError(f"decoder_noise is a standard deviation and must be >= 0, got {decoder_noise}")
        if scale_equivariance_factor is not None and scale_equivariance_factor < 2:
            raise ValueError(
                f"scale_equivariance_factor pools the latents by that factor and must be >= 2, "
                f"got {scale_equivariance_factor}"
            )
        self.scale_equivariance_factor = scale_equivariance_factor
        self.vae = vae
        self.sample_posterior = sample_posterior
        self.decoder_noise = decoder_noise
        self.latent_blend = latent_blend

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> VAEForwardOutput:
        posterior = self.vae.encode(video).latent_dist
        latents = posterior.sample(generator=generator) if self.sample_posterior else posterior.mode()
        if self.training and self.decoder_noise > 0:
            latents = self._add_decoder_noise(latents, generator)
        output = VAEForwardOutput(self.vae.decode(latents).sample, posterior.mean, posterior.logvar)
        if self.latent_blend:
            if video.shape[0] < 2:
                raise ValueError("latent blending mixes the samples of a batch; it needs a batch size of 2 or more")
            shape = (video.shape[0],) + (1,) * (video.dim() - 1)
            weight = torch.rand(shape, generator=generator, device=video.device, dtype=latents.dtype)
            blended = weight * latents + (1 - weight) * latents.roll(-1, dims=0)
            output.blend_reconstruction = self.vae.decode(blended).sample
            pixel_weight = weight.to(video.dtype)
            output.blend_target = pixel_weight * video + (1 - pixel_weight) * video.roll(-1, dims=0)
        if self.scale_equivariance_factor is not None:
            factor = self.scale_equivariance_factor
            height, width = latents.shape[-2:]
            if height % factor or width % factor:
                raise ValueError(
                    f"scale equivariance pools latents of {height}x{width} (height x width) by {factor}; both must be "
                    f"divisible by it (frame sizes divisible by {factor} x the VAE's spatial compression)"
                )
            pool = (1, factor, factor)
            output.pooled_reconstruction = self.vae.decode(F.avg_pool3d(latents, pool)).sample
            output.pooled_target = F.avg_pool3d(video, pool)
        return output

    def _add_decoder_noise(self, latents: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        scale = self.decoder_noise / self.vae.config.scaling_factor
        shape = (latents.shape[0],) + (1,) * (latents.dim() - 1)
        std = torch.rand(shape, generator=generator, device=latents.device, dtype=latents.dtype) * scale
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        return latents + std * noise


class VAEObjective:
    """Weighted sum of the four terms; every term is logged."""

    def __init__(self, loss: VAELossConfig) -> None:
        self.weights = loss

    def __call__(self, model: nn.Module, batch: dict, generator: torch.Generator) -> StepOutput:
        video = batch["video"]
        output = model(video, generator)
        reconstruction = output.reconstruction.float()
        l1, mse = self.pixel_errors(reconstruction, video)
        terms = {
            "l1": l1,
            "mse": mse,
            "kl": kl_loss(output.mean.float(), output.logvar.float()),
            "gradient": gradient_loss(reconstruction, video),
            "laplacian": laplacian_loss(reconstruction, video, self.weights.laplacian_levels),
        }
        weights = {
            "l1": self.weights.l1_weight,
            "mse": self.weights.mse_weight,
            "kl": self.weights.kl_weight,
            "gradient": self.weights.gradient_weight,
            "laplacian": self.weights.laplacian_weight,
        }
        if output.blend_reconstruction is not None:
            # The reconstruction's pixel error: L1 + MSE at their weights.
            blend_l1, blend_mse = self.pixel_errors(output.blend_reconstruction.float(), output.blend_target)
            terms["blend"] = self.weights.l1_weight * blend_l1 + self.weights.mse_weight * blend_mse
            weights["blend"] = self.weights.blend_weight
        if output.pooled_reconstruction is not None:
            pooled_l1, pooled_mse = self.pixel_errors(output.pooled_reconstruction.float(), output.pooled_target)
            terms["scale_equivariance"] = self.weights.l1_weight * pooled_l1 + self.weights.mse_weight * pooled_mse
            weights["scale_equivariance"] = self.weights.scale_equivariance_weight
        loss = sum(weights[name] * value for name, value in terms.items())
        with torch.no_grad():
            mse = (reconstruction.clamp(-1, 1) - video).pow(2).mean().clamp_min(1e-10)
            psnr = 10.0 * torch.log10(4.0 / mse)  # pixel range [-1, 1] has peak-to-peak 2
        logs = {f"loss_{name}": value.item() for name, value in terms.items()}
        logs["psnr"] = psnr.item()
        return StepOutput(loss=loss, logs=logs, num_samples=video.shape[0], num_tokens=video[:, 0].numel())

    def pixel_errors(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean absolute and mean squared error, weighted towards pixels that differ from their frame's median."""
        error = prediction - target
        pixel_weight = foreground_weights(target, self.weights.foreground_weight)
        return (pixel_weight * error.abs()).mean(), (pixel_weight * error.pow(2)).mean()


def build_vae_dataset(config: VAERecipeConfig) -> MixedVideoDataset:
    data = config.data
    real = None
    directory = shared_videos_dir() if data.real_videos_dir == "auto" else data.real_videos_dir
    if directory and data.real_fraction > 0:
        largest = max(max(size[1], size[2]) for size in data.sizes)
        real = RealClipCrops(directory, short_side=max(2 * largest, 64), max_frames=data.real_max_frames)
    return MixedVideoDataset(
        data.sizes, data.samples_per_epoch, seed=config.train.seed, real_clips=real, real_fraction=data.real_fraction
    )


def build_vae_model(config: VAERecipeConfig) -> nn.Module:
    from seedkit.models.autoencoder_causal import CausalVideoAutoencoder

    if config.model.freeze_vae_encoder and not config.model.vae_path:
        raise ValueError("model.freeze_vae_encoder needs model.vae_path (the VAE whose encoder stays fixed)")
    if config.model.vae_path:
        vae = CausalVideoAutoencoder.from_pretrained(config.model.vae_path)
    else:
        vae = CausalVideoAutoencoder(**{**flavors.get(config.model.flavor).vae, **config.model.vae})
    # The encoder alone produces the latent moments (no quant conv), so freezing it fixes every latent.
    vae.encoder.requires_grad_(not config.model.freeze_vae_encoder)
    return vae


def build_vae_trainer(config: VAERecipeConfig, accelerator=None) -> Trainer:
    accelerator = accelerator or make_accelerator(config.train)
    seed_everything(config.train.seed)
    dataset = build_vae_dataset(config)
    sampler = BucketBatchSampler(
        dataset.bucket_keys(),
        config.train.batch_size,
        seed=config.train.seed,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    return Trainer(
        config.train,
        config.optim,
        config.ema,
        VAETrainingWrapper(
            build_vae_model(config),
            config.loss.sample_posterior,
            config.loss.decoder_noise,
            latent_blend=config.loss.blend_weight > 0,
            scale_equivariance_factor=(
                config.loss.scale_equivariance_factor if config.loss.scale_equivariance_weight > 0 else None
            ),
        ),
        VAEObjective(config.loss),
        dataset,
        EpochKeyedBatchSampler(sampler),
        accelerator,
        collate_fn=collate_videos,
        run_config=to_flat_dict(config),
    )


@torch.no_grad()
def measure_latent_statistics(vae: nn.Module, dataset: MixedVideoDataset, num_samples: int) -> tuple[float, float]:
    """``(shift_factor, scaling_factor)`` that map posterior means of ``num_samples`` fixed samples to mean 0, std 1."""
    rng = np.random.default_rng(12345)
    latents = []
    for index in rng.choice(len(dataset), size=min(num_samples, len(dataset)), replace=False).tolist():
        video = dataset[(index, 10_000)]["video"].unsqueeze(0)
        latents.append(vae.encode(video).latent_dist.mean.flatten())
    flat = torch.cat(latents).double()
    return float(flat.mean()), float(1.0 / flat.std())


@torch.no_grad()
def export_vae(trainer: Trainer, out_dir: str | Path, num_samples: int = 32, use_ema: bool = True) -> Path:
    """Save the (EMA) VAE with measured ``shift_factor`` / ``scaling_factor``; returns the ``vae`` directory."""
    out_dir = Path(out_dir)
    # EMA tracks trainable parameters only; frozen ones (a fixed encoder) come from the model itself.
    state = trainer.model_state_dict()
    if use_ema and trainer.ema is not None:
        state = {**state, **trainer.ema.state_dict()}
    if trainer.accelerator.is_main_process:
        vae = trainer.unwrapped_model.vae
        exported = type(vae).from_config(vae.config)
        exported.load_state_dict({k.removeprefix("vae."): v for k, v in state.items()})
        exported.eval()
        # A fixed encoder keeps the latent statistics that cached latents were normalised with.
        if any(parameter.requires_grad for parameter in vae.encoder.parameters()):
            shift, scale = measure_latent_statistics(exported, trainer.dataset, num_samples)
            exported.register_to_config(shift_factor=shift, scaling_factor=scale)
        exported.save_pretrained(out_dir / "vae", safe_serialization=True)
    trainer.accelerator.wait_for_everyone()
    return out_dir / "vae"
