"""Validation samples while a transformer trains: what the EMA weights generate, every ``validation.every`` steps.

Loss curves of a flow-matching model say little about what it draws; the diffusers and finetrainers training scripts
sample fixed prompts at fixed seeds during training for that reason, and so does every seedkit transformer recipe
with ``validation.prompts``. Samples land in ``<output_dir>/samples/step-XXXXXXXX/`` (one mp4 or png per prompt and a
``contact_sheet.png``, prompts in rows and evenly spaced frames in columns) and the contact sheet goes to the
tensorboard tracker.

With ``validation.sensitivity_clips`` the same weights also go through the caption-sensitivity probe
(:mod:`evaluation.shapesbench.sensitivity`): ``sensitivity.json`` in the step's directory and
``sensitivity/<attribute>`` (the true caption's preference, 0.5 = the words are ignored) and
``sensitivity_gap/<attribute>`` (the foreground loss gap, 0 = ignored) in the trackers, so a run
shows when, or whether, its transformer starts using colour, shape, size and motion words, which loss curves hide.

A run that trains one noise-interval expert (``task.sigma_range`` short of ``[0, 1]``) alone would sample garbage
outside its interval; with ``validation.partner_transformer_path`` and ``validation.boundary_ratio`` the samples come
from the expert pair it will ship in (the partner fixed, the trained expert's current weights on its side of the
boundary), as Wan 2.2 samples its two experts.

Sampling must not change training: it draws from its own generators inside ``torch.random.fork_rng``, uses a copy
of the transformer, and runs on the main process only, so a run with validation has the same losses as one without.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from seedkit.data.video_io import unit_frames_to_uint8, write_video

from .config import ValidationConfig
from .objectives import load_wrapped_state

if TYPE_CHECKING:
    from .trainer import Trainer


def _slug(prompt: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:limit].rstrip("-") or "empty"


def contact_sheet(videos: list[np.ndarray], columns: int = 5, gap: int = 2) -> np.ndarray:
    """``uint8 [H', W', 3]``: one row per video (``uint8 [F, H, W, 3]``, same H and W), ``columns`` evenly spaced
    frames from first to last in each (fewer for shorter videos), on a white background."""
    height, width = videos[0].shape[1:3]
    sheet = np.full((len(videos) * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for row, frames in enumerate(videos):
        picks = np.unique(np.linspace(0, frames.shape[0] - 1, columns).round().astype(int))
        for column, index in enumerate(picks):
            top, left = row * (height + gap), column * (width + gap)
            sheet[top : top + height, left : left + width] = frames[index]
    return sheet


def expert_side(config: ValidationConfig, sigma_range: tuple[float, float]) -> bool | None:
    """Whether the run trains the high-noise expert of ``config``'s pair (True), the low-noise one (False), or is
    validated alone (None); raises when the pair settings are half given or ``sigma_range`` straddles the boundary."""
    partner, boundary = config.partner_transformer_path, config.boundary_ratio
    if partner is None and boundary is None:
        return None
    if partner is None or boundary is None:
        raise ValueError(
            "validation.partner_transformer_path and validation.boundary_ratio come together (the partner expert "
            f"and where it takes over); got partner_transformer_path={partner!r}, boundary_ratio={boundary!r}"
        )
    low, high = sigma_range
    if low >= boundary:
        return True
    if high <= boundary:
        return False
    raise ValueError(
        f"task.sigma_range {list(sigma_range)} straddles validation.boundary_ratio {boundary}: an expert trains on "
        f"one side of the boundary (e.g. sigma_range [{boundary}, 1.0] for the high-noise expert)"
    )


class ValidationSampler:
    """A trainer step hook that samples ``config.prompts`` with the current EMA (or raw) transformer weights.

    Args:
        config: the recipe's ``validation`` section.
        vae: the VAE the latent cache was made with (decodes the samples).
        text_encoder_name: a key of :data:`~seedkit.models.text_encoders.TEXT_ENCODERS`.
        output_dir: the run directory; samples go to ``output_dir/samples``.
        fps: frame rate of the written videos.
        sigma_range: the recipe's ``task.sigma_range``, which says which expert of a pair the run trains.
    """

    def __init__(
        self,
        config: ValidationConfig,
        vae: torch.nn.Module,
        text_encoder_name: str,
        output_dir: str | Path,
        fps=8.0,
        sigma_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if config.every > 0 and not config.prompts and config.sensitivity_clips <= 0:
            raise ValueError(
                "validation.every is set but validation.prompts is empty and validation.sensitivity_clips is 0; "
                "give prompts or sensitivity clips, or set every: 0"
            )
        self.trains_high_noise_expert = expert_side(config, sigma_range)
        self.config = config
        self.vae = vae
        self.text_encoder_name = text_encoder_name
        self.samples_dir = Path(output_dir) / "samples"
        self.fps = fps
        self._pipeline = None  # built at the first validation, reused with new weights after
        self._pair_pipeline = None  # the same transformer with its partner expert, when validation has one
        self._probe_clips = None  # the sensitivity probe's encoded clips: the VAE does not change while training

    def __call__(self, trainer: "Trainer") -> None:
        if self.config.every <= 0 or trainer.state.step % self.config.every != 0:
            return
        state = trainer.export_state()
        if trainer.accelerator.is_main_process:
            live = trainer.unwrapped_model.transformer
            step, device = trainer.state.step, trainer.accelerator.device
            if self.config.prompts:
                sheet = self.sample(live, state, step, device)
                if "tensorboard" in trainer.config.trackers:
                    writer = trainer.accelerator.get_tracker("tensorboard", unwrap=True)
                    writer.add_image("validation", sheet, step, dataformats="HWC")
            if self.config.sensitivity_clips > 0:
                results = self.probe_captions(live, state, step, device)
                if trainer.config.trackers:
                    logged = {f"sensitivity/{name}": result.preference for name, result in results.items()}
                    logged |= {f"sensitivity_gap/{name}": result.gap for name, result in results.items()}
                    trainer.accelerator.log(logged, step=step)
        trainer.accelerator.wait_for_everyone()

    def pipeline(self, live_transformer: torch.nn.Module, state: dict, device: torch.device):
        """The sampling pipeline with ``state``'s weights in a copy of ``live_transformer`` (built once, reloaded)."""
        if self._pipeline is None:
            from seedkit.models.text_encoders import TEXT_ENCODERS
            from seedkit.pipelines import SeedkitTextToVideoPipeline
            from seedkit.pipelines.base import assemble_components

            transformer = type(live_transformer).from_config(live_transformer.config)
            components = assemble_components(
                transformer, self.vae, self.text_encoder_name, scheduler=FlowMatchEulerDiscreteScheduler()
            )
            self._pipeline = SeedkitTextToVideoPipeline(
                **components,
                # prompts truncated as the latent cache truncated them
                max_sequence_length=TEXT_ENCODERS[self.text_encoder_name].max_sequence_length,
                text_encoder_name=self.text_encoder_name,
            ).to(device=device, dtype=torch.float32)
            self._pipeline.set_progress_bar_config(disable=True)
        load_wrapped_state(self._pipeline.transformer, state)
        return self._pipeline

    def sampling_pipeline(self, live_transformer: torch.nn.Module, state: dict, device: torch.device):
        """:meth:`pipeline`, or with a partner expert the pair of it and the partner (built once, reloaded)."""
        pipeline = self.pipeline(live_transformer, state, device)
        if self.trains_high_noise_expert is None:
            return pipeline
        if self._pair_pipeline is None:
            from seedkit.models.transformer_mmdit import SeedTransformer3DModel

            # float32 like the trained copy, also when the partner is stored in half precision
            partner = SeedTransformer3DModel.from_pretrained(
                self.config.partner_transformer_path, use_safetensors=True, torch_dtype=torch.float32
            )
            partner = partner.to(device).eval()
            trained = pipeline.transformer
            high, low = (trained, partner) if self.trains_high_noise_expert else (partner, trained)
            # the pipeline checks that the two read the same latents and text
            components = dict(pipeline.components, transformer=high, transformer_2=low)
            kwargs = dict(pipeline.pipeline_kwargs(), boundary_ratio=self.config.boundary_ratio)
            self._pair_pipeline = type(pipeline)(**components, **kwargs)
            self._pair_pipeline.set_progress_bar_config(disable=True)
        return self._pair_pipeline

    @torch.no_grad()
    def sample(self, live_transformer: torch.nn.Module, state: dict, step: int, device: torch.device) -> np.ndarray:
        """Write this step's samples and contact sheet; returns the sheet (``uint8 [H, W, 3]``)."""
        config = self.config
        pipeline = self.sampling_pipeline(live_transformer, state, device)
        out_dir = self.samples_dir / f"step-{step:08d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        videos = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for index, prompt in enumerate(config.prompts):
                generator = torch.Generator(device="cpu").manual_seed(config.seed + index)
                frames = pipeline(
                    prompt,
                    height=config.height,
                    width=config.width,
                    num_frames=config.num_frames,
                    num_inference_steps=config.num_inference_steps,
                    guidance_scale=config.guidance_scale,
                    generator=generator,
                    output_type="np",
                ).frames[0]
                frames = unit_frames_to_uint8(frames)
                suffix = ".png" if config.num_frames == 1 else ".mp4"
                write_video(out_dir / f"{index:02d}-{_slug(prompt)}{suffix}", frames, fps=self.fps)
                videos.append(frames)
        sheet = contact_sheet(videos)
        write_video(out_dir / "contact_sheet.png", sheet[None])
        return sheet

    @torch.no_grad()
    def probe_captions(
        self, live_transformer: torch.nn.Module, state: dict, step: int, device: torch.device
    ) -> dict:
        """Run the caption-sensitivity probe; writes ``sensitivity.json`` and returns
        ``{attribute: AttributeSensitivity}``."""
        from evaluation.shapesbench.sensitivity import ATTRIBUTES, caption_sensitivity, probe_clips

        config = self.config
        pipeline = self.pipeline(live_transformer, state, device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if self._probe_clips is None:
                self._probe_clips = {
                    attribute: probe_clips(
                        pipeline, attribute, config.sensitivity_clips, config.seed,
                        config.height, config.width, config.num_frames,
                    )
                    for attribute in ATTRIBUTES
                }
            results = caption_sensitivity(
                pipeline, num_clips=config.sensitivity_clips, seed=config.seed, progress=False, clips=self._probe_clips
            )
        out_dir = self.samples_dir / f"step-{step:08d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        report = {name: result.to_dict() for name, result in results.items()}
        (out_dir / "sensitivity.json").write_text(json.dumps(report, indent=2) + "\n")
        return results
