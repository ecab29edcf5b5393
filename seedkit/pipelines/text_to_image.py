"""Text-to-image generation: the video model with a single frame (`F = 1`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from seedkit.models.text_encoders import TextEmbeddings
from seedkit.pipelines.base import SeedkitPipelineBase

__all__ = ["SeedkitTextToImagePipeline"]


class SeedkitTextToImagePipeline(SeedkitPipelineBase):
    r"""Text-to-image with rectified flow; images are one-frame videos to the transformer and the causal VAE.

    A model with image experts (`image_transformer`, `image_transformer_2`) samples with them. Components and config:
    see :class:`~seedkit.pipelines.base.SeedkitPipelineBase`.

    Example:
        ```py
        pipe = SeedkitTextToImagePipeline.from_pretrained("path/to/model")
        image = pipe("a blue square on a white background", num_inference_steps=30).images[0]
        ```
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        sigmas: list[float] | None = None,
        guidance_scale: float = 5.0,
        guidance_rescale: float = 0.0,
        guidance_scale_2: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: TextEmbeddings | None = None,
        negative_prompt_embeds: TextEmbeddings | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images.

        Arguments as :meth:`SeedkitTextToVideoPipeline.__call__` without `num_frames`; `latents` are
        `[B, C, 1, H', W']`.

        Returns:
            `ImagePipelineOutput(images=...)`: a list of PIL images (`"pil"`), a `[B, H, W, 3]` array in [0, 1]
            (`"np"`), a `[B, 3, H, W]` tensor in [0, 1] (`"pt"`) or the latents `[B, C, 1, H', W']` (`"latent"`).
        """
        # 0. Defaults from the model directory's config; an image is a single frame.
        height = height or self.config.default_height
        width = width or self.config.default_width
        num_frames = 1
        prompt = self._as_prompt_list(prompt, "prompt")
        negative_prompt = self._as_prompt_list(negative_prompt, "negative_prompt")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs; every error names the valid values.
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
            num_videos_per_prompt=num_images_per_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=max_sequence_length,
            device=device,
        )

        # 4. Initial noise in the normalised latent space.
        latents = self.prepare_latents(
            batch_size * num_images_per_prompt, num_frames, height, width, device, generator, latents
        )

        # 5. Timesteps (resolution-aware shift when the scheduler uses dynamic shifting).
        timesteps = self.set_scheduler_timesteps(num_inference_steps, tuple(latents.shape), device, sigmas, image=True)

        # 6. Denoising loop.
        latents = self.denoise(
            latents,
            timesteps,
            prompt_embeds,
            negative_prompt_embeds,
            guidance_scale,
            guidance_rescale,
            condition=None,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            guidance_scale_2=guidance_scale_2,
            image=True,
            generator=generator,
        )

        # 7. Decode the single frame and post-process.
        if output_type == "latent":
            images = latents
        else:
            pixels = self.decode_latents(latents)[:, :, 0]
            images = self.video_processor.postprocess(pixels.float(), output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
