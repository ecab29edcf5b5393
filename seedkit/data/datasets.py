"""torch Datasets for training: cached latents, ShapesWorld clips rendered on the fly, random crops of real clips.

Every item is a pure function of its key, so data order and content are reproducible across dataloader workers
and across a resume (no worker RNG is ever used):

* :class:`LatentDataset` is indexed by an int (a record of a latent cache);
* :class:`ShapesVideoDataset` and :class:`MixedVideoDataset` are indexed by ``(index, epoch)`` pairs, which
  :class:`EpochKeyedBatchSampler` produces from any batch sampler, so augmentation changes from epoch to epoch
  but not from run to run.

Collate functions: :func:`collate_latents` (same-shape batches from bucketing, text padded with a mask) and
:func:`collate_packed` (lists, for the transformer's ``forward_packed``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .latent_cache import LatentCache, valid_frame_count
from .manifest import ClipRecord
from .packing import num_tokens
from .video_io import VIDEO_SUFFIXES, frames_to_tensor, read_video


class LatentDataset(Dataset):
    """Items of a latent cache: ``{"latents": [C, f, h, w], "text": [L, D], "pooled": [Dp]?}``.

    Indexed by ``index`` (the sample's first caption) or, through :class:`EpochKeyedBatchSampler`, by
    ``(index, epoch)``: then a sample with several cached captions is shown with one drawn from
    ``np.random.default_rng([seed, epoch, index])``, so wording varies by epoch and a resumed run sees the same.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        seed: int = 0,
        keep: Callable[[ClipRecord], bool] | None = None,
        with_captions: bool = False,
    ) -> None:
        """``keep``: which cache items to use, judged by their manifest record (a curriculum stage trains on a
        subset); ``None`` uses them all. ``indices`` lists the kept items' cache indices. ``with_captions``: items
        also carry ``"caption"``, the text the cached ``text`` encodes (for objectives that edit captions)."""
        self.cache = LatentCache(cache_dir)
        self.seed = seed
        self.with_captions = with_captions
        self.indices = [index for index, record in enumerate(self.cache.manifest) if keep is None or keep(record)]
        if not self.indices:
            raise ValueError(f"no item of the latent cache at {cache_dir} was kept")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, epoch = self.indices[int(key[0])], int(key[1])
            count = self.cache.num_captions(index)
            caption = int(np.random.default_rng([self.seed, epoch, index]).integers(count)) if count > 1 else 0
        else:
            index, caption = self.indices[int(key)], 0
        item: dict[str, Any] = self.cache.load(index, caption)
        if self.with_captions:
            item["caption"] = self.cache.caption_text(index, caption)
        return item

    def keeping(self, record_ids: set[str]) -> LatentDataset:
        """This dataset narrowed to the items whose manifest record id is in ``record_ids`` (same cache, same
        order, the manifest not read again)."""
        narrowed = copy.copy(self)
        narrowed.indices = [index for index in self.indices if self.cache.manifest[index].id in record_ids]
        if not narrowed.indices:
            raise ValueError(f"none of the {len(record_ids)} asked-for record ids is among this dataset's items")
        return narrowed

    def record_ids(self) -> list[str]:
        """The manifest record id of every item, in the dataset's order."""
        return [self.cache.manifest[index].id for index in self.indices]

    def bucket_keys(self) -> list[tuple[int, int, int]]:
        """Latent ``(frames, height, width)`` of every item, for :class:`~seedkit.data.buckets.BucketBatchSampler`."""
        return [tuple(self.cache.latent_shape(index)[1:]) for index in self.indices]  # type: ignore[misc]

    def token_lengths(self, patch_size: Sequence[int] = (1, 2, 2)) -> list[int]:
        """Transformer tokens of every item, for :class:`~seedkit.data.packing.PackedBatchSampler`."""
        return [num_tokens(key, patch_size) for key in self.bucket_keys()]

    def empty_prompt(self) -> dict[str, torch.Tensor]:
        """``{"text": [L0, D], "pooled": [Dp]?}`` of the empty prompt."""
        return dict(self.cache.empty_prompt)


def collate_latents(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack same-shape latents; pad the prompts to the longest one.

    Returns ``latents [B, C, F, H, W]``, ``text [B, L, D]``, ``text_mask [B, L]`` (1 keep), ``pooled [B, Dp]``
    when the cache has pooled vectors, ``caption`` (a list of strings) when the items carry captions and
    ``dispreferred [B, C, F, H, W]`` when they carry preference partners.
    """
    shapes = {tuple(item["latents"].shape) for item in items}
    if len(shapes) != 1:
        raise ValueError(f"collate_latents needs same-shape latents (use a bucket sampler); got {sorted(shapes)}")
    batch = {"latents": torch.stack([item["latents"] for item in items])}
    batch["text"], batch["text_mask"] = pad_text([item["text"] for item in items])
    if "pooled" in items[0]:
        batch["pooled"] = torch.stack([item["pooled"] for item in items])
    if "caption" in items[0]:
        batch["caption"] = [item["caption"] for item in items]
    if "dispreferred" in items[0]:  # preference pairs (seedkit.training.recipes.SelfPlayPairs), same shape as latents
        batch["dispreferred"] = torch.stack([item["dispreferred"] for item in items])
    return batch


def pad_text(texts: Sequence[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``[L_i, D]`` prompt states to ``[B, L, D]`` (``L`` = longest, at least 1) with a ``[B, L]`` mask."""
    length = max(length or 0, max(text.shape[0] for text in texts), 1)
    dim = texts[0].shape[-1]
    padded = texts[0].new_zeros(len(texts), length, dim)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in enumerate(texts):
        padded[row, : text.shape[0]] = text
        mask[row, : text.shape[0]] = 1
    return padded, mask


def collate_packed(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Keep samples separate: ``latents`` and ``text`` are lists; ``pooled`` is stacked ``[N, Dp]`` when present."""
    batch: dict[str, Any] = {
        "latents": [item["latents"] for item in items],
        "text": [item["text"] for item in items],
    }
    if "pooled" in items[0]:
        batch["pooled"] = torch.stack([item["pooled"] for item in items])
    return batch


class EpochKeyedBatchSampler:
    """Wraps a batch sampler so it yields ``(index, epoch)`` keys; forwards ``set_epoch`` and ``len``."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.batch_sampler.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.batch_sampler.epoch
        for batch in self.batch_sampler:
            yield [(index, epoch) for index in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class ShapesVideoDataset(Dataset):
    """ShapesWorld clips rendered on the fly: ``{"video": [3, F, H, W] in [-1, 1], "caption": str}``.

    Item ``i`` has the shape ``sizes[i % len(sizes)]`` (so a bucket sampler knows shapes without rendering); its
    scene is drawn from ``np.random.default_rng([seed, epoch, i])``.
    """

    def __init__(self, sizes: Sequence[Sequence[int]], length: int, seed: int = 0, max_objects: int = 3) -> None:
        from .shapes import check_num_frames

        self.sizes = [tuple(int(v) for v in size) for size in sizes]
        for frames, _, _ in self.sizes:
            check_num_frames(frames)
        self.length = length
        self.seed = seed
        self.max_objects = max_objects

    def __len__(self) -> int:
        return self.length

    def shape(self, index: int) -> tuple[int, int, int]:
        return self.sizes[index % len(self.sizes)]  # type: ignore[return-value]

    def bucket_keys(self) -> list[tuple[int, int, int]]:
        return [self.shape(index) for index in range(self.length)]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        from .shapes import render_scene, sample_scene

        index, epoch = key
        frames, height, width = self.shape(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        scene = sample_scene(rng, height=height, width=width, num_frames=frames, max_objects=self.max_objects)
        clip = render_scene(scene)
        return {"video": frames_to_tensor(clip.frames), "caption": scene.caption}


def shared_videos_dir() -> Path | None:
    """The project's real test clips: ``$SEEDKIT_SHARED_VIDEOS``, else ``<repo>/../shared/data/videos``;
    None if absent."""
    if env := os.environ.get("SEEDKIT_SHARED_VIDEOS"):
        return Path(env) if Path(env).is_dir() else None
    candidate = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "videos"
    return candidate if candidate.is_dir() else None


def find_video_files(directory: str | os.PathLike) -> list[Path]:
    """Video files under ``directory`` (recursively), sorted."""
    return sorted(path for path in Path(directory).rglob("*") if path.suffix.lower() in VIDEO_SUFFIXES)


class RealClipCrops:
    """Real footage held in memory at a reduced size, cut into random ``(F, H, W)`` crops.

    Each file is decoded once (``max_frames`` frames), resized so its short side is ``short_side`` pixels (area
    interpolation), and kept as uint8. Files that fail to decode are skipped and listed in :attr:`failed`.
    """

    def __init__(self, directory: str | os.PathLike, short_side: int = 64, max_frames: int = 240) -> None:
        self.clips: list[torch.Tensor] = []  # uint8 [F, 3, H, W]
        self.names: list[str] = []
        self.failed: dict[str, str] = {}
        for path in find_video_files(directory):
            try:
                frames = read_video(path, with_audio=False, max_frames=max_frames).frames
            except Exception as error:  # noqa: BLE001 - a bad file is recorded, the rest still trains
                self.failed[path.name] = f"{type(error).__name__}: {error}"
                continue
            if len(frames) == 0:
                self.failed[path.name] = "no frames"
                continue
            video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
            scale = short_side / min(video.shape[-2:])
            size = (max(short_side, round(video.shape[-2] * scale)), max(short_side, round(video.shape[-1] * scale)))
            resized = torch.cat([F.interpolate(chunk, size=size, mode="area") for chunk in video.split(32)])
            self.clips.append(resized.round().clamp(0, 255).to(torch.uint8))
            self.names.append(path.name)

    def __len__(self) -> int:
        return len(self.clips)

    def crop(self, rng: np.random.Generator, frames: int, height: int, width: int) -> torch.Tensor:
        """A random ``[3, frames, height, width]`` crop in [-1, 1] from a random clip (frames clamp to the clip)."""
        clip = self.clips[int(rng.integers(len(self.clips)))]
        num_frames, _, clip_height, clip_width = clip.shape
        if clip_height < height or clip_width < width:
            raise ValueError(f"crop {height}x{width} is larger than the stored {clip_height}x{clip_width} clip")
        if num_frames < frames:
            raise ValueError(f"crop of {frames} frames from a clip of {num_frames}; lower the crop frame count")
        start = int(rng.integers(num_frames - frames + 1))
        top = int(rng.integers(clip_height - height + 1))
        left = int(rng.integers(clip_width - width + 1))
        crop = clip[start : start + frames, :, top : top + height, left : left + width]
        return crop.permute(1, 0, 2, 3).float() / 127.5 - 1.0


class MixedVideoDataset(ShapesVideoDataset):
    """ShapesWorld on the fly, with a ``real_fraction`` of items replaced by random crops of real clips."""

    def __init__(
        self,
        sizes: Sequence[Sequence[int]],
        length: int,
        seed: int = 0,
        real_clips: RealClipCrops | None = None,
        real_fraction: float = 0.0,
    ) -> None:
        super().__init__(sizes, length, seed)
        if not 0.0 <= real_fraction <= 1.0:
            raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
        self.real_clips = real_clips if real_clips is not None and len(real_clips) else None
        self.real_fraction = real_fraction if self.real_clips is not None else 0.0

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        if self.real_clips is not None and rng.random() < self.real_fraction:
            frames, height, width = self.shape(index)
            return {"video": self.real_clips.crop(rng, frames, height, width), "caption": ""}
        return super().__getitem__(key)


def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"video": [B, 3, F, H, W], "caption": list[str]}`` for same-shape items."""
    return {"video": torch.stack([item["video"] for item in items]), "caption": [item["caption"] for item in items]}


__all__ = [
    "EpochKeyedBatchSampler",
    "LatentDataset",
    "MixedVideoDataset",
    "RealClipCrops",
    "ShapesVideoDataset",
    "collate_latents",
    "collate_packed",
    "collate_videos",
    "find_video_files",
    "pad_text",
    "valid_frame_count",
]
