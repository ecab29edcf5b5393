"""Turn shots into training clips: trim frames next to cuts and fades, enforce minimum and maximum durations, and
split long shots into windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SplitConfig:
    """Configuration of :func:`split_shots`.

    Attributes:
        min_duration: clips shorter than this (seconds, after trimming) are not produced.
        max_duration: shots longer than this are split into equal windows no longer than it.
        cut_trim_frames: frames dropped on each side of a cut (detectors are off by a frame or two, and encoders
            smear the frames next to a cut).
        trim_fades: drop fade-in / fade-out frames (and black frames) at the ends of every shot.
        black_level: mean luma (0-1) below which a frame counts as black.
        fade_ratio: at a shot's ends, frames darker than this fraction of the shot's median luma are part of a fade.
        fade_min_frames: a dark run at a shot's end is trimmed as a fade only if at least this long, or black.
        vae_frame_counts: round every clip's frame count down to ``1 + 4k`` (what the causal VAE accepts).
    """

    min_duration: float = 1.0
    max_duration: float = 10.0
    cut_trim_frames: int = 2
    trim_fades: bool = True
    black_level: float = 0.06
    fade_ratio: float = 0.5
    fade_min_frames: int = 3
    vae_frame_counts: bool = False

    def __post_init__(self) -> None:
        if self.min_duration <= 0 or self.max_duration < self.min_duration:
            raise ValueError(
                f"need 0 < min_duration <= max_duration, got min_duration={self.min_duration}, "
                f"max_duration={self.max_duration}"
            )
        if self.cut_trim_frames < 0:
            raise ValueError(f"cut_trim_frames must be >= 0, got {self.cut_trim_frames}")


@dataclass
class ClipSpan:
    """A planned clip ``[start, end)`` in source frames, the shot it comes from and why its ends were moved."""

    start: int
    end: int
    shot_index: int
    window_index: int = 0
    trims: dict[str, int] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.end - self.start


def mean_luma(frames: np.ndarray) -> np.ndarray:
    """``uint8 [F, H, W, 3]`` to ``float32 [F]`` mean BT.601 luma in [0, 1]."""
    weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return (frames.reshape(frames.shape[0], -1, 3).astype(np.float32) @ weights).mean(axis=1) / 255.0


def fade_trim(luma: np.ndarray, config: SplitConfig) -> tuple[int, int]:
    """Frames to trim at the head and tail of one shot whose per-frame mean luma is ``luma``.

    A head (tail) frame is part of a fade when it is black, or darker than ``fade_ratio`` times the shot's median
    luma while the brightness ramps towards (away from) the shot's level over at least ``fade_min_frames`` frames.
    """
    count = len(luma)
    if count == 0:
        return 0, 0
    reference = float(np.median(luma))
    dark = (luma < config.black_level) | (luma < config.fade_ratio * reference)

    def run_length(mask: np.ndarray) -> int:
        return int(np.argmin(mask)) if not mask.all() else len(mask)

    head, tail = run_length(dark), run_length(dark[::-1])
    if head < config.fade_min_frames and not (luma[:head] < config.black_level).all():
        head = 0
    if tail < config.fade_min_frames and not (luma[count - tail :] < config.black_level).all():
        tail = 0
    return head, tail


@dataclass
class SplitPlan:
    """The clips planned for one source, and how many shots gave no clip, by reason (``"too_short"``: shorter than
    ``min_duration`` after trimming; ``"black"``: nothing but black or fading frames)."""

    spans: list[ClipSpan]
    dropped: dict[str, int]


def split_shots(
    shots: list[tuple[int, int]], fps: float, config: SplitConfig, luma: np.ndarray | None = None
) -> SplitPlan:
    """Plan the clips of one source.

    Args:
        shots: ``[start, end)`` frame ranges of the shots, in order (see ``ShotBoundaries.shots``).
        fps: frame rate of the indices.
        config: durations and trimming.
        luma: ``float32 [F]`` mean luma per source frame (:func:`mean_luma`), for fade trimming; ``None`` skips it.

    Returns:
        The clips, each inside one shot, between ``min_duration`` and ``max_duration`` long, and the drop counts.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    min_frames = max(1, int(math.ceil(config.min_duration * fps - 1e-6)))
    max_frames = max(min_frames, int(math.floor(config.max_duration * fps + 1e-6)))
    spans: list[ClipSpan] = []
    dropped: dict[str, int] = {}
    last_shot = len(shots) - 1
    for shot_index, (shot_start, shot_end) in enumerate(shots):
        trims = {}
        start, end = shot_start, shot_end
        # Frames next to a cut; the start of the file and its end are not cuts.
        if shot_index > 0 and config.cut_trim_frames:
            start += config.cut_trim_frames
            trims["cut_head"] = config.cut_trim_frames
        if shot_index < last_shot and config.cut_trim_frames:
            end -= config.cut_trim_frames
            trims["cut_tail"] = config.cut_trim_frames
        if config.trim_fades and luma is not None and end > start:
            head, tail = fade_trim(luma[start:end], config)
            if head >= end - start:
                dropped["black"] = dropped.get("black", 0) + 1
                continue
            if head:
                trims["fade_head"] = head
            if tail:
                trims["fade_tail"] = tail
            start, end = start + head, end - tail
        length = end - start
        if length < min_frames:
            dropped["too_short"] = dropped.get("too_short", 0) + 1
            continue
        windows = int(math.ceil(length / max_frames))
        window_length = length // windows
        for window_index in range(windows):
            window_start = start + window_index * window_length
            window_end = window_start + window_length
            if config.vae_frame_counts:
                window_end = window_start + 1 + 4 * ((window_length - 1) // 4)
            if window_end - window_start >= min_frames:
                spans.append(ClipSpan(window_start, window_end, shot_index, window_index, dict(trims)))
            else:
                dropped["too_short"] = dropped.get("too_short", 0) + 1
    return SplitPlan(spans, dropped)
