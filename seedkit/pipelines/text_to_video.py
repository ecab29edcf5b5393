"""Text-to-video generation with a seedkit MMDiT, causal video VAE and text encoder."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from seedkit.flow.conditioning import first_frame_condition
from seedkit.models.text_encoders import TextEmbeddings
from seedkit.pipelines.base import SeedkitPipelineBase, SeedkitVideoPipelineOutput

__all__ = ["SeedkitTextToVideoPipeline"]


class SeedkitTextToVideoPipeline(SeedkitPipelineBase):
    r"""Text-to-video with rectified flow, in one stage or image first.

    Image first (`image_first=True`, or the model's `image_first` config) factorises generation as Emu Video does
    (Girdhar et al. 2023, "Emu Video: Factorizing Text-to-Video Generation by Explicit Image Conditioning",
    arXiv:2311.10709): the first frame is sampled as an image (one latent frame, the text-to-image task), then the
    video is sampled with that latent frame as its image-to-video condition. The image pass runs the model's image
    experts where it has them (`image_transformer`, `image_transformer_2`), its video experts otherwise; the video
    experts need `condition_channels = latent_channels + 1`. It helps where a model draws a subject better in an image
    than in the latent frames its VAE packs several video frames into, and holds a subject it is shown: ShapesWorld's
    default model draws the asked shape far more often in images, and keeps a given first frame's shape.

    Components and config: see :class:`~seedkit.pipelines.base.SeedkitPipelineBase`.

    Example:
        ```py
        pipe = SeedkitTextToVideoPipeline.from_pretrained("path/to/model")
        frames = pipe("a red circle bouncing", num_frames=17, num_inference_steps=30, guidance_scale=5.0).frames[0]
        ```
    """

    @torch.no_grad()
    def __call__(
        self,
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
        image_first: bool | None = None,
    ) -> SeedkitVideoPipelineOutput | tuple:
        r"""Generate videos.

        Args:
            prompt: the prompt(s); each must be non-empty.
            negative_prompt: one negative prompt for all, or one per prompt (default: the empty string).
            height, width: pixels, multiples of :attr:`size_multiple` (default: the model's `default_height` /
                `default_width`).
            num_frames: `1 + 4k` frames (default: the model's `default_num_frames`).
            num_inference_steps: solver steps.
            sigmas: a custom decreasing sigma schedule (overrides `num_inference_steps`).
            guidance_scale: classifier-free guidance scale; `<= 1` disables CFG (one forward per step).
            guidance_rescale: guidance rescale factor in [0, 1] (Lin et al. 2024).
            guidance_scale_2: the scale of the low-noise expert's steps in a two-expert model (`transformer_2`,
                below `boundary_ratio`), as Wan 2.2 has it; None uses `guidance_scale` for every step.
            num_videos_per_prompt: samples per prompt.
            generator: torch generator(s) for the initial noise.
            latents: `[B, C, F', H', W']` initial noise to use instead of sampling it.
            prompt_embeds / negative_prompt_embeds: precomputed :class:`TextEmbeddings` instead of prompts.
            output_type: "np", "pil", "pt" or "latent" (see :class:`SeedkitVideoPipelineOutput`).
            return_dict: return a :class:`SeedkitVideoPipelineOutput` rather than a tuple.
            attention_kwargs: passed to the transformer (`{"backend": ..., "scale": lora_scale}`).
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict` after every step.
            callback_on_step_end_tensor_inputs: names put in `callback_kwargs` (see `_callback_tensor_inputs`).
            max_sequence_length: text tokens per prompt (default: the model's `max_sequence_length`).
            image_first: sample the first frame as an image, then the video conditioned on it (default: the model's
                `image_first`). The image's starting noise is the first latent frame of `latents`; the callback runs
                on the video's steps only.

        Returns:
            :class:`SeedkitVideoPipelineOutput` with `frames`, or `(frames,)`.
        """
        # 0. Defaults from the model directory's config.
        height = height or self.config.default_height
        width = width or self.config.default_width
        num_frames = num_frames or self.config.default_num_frames
        prompt = self._as_prompt_list(prompt, "prompt")
        negative_prompt = self._as_prompt_list(negative_prompt, "negative_prompt")
        image_first = self.config.get("image_first", False) if image_first is None else image_first
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs; every error names the valid values.
        if image_first:
            self.check_first_frame_condition("image_first")
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

        # 5. Image first: the first latent frame alone, as text-to-image, becomes the video's first-frame condition.
        condition = None
        if image_first:
            image_latents = latents[:, :, :1].clone()
            timesteps = self.set_scheduler_timesteps(
                num_inference_steps, tuple(image_latents.shape), device, sigmas, image=True
            )
            image_latents = self.denoise(
                image_latents,
                timesteps,
                prompt_embeds,
                negative_prompt_embeds,
                guidance_scale,
                guidance_rescale,
                guidance_scale_2=guidance_scale_2,
                progress_label="image pass",
                image=True,
                generator=generator,
            )
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
            progress_label="video pass" if image_first else None,
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
