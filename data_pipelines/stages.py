"""The stage interface of the curation pipeline.

A clip travels through the pipeline as a :class:`ClipSample`. Per-clip stages (:class:`ClipStage`) take a sample
and return it, usually with new ``scores``, ``captions`` or ``metadata``, or raise :class:`DropClip` with the reason
the clip is not kept. Filters written in the ``score(sample) -> dict`` / ``keep(scores) -> (bool, reason)`` style
are wrapped into a stage by :class:`FilterStage`; dataset-level stages (near-duplicate detection) see every clip of
the run and live in the parent process (see :mod:`data_pipelines.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class ClipSample:
    """One candidate training clip in flight.

    Attributes:
        source: path of the source video file.
        clip_id: unique, stable id (``"<source id>-<start>-<end>"``), used as the manifest record id.
        start_frame, end_frame: the clip is frames ``[start_frame, end_frame)`` of ``source`` (decoded frame indices).
        fps: frames per second of the source (average rate for variable frame rate files).
        frames: ``uint8 [F, H, W, 3]`` RGB frames of the clip, possibly downscaled for analysis; ``F`` may be smaller
            than ``end_frame - start_frame`` when frames are subsampled (``metadata["frame_stride"]`` says by how much).
        audio: ``float32 [C, S]`` audio of the clip in [-1, 1], or ``None`` when the source has none (or it failed).
        sample_rate: audio sample rate in Hz, ``None`` without audio.
        scores: filter scores by name (``"motion"``, ``"sharpness"``, ...), all floats.
        captions: ``"caption"`` (str), ``"shot_captions"`` (list[str]), ``"audio_caption"`` (str) once captioned.
        metadata: anything else (probe of the source, shot boundaries, trim reasons, analysis size).
    """

    source: str
    clip_id: str
    start_frame: int
    end_frame: int
    fps: float
    frames: np.ndarray
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    captions: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Length of the clip in source frames (not the number of analysis frames held in ``frames``)."""
        return self.end_frame - self.start_frame

    @property
    def duration(self) -> float:
        """Length of the clip in seconds."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class DropClip(Exception):
    """Raised by a stage to drop the current clip; ``reason`` is counted in the run summary.

    Args:
        reason: short machine-friendly key, e.g. ``"motion"`` or ``"too_dark"``; the summary groups drops by it.
        detail: optional human-readable explanation (threshold and measured value).
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ClipStage:
    """A per-clip stage: ``stage(sample) -> sample`` or raise :class:`DropClip`.

    Subclasses set ``name`` (used in summaries and score keys) and implement ``__call__``. Stages must be picklable:
    the local executor rebuilds them inside worker processes from their config.
    """

    name: str = "stage"

    def __call__(self, sample: ClipSample) -> ClipSample:
        raise NotImplementedError


@runtime_checkable
class ScoringFilter(Protocol):
    """The filter protocol: scores are computed once and kept in the manifest, the keep decision is separate so
    thresholds can be changed later without re-scoring."""

    def score(self, sample: ClipSample) -> dict[str, float]: ...

    def keep(self, scores: dict[str, float]) -> tuple[bool, str | None]: ...


class FilterStage(ClipStage):
    """Adapt a :class:`ScoringFilter` to a :class:`ClipStage`: merge its scores into ``sample.scores``, then drop the
    clip with the filter's reason if ``keep`` refuses it.

    Args:
        scoring_filter: object with ``score(sample)`` and ``keep(scores)``.
        name: stage name for summaries; defaults to the filter's ``name`` attribute or its class name.
        enforce: when ``False`` the scores are recorded but no clip is dropped (score-only runs).
    """

    def __init__(self, scoring_filter: ScoringFilter, name: str | None = None, enforce: bool = True) -> None:
        if not isinstance(scoring_filter, ScoringFilter):
            raise TypeError(
                f"{type(scoring_filter).__name__} is not a filter: it needs score(sample) -> dict[str, float] "
                "and keep(scores) -> tuple[bool, str | None]"
            )
        self.scoring_filter = scoring_filter
        self.name = name or getattr(scoring_filter, "name", None) or type(scoring_filter).__name__
        self.enforce = enforce

    def __call__(self, sample: ClipSample) -> ClipSample:
        scores = self.scoring_filter.score(sample)
        sample.scores.update({key: float(value) for key, value in scores.items()})
        keep, reason = self.scoring_filter.keep(scores)
        if self.enforce and not keep:
            raise DropClip(reason or self.name)
        return sample


def run_stages(sample: ClipSample, stages: list[ClipStage]) -> tuple[ClipSample, str | None]:
    """Run ``stages`` in order; returns the sample and ``None``, or the sample and the drop reason."""
    for stage in stages:
        try:
            sample = stage(sample)
        except DropClip as drop:
            sample.metadata["drop_detail"] = str(drop)
            return sample, drop.reason
    return sample, None
