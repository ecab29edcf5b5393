"""Image-to-video generation: the first frame is given, through the transformer's condition channels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput

from seedkit.flow.conditioning import first_frame_condition
from seedkit.models.text_encoders import TextEmbeddings
from seedkit.pipelines.base import SeedkitPipelineBase, SeedkitVideoPipelineOutput

__all__ = ["SeedkitImageToVideoPipeline"]


class SeedkitImageToVideoPipeline(SeedkitPipelineBase):
    r"""Image-to-video with rectified flow and first-frame conditioning.

    The image is encoded by the VAE as a one-frame clip (one causal latent frame) and given to the transformer as
    `condition = [first-frame latents, zeros elsewhere; mask]` (:func:`seedkit.flow.first_frame_condition`), so the
    transformer must have `condition_channels = latent_channels + 1`.

    Components and config: see :class:`~seedkit.pipelines.base.SeedkitPipelineBase`.
    """

    def encode_image(
        self,
        image: PipelineImageInput,
        height: int,
        width: int,
        batch_size: int,
        device: torch.device,
    ) -> torch.Tensor:
        """Image(s) -> normalised first-frame latents `[B, C, 1, H', W']`, resized to `height x width`.

        One image is used for every prompt; a list must hold one image per prompt.
        """
        pixels = self.video_processor.preprocess(image, height=height, width=width)  # [N, 3, H, W] in [-1, 1]
        if pixels.shape[0] not in (1, batch_size):
            raise ValueError(f"got {pixels.shape[0]} images for {batch_size} prompts; give one image or {batch_size}")
        pixels = pixels.to(device=device, dtype=self.vae.dtype)
        # The posterior mode, not a sample: the given frame should be reproduced, not re-noised.
        latents = self.vae.encode(pixels[:, :, None], return_dict=False)[0].mode()
        latents = self.normalize_latents(latents.float())
        return latents.expand(batch_size, -1, -1, -1, -1) if latents.shape[0] == 1 else latents

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int = 50,
        sigmas: list[float] | None = None,
        guidance_scale: float = 5.0,
        guidance_rescale: float = 0.0,
        guidance_scale_2: float | None = None,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: TextEmbeddings | None = None,
        negative_prompt_embeds: TextEmbeddings | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int | None = None,
    ) -> SeedkitVideoPipelineOutput | tuple:
        r"""Generate videos that start from `image`.

        Args:
            image: the first frame (PIL image, `[H, W, 3]` array in [0, 1], `[3, H, W]` tensor in [-1, 1], or a
                list with one per prompt); resized to `height x width`.
            Others as :meth:`SeedkitTextToVideoPipeline.__call__`.

        Returns:
            :class:`SeedkitVideoPipelineOutput` with `frames`, or `(frames,)`.
        """
        # 0. Defaults from the model directory's config.
        height = height or self.config.default_height
        width = width or self.config.default_width
        num_frames = num_frames or self.config.default_num_frames
        prompt = self._as_prompt_list(prompt, "prompt")
        negative_prompt = self._as_prompt_list(negative_prompt, "negative_prompt")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs; every error names the valid values.
        if image is None:
            raise ValueError("image-to-video needs `image` (a PIL image, array or tensor) for the first frame")
        self.check_first_frame_condition("image-to-video")
        self.check_inputs(
            prompt,
            negative_prompt,
            height,
            width,
            num_frames,
            output_type,
            prompt_embeds,
            negative_prompt_embeds,
            callback_on_step_end_tensor_inputs,
        )
        self.set_guidance(guidance_scale, guidance_scale_2)
        self._attention_kwargs = attention_kwargs
        self._interrupt = False

        # 2. Call parameters.
        device = self._execution_device
        batch_size = len(prompt) if prompt is not None else prompt_embeds.hidden_states.shape[0]

        # 3. Encode the prompts (conditional and, with CFG, unconditional).
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt,
            negative_prompt,
            self.do_classifier_free_guidance,
            num_videos_per_prompt=num_videos_per_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=max_sequence_length,
            device=device,
        )

        # 4. Initial noise in the normalised latent space.
        latents = self.prepare_latents(
            batch_size * num_videos_per_prompt, num_frames, height, width, device, generator, latents
        )

        # 5. Encode the first frame into the condition tensor (the same for CFG's conditional and unconditional
        #    halves: guidance acts on the text only).
        image_latents = self.encode_image(image, height, width, batch_size, device)
        image_latents = image_latents.repeat_interleave(num_videos_per_prompt, dim=0)
        condition = first_frame_condition(image_latents, num_latent_frames=latents.shape[2])

        # 6. Timesteps (resolution-aware shift when the scheduler uses dynamic shifting).
        timesteps = self.set_scheduler_timesteps(num_inference_steps, tuple(latents.shape), device, sigmas)

        # 7. Denoising loop.
        latents = self.denoise(
            latents,
            timesteps,
            prompt_embeds,
            negative_prompt_embeds,
            guidance_scale,
            guidance_rescale,
            condition=condition,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            guidance_scale_2=guidance_scale_2,
            generator=generator,
        )

        # 8. Decode and post-process.
        if output_type == "latent":
            frames = latents
        else:
            video = self.decode_latents(latents)
            frames = self.video_processor.postprocess_video(video.float(), output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return SeedkitVideoPipelineOutput(frames=frames)
