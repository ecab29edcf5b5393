"""Output of a curation run: clip files or frame ranges, the manifest, and per-source status files for resuming.

Layout of an output folder::

    out/
      manifest.jsonl            one ClipRecord per kept clip, appended as sources finish
      manifest.parquet          (when asked) written from the JSONL at the end of the run
      clips/shard-00000/*.mp4   clip files (mode "files")
      status/<source id>.json   one per source: done or failed, with counts and the failure reason
      summary.json              totals of the run (kept, dropped per reason, failures per reason)

A source counts as processed only once its status file exists, and the status file is written after the source's
records are in the manifest, so an interrupted run loses at most the source in flight; records already in the
manifest are skipped by id when that source is redone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipelines.config import ShardConfig
from data_pipelines.decode import decode_audio, decode_video, decode_video_decord, probe_video, target_size
from data_pipelines.stages import ClipSample
from seedkit.data.manifest import ClipRecord, Manifest
from seedkit.data.video_io import write_video

STATUS_DONE = "done"
STATUS_FAILED = "failed"


@dataclass
class SourceStatus:
    """The outcome of one source, stored as ``status/<source_id>.json``.

    Attributes:
        source: the source path relative to the input root.
        status: ``"done"`` or ``"failed"``.
        reason, detail: why it failed (``"timeout"``, ``"worker_crashed"``, ``"not_a_video"``, ...).
        kept: clips written to the manifest.
        dropped: clips dropped, by reason (filter name, ``"duplicate"``, ``"too_short"`` ...).
        warnings: non-fatal problems (an audio track that failed to decode, a truncated tail).
    """

    source: str
    status: str
    reason: str | None = None
    detail: str | None = None
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


class StatusStore:
    """Per-source status files under ``out_dir/status`` (atomic writes)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.directory = Path(out_dir) / "status"
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, source_id: str) -> Path:
        return self.directory / f"{source_id}.json"

    def get(self, source_id: str) -> SourceStatus | None:
        path = self.path(source_id)
        if not path.exists():
            return None
        try:
            return SourceStatus(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError):
            return None  # an unreadable status file means "not processed": the source is redone

    def put(self, source_id: str, status: SourceStatus) -> None:
        path = self.path(source_id)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(status.__dict__, indent=1), encoding="utf-8")
        os.replace(temporary, path)


def shard_folder(source_index: int, config: ShardConfig) -> str:
    return f"clips/shard-{source_index // config.sources_per_shard:05d}"


def write_clip_file(
    source: str | os.PathLike,
    start_frame: int,
    end_frame: int,
    out_path: Path,
    config: ShardConfig,
    with_audio: bool,
    reader: str = "pyav",
    variable_frame_rate: bool = False,
) -> dict[str, Any]:
    """Re-encode frames ``[start_frame, end_frame)`` of ``source`` (and the audio of the same span) to ``out_path``.

    Returns the geometry written: ``num_frames``, ``height``, ``width``, ``fps``, ``has_audio``, ``sample_rate``,
    and ``audio_error`` when the audio could not be decoded (the clip is then written without sound).
    """
    if reader == "decord" and not variable_frame_rate:
        probe = probe_video(source)
        size = target_size(probe.width, probe.height, config.output_size)
        frames = decode_video_decord(source, size=size, start_frame=start_frame, end_frame=end_frame)
        fps = probe.fps
    else:
        # decord counts decode-order frames, which only match our frame grid at a constant frame rate.
        decoded = decode_video(source, size=config.output_size, start_frame=start_frame, end_frame=end_frame)
        frames, fps = decoded.frames, decoded.fps
    audio, sample_rate, audio_error = (None, None, None)
    if with_audio:
        audio, sample_rate, audio_error = decode_audio(source, start_frame / fps, end_frame / fps)
    write_video(out_path, frames, fps=fps, audio=audio, sample_rate=sample_rate, crf=config.crf)
    return {
        "num_frames": int(frames.shape[0]),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "fps": float(fps),
        "has_audio": audio is not None,
        "sample_rate": sample_rate,
        "audio_error": audio_error,
    }


def make_record(sample: ClipSample, path: str, geometry: dict[str, Any], ranged: bool) -> ClipRecord:
    """The manifest record of a kept clip. ``path`` is relative to the manifest root; ``ranged`` records point at
    the source with ``start_frame`` / ``end_frame``, file records at the clip file (range ``[0, num_frames)``)."""
    captions = sample.captions or {}
    # metadata["shot_boundaries"] holds source frame indices; the record counts from the clip's first frame.
    shot_boundaries = [
        int(boundary) - sample.start_frame
        for boundary in sample.metadata.get("shot_boundaries") or ()
        if sample.start_frame < boundary < sample.end_frame
    ] or None
    return ClipRecord(
        id=sample.clip_id,
        path=path,
        media="video",
        num_frames=geometry["num_frames"],
        height=geometry["height"],
        width=geometry["width"],
        fps=geometry["fps"],
        start_frame=sample.start_frame if ranged else 0,
        end_frame=sample.end_frame if ranged else None,
        caption=captions.get("caption"),
        shot_captions=captions.get("shot_captions"),
        shot_boundaries=shot_boundaries,
        has_audio=bool(geometry["has_audio"]),
        sample_rate=geometry["sample_rate"],
        scores=dict(sample.scores),
        metadata={
            **{key: value for key, value in sample.metadata.items() if key not in ("shot_boundaries",)},
            **({"audio_caption": captions["audio_caption"]} if captions.get("audio_caption") else {}),
        },
    )


def write_parquet_manifest(jsonl_path: Path, parquet_path: Path) -> Path:
    """Convert the run's JSONL manifest to Parquet (needs pyarrow)."""
    manifest = Manifest.read(jsonl_path)
    return manifest.write(parquet_path)
