"""Encode a clip manifest once (VAE latents + prompt embeddings), then train on the cache.

The cache is a directory::

    cache_info.json            VAE scaling / shift factors, text encoder width, format version
    empty_prompt.safetensors   the empty prompt's embedding (text dropout for classifier-free guidance)
    shard-00000.safetensors    per sample: "<id>.latents" [C, f, h, w] (the posterior mean, un-normalised),
                               "<id>.text" [L_i, D] (padding removed), "<id>.pooled" [Dp] (when the encoder pools),
                               and "<id>.text.<k>" / "<id>.pooled.<k>" for each extra caption k = 1, 2, ...
    manifest.jsonl             one ClipRecord per sample with media="latent", path = its shard, and
                               metadata["latent_shape"] = [C, f, h, w], metadata["num_captions"]

Extra captions come from a clip record's ``metadata["extra_captions"]`` (ShapesWorld writes them with
``captions_per_clip``); training draws one of a sample's captions per epoch (caption augmentation).

Building is resumable: a shard is written under a temporary name and renamed, and only then are its records
appended to the manifest, so an interrupted run re-encodes at most one shard's worth of samples and never leaves a
record pointing at a missing tensor. Samples are grouped by pixel shape so they batch through the VAE.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .buckets import BucketSet
from .manifest import ClipRecord, Manifest, ManifestWriter
from .video_io import frames_to_tensor, read_video

CACHE_VERSION = 1
CACHE_INFO = "cache_info.json"
EMPTY_PROMPT = "empty_prompt.safetensors"
MANIFEST_NAME = "manifest.jsonl"


@dataclass
class CacheInfo:
    scaling_factor: float
    shift_factor: float
    latent_channels: int
    text_embed_dim: int
    pooled_dim: int | None
    version: int = CACHE_VERSION


def load_clip(manifest: Manifest, record: ClipRecord) -> torch.Tensor:
    """Decode a record to ``[3, F, H, W]`` in [-1, 1], honouring ``start_frame`` / ``end_frame``."""
    path = manifest.resolve(record)
    end = record.end_frame
    clip = read_video(path, with_audio=False, max_frames=end)
    frames = clip.frames[record.start_frame : end]
    return frames_to_tensor(frames)


def valid_frame_count(num_frames: int) -> int:
    """The largest ``1 + 4k`` not above ``num_frames``."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    return 1 + 4 * ((num_frames - 1) // 4)


def fit_to_bucket(video: torch.Tensor, bucket: tuple[int, int, int]) -> torch.Tensor:
    """Resize ``[C, F, H, W]`` (aspect kept, area interpolation) to cover ``bucket``, then centre-crop to it and keep
    its first ``bucket[0]`` frames."""
    frames, height, width = bucket
    if video.shape[1] < frames:
        raise ValueError(f"clip of {video.shape[1]} frames cannot fill a {frames}-frame bucket")
    video = video[:, :frames]
    scale = max(height / video.shape[2], width / video.shape[3])
    size = (max(height, round(video.shape[2] * scale)), max(width, round(video.shape[3] * scale)))
    if size != tuple(video.shape[2:]):
        mode = "area" if scale < 1 else "bilinear"
        resized = torch.nn.functional.interpolate(video.transpose(0, 1), size=size, mode=mode)
        video = resized.transpose(0, 1).clamp(-1, 1)
    top, left = (video.shape[2] - height) // 2, (video.shape[3] - width) // 2
    return video[:, :, top : top + height, left : left + width]


def _prepare_pixels(video: torch.Tensor, spatial_multiple: int, buckets: BucketSet | None = None) -> torch.Tensor:
    """Fit to the assigned bucket when ``buckets`` is given; otherwise trim to ``1 + 4k`` frames and centre-crop
    sides to multiples of ``spatial_multiple``."""
    if buckets is not None:
        bucket = buckets.assign(*video.shape[1:])
        if bucket is None:
            raise ValueError(f"no bucket holds a clip of shape {tuple(video.shape[1:])}; add a shorter bucket")
        return fit_to_bucket(video, bucket)
    _, num_frames, height, width = video.shape
    frames = valid_frame_count(num_frames)
    new_height = height - height % spatial_multiple
    new_width = width - width % spatial_multiple
    if new_height == 0 or new_width == 0:
        raise ValueError(f"a {height}x{width} clip is smaller than the spatial multiple {spatial_multiple}")
    top, left = (height - new_height) // 2, (width - new_width) // 2
    return video[:, :frames, top : top + new_height, left : left + new_width]


@torch.no_grad()
def build_latent_cache(
    manifest: Manifest,
    vae: torch.nn.Module,
    text_encoder: Any,
    out_dir: str | os.PathLike,
    batch_size: int = 4,
    shard_size: int = 256,
    spatial_multiple: int | None = None,
    buckets: BucketSet | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Path:
    """Encode every record of ``manifest`` not yet in the cache at ``out_dir``; returns the cache manifest path.

    Args:
        vae: a :class:`~seedkit.models.autoencoder_causal.CausalVideoAutoencoder` (``encode(x).latent_dist``).
        text_encoder: a :class:`~seedkit.models.text_encoders.PromptEncoder`.
        spatial_multiple: sides are centre-cropped to multiples of this (default: the VAE's spatial compression
            times 2, the transformer's usual patch size); frame counts are trimmed to ``1 + 4k``. Both are recorded
            in the sample's metadata.
        buckets: resize and crop every clip to its :meth:`BucketSet.assign` bucket instead (for real footage of
            many resolutions, so batches of one bucket can be formed); bucket sides must be multiples of
            ``spatial_multiple`` and frame counts ``1 + 4k``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = vae.config
    spatial_multiple = spatial_multiple or int(config.spatial_compression_ratio) * 2
    vae = vae.to(device).eval()

    empty = text_encoder.encode([""])
    info = CacheInfo(
        scaling_factor=float(config.scaling_factor),
        shift_factor=float(config.shift_factor),
        latent_channels=int(config.latent_channels),
        text_embed_dim=int(empty.hidden_states.shape[-1]),
        pooled_dim=None if empty.pooled is None else int(empty.pooled.shape[-1]),
    )
    info_path = out_dir / CACHE_INFO
    if info_path.exists():
        existing = json.loads(info_path.read_text(encoding="utf-8"))
        if existing != info.__dict__:
            raise ValueError(
                f"{out_dir} holds a cache made with {existing}, but this VAE / text encoder gives {info.__dict__}; "
                "use another cache_dir or delete the old cache"
            )
    else:
        info_path.write_text(json.dumps(info.__dict__, indent=1), encoding="utf-8")
        save_file(_text_tensors("", empty, 0), out_dir / EMPTY_PROMPT)

    writer = ManifestWriter(out_dir / MANIFEST_NAME)
    todo = [record for record in manifest if record.id not in writer.done_ids]
    next_shard = len(list(out_dir.glob("shard-*.safetensors")))
    bar = tqdm(total=len(todo), disable=not progress, desc="cache latents", unit="clip")
    pending_tensors: dict[str, torch.Tensor] = {}
    pending_records: list[ClipRecord] = []

    def flush() -> None:
        nonlocal next_shard
        if not pending_records:
            return
        name = f"shard-{next_shard:05d}.safetensors"
        temporary = out_dir / (name + ".tmp")
        save_file(pending_tensors, temporary)
        os.replace(temporary, out_dir / name)
        for record in pending_records:
            record.path = name
            writer.append(record)
        next_shard += 1
        pending_tensors.clear()
        pending_records.clear()

    try:
        groups: dict[tuple[int, int, int], list[tuple[ClipRecord, torch.Tensor]]] = defaultdict(list)
        for record in todo:
            pixels = _prepare_pixels(load_clip(manifest, record), spatial_multiple, buckets)
            key = tuple(pixels.shape[1:])
            groups[key].append((record, pixels))
            if len(groups[key]) == batch_size:
                _encode_group(groups.pop(key), vae, text_encoder, device, pending_tensors, pending_records)
                bar.update(batch_size)
            if len(pending_records) >= shard_size:
                flush()
        for group in groups.values():
            _encode_group(group, vae, text_encoder, device, pending_tensors, pending_records)
            bar.update(len(group))
        flush()
    finally:
        bar.close()
        writer.close()
    return out_dir / MANIFEST_NAME


def _text_tensors(prefix: str, embeddings: Any, row: int) -> dict[str, torch.Tensor]:
    keep = embeddings.attention_mask[row].bool()
    tensors = {f"{prefix}text": embeddings.hidden_states[row][keep].float().cpu().contiguous()}
    if embeddings.pooled is not None:
        tensors[f"{prefix}pooled"] = embeddings.pooled[row].float().cpu().contiguous()
    return tensors


def _encode_group(
    group: list[tuple[ClipRecord, torch.Tensor]],
    vae: torch.nn.Module,
    text_encoder: Any,
    device: torch.device | str,
    tensors: dict[str, torch.Tensor],
    records: list[ClipRecord],
) -> None:
    pixels = torch.stack([item[1] for item in group]).to(device)
    latents = vae.encode(pixels).latent_dist.mean.float().cpu()
    captions = [[record.caption or ""] + list(record.metadata.get("extra_captions", [])) for record, _ in group]
    embeddings = text_encoder.encode([caption for clip_captions in captions for caption in clip_captions])
    text_row = 0
    for sample, ((record, sample_pixels), clip_captions) in enumerate(zip(group, captions)):
        tensors[f"{record.id}.latents"] = latents[sample].contiguous()
        for number in range(len(clip_captions)):
            suffix = f".{number}" if number else ""
            for name, tensor in _text_tensors("", embeddings, text_row).items():
                tensors[f"{record.id}.{name}{suffix}"] = tensor
            text_row += 1
        metadata = {
            "latent_shape": list(latents[sample].shape),
            "num_captions": len(clip_captions),
            "source_path": record.path,
            "source_media": record.media,
            "pixel_shape": list(sample_pixels.shape[1:]),
        }
        for key in ("scene", "extra_captions"):
            if key in record.metadata:
                metadata[key] = record.metadata[key]
        records.append(
            ClipRecord(
                id=record.id,
                path="pending",
                media="latent",
                num_frames=int(sample_pixels.shape[1]),
                height=int(sample_pixels.shape[2]),
                width=int(sample_pixels.shape[3]),
                fps=record.fps,
                caption=record.caption,
                shot_captions=record.shot_captions,
                shot_boundaries=record.shot_boundaries,
                metadata=metadata,
            )
        )


class LatentCache:
    """Read access to a cache directory: records, normalised latents and prompt embeddings."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        info_path = self.directory / CACHE_INFO
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.directory} is not a latent cache (no {CACHE_INFO}); build it first")
        self.info = CacheInfo(**json.loads(info_path.read_text(encoding="utf-8")))
        self.manifest = Manifest.read(self.directory / MANIFEST_NAME)
        self.empty_prompt = load_file(self.directory / EMPTY_PROMPT)

    def __len__(self) -> int:
        return len(self.manifest)

    def latent_shape(self, index: int) -> tuple[int, int, int, int]:
        return tuple(self.manifest[index].metadata["latent_shape"])  # type: ignore[return-value]

    def num_captions(self, index: int) -> int:
        return int(self.manifest[index].metadata.get("num_captions", 1))

    def _caption_record(self, index: int, caption: int) -> ClipRecord:
        """Sample ``index``'s record, after checking that it has a cached caption number ``caption``."""
        record = self.manifest[index]
        if not 0 <= caption < self.num_captions(index):
            raise IndexError(f"sample {record.id} has {self.num_captions(index)} cached captions, asked for {caption}")
        return record

    def caption_text(self, index: int, caption: int = 0) -> str:
        """The text of cached caption ``caption`` of sample ``index`` (0: ``record.caption``)."""
        record = self._caption_record(index, caption)
        return (record.caption or "") if caption == 0 else record.metadata["extra_captions"][caption - 1]

    def load(self, index: int, caption: int = 0) -> dict[str, torch.Tensor]:
        """``latents`` normalised as ``(z - shift) * scale``, ``text`` ``[L, D]``, and ``pooled`` when cached.

        ``caption`` picks which of the sample's cached captions ``text`` / ``pooled`` encode (0: ``record.caption``).
        """
        record = self._caption_record(index, caption)
        suffix = f".{caption}" if caption else ""
        path = self.manifest.resolve(record)
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            item = {"latents": handle.get_tensor(f"{record.id}.latents")}
            for name in ("text", "pooled"):
                if f"{record.id}.{name}{suffix}" in keys:
                    item[name] = handle.get_tensor(f"{record.id}.{name}{suffix}")
        item["latents"] = (item["latents"] - self.info.shift_factor) * self.info.scaling_factor
        return item


def latent_statistics(cache: LatentCache, max_samples: int = 256) -> tuple[float, float]:
    """Mean and std of the raw cached latents, to choose a VAE's ``shift_factor`` / ``scaling_factor``."""
    values = []
    for index in range(min(len(cache), max_samples)):
        raw = cache.load(index)["latents"] / cache.info.scaling_factor + cache.info.shift_factor
        values.append(raw.flatten())
    flat = torch.cat(values).double()
    return float(flat.mean()), float(flat.std())


__all__ = ["CacheInfo", "LatentCache", "build_latent_cache", "latent_statistics", "load_clip", "valid_frame_count"]
