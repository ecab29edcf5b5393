"""Writing ShapesWorld samples: single clips (mp4 with AAC audio, png for images) and resumable, sharded datasets.

A dataset is a directory with ``manifest.jsonl`` (:class:`seedkit.data.manifest.ClipRecord` lines, each with the
exact scene under ``metadata["scene"]``) and the media files in ``shard-00000/``, ``shard-00001/``, ... Sample ``i``
is drawn from ``np.random.default_rng([seed, i])`` alone, so with the same arguments a dataset is the same however
many runs or worker processes wrote it, and an interrupted run resumes by skipping the ids already in the manifest.

Audio timing: AAC encoders prepend 1024 priming samples. The mp4 muxer records them as a negative start time
(an edit list) and FFmpeg's decoder, hence :func:`seedkit.data.video_io.read_audio`, drops them, so tone onsets read
back at the sample where they were written (measured lag: 0 samples; see tests/data/test_shapes_writers.py). No
compensation is applied here; a reader that ignores edit lists would see every onset 1024 samples (64 ms at 16 kHz)
late.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from seedkit.data.manifest import ClipRecord, ManifestWriter
from seedkit.data.shapes import (
    DEFAULT_FPS,
    DEFAULT_SAMPLE_RATE,
    MIN_SHOT_FRAMES,
    RenderedClip,
    Scene,
    check_num_frames,
    render_scene,
    sample_scene,
)
from seedkit.data.shapes_captions import caption_for
from seedkit.data.video_io import write_video

MANIFEST_NAME = "manifest.jsonl"
GENERATOR_NAME = "shapesworld"


def write_clip(path: str | os.PathLike, clip: RenderedClip) -> Path:
    """Write a rendered clip: ``.mp4`` (H.264 4:4:4, plus AAC when ``clip.audio`` is set) or an image suffix for F = 1.

    4:4:4 rather than 4:2:0 because object colour is the ground truth: subsampled chroma smears it across edges.
    """
    return write_video(
        path, clip.frames, fps=clip.fps, audio=clip.audio, sample_rate=clip.sample_rate, pix_fmt="yuv444p"
    )


def scene_record(
    scene: Scene, clip_id: str, path: str, metadata: dict | None = None
) -> ClipRecord:
    """The manifest record of a scene written to ``path`` (relative to the manifest root).

    ``shot_captions`` and ``shot_boundaries`` are set for multi-shot clips only (``None`` for one shot);
    ``metadata["scene"]`` holds ``scene.to_dict()``; ``metadata`` adds further keys.
    """
    multi_shot = len(scene.shots) > 1
    return ClipRecord(
        id=clip_id,
        path=path,
        media="image" if scene.is_image else "video",
        num_frames=scene.num_frames,
        height=scene.height,
        width=scene.width,
        fps=None if scene.is_image else scene.fps,
        caption=scene.caption,
        shot_captions=scene.shot_captions if multi_shot else None,
        shot_boundaries=scene.shot_boundaries if multi_shot else None,
        has_audio=scene.sample_rate is not None,
        sample_rate=scene.sample_rate,
        metadata={**(metadata or {}), "generator": GENERATOR_NAME, "scene": scene.to_dict()},
    )


@dataclass
class ShapesDatasetSummary:
    """What :func:`write_shapes_dataset` did."""

    manifest_path: Path
    written: int
    skipped: int
    videos: int
    images: int
    multi_shot: int
    with_audio: int
    frames: int
    seconds: float

    def __str__(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"wrote {self.written} samples ({self.videos} videos, {self.images} images, {self.multi_shot} multi-shot, "
            f"{self.with_audio} with audio; {self.frames} frames, {rate:.0f} frames/s) in {self.seconds:.1f} s, "
            f"skipped {self.skipped} already in {self.manifest_path}"
        )


def _as_frame_counts(frames: int | Sequence[int]) -> list[int]:
    counts = [frames] if isinstance(frames, int) else list(frames)
    if not counts:
        raise ValueError("frames must name at least one frame count (1 + 4k)")
    return [check_num_frames(int(count)) for count in counts]


def _as_sizes(sizes: tuple[int, int] | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    if len(sizes) == 2 and all(isinstance(side, (int, np.integer)) for side in sizes):
        sizes = [sizes]
    result = [(int(height), int(width)) for height, width in sizes]
    if not result:
        raise ValueError("sizes must name at least one (height, width)")
    too_small = [size for size in result if min(size) < 8]
    if too_small:
        raise ValueError(f"ShapesWorld frames need both sides >= 8 px, got {too_small}")
    return result


def _is_image_index(index: int, total: int, num_images: int) -> bool:
    """Spread ``num_images`` images evenly over ``total`` indices (exact count, integer arithmetic)."""
    return (index + 1) * num_images // total > index * num_images // total


def write_shapes_dataset(
    out_dir: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    frames: int | Sequence[int] = 17,
    sizes: tuple[int, int] | Sequence[tuple[int, int]] = ((64, 64),),
    multi_shot: float = 0.0,
    audio: bool = False,
    image_fraction: float = 0.0,
    *,
    num_images: int | None = None,
    max_shots: int = 3,
    max_objects: int = 3,
    fps: float = DEFAULT_FPS,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    caption_split: str = "train",
    captions_per_clip: int = 1,
    shard_size: int = 1000,
    num_workers: int = 0,
    progress: bool = True,
) -> ShapesDatasetSummary:
    """Write (or finish writing) a ShapesWorld dataset of ``num_clips`` samples under ``out_dir``.

    Args:
        out_dir: dataset root; gets ``manifest.jsonl`` and ``shard-XXXXX/`` folders of ``shard_size`` files.
        num_clips: total samples, images included.
        seed: dataset seed; sample ``i`` uses ``np.random.default_rng([seed, i])``.
        frames: frame count(s) ``1 + 4k`` for videos, one drawn per clip.
        sizes: ``(height, width)`` or a list of them (several sizes and aspect ratios), one drawn per sample.
        multi_shot: fraction of videos made of 2 to ``max_shots`` shots (``True`` = all). Multi-shot clips draw
            from the frame counts that hold two shots (``>= 9``); a ValueError if there is none.
        audio: give videos an audio track (bounce tones) at ``sample_rate``; images never have audio.
        image_fraction: share of samples that are images (F = 1), spread evenly; or give ``num_images``.
        caption_split: templates of ``record.caption``; the other split's caption goes to
            ``metadata["heldout_caption"]`` when ``caption_split == "train"``.
        captions_per_clip: with more than one, ``metadata["extra_captions"]`` holds ``captions_per_clip - 1`` more
            whole-clip captions in the ``"augment"`` wording (train templates plus more sentence structures, never
            the held-out ones), for caption augmentation in training; clips and ``record.caption`` are unchanged.
        num_workers: processes that render and encode (0 or 1: this process); the output is the same either way.
    """
    frame_counts = _as_frame_counts(frames)
    size_list = _as_sizes(sizes)
    multi_shot = float(multi_shot)
    if not 0.0 <= multi_shot <= 1.0:
        raise ValueError(f"multi_shot is a fraction of clips in [0, 1], got {multi_shot}")
    multi_shot_counts = [count for count in frame_counts if count >= 1 + 4 * 2]
    if multi_shot > 0 and not multi_shot_counts:
        raise ValueError(
            f"multi-shot clips need >= 9 frames (two shots of >= {MIN_SHOT_FRAMES}); frames={frame_counts}"
        )
    if max_shots < 2:
        raise ValueError(f"max_shots must be >= 2, got {max_shots}")
    if num_images is not None and image_fraction:
        raise ValueError("give either image_fraction or num_images, not both")
    if num_images is None:
        if not 0.0 <= image_fraction <= 1.0:
            raise ValueError(f"image_fraction must be in [0, 1], got {image_fraction}")
        num_images = int(round(num_clips * image_fraction))
    if not 0 <= num_images <= num_clips:
        raise ValueError(f"num_images must be between 0 and num_clips={num_clips}, got {num_images}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if captions_per_clip < 1:
        raise ValueError(f"captions_per_clip must be >= 1 (the clip's own caption), got {captions_per_clip}")

    plan = _DatasetPlan(
        out_dir=str(out_dir),
        num_clips=num_clips,
        seed=seed,
        frame_counts=frame_counts,
        multi_shot_counts=multi_shot_counts,
        sizes=size_list,
        multi_shot=multi_shot,
        audio=audio,
        num_images=num_images,
        max_shots=max_shots,
        max_objects=max_objects,
        fps=fps,
        sample_rate=sample_rate,
        caption_split=caption_split,
        captions_per_clip=captions_per_clip,
        shard_size=shard_size,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    counts = dict(written=0, skipped=0, videos=0, images=0, multi_shot=0, with_audio=0, frames=0)
    started = time.perf_counter()
    with ManifestWriter(manifest_path) as writer:
        pending = [index for index in range(num_clips) if _clip_id(index) not in writer.done_ids]
        counts["skipped"] = num_clips - len(pending)
        bar = tqdm(
            total=num_clips, initial=counts["skipped"], disable=not progress, unit="clip", desc="shapes",
            dynamic_ncols=True,
        )
        make = functools.partial(_make_sample, plan)
        if num_workers > 1:
            # Workers render and encode; only this process appends to the manifest, in index order.
            with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
                records = pool.imap(make, pending, chunksize=4)
                for record in records:
                    _account(writer, record, counts, bar)
        else:
            for index in pending:
                _account(writer, make(index), counts, bar)
        bar.close()
    return ShapesDatasetSummary(manifest_path=manifest_path, seconds=time.perf_counter() - started, **counts)


def _clip_id(index: int) -> str:
    return f"shapes-{index:07d}"


@dataclass
class _DatasetPlan:
    """Everything a (possibly separate) process needs to make sample ``index`` of a dataset."""

    out_dir: str
    num_clips: int
    seed: int
    frame_counts: list[int]
    multi_shot_counts: list[int]
    sizes: list[tuple[int, int]]
    multi_shot: float
    audio: bool
    num_images: int
    max_shots: int
    max_objects: int
    fps: float
    sample_rate: int
    caption_split: str
    captions_per_clip: int
    shard_size: int


def _make_sample(plan: _DatasetPlan, index: int) -> ClipRecord:
    """Draw, render and write sample ``index``; returns its manifest record (not yet appended)."""
    rng = np.random.default_rng([plan.seed, index])
    height, width = plan.sizes[int(rng.integers(len(plan.sizes)))]
    is_image = _is_image_index(index, plan.num_clips, plan.num_images)
    num_shots = 1
    if is_image:
        num_frames = 1
    elif plan.multi_shot > 0 and rng.random() < plan.multi_shot:
        num_frames = plan.multi_shot_counts[int(rng.integers(len(plan.multi_shot_counts)))]
        num_shots = int(rng.integers(2, min(plan.max_shots, (num_frames - 1) // 4) + 1))
    else:
        num_frames = plan.frame_counts[int(rng.integers(len(plan.frame_counts)))]
    scene = sample_scene(
        rng,
        height,
        width,
        num_frames,
        fps=plan.fps,
        num_shots=num_shots,
        max_objects=plan.max_objects,
        sample_rate=plan.sample_rate if plan.audio and not is_image else None,
        caption_split=plan.caption_split,
    )
    metadata = {"seed": [plan.seed, index]}
    if plan.caption_split == "train":
        metadata["heldout_caption"] = caption_for(scene, rng, "heldout")
    # Drawn last, so the clip and its other captions are those of a dataset written without extra captions.
    if plan.captions_per_clip > 1:
        metadata["extra_captions"] = [caption_for(scene, rng, "augment") for _ in range(plan.captions_per_clip - 1)]
    clip_id = _clip_id(index)
    relative = f"shard-{index // plan.shard_size:05d}/{clip_id}.{'png' if is_image else 'mp4'}"
    write_clip(Path(plan.out_dir) / relative, render_scene(scene))
    return scene_record(scene, clip_id, relative, metadata)


def _account(writer: ManifestWriter, record: ClipRecord, counts: dict[str, int], bar) -> None:
    writer.append(record)
    counts["written"] += 1
    counts["images" if record.media == "image" else "videos"] += 1
    counts["multi_shot"] += int(bool(record.shot_boundaries))
    counts["with_audio"] += int(record.has_audio)
    counts["frames"] += record.num_frames
    bar.update(1)
