"""Recipe assembly for ``recipes/train.py``: data -> latent cache -> transformer training -> export.

1. ``data.source == "shapes"``: write (or finish writing) a ShapesWorld set into ``data.data_dir``; otherwise use
   the clip manifest ``data.manifest``.
2. Encode it once into a latent cache (VAE posterior means + prompt embeddings), on the main process.
3. Train the flavor's transformer on the cache with bucketed or packed batches.
4. Export the EMA (or raw) transformer in diffusers layout to ``<output_dir>/final/transformer``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from seedkit.data.buckets import BucketBatchSampler, BucketSet
from seedkit.data.datasets import EpochKeyedBatchSampler, LatentDataset, collate_latents, collate_packed
from seedkit.data.latent_cache import build_latent_cache
from seedkit.data.manifest import ClipRecord, Manifest
from seedkit.data.packing import PackedBatchSampler
from seedkit.models import flavors
from seedkit.post_training.diffusion_dpo import self_play_sample

from .checkpoint import read_checkpoint
from .config import RecipeConfig, from_flat_dict, to_flat_dict
from .objectives import (
    DecodedFrameLoss,
    FlowMatchingObjective,
    SelfPlayDPOObjective,
    ShapeWordContrast,
    TransformerTrainingWrapper,
    first_frame_condition,
    load_wrapped_state,
)
from .trainer import Trainer, make_accelerator, seed_everything
from .validation import ValidationSampler

BATCHING_MODES = ("bucket", "pack")


def text_encoder_name(config: RecipeConfig) -> str:
    """The recipe's text encoder: ``model.text_encoder``, else its flavor's."""
    return config.model.text_encoder or flavors.get(config.model.flavor).text_encoder


def build_vae(config: RecipeConfig) -> torch.nn.Module:
    """The recipe's VAE: ``model.vae_path`` (diffusers layout) or the flavor's config at random init."""
    from seedkit.models.autoencoder_causal import CausalVideoAutoencoder

    if config.model.vae_path:
        return CausalVideoAutoencoder.from_pretrained(config.model.vae_path)
    vae_config = {**flavors.get(config.model.flavor).vae, **config.model.vae}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return CausalVideoAutoencoder(**vae_config)


# Architecture switches a fine-tune may turn on, with the parameters they add. Those start at zero, so the grown
# model computes what the given weights did and training takes it from there.
GROWABLE_TRANSFORMER_KEYS = {
    "mark_first_frame": {"first_frame_embedding"},
    "absolute_position_embedding": {
        "grid_position_embedding.projection.weight",
        "grid_position_embedding.projection.bias",
    },
}


def build_transformer(config: RecipeConfig) -> torch.nn.Module:
    from seedkit.models.transformer_mmdit import UNSCALED_ROPE_POSITIONS, SeedTransformer3DModel

    transformer_config = {**flavors.get(config.model.flavor).transformer, **config.model.transformer}
    if not config.model.transformer_path:
        return SeedTransformer3DModel(**transformer_config)
    transformer = SeedTransformer3DModel.from_pretrained(config.model.transformer_path)
    wanted_patch = transformer_config.get("patch_size")
    if wanted_patch is not None and _as_comparable(wanted_patch) != _as_comparable(transformer.config.patch_size):
        # Another patch size is the same weights re-cut (4x the tokens for (1, 2, 2) -> (1, 1, 1)), not another
        # architecture. The re-cut scales RoPE positions; the recipe must say so too, or its export (built from the
        # recipe alone) would put the grid at other rotary distances than training did.
        transformer = transformer.with_patch_size(tuple(wanted_patch))
        recut_scale = list(transformer.config.rope_position_scale)
        stated_scale = transformer_config.get("rope_position_scale", UNSCALED_ROPE_POSITIONS)
        if _as_comparable(stated_scale) != recut_scale:
            raise ValueError(
                f"re-cutting {config.model.transformer_path} into patches {list(wanted_patch)} scales its RoPE "
                f"positions by {recut_scale}; add rope_position_scale: {recut_scale} to model.transformer"
            )
    depths = {key: transformer.config[key] for key in ("num_dual_layers", "num_single_layers")}
    wanted_depths = {key: int(transformer_config.get(key, have)) for key, have in depths.items()}
    if wanted_depths != depths and all(
        want >= have and want % have == 0 for want, have in zip(wanted_depths.values(), depths.values())
    ):
        # More blocks than the weights have, by whole multiples: grow them (the deeper model starts as the same
        # function). Other depths fall through to the mismatch check below: most likely the wrong flavor.
        transformer = transformer.with_depth(**wanted_depths)
    # A fine-tune of a different architecture than the recipe names would train (and later export) something the
    # recipe does not describe: compare the architecture keys the flavor sets.
    mismatched = {
        key: (value, transformer.config.get(key))
        for key, value in transformer_config.items()
        if key in transformer.config and _as_comparable(transformer.config[key]) != _as_comparable(value)
    }
    grown = {key: want for key, (want, have) in mismatched.items() if key in GROWABLE_TRANSFORMER_KEYS and not have}
    mismatched = {key: values for key, values in mismatched.items() if key not in grown}
    if mismatched:
        listing = ", ".join(f"{key}: recipe {want!r} vs weights {have!r}" for key, (want, have) in mismatched.items())
        raise ValueError(
            f"model.transformer_path {config.model.transformer_path} does not match flavor "
            f"{config.model.flavor!r} ({listing}); name the flavor the weights were trained with"
        )
    if grown:
        # Without the private keys: diffusers' "_use_default_values" would put the switch back to its default.
        architecture = {key: value for key, value in transformer.config.items() if not key.startswith("_")}
        larger = SeedTransformer3DModel.from_config({**architecture, **grown})
        missing, unexpected = larger.load_state_dict(transformer.state_dict(), strict=False)
        added = set().union(*(GROWABLE_TRANSFORMER_KEYS[key] for key in grown))
        if unexpected or set(missing) != added:
            raise RuntimeError(f"growing {sorted(grown)}: missing {missing}, unexpected {unexpected}")
        return larger
    return transformer


def _as_comparable(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def prepare_clip_manifest(config: RecipeConfig) -> Path:
    data = config.data
    if data.source == "manifest":
        if not data.manifest:
            raise ValueError("data.source is 'manifest' but data.manifest is not set; pass --set data.manifest=PATH")
        return Path(data.manifest)
    if data.source != "shapes":
        raise ValueError(f"unknown data.source {data.source!r}; valid values: 'shapes', 'manifest'")
    from seedkit.data.shapes_writers import write_shapes_dataset

    summary = write_shapes_dataset(
        data.data_dir,
        num_clips=data.num_clips,
        seed=data.seed,
        frames=list(data.frames),
        sizes=[tuple(size) for size in data.sizes],
        multi_shot=data.multi_shot,
        image_fraction=data.image_fraction,
        max_objects=data.max_objects,
        captions_per_clip=data.captions_per_clip,
    )
    return summary.manifest_path


def prepare_latent_cache(config: RecipeConfig, accelerator: Accelerator) -> Path:
    """Build (or finish) the latent cache on the main process; the others wait. Returns the cache directory."""
    cache_dir = Path(config.data.cache_dir or Path(config.train.output_dir) / "latent_cache")
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            from seedkit.models.text_encoders import load_text_encoder

            manifest = Manifest.read(prepare_clip_manifest(config))
            build_latent_cache(
                manifest,
                build_vae(config),
                load_text_encoder(text_encoder_name(config)),
                cache_dir,
                batch_size=config.data.cache_batch_size,
                buckets=BucketSet(config.data.buckets) if config.data.buckets else None,
                device=accelerator.device,
            )
    return cache_dir


def scene_filter(motions: list[str] | None, shapes: list[str] | None) -> Callable[[ClipRecord], bool] | None:
    """A ``LatentDataset`` ``keep`` predicate: items whose every object moves in one of ``motions`` and has one of
    ``shapes`` (``None``: any; both ``None``: no predicate)."""
    if motions is None and shapes is None:
        return None
    from seedkit.data.shapes import MOTIONS, SHAPES

    wanted = {"motion": motions, "shape": shapes}
    for (key, values), valid in zip(wanted.items(), (MOTIONS, SHAPES)):
        unknown = sorted(set(values or ()) - set(valid))
        if unknown:
            raise ValueError(f"data.{key}s has unknown {key}s {unknown}; valid {key}s: {', '.join(valid)}")
    wanted = {key: set(values) for key, values in wanted.items() if values is not None}

    def keep(record: ClipRecord) -> bool:
        scene = record.metadata.get("scene")
        if scene is None:
            raise ValueError(
                f"data.motions / data.shapes need ShapesWorld scenes in the cache manifest; {record.id} has no "
                "metadata.scene (set them only with data.source: shapes)"
            )
        objects = [obj for shot in scene["shots"] for obj in shot["objects"]]
        return all(obj[key] in values for obj in objects for key, values in wanted.items())

    return keep


def make_batch_sampler(
    config: RecipeConfig, dataset: LatentDataset, patch_size, num_replicas: int = 1, rank: int = 0
):
    data = config.data
    if data.batching == "bucket":
        return BucketBatchSampler(
            dataset.bucket_keys(), config.train.batch_size, seed=config.train.seed, num_replicas=num_replicas, rank=rank
        ), collate_latents
    if data.batching == "pack":
        sampler = PackedBatchSampler(
            dataset.token_lengths(patch_size), data.token_budget, seed=config.train.seed,
            num_replicas=num_replicas, rank=rank,
        )
        return sampler, collate_packed
    raise ValueError(f"unknown data.batching {data.batching!r}; valid values: {BATCHING_MODES}")


SELF_PLAY_PAIRS = "self_play_pairs.safetensors"


class SelfPlayPairs(Dataset):
    """A :class:`LatentDataset` whose items also carry ``dispreferred`` ``[C, f, h, w]``, their self-play partner.

    Args:
        dataset: the paired items (keys and bucket keys as the dataset's own).
        pairs: ``{cache record id: dispreferred latents}`` (:func:`build_self_play_pairs`).
    """

    def __init__(self, dataset: LatentDataset, pairs: dict[str, torch.Tensor]) -> None:
        self.dataset = dataset
        self.pairs = pairs
        self.record_ids = dataset.record_ids()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        item = self.dataset[key]
        position = int(key[0]) if isinstance(key, tuple) else int(key)
        item["dispreferred"] = self.pairs[self.record_ids[position]]
        return item

    def bucket_keys(self) -> list[tuple[int, int, int]]:
        return self.dataset.bucket_keys()


def self_play_ids(config: RecipeConfig, dataset: LatentDataset) -> set[str]:
    """The record ids of the ``task.dpo_pairs`` cache items (of those ``dataset`` keeps) that get a partner."""
    rng = np.random.default_rng(config.train.seed)
    count = min(config.task.dpo_pairs, len(dataset))
    record_ids = dataset.record_ids()
    return {record_ids[int(position)] for position in rng.choice(len(dataset), size=count, replace=False)}


def build_self_play_pairs(
    config: RecipeConfig,
    dataset: LatentDataset,
    reference: torch.nn.Module,
    objective: FlowMatchingObjective,
    accelerator: Accelerator,
) -> dict[str, torch.Tensor]:
    """``{record id: dispreferred latents}`` for every item of ``dataset``: the reference's guided SDEdit of it
    (``task.dpo_*``), made once on the main process into ``<output_dir>/self_play_pairs.safetensors``."""
    task = config.task
    path = Path(config.train.output_dir) / SELF_PLAY_PAIRS
    record_ids = dataset.record_ids()
    with accelerator.main_process_first():
        if accelerator.is_main_process and not path.exists():
            generator = torch.Generator(accelerator.device).manual_seed(config.train.seed)
            # Every item once, in same-shape batches.
            batches = BucketBatchSampler(dataset.bucket_keys(), config.data.cache_batch_size).epoch_batches(0)
            pairs = {}
            for part in tqdm(batches, desc="self-play pairs", unit="batch"):
                batch = collate_latents([dataset[position] for position in part])
                batch = {name: value.to(accelerator.device) for name, value in batch.items()}
                latents = batch["latents"]
                nobody = torch.zeros(len(part), dtype=torch.bool, device=latents.device)
                # all-zero condition: no frame given; no prompt dropped
                condition = first_frame_condition(latents, nobody) if objective.condition_channels else None
                prompts = objective.prompt_inputs(batch, nobody)
                velocity = objective.guided_velocity(reference, prompts, condition, task.dpo_guidance)
                low, high = task.dpo_start_range
                start = low + (high - low) * torch.rand(len(part), generator=generator, device=latents.device)
                noise = torch.randn(latents.shape, generator=generator, device=latents.device)
                samples = self_play_sample(velocity, latents, noise, start, task.dpo_sample_steps)
                for row, position in enumerate(part):
                    pairs[record_ids[position]] = samples[row].cpu().contiguous()
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            save_file(pairs, str(partial))
            partial.rename(path)
    pairs = load_file(str(path))
    wanted = set(record_ids)
    if not wanted <= pairs.keys():
        raise ValueError(
            f"{path} pairs other cache items than this run's task.dpo_pairs / train.seed choose "
            f"({len(wanted - pairs.keys())} of {len(wanted)} missing); it belongs to another run's settings: delete "
            "it to sample pairs again, or use another train.output_dir"
        )
    return pairs


def build_transformer_trainer(config: RecipeConfig, accelerator: Accelerator | None = None) -> Trainer:
    accelerator = accelerator or make_accelerator(config.train)
    seed_everything(config.train.seed)
    cache_dir = prepare_latent_cache(config, accelerator)
    for term in ("shape_contrast_weight", "decoder_loss_weight", "rollout_probability", "dpo_beta"):
        if getattr(config.task, term) > 0 and config.data.batching != "bucket":
            raise ValueError(f"task.{term} > 0 needs data.batching: bucket; this recipe has {config.data.batching!r}")
    shape_contrast = decoder_loss = None
    if config.task.decoder_loss_weight > 0:
        vae = build_vae(config).to(accelerator.device)
        decoder_loss = DecodedFrameLoss(vae, config.task.decoder_loss_foreground_weight)
    if config.task.shape_contrast_weight > 0:
        from seedkit.models.text_encoders import load_text_encoder

        text_encoder = load_text_encoder(text_encoder_name(config))
        text_encoder.text_encoder.to(accelerator.device)
        shape_contrast = ShapeWordContrast(text_encoder)
    dataset = LatentDataset(
        cache_dir,
        seed=config.train.seed,
        keep=scene_filter(config.data.motions, config.data.shapes),
        with_captions=shape_contrast is not None,
    )
    transformer = build_transformer(config)
    if config.task.dpo_beta > 0:
        others = [term for term in ("shape_contrast_weight", "decoder_loss_weight", "rollout_probability")
                  if getattr(config.task, term) > 0]
        if others:
            raise ValueError(
                f"task.dpo_beta > 0 replaces the flow-matching loss; it does not combine with task.{others[0]}"
            )
        dataset = dataset.keeping(self_play_ids(config, dataset))
        reference = TransformerTrainingWrapper(copy.deepcopy(transformer)).to(accelerator.device)
        objective = SelfPlayDPOObjective(
            config.task,
            dataset.empty_prompt(),
            transformer.config.condition_channels,
            reference,
            transformer.config.patch_size,
        )
        dataset = SelfPlayPairs(dataset, build_self_play_pairs(config, dataset, reference, objective, accelerator))
    else:
        objective = FlowMatchingObjective(
            config.task,
            dataset.empty_prompt(),
            transformer.config.condition_channels,
            transformer.config.patch_size,
            shape_contrast=shape_contrast,
            decoder_loss=decoder_loss,
        )
    sampler, collate = make_batch_sampler(
        config, dataset, transformer.config.patch_size, accelerator.num_processes, accelerator.process_index
    )
    # (index, epoch) keys: samples with several cached captions show a different one each epoch.
    sampler = EpochKeyedBatchSampler(sampler)
    validation = None
    if config.validation.every > 0:
        validation = ValidationSampler(
            config.validation, build_vae(config), text_encoder_name(config), config.train.output_dir,
            sigma_range=tuple(config.task.sigma_range),
        )
    return Trainer(
        config.train,
        config.optim,
        config.ema,
        TransformerTrainingWrapper(transformer),
        objective,
        dataset,
        sampler,
        accelerator,
        collate_fn=collate,
        run_config=to_flat_dict(config),
        step_hooks=[validation] if validation is not None else [],
    )


def export_transformer(trainer: Trainer, out_dir: str | Path, use_ema: bool = True) -> Path | None:
    """Save the trained transformer (EMA weights when available) with ``save_pretrained``; main process only."""
    out_dir = Path(out_dir)
    state = trainer.export_state(use_ema)
    if trainer.accelerator.is_main_process:
        transformer = trainer.unwrapped_model.transformer
        exported = load_wrapped_state(type(transformer).from_config(transformer.config), state)
        exported.save_pretrained(out_dir / "transformer", safe_serialization=True)
    trainer.accelerator.wait_for_everyone()
    return out_dir / "transformer"


def export_model(trainer: Trainer, config: RecipeConfig, out_dir: str | Path) -> Path:
    """``out_dir/transformer`` (EMA when enabled) plus the ``out_dir/vae`` its latent cache was made with, so
    ``seedkit.pipelines.base.assemble_components(out_dir / "transformer", out_dir / "vae", text_encoder_name)``
    builds a working pipeline even when the VAE was a random-init debug VAE."""
    out_dir = Path(out_dir)
    export_transformer(trainer, out_dir, use_ema=config.ema.enabled)
    if trainer.accelerator.is_main_process:
        build_vae(config).save_pretrained(out_dir / "vae", safe_serialization=True)
        (out_dir / "text_encoder_name.txt").write_text(text_encoder_name(config) + "\n", encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    return out_dir


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, use_ema: bool = True) -> Path:
    """Write any checkpoint of a transformer run in :func:`export_model`'s layout, without its data or a trainer.

    The checkpoint's ``run_config`` names the flavor, the starting weights and the VAE, so a checkpoint picked
    mid-run (to compare it with the final one, or because a later one overfits) exports exactly as the run's own end
    would have. ``use_ema``: the EMA weights when the checkpoint has them, else the raw weights.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    payload = read_checkpoint(checkpoint)
    if "run_config" not in payload.json or "model" not in payload.tensors:
        raise ValueError(f"{checkpoint} is not a checkpoint of recipes/train.py (no run_config or model weights)")
    config = from_flat_dict(RecipeConfig, payload.json["run_config"])
    state = payload.tensors["ema"] if use_ema and "ema" in payload.tensors else payload.tensors["model"]
    if config.model.vae_path and not Path(config.model.vae_path).exists():
        raise FileNotFoundError(
            f"{checkpoint} was trained on latents of the VAE at {config.model.vae_path}, which does not exist here; "
            "run the export where the run's paths resolve (relative paths are read from the working directory)"
        )
    # The flavor fixes the architecture (a fine-tune's starting weights were checked against it), so the starting
    # weights need not exist any more.
    architecture = dataclasses.replace(config, model=dataclasses.replace(config.model, transformer_path=None))
    transformer = load_wrapped_state(build_transformer(architecture), state)
    transformer.save_pretrained(out_dir / "transformer", safe_serialization=True)
    build_vae(config).save_pretrained(out_dir / "vae", safe_serialization=True)
    (out_dir / "text_encoder_name.txt").write_text(text_encoder_name(config) + "\n", encoding="utf-8")
    return out_dir
