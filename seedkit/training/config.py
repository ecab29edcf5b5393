"""Recipe configuration: nested dataclasses read from YAML with ``--set section.key=value`` overrides.

A recipe file mirrors :class:`RecipeConfig` (transformer training) or :class:`VAERecipeConfig` (VAE training)
section by section. Unknown keys are errors that list the valid keys, so a typo never silently trains the default.

>>> config = load_config("recipes/debug.yaml", ["train.max_steps=20", "optim.lr=3e-4"])
"""

from __future__ import annotations

import ast
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

ConfigT = TypeVar("ConfigT")


@dataclass
class OptimConfig:
    """AdamW with a diffusers LR schedule (``linear``, ``cosine``, ``constant``, ``constant_with_warmup``, ...) or
    ``warmup_stable_decay``."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    # warmup_stable_decay only: the LR falls from lr to 0 over the last decay_steps of max_steps (1 - sqrt shape).
    # Unlike cosine or linear, the LR until then does not depend on max_steps, so a constant run can be resumed
    # with this schedule and a larger max_steps to cool down without a jump.
    decay_steps: int = 0
    max_grad_norm: float = 1.0  # <= 0 disables clipping (the norm is still computed and logged)


@dataclass
class TrainConfig:
    output_dir: str = "runs/debug"
    max_steps: int = 100  # optimizer steps, skipped (non-finite) steps included
    batch_size: int = 2  # per process, per micro-step (ignored when data.batching == "pack")
    grad_accum_steps: int = 1
    seed: int = 0
    mixed_precision: str = "no"  # "no", "bf16", "fp16": passed to accelerate
    num_workers: int = 0
    log_every: int = 1
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    resume: bool = True  # resume from the newest valid checkpoint in output_dir/checkpoints
    max_consecutive_nonfinite: int = 5  # that many skipped steps in a row stop the run
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.999
    warmup: bool = True  # decay ramps as (1 + step) / (10 + step) so early EMA weights are not stuck at init
    update_every: int = 1


@dataclass
class ModelConfig:
    flavor: str = "debug"
    transformer: dict[str, Any] = field(default_factory=dict)  # overrides of the flavor's transformer config
    vae: dict[str, Any] = field(default_factory=dict)  # overrides of the flavor's VAE config
    vae_path: str | None = None  # a trained VAE (diffusers layout); None builds the flavor's VAE at random init
    # Transformer recipe only: start from these weights (diffusers layout, e.g. a previous run's final/transformer)
    # instead of random init, to fine-tune. Its config must match the flavor's; a resumed checkpoint overrides it.
    transformer_path: str | None = None
    # VAE recipe only: train the decoder of ``vae_path`` and keep its encoder (and latent shift / scale) fixed, so
    # latents cached from it stay valid while a transformer trains on them (a decoder fine-tune, as for SD's ft-MSE).
    freeze_vae_encoder: bool = False
    text_encoder: str | None = None  # None: the flavor's text encoder


@dataclass
class DataConfig:
    """Where samples come from and how they are batched.

    ``source``: ``"shapes"`` (generate a ShapesWorld set into ``data_dir`` when it is missing), ``"manifest"``
    (a clip manifest at ``manifest``). Transformer training always encodes the source into a latent cache at
    ``cache_dir`` first and trains on the cache.
    ``batching``: ``"bucket"`` (same-shape batches of ``train.batch_size``) or ``"pack"`` (native-resolution
    packing into ``token_budget`` tokens per micro-batch).
    """

    source: str = "shapes"
    manifest: str | None = None
    data_dir: str = "data/shapes-debug"
    cache_dir: str | None = None  # default: <output_dir>/latent_cache
    num_clips: int = 64  # ShapesWorld: samples to generate when data_dir has fewer
    frames: list[int] = field(default_factory=lambda: [5, 9])  # ShapesWorld video frame counts (1 + 4k)
    sizes: list[list[int]] = field(default_factory=lambda: [[32, 32], [32, 48]])  # ShapesWorld (height, width)
    image_fraction: float = 0.3  # ShapesWorld: share of single-frame samples
    multi_shot: float = 0.0  # ShapesWorld: share of multi-shot videos
    # ShapesWorld: most objects in a sample's first shot (1 to 3). 1 makes a single-object set, e.g. for a final
    # fine-tune where each motion word has only one object to bind to.
    max_objects: int = 3
    seed: int = 0  # ShapesWorld dataset seed
    # ShapesWorld: captions written per clip (the first + extra "augment"-wording ones); the latent cache encodes
    # them all and training draws one per sample and epoch.
    captions_per_clip: int = 1
    # Train only on cache items whose every object has one of these motions (ShapesWorld scenes; images count as
    # "still"); None trains on all. A curriculum stage: a motion word is learned far sooner from clips where it is
    # the thing to get right (directional clips only) than among still and bouncing ones.
    motions: list[str] | None = None
    # The same for shapes: e.g. a fine-tune that shifts a model's prior away from the shape it over-produces.
    shapes: list[str] | None = None
    buckets: list[list[int]] | None = None  # (F, H, W) pixel buckets clips are resized/cropped to before caching
    batching: str = "bucket"
    token_budget: int = 256
    cache_batch_size: int = 4


@dataclass
class TaskConfig:
    """How a transformer training sample becomes a text-to-image / text-to-video / image-to-video example."""

    i2v_probability: float = 0.3  # videos only: condition on the clean first latent frame
    text_dropout: float = 0.1  # replace the prompt by the empty prompt, for classifier-free guidance
    timestep_sampling: str = "logit_normal"  # "logit_normal" or "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # sigma shift (SD3 style); larger values favour noisier timesteps
    resolution_shift: bool = False  # per-sample shift from its token count (Flux rule, as the pipelines sample)
    # Train only this part of the noise path, (low, high): drawn sigmas are mapped affinely onto it. [0.8, 1.0]
    # trains a high-noise expert (layout and motion), [0.0, 0.8] its low-noise partner; see seedkit.flow.timesteps.
    sigma_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    # > 0: weight each latent position's loss by 1 + foreground_weight * (how far its clean latent is from the
    # frame's median, relative to the frame's farthest), so small objects on flat backgrounds count more than the
    # few latent positions they cover would give them. 0 keeps the plain mean.
    foreground_weight: float = 0.0
    # > 0: add this times the MSE of the velocity error's frame-to-frame changes
    # (seedkit.flow.temporal_difference_loss), which weighs errors that differ between frames (wrong motion,
    # jumps) more than ones every frame shares.
    temporal_difference_weight: float = 0.0
    # > 0: add this times a hinge asking that each sample's loss under its caption with one shape word changed
    # ("circle" -> "square", seedkit.data.shapes_captions.shape_word_edits) exceed its loss under the true caption
    # by shape_contrast_margin (both foreground-weighted, the units of the caption-sensitivity probe's gap). The
    # plain loss barely notices a shape word (an object covers a few latent positions and shapes differ at their
    # edges); this asks the prediction to depend on it. One more transformer pass per step; bucket batching only.
    shape_contrast_weight: float = 0.0
    shape_contrast_margin: float = 0.05
    # > 0: add this times a pixel-space loss between the VAE decodings of the predicted clean latent
    # (x_t - sigma * v) and the true one, first latent frame only, foreground-weighted by
    # decoder_loss_foreground_weight (seedkit.training.objectives.DecodedFrameLoss). It weighs latent errors by what
    # they change on screen (a square's corners), which the latent MSE does not. Bucket batching only.
    decoder_loss_weight: float = 0.0
    decoder_loss_foreground_weight: float = 4.0
    # > 0: scheduled sampling against exposure bias (after Ren et al. 2024, "Multi-Step Denoising Scheduled Sampling:
    # Towards Alleviating Exposure Bias for Diffusion Models", AAAI). This share of samples reaches its noise level
    # sigma not along the forward path but through the model's own steps: noised to sigma + delta (delta uniform up to
    # min(rollout_span, sigma), capped at sigma_range's top), then brought down to sigma by rollout_steps Euler steps
    # of the model being trained, without gradients, guided at rollout_guidance as sampling guides it. The target is
    # the velocity from where those steps landed straight to the true clean sample, so the model learns to undo the
    # drift its own steps make; the plain loss only ever shows it points of the forward path. Costs rollout_steps
    # guided forward passes of that share of the batch. Bucket batching only.
    rollout_probability: float = 0.0
    rollout_span: float = 0.2
    rollout_steps: int = 3
    rollout_guidance: float = 5.0
    # > 0: train with Diffusion-DPO on self-play pairs instead of the flow-matching loss
    # (seedkit.post_training.diffusion_dpo; Wallace et al. 2024, pairs as in Yuan et al. 2024's SPIN-Diffusion).
    # Before training, dpo_pairs cache items each get a dispreferred partner: the starting weights' own sample, SDEdit
    # from the item noised to a level drawn from dpo_start_range, in dpo_sample_steps Euler steps guided at
    # dpo_guidance (stored in <output_dir>/self_play_pairs.safetensors, made once). The run then trains on those
    # items only, with a frozen copy of the starting weights as the DPO reference; dpo_beta is the DPO KL weight,
    # dpo_sft_weight adds the plain flow-matching loss on the data side to keep its fit from drifting.
    # Conditional prompts only (no text dropout), no first-frame conditioning; bucket batching only.
    dpo_beta: float = 0.0
    dpo_pairs: int = 512
    dpo_start_range: list[float] = field(default_factory=lambda: [0.3, 0.6])
    dpo_sample_steps: int = 10
    dpo_guidance: float = 5.0
    dpo_sft_weight: float = 1.0


@dataclass
class ValidationConfig:
    """Samples of fixed prompts at fixed seeds from the EMA weights while training (see seedkit.training.validation)."""

    prompts: list[str] = field(default_factory=list)
    every: int = 0  # optimizer steps between validations; 0 turns validation off
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    height: int = 64
    width: int = 64
    num_frames: int = 17  # 1 samples images
    seed: int = 0  # prompt i samples with seed + i
    # > 0: also run the caption-sensitivity probe (evaluation.shapesbench.sensitivity) on this many fresh ShapesWorld
    # clips per attribute, at height x width x num_frames, and log how often the true caption wins
    sensitivity_clips: int = 0
    # A noise-interval expert run (task.sigma_range short of [0, 1]) samples as the pair it will ship in: this
    # transformer (diffusers layout, e.g. an existing model's transformer folder) covers the rest of the path and
    # the two hand over at boundary_ratio (timestep boundary_ratio * 1000), as recipes/export_pipeline.py pairs them.
    # The trained expert's side comes from task.sigma_range. The sensitivity probe still scores the trained one alone.
    partner_transformer_path: str | None = None
    boundary_ratio: float | None = None


@dataclass
class RecipeConfig:
    name: str = "debug"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


@dataclass
class VAELossConfig:
    l1_weight: float = 1.0
    # Squared error weights large misses more than L1 does: a small object the decoder drops entirely costs more,
    # which matters when objects cover a few percent of the pixels (L1's optimum there is the background).
    mse_weight: float = 0.0
    foreground_weight: float = 0.0  # L1 / MSE pixel weight 1 + this * |pixel - its frame's median| (mean over RGB)
    kl_weight: float = 1e-6
    gradient_weight: float = 0.5  # L1 between spatial and temporal finite differences of input and reconstruction
    laplacian_weight: float = 0.5  # L1 between Laplacian pyramid levels (a weight-free perceptual proxy)
    laplacian_levels: int = 3
    # Decode a sample of the posterior (a VAE) or its mean (an autoencoder with a KL-regularised mean). Early in
    # training the posterior noise is as large as the code, so a small model learns to ignore the code; the mean
    # gets object detail through from the first step.
    sample_posterior: bool = True
    # Largest std of Gaussian noise added to the latents before decoding (per sample, uniform in [0, this]), in the
    # transformer's normalised latent units. A generator's latents are never exact; a decoder that only ever saw
    # encoder outputs turns their small errors into specks of colour. For decoder fine-tunes of a VAE whose
    # scaling_factor has been measured (with a frozen encoder the latent space, and so the cache, stays valid).
    decoder_noise: float = 0.0
    # Weight of the latent-blend term: the decoded blend of two samples' latents, a * z1 + (1 - a) * z2 with
    # a ~ U(0, 1), should be the same blend of their pixels. An unregularised code can put colour in a latent's
    # amplitude (the shipped VAE decodes a red object's latent pulled halfway to the background as green), so a
    # generator's uncertain predictions, which are such blends, decode to the wrong colours and shapes.
    blend_weight: float = 0.0
    # Weight of the scale-equivariance term (Skorokhodov et al. 2025, "Improving the Diffusability of Autoencoders",
    # arXiv:2502.14831): the latents average-pooled by `scale_equivariance_factor` in height and width should decode
    # to the video average-pooled by the same factor. The paper finds wide-bottleneck autoencoders put more energy in
    # high latent frequencies than images have, which a diffusion model fits poorly. (shapes-tiny's 8-channel VAE does
    # not: 33% of its latent energy is above 2x pooling against 39% of the pixels' above 16x; recipe header.)
    scale_equivariance_weight: float = 0.0
    scale_equivariance_factor: int = 2


@dataclass
class VAEDataConfig:
    """ShapesWorld clips generated on the fly, optionally mixed with random crops of real clips."""

    sizes: list[list[int]] = field(default_factory=lambda: [[5, 16, 16], [1, 16, 16]])  # (F, H, W) buckets
    samples_per_epoch: int = 256
    real_videos_dir: str | None = None  # e.g. ../shared/data/videos; "auto" finds it next to the repository
    real_fraction: float = 0.25  # fraction of samples drawn from the real clips when they are present
    real_max_frames: int = 240  # frames decoded per real clip (kept in memory)


@dataclass
class VAERecipeConfig:
    name: str = "vae-debug"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


def from_dict(cls: type[ConfigT], data: dict[str, Any], where: str = "") -> ConfigT:
    """Build dataclass ``cls`` from a (possibly partial) nested dict, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)} in {where or '<root>'!r}; valid keys: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}.{name}".lstrip("."))
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif hint is str and isinstance(value, bool):
            # YAML 1.1 reads bare yes / no / on / off as booleans, so `mixed_precision: no` arrives as False
            raise ValueError(
                f"config key {where}.{name} must be a string, got {value!r}: YAML reads bare yes/no/on/off as "
                f"booleans, so quote the value (e.g. {name}: 'no', or --set \"{where}.{name}='no'\")"
            )
        elif hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            # YAML 1.1 reads "3e-4" (no dot) as a string; accept it, and ints, for float fields
            try:
                kwargs[name] = float(value)
            except ValueError as error:
                raise ValueError(f"config key {where}.{name} must be a number, got {value!r}") from error
        else:
            kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict; values are parsed as YAML (``1e-4``, ``[1, 2]``)."""
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} must look like section.key=value")
        dotted, raw = override.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {override!r}: {key!r} is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def load_config(
    path: str | os.PathLike | None, overrides: list[str] | None = None, cls: type[ConfigT] = RecipeConfig
) -> ConfigT:
    """Read a YAML recipe (``None``: all defaults), apply overrides, and build ``cls``."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    return from_dict(cls, apply_overrides(data, list(overrides or [])))


def to_flat_dict(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim.lr": 1e-4, ...}`` with only scalars, for tracker hyper-parameter logging."""
    flat: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            flat.update(to_flat_dict(value, key + "."))
        elif isinstance(value, (int, float, str, bool)):
            flat[key] = value
        else:
            flat[key] = str(value)
    return flat


def from_flat_dict(cls: type[ConfigT], flat: dict[str, Any]) -> ConfigT:
    """Rebuild ``cls`` from :func:`to_flat_dict`'s output (as a checkpoint's ``run_config`` stores it).

    ``to_flat_dict`` writes lists, dicts and ``None`` as their Python text; fields whose type is not plain ``str`` get
    that text parsed back, so ``from_flat_dict(cls, to_flat_dict(config)) == config``.
    """
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *sections, name = dotted.split(".")
        owner: Any = cls
        node = nested
        for section in sections:
            owner = typing.get_type_hints(owner)[section]
            node = node.setdefault(section, {})
        hint = typing.get_type_hints(owner).get(name)
        if isinstance(value, str) and hint is not None and hint is not str:
            value = _parse_flat_text(value, hint, dotted)
        node[name] = value
    return from_dict(cls, nested)


def _parse_flat_text(text: str, hint: Any, key: str) -> Any:
    allows_none = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if text == "None" and allows_none:
        return None
    if allows_none and str in typing.get_args(hint):  # an optional string that is set
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"flat config key {key}={text!r} is not a Python literal of type {hint}") from error
