"""Caption sensitivity: does a model use each attribute its caption names?

ShapesBench scores samples, which takes a full sampling run per prompt. This probe needs only forward passes, so it
can follow a training run cheaply: on ShapesWorld clips of one object it compares the flow-matching loss under the
clip's true caption with the loss under the same caption with one attribute changed ("moving up" -> "moving down",
"red" -> "blue"), with the same noise. The edited caption is written from the edited scene with the same template
draws, so the two captions differ only in that attribute's words.

The loss is weighted by each latent position's foreground score (``seedkit.training.objectives.foreground_score``):
the object covers a few positions of a flat frame, and a plain mean would dilute what the words change there by the
background's share.

Two readings per attribute: the *gap*, the mean of (edited loss - true loss) with its standard error over clips,
and the *preference*, the share of (clip, sigma) pairs where the true caption has the lower loss (ties count half).
A model that uses an attribute has a gap many standard errors above 0 and a preference well above 0.5. A model that
ignores it has a gap within about two standard errors of 0 and a preference near 0.5, however the sign count
happens to fall (with gaps near 0 the preference is a coin toss per clip, so read it with the gap). High noise
levels are where the caption decides layout, colour and motion, so the default sigmas are there.

    seedkit eval sensitivity --model DIR --out report_dir [--clips 32] [--sigmas 0.8 0.95]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from seedkit.data.shapes import PALETTE, SHAPES, SIZES, Scene, render_scene, sample_scene
from seedkit.data.shapes_captions import caption_for
from seedkit.data.video_io import frames_to_tensor
from seedkit.flow.path import sample_path
from seedkit.training.objectives import foreground_score

ATTRIBUTES = ("color", "shape", "size", "motion")
DEFAULT_SIGMAS = (0.8, 0.95)
# Only directions have an unambiguous opposite; still and bouncing clips are not used for the motion probe.
OPPOSITE_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up"}


@dataclass
class ProbeClip:
    """One clip of the probe: normalised latents ``[1, C, F', H', W']``, their foreground scores
    ``[1, 1, F', H', W']`` (the loss weights) and its true and edited captions."""

    latents: torch.Tensor
    caption: str
    edited_caption: str
    foreground: torch.Tensor


@dataclass
class AttributeSensitivity:
    """Foreground-weighted loss under the true and the edited caption for one attribute, over ``clips`` clips and
    every sigma.

    Attributes:
        preference: fraction of (clip, sigma) pairs where the true caption has the lower loss (ties count half).
        gap: mean over clips and sigmas of (edited loss - true loss); > 0 when the model uses the words.
        gap_stderr: standard error of ``gap`` over clips (each clip's gap averaged over the sigmas); 0 for one clip.
        loss_true, loss_edited: mean losses.
        per_sigma: ``{sigma: {"preference", "gap", "gap_stderr", "loss_true", "loss_edited"}}``.
        example: one ``(true caption, edited caption)`` pair.
    """

    attribute: str
    clips: int
    preference: float
    gap: float
    gap_stderr: float
    loss_true: float
    loss_edited: float
    per_sigma: dict[float, dict[str, float]]
    example: tuple[str, str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def edit_scene(scene: Scene, attribute: str, rng: np.random.Generator) -> Scene | None:
    """A copy of a one-object ``scene`` with ``attribute`` of its object changed, or ``None`` when the object has no
    clear alternative (motion other than left / right / up / down)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; valid attributes: {', '.join(ATTRIBUTES)}")
    data = scene.to_dict()
    objects = data["shots"][0]["objects"]
    if len(data["shots"]) != 1 or len(objects) != 1:
        raise ValueError("the caption-sensitivity probe needs single-shot scenes with exactly one object")
    obj = objects[0]
    if attribute == "motion":
        if obj["motion"] not in OPPOSITE_MOTION:
            return None
        obj["motion"] = OPPOSITE_MOTION[obj["motion"]]
    else:
        choices = {"color": list(PALETTE), "shape": list(SHAPES), "size": list(SIZES)}[attribute]
        others = [value for value in choices if value != obj[attribute]]
        obj[attribute] = others[int(rng.integers(len(others)))]
        if attribute == "color":
            obj["rgb"] = None  # the palette colour of the new name
    return Scene.from_dict(data)


def probe_clips(
    pipeline, attribute: str, num_clips: int, seed: int = 0, height: int = 64, width: int = 64, num_frames: int = 17
) -> list[ProbeClip]:
    """``num_clips`` fresh one-object ShapesWorld clips with true and ``attribute``-edited captions, encoded by the
    pipeline's VAE (posterior mean, as the latent cache stores them) and normalised for its transformer."""
    rng = np.random.default_rng(seed)
    clips: list[ProbeClip] = []
    device = pipeline._execution_device
    while len(clips) < num_clips:
        scene = sample_scene(rng, height, width, num_frames, max_objects=1)
        edited = edit_scene(scene, attribute, rng)
        if edited is None:
            continue
        caption_seed = int(rng.integers(2**31))
        caption = caption_for(scene, np.random.default_rng(caption_seed))
        edited_caption = caption_for(edited, np.random.default_rng(caption_seed))
        video = frames_to_tensor(render_scene(scene).frames).unsqueeze(0).to(device, pipeline.vae.dtype)
        with torch.no_grad():
            latents = pipeline.normalize_latents(pipeline.vae.encode(video).latent_dist.mean).float()
        clips.append(ProbeClip(latents, caption, edited_caption, foreground_score(latents)))
    return clips


@torch.no_grad()
def caption_losses(pipeline, clip: ProbeClip, sigma: float, generator: torch.Generator) -> tuple[float, float]:
    """Foreground-weighted flow-matching loss of ``clip`` at ``sigma`` under its true and its edited caption, with
    the same noise."""
    noise = torch.randn(clip.latents.shape, generator=generator).to(clip.latents.device)
    path = sample_path(clip.latents, noise, torch.tensor([sigma], device=clip.latents.device))
    losses = []
    for caption in (clip.caption, clip.edited_caption):
        embeddings, _ = pipeline.encode_prompt([caption], None, False)
        # a two-expert model is probed, at each sigma, with the expert that samples there; a one-latent-frame clip
        # (num_frames=1) is an image, which the model's image experts sample where it has them
        transformer = pipeline.transformer_for(path.timestep, image=clip.latents.shape[2] == 1)
        velocity = transformer(
            hidden_states=path.x_t.to(transformer.dtype),
            timestep=path.timestep.to(transformer.dtype),
            encoder_hidden_states=embeddings.hidden_states.to(transformer.dtype),
            encoder_attention_mask=embeddings.attention_mask,
            pooled_projections=None if embeddings.pooled is None else embeddings.pooled.to(transformer.dtype),
            return_dict=False,
        )[0].float()
        squared_error = ((velocity - path.target) ** 2).mean(dim=1, keepdim=True)
        losses.append((torch.sum(squared_error * clip.foreground) / clip.foreground.sum().clamp_min(1e-6)).item())
    return losses[0], losses[1]


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def caption_sensitivity(
    pipeline,
    attributes: tuple[str, ...] = ATTRIBUTES,
    num_clips: int = 32,
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS,
    seed: int = 0,
    progress: bool = True,
    height: int = 64,
    width: int = 64,
    num_frames: int = 17,
    clips: dict[str, list[ProbeClip]] | None = None,
) -> dict[str, AttributeSensitivity]:
    """Probe ``pipeline`` (a seedkit text-to-video pipeline) for every attribute on ``num_clips`` clips of
    ``num_frames`` x ``height`` x ``width``; see the module docstring. ``clips`` (``{attribute: probe_clips(...)}``)
    reuses clips encoded before, as a training run probing the same VAE's latents again and again does."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if not sigmas or any(not 0.0 < sigma <= 1.0 for sigma in sigmas):
        raise ValueError(f"sigmas must be noise levels in (0, 1], got {tuple(sigmas)}")
    results = {}
    for attribute in attributes:
        if clips is None:
            attribute_clips = probe_clips(pipeline, attribute, num_clips, seed, height, width, num_frames)
        else:
            attribute_clips = clips[attribute]
        per_sigma = {}
        wins = []
        clip_gaps = []  # [sigma][clip]
        for sigma in sigmas:
            true_losses, edited_losses = [], []
            for index, clip in enumerate(
                tqdm(attribute_clips, desc=f"{attribute} sigma {sigma}", disable=not progress, leave=False)
            ):
                generator = torch.Generator().manual_seed(seed * 100_003 + index)
                loss_true, loss_edited = caption_losses(pipeline, clip, sigma, generator)
                true_losses.append(loss_true)
                edited_losses.append(loss_edited)
            sigma_wins = [1.0 if a < b else 0.5 if a == b else 0.0 for a, b in zip(true_losses, edited_losses)]
            wins += sigma_wins
            gaps = np.asarray(edited_losses) - np.asarray(true_losses)
            clip_gaps.append(gaps)
            per_sigma[sigma] = {
                "preference": float(np.mean(sigma_wins)),
                "gap": float(gaps.mean()),
                "gap_stderr": _stderr(gaps),
                "loss_true": float(np.mean(true_losses)),
                "loss_edited": float(np.mean(edited_losses)),
            }
        results[attribute] = AttributeSensitivity(
            attribute=attribute,
            clips=len(attribute_clips),
            preference=float(np.mean(wins)),
            gap=float(np.mean(clip_gaps)),
            gap_stderr=_stderr(np.mean(clip_gaps, axis=0)),
            loss_true=float(np.mean([row["loss_true"] for row in per_sigma.values()])),
            loss_edited=float(np.mean([row["loss_edited"] for row in per_sigma.values()])),
            per_sigma=per_sigma,
            example=(attribute_clips[0].caption, attribute_clips[0].edited_caption),
        )
    return results


def format_table(results: dict[str, AttributeSensitivity]) -> str:
    """A plain-text table: one row per attribute; preference, gap +- standard error, and per sigma the true / edited
    losses with that sigma's gap."""
    sigmas = list(next(iter(results.values())).per_sigma)
    titles = [f"sigma {s}: true / edited (gap)" for s in sigmas]
    lines = ["attribute  preference  gap +- stderr      " + "  ".join(titles)]
    for name, result in results.items():
        cells = "  ".join(
            f"{row['loss_true']:.4f} / {row['loss_edited']:.4f} ({row['gap']:+.4f})".ljust(len(title))
            for title, row in zip(titles, result.per_sigma.values())
        )
        gap = f"{result.gap:+.4f} +- {result.gap_stderr:.4f}"
        lines.append(f"{name:<10} {result.preference:>10.3f}  {gap:<17} {cells}")
    return "\n".join(lines)
