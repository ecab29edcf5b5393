"""Flow-matching objective for joint text-to-image, text-to-video and image-to-video training.

One batch of cached latents becomes a mix of tasks:

* every prompt is replaced by the empty prompt with probability ``text_dropout`` (classifier-free guidance);
* every video (``F > 1``) is turned into an image-to-video example with probability ``i2v_probability``: the
  transformer's condition channels get the clean first latent frame followed by zeros, plus a mask channel that is
  1 on the conditioned frame. Non-I2V samples get an all-zero condition (the model learns "no condition");
* images (``F = 1``) are text-to-image examples.

The loss is :func:`seedkit.flow.flow_matching_loss` on the velocity ``noise - x_0`` at a noise level drawn by a
:mod:`seedkit.flow` timestep sampler, optionally weighted towards foreground positions (``foreground_weight``) and
plus ``temporal_difference_weight`` times :func:`seedkit.flow.temporal_difference_loss`, plus ``shape_contrast_weight``
times a hinge on the loss under shape-edited captions (:class:`ShapeWordContrast`), plus ``decoder_loss_weight`` times a
pixel-space loss of the implied clean sample through the frozen VAE decoder (:class:`DecodedFrameLoss`).
All randomness comes from the trainer's generator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from seedkit.data.packing import num_tokens
from seedkit.data.shapes_captions import shape_word_edits
from seedkit.flow import (
    PathSample,
    classifier_free_guidance,
    expand_sigma,
    flow_matching_loss,
    get_timestep_sampler,
    resolution_shift,
    sample_euler,
    sample_path,
    shift_sigmas,
    temporal_difference_loss,
    velocity_to_x0,
)
from seedkit.flow.conditioning import frame_condition
from seedkit.post_training.diffusion_dpo import flow_dpo_loss

from .config import TaskConfig
from .pixel_losses import foreground_weights, gradient_loss
from .trainer import StepOutput


class TransformerTrainingWrapper(nn.Module):
    """Routes ``forward(packed=True, ...)`` to the transformer's ``forward_packed``.

    DDP and FSDP only see calls through ``forward``; wrapping keeps packed batches on that path.
    """

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, packed: bool = False, **kwargs: Any) -> Any:
        if packed:
            return self.transformer.forward_packed(**kwargs)
        return self.transformer(**kwargs).sample


def load_wrapped_state(transformer: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a :class:`TransformerTrainingWrapper` state dict (``transformer.*`` keys, as checkpoints and the EMA hold
    them) into a bare transformer; keys the state lacks (the EMA tracks parameters only) keep their values."""
    weights = {name.removeprefix("transformer."): tensor for name, tensor in state.items()}
    transformer.load_state_dict({**transformer.state_dict(), **weights})
    return transformer


def first_frame_condition(latents: torch.Tensor, use: torch.Tensor) -> torch.Tensor:
    """``[B, C + 1, F, H, W]``: the first latent frame and a mask channel for samples where ``use`` is true.

    Built with :func:`seedkit.flow.conditioning.frame_condition`, the function the image-to-video pipeline uses, so
    training and sampling agree on the layout. Samples with ``use`` false get all zeros ("no frame given").

    Args:
        latents: ``[B, C, F, H, W]`` clean (normalised) latents.
        use: ``[B]`` bool, which samples are image-to-video examples.
    """
    frame_mask = torch.zeros(latents.shape[0], latents.shape[2], dtype=torch.bool, device=latents.device)
    frame_mask[:, 0] = use
    return frame_condition(latents, frame_mask)


def foreground_score(latents: torch.Tensor) -> torch.Tensor:
    """``[B, 1, F, H, W]`` foreground scores in ``[0, 1]`` of clean latents ``[B, C, F, H, W]``.

    A position's score is the channel mean of ``|x_0 - median_hw(x_0)|`` (the median per sample, channel and frame),
    divided by the frame's largest score: 0 on a flat background, 1 where the frame differs most from it.
    """
    flat = latents.flatten(3)  # [B, C, F, H*W]
    median = flat.median(dim=-1, keepdim=True).values
    score = (flat - median).abs().mean(dim=1, keepdim=True)  # [B, 1, F, H*W]
    score = score / score.amax(dim=-1, keepdim=True).clamp_min(1e-6)
    return score.view(latents.shape[0], 1, *latents.shape[2:])


def foreground_loss_weight(latents: torch.Tensor, strength: float) -> torch.Tensor:
    """``[B, 1, F, H, W]`` per-position loss weights ``1 + strength * foreground_score(latents)``.

    ShapesWorld objects cover a few latent positions of a flat frame, so the plain mean spends almost all of the
    loss on background; the weight is the latent-space counterpart of the VAE recipe's ``foreground_weight``.
    """
    return 1.0 + strength * foreground_score(latents)


class ShapeWordContrast:
    """Negative prompts for the shape-contrast term: a caption with one of its shape words replaced by another shape
    (:func:`~seedkit.data.shapes_captions.shape_word_edits`), drawn with the trainer's generator and encoded by the
    run's text encoder (a :class:`~seedkit.models.text_encoders.PromptEncoder`, the one the latent cache used).
    """

    def __init__(self, text_encoder: Any) -> None:
        self.text_encoder = text_encoder

    def edit(self, captions: list[str], generator: torch.Generator) -> dict[int, str]:
        """``{row: edited caption}`` for the captions that name a shape."""
        # One draw per caption, edit or not, so the generator's stream does not depend on what the captions say.
        draws = torch.randint(1 << 30, (len(captions),), generator=generator, device=generator.device).tolist()
        edited = {}
        for row, (caption, draw) in enumerate(zip(captions, draws)):
            edits = shape_word_edits(caption)
            if edits:
                edited[row] = edits[draw % len(edits)]
        return edited

    @torch.no_grad()
    def encode(self, captions: list[str], device: torch.device) -> Any:
        """:class:`~seedkit.models.text_encoders.TextEmbeddings` of ``captions`` on ``device``."""
        return self.text_encoder.encode(captions, device=device)


class DecodedFrameLoss:
    """Pixel-space loss of a predicted clean latent through a frozen VAE decoder.

    The latent MSE weighs every latent element alike, but the decoder does not: the few latent values that make a
    small square's corners (and not a circle's rim) are a small part of the MSE and most of what a viewer sees. After
    the latent perceptual loss of Berrada et al. 2025 (arXiv:2411.04873), which compares decoder features of the
    predicted and true clean latents, this decodes both to pixels and compares them there: foreground-weighted L1 plus
    the L1 of their spatial finite differences (edges and corners), the terms of the VAE recipe.

    Only each clip's first latent frame is decoded: the causal decoder turns it into the first pixel frame on its
    own, with no temporal context, at a sixteenth of a 17-frame clip's cost. The decoder stays frozen and outside the
    optimizer; gradients reach the transformer through the predicted latent.

    Args:
        vae: a :class:`~seedkit.models.autoencoder_causal.CausalVideoAutoencoder` (the one the latent cache used).
        foreground_weight: pixel weights ``1 + foreground_weight * |x - frame median|``
            (:func:`~seedkit.training.pixel_losses.foreground_weights`), so an object outweighs its flat background.
    """

    def __init__(self, vae: nn.Module, foreground_weight: float = 4.0) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.foreground_weight = foreground_weight

    def _decode_first_frame(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 1, H, W]`` pixels of normalised latents ``[B, C, F, h, w]``'s first frame."""
        config = self.vae.config
        first = latents[:, :, :1].to(self.vae.dtype) / config.scaling_factor + config.shift_factor
        return self.vae.decode(first).sample.float()

    def __call__(self, predicted: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """The loss between the first-frame decodings of ``predicted`` and ``clean`` (``[B, C, F, h, w]``), averaged
        over the batch's pixels."""
        with torch.no_grad():
            target = self._decode_first_frame(clean)
        decoded = self._decode_first_frame(predicted)
        weight = foreground_weights(target, self.foreground_weight)
        pixel = ((decoded - target).abs() * weight).sum() / (weight.sum() * target.shape[1])
        return pixel + gradient_loss(decoded, target)


@dataclass
class PromptInputs:
    """A batch's prompts (dropped ones already the empty prompt) and the empty prompt, padded to one length ``L``.

    Attributes:
        text: ``[B, L, D]``; text_mask: ``[B, L]``; pooled: ``[B, Dp]`` or None.
        empty_text: ``[L, D]``; empty_mask: ``[L]``; empty_pooled: ``[Dp]`` or None.
    """

    text: torch.Tensor
    text_mask: torch.Tensor
    pooled: torch.Tensor | None
    empty_text: torch.Tensor
    empty_mask: torch.Tensor
    empty_pooled: torch.Tensor | None

    def select(self, rows: torch.Tensor) -> PromptInputs:
        """The prompts of ``rows`` only (the empty prompt is the same for every row)."""
        pooled = None if self.pooled is None else self.pooled[rows]
        return replace(self, text=self.text[rows], text_mask=self.text_mask[rows], pooled=pooled)


class FlowMatchingObjective:
    """``objective(model, batch, generator) -> StepOutput`` for a wrapped transformer.

    Args:
        task: the recipe's ``task`` section.
        empty_prompt: ``{"text": [L0, D], "pooled": [Dp]?}`` (from the latent cache).
        condition_channels: the transformer's ``condition_channels`` (0: no image-to-video).
        shape_contrast: the edited prompts of ``task.shape_contrast_weight`` (required when it is > 0; batches then
            carry ``caption``, see :class:`~seedkit.data.datasets.LatentDataset`'s ``with_captions``).
        decoder_loss: the decoder of ``task.decoder_loss_weight`` (required when it is > 0).
    """

    def __init__(
        self,
        task: TaskConfig,
        empty_prompt: dict[str, torch.Tensor],
        condition_channels: int,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        shape_contrast: ShapeWordContrast | None = None,
        decoder_loss: DecodedFrameLoss | None = None,
    ) -> None:
        if task.shape_contrast_weight > 0 and shape_contrast is None:
            raise ValueError("task.shape_contrast_weight > 0 needs a ShapeWordContrast (the run's text encoder)")
        if task.decoder_loss_weight > 0 and decoder_loss is None:
            raise ValueError("task.decoder_loss_weight > 0 needs a DecodedFrameLoss (the VAE of the latent cache)")
        self.shape_contrast = shape_contrast if task.shape_contrast_weight > 0 else None
        self.decoder_loss = decoder_loss if task.decoder_loss_weight > 0 else None
        self.task = task
        self.patch_size = tuple(patch_size)
        self.empty_prompt = empty_prompt
        self.condition_channels = condition_channels
        kwargs = {"shift": task.shift, "sigma_range": tuple(task.sigma_range)}
        if task.timestep_sampling == "logit_normal":
            kwargs.update(mean=task.logit_mean, std=task.logit_std)
        self.sampler = get_timestep_sampler(task.timestep_sampling, **kwargs)

    def _draws(self, shapes: list[torch.Size], generator: torch.Generator, device: torch.device):
        """Noise levels, text-dropout and I2V flags for samples of latent ``shapes`` (``[C, F, H, W]`` each)."""
        batch_size = len(shapes)
        if self.task.resolution_shift:
            sigma = self.sampler.sample_unshifted(batch_size, generator, device)
            shifts = [resolution_shift(num_tokens(shape[1:], self.patch_size)) for shape in shapes]
            sigma = self.sampler.to_range(torch.stack([shift_sigmas(s, shift) for s, shift in zip(sigma, shifts)]))
        else:
            sigma = self.sampler.sample(batch_size, generator=generator, device=device)
        drop_text = torch.rand(batch_size, generator=generator, device=device) < self.task.text_dropout
        use_i2v = torch.rand(batch_size, generator=generator, device=device) < self.task.i2v_probability
        return sigma, drop_text, use_i2v

    def _loss(self, prediction: torch.Tensor, target: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Flow-matching MSE plus the optional temporal-difference term, for ``[B, C, F, H, W]`` tensors."""
        strength = self.task.foreground_weight
        weight = foreground_loss_weight(latents, strength) if strength else None
        loss = flow_matching_loss(prediction, target, mask=weight).loss
        if self.task.temporal_difference_weight:
            difference = temporal_difference_loss(prediction, target, mask=weight).loss
            loss = loss + self.task.temporal_difference_weight * difference
        return loss

    def __call__(self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> StepOutput:
        if isinstance(batch["latents"], list):
            return self._packed(model, batch, generator)
        latents = batch["latents"]
        batch_size, device = latents.shape[0], latents.device
        sigma, drop_text, use_i2v = self._draws([latents.shape[1:]] * batch_size, generator, device)
        if latents.shape[2] == 1:  # images are always text-to-image examples
            use_i2v = torch.zeros_like(use_i2v)
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        path = sample_path(latents, noise, sigma)

        prompts = self.prompt_inputs(batch, drop_text)
        text, text_mask, pooled = prompts.text, prompts.text_mask, prompts.pooled

        condition = first_frame_condition(latents, use_i2v) if self.condition_channels else None
        rollout_logs = {}
        if self.task.rollout_probability > 0:
            path, rollout_logs = self._rollout(model, path, prompts, condition, generator)
        prediction = model(
            hidden_states=path.x_t,
            timestep=path.timestep,
            encoder_hidden_states=text,
            encoder_attention_mask=text_mask,
            pooled_projections=pooled,
            condition=condition,
        )
        loss = self._loss(prediction, path.target, latents)
        logs = {"i2v_fraction": use_i2v.float().mean().item(), "text_dropout": drop_text.float().mean().item()}
        logs.update(rollout_logs)
        if self.shape_contrast is not None:
            hinge, gap = self._shape_contrast(
                model, batch["caption"], ~drop_text, path, prediction, latents, condition, generator
            )
            loss = loss + self.task.shape_contrast_weight * hinge
            logs.update(shape_hinge=hinge.item(), shape_gap=gap)
        if self.decoder_loss is not None:
            # Image-to-video samples are given their first frame: there is nothing to decode there.
            rows = (~use_i2v).nonzero().flatten()
            if len(rows):
                predicted = velocity_to_x0(path.x_t[rows], prediction[rows], sigma[rows])
                decoded = self.decoder_loss(predicted, latents[rows])
                loss = loss + self.task.decoder_loss_weight * decoded * len(rows) / batch_size
                logs["decoder_loss"] = decoded.item()
        tokens = latents[0, 0].numel() * batch_size
        return StepOutput(loss=loss, logs=logs, num_samples=batch_size, num_tokens=tokens)

    def prompt_inputs(self, batch: dict[str, Any], drop_text: torch.Tensor) -> PromptInputs:
        """The batch's prompts with those ``drop_text`` marks replaced by the empty prompt, and the empty prompt."""
        text, text_mask = batch["text"], batch["text_mask"]
        device = text.device
        empty = self.empty_prompt["text"].to(device=device, dtype=text.dtype)
        if empty.shape[0] > text.shape[1]:
            text = nn.functional.pad(text, (0, 0, 0, empty.shape[0] - text.shape[1]))
            text_mask = nn.functional.pad(text_mask, (0, empty.shape[0] - text_mask.shape[1]))
        empty_text = torch.zeros_like(text[0])
        empty_text[: empty.shape[0]] = empty
        empty_mask = torch.zeros_like(text_mask[0])
        empty_mask[: empty.shape[0]] = 1
        text = torch.where(drop_text.view(-1, 1, 1), empty_text, text)
        text_mask = torch.where(drop_text.view(-1, 1), empty_mask, text_mask)
        pooled = batch.get("pooled")
        empty_pooled = None
        if pooled is not None:
            empty_pooled = self.empty_prompt["pooled"].to(device=device, dtype=pooled.dtype)
            pooled = torch.where(drop_text.view(-1, 1), empty_pooled, pooled)
        return PromptInputs(text, text_mask, pooled, empty_text, empty_mask, empty_pooled)

    def guided_velocity(
        self,
        model: nn.Module,
        prompts: PromptInputs,
        condition: torch.Tensor | None,
        guidance_scale: float,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``velocity(x [B, ...], sigma [B]) -> [B, ...]``: ``model``'s classifier-free-guided velocity for the rows of
        ``prompts`` and ``condition`` (``[B, C + 1, F, H, W]`` or None), the conditional and unconditional halves in
        one batch, as the pipelines sample."""
        count = prompts.text.shape[0]
        inputs = {
            "encoder_hidden_states": torch.cat([prompts.text, prompts.empty_text.expand(count, -1, -1)]),
            "encoder_attention_mask": torch.cat([prompts.text_mask, prompts.empty_mask.expand(count, -1)]),
            "pooled_projections": None,
            "condition": None if condition is None else torch.cat([condition, condition]),
        }
        if prompts.pooled is not None:
            inputs["pooled_projections"] = torch.cat([prompts.pooled, prompts.empty_pooled.expand(count, -1)])

        def velocity(sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            sample, sigma = torch.cat([sample, sample]), torch.cat([sigma, sigma])
            both = model(hidden_states=sample, timestep=sigma * 1000.0, **inputs)
            conditional, unconditional = both.chunk(2)
            return classifier_free_guidance(conditional, unconditional, guidance_scale)

        return velocity

    @torch.no_grad()
    def _rollout(
        self,
        model: nn.Module,
        path: PathSample,
        prompts: PromptInputs,
        condition: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[PathSample, dict[str, float]]:
        """Scheduled sampling (``task.rollout_*``): ``path`` with some rows' ``x_t`` reached by the model's own guided
        Euler steps from a higher noise level, and their targets the velocity from there to the true ``x_0``.

        Returns the new path and logs: the share of rows rolled out and ``rollout_drift``, the RMS of how far the
        rolled-out targets moved from the forward path's, relative to the targets' RMS (0 for a perfect model).
        """
        task = self.task
        batch_size, device = path.x_0.shape[0], path.x_0.device
        # Both draws cover every row so the generator's stream does not depend on which rows roll out.
        use = torch.rand(batch_size, generator=generator, device=device) < task.rollout_probability
        fraction = torch.rand(batch_size, generator=generator, device=device)
        rows = use.nonzero().flatten()
        logs = {"rollout_fraction": use.float().mean().item()}
        if not len(rows):
            return path, logs
        sigma = path.sigma[rows]
        # delta <= sigma keeps the drift / sigma in the target within the size of the model's own velocity error.
        start = (sigma + fraction[rows] * sigma.clamp(max=task.rollout_span)).clamp(max=task.sigma_range[1])
        x_0, noise = path.x_0[rows], path.noise[rows]
        x = sample_path(x_0, noise, start).x_t
        velocity = self.guided_velocity(
            model, prompts.select(rows), None if condition is None else condition[rows], task.rollout_guidance
        )
        progress = torch.linspace(0.0, 1.0, task.rollout_steps + 1, device=start.device, dtype=start.dtype)
        x = sample_euler(velocity, x, start + progress[:, None] * (sigma - start))
        target = (x - x_0) / expand_sigma(sigma, x)
        moved = (target - path.target[rows]).square().mean() / path.target[rows].square().mean().clamp_min(1e-12)
        logs["rollout_drift"] = moved.sqrt().item()
        x_t, targets = path.x_t.clone(), path.target.clone()
        x_t[rows] = x.to(x_t.dtype)
        targets[rows] = target.to(targets.dtype)
        return replace(path, x_t=x_t, target=targets), logs

    def _shape_contrast(
        self,
        model: nn.Module,
        captions: list[str],
        keep: torch.Tensor,
        path: Any,
        prediction: torch.Tensor,
        latents: torch.Tensor,
        condition: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, float]:
        """``(mean hinge, mean gap)`` over the samples ``keep`` marks whose caption names a shape: the gap is the
        foreground-weighted loss under a shape-edited caption minus that under the true one, at the same noisy
        input; the hinge is ``max(0, margin - gap)``. Zero when no sample qualifies."""
        edited = self.shape_contrast.edit(captions, generator)
        kept = keep.tolist()
        rows = [row for row in edited if kept[row]]
        if not rows:
            return prediction.new_zeros(()), 0.0
        index = torch.tensor(rows, device=latents.device)
        negative = self.shape_contrast.encode([edited[row] for row in rows], latents.device)
        edited_prediction = model(
            hidden_states=path.x_t[index],
            timestep=path.timestep[index],
            encoder_hidden_states=negative.hidden_states.to(path.x_t.dtype),
            encoder_attention_mask=negative.attention_mask,
            pooled_projections=None if negative.pooled is None else negative.pooled.to(path.x_t.dtype),
            condition=None if condition is None else condition[index],
        )
        weight = foreground_score(latents[index])
        target = path.target[index]
        true_loss = flow_matching_loss(prediction[index], target, mask=weight).per_sample
        edited_loss = flow_matching_loss(edited_prediction, target, mask=weight).per_sample
        gap = edited_loss - true_loss
        hinge = torch.relu(self.task.shape_contrast_margin - gap)
        return hinge.mean(), gap.mean().item()

    def _packed(self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> StepOutput:
        if self.shape_contrast is not None or self.decoder_loss is not None or self.task.rollout_probability > 0:
            raise ValueError(
                "task.shape_contrast_weight > 0, task.decoder_loss_weight > 0 and task.rollout_probability > 0 need"
                " data.batching: bucket, not packed batches"
            )
        latents: list[torch.Tensor] = batch["latents"]
        count, device = len(latents), latents[0].device
        sigma, drop_text, use_i2v = self._draws([sample.shape for sample in latents], generator, device)
        texts, noised, targets, conditions = [], [], [], []
        pooled = batch.get("pooled")
        for index, sample in enumerate(latents):
            noise = torch.randn(sample.shape, generator=generator, device=device, dtype=sample.dtype)
            path = sample_path(sample.unsqueeze(0), noise.unsqueeze(0), sigma[index : index + 1])
            noised.append(path.x_t[0])
            targets.append(path.target[0])
            use = use_i2v[index : index + 1] & (sample.shape[1] > 1)
            if self.condition_channels:
                conditions.append(first_frame_condition(sample.unsqueeze(0), use)[0])
            empty = self.empty_prompt["text"].to(device=device, dtype=batch["text"][index].dtype)
            texts.append(empty if drop_text[index] else batch["text"][index])
        if pooled is not None:
            empty_pooled = self.empty_prompt["pooled"].to(device=device, dtype=pooled.dtype)
            pooled = torch.where(drop_text.view(-1, 1), empty_pooled, pooled)
        predictions = model(
            packed=True,
            hidden_states=noised,
            timestep=sigma * 1000.0,
            encoder_hidden_states=texts,
            encoder_attention_mask=None,
            pooled_projections=pooled,
            condition=conditions or None,
        )
        per_sample = [
            self._loss(prediction.unsqueeze(0), target.unsqueeze(0), sample.unsqueeze(0))
            for prediction, target, sample in zip(predictions, targets, latents)
        ]
        return StepOutput(
            loss=torch.stack(per_sample).mean(),
            logs={"i2v_fraction": use_i2v.float().mean().item(), "text_dropout": drop_text.float().mean().item()},
            num_samples=count,
            num_tokens=sum(sample[0].numel() for sample in latents),
        )


class SelfPlayDPOObjective(FlowMatchingObjective):
    """Diffusion-DPO on self-play pairs (``task.dpo_*``): ``objective(model, batch, generator) -> StepOutput``.

    Batches carry ``dispreferred`` ``[B, C, F, H, W]`` next to ``latents`` (see
    :class:`seedkit.training.recipes.SelfPlayPairs`). Both sides are noised to one level with one noise; the trained
    model and the frozen ``reference`` predict both, and the loss is
    :func:`seedkit.post_training.diffusion_dpo.flow_dpo_loss` plus ``task.dpo_sft_weight`` times the flow-matching loss
    on the data side. Every row is conditioned on its caption and on no frame: the pairs were sampled that way.

    Args:
        reference: the frozen starting weights, wrapped like the model (:class:`TransformerTrainingWrapper`).
    """

    def __init__(
        self,
        task: TaskConfig,
        empty_prompt: dict[str, torch.Tensor],
        condition_channels: int,
        reference: nn.Module,
        patch_size: tuple[int, int, int] = (1, 2, 2),
    ) -> None:
        super().__init__(task, empty_prompt, condition_channels, patch_size)
        self.reference = reference.eval().requires_grad_(False)

    def __call__(self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> StepOutput:
        if isinstance(batch["latents"], list):
            raise ValueError("task.dpo_beta > 0 needs data.batching: bucket, not packed batches")
        preferred, dispreferred = batch["latents"], batch["dispreferred"]
        batch_size, device = preferred.shape[0], preferred.device
        sigma, _, _ = self._draws([preferred.shape[1:]] * batch_size, generator, device)
        noise = torch.randn(preferred.shape, generator=generator, device=device, dtype=preferred.dtype)
        path_preferred = sample_path(preferred, noise, sigma)
        path_dispreferred = sample_path(dispreferred, noise, sigma)
        prompts = self.prompt_inputs(batch, torch.zeros(batch_size, dtype=torch.bool, device=device))
        no_frame = torch.zeros(2 * batch_size, dtype=torch.bool, device=device)
        both = torch.cat([preferred, dispreferred])
        inputs = {
            "hidden_states": torch.cat([path_preferred.x_t, path_dispreferred.x_t]),
            "timestep": torch.cat([path_preferred.timestep, path_dispreferred.timestep]),
            "encoder_hidden_states": torch.cat([prompts.text, prompts.text]),
            "encoder_attention_mask": torch.cat([prompts.text_mask, prompts.text_mask]),
            "pooled_projections": None if prompts.pooled is None else torch.cat([prompts.pooled, prompts.pooled]),
            "condition": first_frame_condition(both, no_frame) if self.condition_channels else None,
        }
        policy_preferred, policy_dispreferred = model(**inputs).chunk(2)
        with torch.no_grad():
            reference_preferred, reference_dispreferred = self.reference(**inputs).chunk(2)
        preference = flow_dpo_loss(
            policy_preferred,
            policy_dispreferred,
            reference_preferred,
            reference_dispreferred,
            path_preferred.target,
            path_dispreferred.target,
            beta=self.task.dpo_beta,
        )
        fit = flow_matching_loss(policy_preferred, path_preferred.target).loss
        logs = {
            "dpo_loss": preference.loss.item(),
            "dpo_accuracy": preference.accuracy,
            "dpo_margin": preference.margin.mean().item(),
            "preferred_error": preference.policy_preferred_error.mean().item(),
            "dispreferred_error": preference.policy_dispreferred_error.mean().item(),
        }
        tokens = preferred[0, 0].numel() * batch_size
        return StepOutput(
            loss=preference.loss + self.task.dpo_sft_weight * fit, logs=logs, num_samples=batch_size, num_tokens=tokens
        )
