"""The curation pipeline: sources in, scored (and captioned) training clips plus a manifest out.

Per source, in a worker process (:class:`SourceProcessor`):

1. probe the container and decode every frame once at the analysis size (plus 48x27 thumbnails for TransNetV2);
2. detect shot boundaries;
3. plan clips: trim next to cuts and fades, enforce durations, split long shots;
4. run the per-clip filter stages (scores kept, failing clips dropped with their reason);
5. write the kept clips (re-encoded files with audio, or nothing for frame-range manifests).

In the parent process (:class:`CurationRun`), as each source finishes:

6. near-duplicate detection across the whole dataset (dropped duplicates lose their file);
7. captioning, batched;
8. manifest records appended, then the source's status file written (what makes a re-run skip it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import time
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from data_pipelines.config import CurateConfig
from data_pipelines.decode import DecodeError, decode_audio, decode_video, iter_video_chunks, probe_video
from data_pipelines.shard import (
    STATUS_DONE,
    STATUS_FAILED,
    SourceStatus,
    StatusStore,
    make_record,
    shard_folder,
    write_clip_file,
    write_parquet_manifest,
)
from data_pipelines.shots import (
    TRANSNET_SIZE,
    HistogramShotDetector,
    ShotBoundaries,
    TransNetV2ShotDetector,
)
from data_pipelines.split import mean_luma, split_shots
from data_pipelines.stages import ClipSample, ClipStage, run_stages
from seedkit.data.manifest import ClipRecord, Manifest, ManifestWriter, UnsafePathError, resolve_inside

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".ts", ".mpg", ".mpeg", ".flv", ".wmv")
# Frames of a kept clip sent back to the parent for deduplication and captioning.
MAX_PARENT_FRAMES = 16


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    """A source video: its resolved path, its path relative to the input root, a stable id and its position."""

    path: Path
    relative: str
    source_id: str
    index: int


@dataclass
class Rejected:
    """An input entry that was not processed, and why (``"unsafe_path"``, ``"missing_file"``, ...)."""

    entry: str
    reason: str
    detail: str


def source_id_for(relative: str) -> str:
    """Stable, file-name-safe id of a source from its path relative to the input root."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", Path(relative).stem).strip("_")[:40] or "source"
    digest = hashlib.sha1(relative.encode("utf-8")).hexdigest()[:10]
    return f"{stem}-{digest}"


def discover_sources(input_path: str | os.PathLike) -> tuple[list[Source], list[Rejected], Path]:
    """Find the sources of a run.

    ``input_path`` is a folder (searched recursively for video suffixes), a ``.txt`` list (one path per line,
    relative to the list's folder, ``#`` comments) or a manifest (``.jsonl`` / ``.parquet``, its records' paths).
    Entries that are absolute, contain ``..``, or resolve (through symlinks) outside the input root are rejected
    with the reason, as are missing files; nothing is read outside the root.

    Returns:
        ``(sources, rejected, root)``.
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"input {input_path} does not exist; give a folder, a .txt list or a manifest")
    if input_path.is_dir():
        root = input_path.resolve()
        entries = []
        for directory, subdirectories, files in os.walk(input_path, followlinks=False):
            subdirectories.sort()
            for name in sorted(files):
                if name.startswith(".") or Path(name).suffix.lower() not in VIDEO_SUFFIXES:
                    continue
                entries.append((Path(directory) / name).relative_to(input_path).as_posix())
    elif input_path.suffix == ".txt":
        root = input_path.parent.resolve()
        entries = []
        for line in input_path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append(line)
    elif input_path.suffix in (".jsonl", ".parquet"):
        root = input_path.parent.resolve()
        entries = _manifest_entries(input_path)
    else:
        raise ValueError(
            f"input {input_path} must be a folder, a .txt list or a .jsonl/.parquet manifest "
            f"(got {input_path.suffix!r})"
        )
    sources, rejected, seen = [], [], set()
    for entry in entries:
        try:
            resolved = resolve_inside(root, entry)
        except UnsafePathError as error:
            rejected.append(Rejected(entry, "unsafe_path", str(error)))
            continue
        if not resolved.is_file():
            rejected.append(Rejected(entry, "missing_file", f"{entry} is not a file under {root}"))
            continue
        relative = Path(entry).as_posix()
        if relative in seen:
            continue
        seen.add(relative)
        sources.append(Source(resolved, relative, source_id_for(relative), len(sources)))
    return sources, rejected, root


def _manifest_entries(path: Path) -> list[str]:
    """Paths of a manifest's records, read leniently so that one unsafe entry rejects that entry, not the file."""
    if path.suffix == ".parquet":
        return [record.path for record in Manifest.read(path)]
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(str(json.loads(line)["path"]))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a manifest record with a 'path' ({error})") from error
    return entries


# ----------------------------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SourceTask:
    """What a worker needs to process one source."""

    source: Source
    out_dir: str


@dataclass
class SourceResult:
    """What a worker sends back: kept clips (with at most ``MAX_PARENT_FRAMES`` frames each), their records,
    drop counts and warnings; or a failure reason."""

    source_id: str
    ok: bool
    reason: str | None = None
    detail: str | None = None
    samples: list[ClipSample] = field(default_factory=list)
    records: list[ClipRecord] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)


class SourceProcessor:
    """Stages 1-5 for one source; picklable, builds its detectors and filters lazily inside the worker and keeps
    them for the worker's next sources."""

    def __init__(self, config: CurateConfig) -> None:
        self.config = config
        self._detector = None
        self._filters: list[ClipStage] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_detector": None, "_filters": None}

    @property
    def detector(self):
        if self._detector is None:
            shots = self.config.shots
            if shots.detector == "histogram":
                self._detector = HistogramShotDetector(shots.histogram)
            elif shots.detector == "transnetv2":
                self._detector = TransNetV2ShotDetector(shots.transnetv2)
        return self._detector

    @property
    def filters(self) -> list[ClipStage]:
        if self._filters is None:
            self._filters = build_filters(self.config.filters)
        return self._filters

    def __call__(self, task: SourceTask) -> SourceResult:
        source = task.source
        self._debug_hooks(source)
        try:
            return self._process(source, Path(task.out_dir))
        except DecodeError as error:
            return SourceResult(source.source_id, False, reason=error.reason, detail=error.detail)

    def _debug_hooks(self, source: Source) -> None:
        executor = self.config.executor
        if any(pattern in source.relative for pattern in executor.debug_crash_on):
            os._exit(13)
        if any(pattern in source.relative for pattern in executor.debug_hang_on):
            time.sleep(10**6)

    def _process(self, source: Source, out_dir: Path) -> SourceResult:
        config = self.config
        result = SourceResult(source.source_id, True)
        # 1. probe and decode once at the analysis size
        probe = probe_video(source.path, count_frames=True)
        result.probe = probe.to_dict()
        result.probe["path"] = source.relative
        use_transnet = config.shots.detector == "transnetv2"
        analysis = self._analyse(source, use_transnet, result)
        fps, num_frames = analysis["fps"], analysis["num_frames"]

        # 2. shot boundaries
        if self.detector is None:
            boundaries = ShotBoundaries(cuts=[], scores=np.zeros(num_frames, np.float32), num_frames=num_frames)
        elif use_transnet:
            boundaries = self.detector.detect(analysis["thumbnails"])
        else:
            boundaries = self.detector.detect_histograms(analysis["histograms"])

        # 3. clip plan
        plan = split_shots(boundaries.shots(), fps, config.split, luma=analysis["luma"])
        result.dropped.update(plan.dropped)

        # 4. per-clip filters
        ranged = config.shard.mode == "ranges"
        for span in plan.spans:
            clip_id = f"{source.source_id}-{span.start:06d}-{span.end:06d}"
            frames, frame_stride = self._clip_frames(source, span, analysis["frames"])
            sample = ClipSample(
                source=str(source.path),
                clip_id=clip_id,
                start_frame=span.start,
                end_frame=span.end,
                fps=fps,
                frames=frames,
                audio=None,
                sample_rate=None,
                metadata={
                    "source": source.relative,
                    "shot_index": span.shot_index,
                    "window_index": span.window_index,
                    "trims": span.trims,
                    "frame_stride": frame_stride,
                    "variable_frame_rate": bool(probe.variable_frame_rate),
                    "shot_detector": config.shots.detector,
                },
            )
            if config.decode.with_audio and probe.has_audio:
                sample.audio, sample.sample_rate, audio_error = decode_audio(
                    source.path, span.start / fps, span.end / fps
                )
                if audio_error is not None:
                    sample.metadata["audio_error"] = audio_error
                    if not any(w.startswith("audio") for w in result.warnings):
                        result.warnings.append(f"audio failed to decode, clips kept without sound: {audio_error}")
            sample, drop_reason = run_stages(sample, self.filters)
            if drop_reason is not None:
                result.dropped[drop_reason] = result.dropped.get(drop_reason, 0) + 1
                continue

            # 5. write the clip (or point at its frame range)
            if ranged:
                path = source.relative
                geometry = {
                    "num_frames": span.num_frames, "height": probe.height, "width": probe.width, "fps": fps,
                    "has_audio": sample.audio is not None, "sample_rate": sample.sample_rate,
                }
            else:
                path = f"{shard_folder(source.index, config.shard)}/{clip_id}.mp4"
                geometry = write_clip_file(
                    source.path, span.start, span.end, out_dir / path, config.shard,
                    with_audio=config.decode.with_audio and sample.audio is not None,
                    reader=config.decode.reader, variable_frame_rate=bool(probe.variable_frame_rate),
                )
                if geometry.pop("audio_error", None):
                    sample.metadata["audio_error_on_write"] = True
            result.records.append(make_record(sample, path, geometry, ranged))
            result.samples.append(_thin_for_parent(sample))
        return result

    def _analyse(self, source: Source, use_transnet: bool, result: SourceResult) -> dict[str, Any]:
        """Stream the source once at the analysis size: shot-detector inputs, per-frame luma, and the frames
        themselves while the source is short enough to keep them (``decode.max_frames_in_memory``)."""
        decode = self.config.decode
        histograms, thumbnails, luma, frames = [], [], [], []
        keep_frames, count, fps = True, 0, 0.0
        for chunk in iter_video_chunks(
            source.path,
            size=decode.analysis_size,
            thumbnail_size=TRANSNET_SIZE if use_transnet else None,
            max_frames=decode.max_frames,
            chunk_frames=256,
        ):
            fps = chunk.fps
            if "decode_error" in chunk.metadata:
                result.warnings.append(
                    f"decode stopped early at frame {count + len(chunk.frames)}: {chunk.metadata['decode_error']}"
                )
            if len(chunk.frames) == 0:
                continue
            count += len(chunk.frames)
            if use_transnet:
                thumbnails.append(chunk.thumbnails)
            elif self.detector is not None:
                # Histograms need few pixels; every other pixel of the analysis frames is plenty and 4x cheaper.
                histograms.append(self.detector.histograms(chunk.frames[:, ::2, ::2]))
            luma.append(mean_luma(chunk.frames[:, ::4, ::4]))
            if keep_frames:
                frames.append(chunk.frames)
                if count > decode.max_frames_in_memory:
                    keep_frames, frames = False, []
        return {
            "fps": fps,
            "num_frames": count,
            "thumbnails": np.concatenate(thumbnails) if thumbnails else None,
            "histograms": np.concatenate(histograms) if histograms else None,
            "luma": np.concatenate(luma),
            "frames": np.concatenate(frames) if keep_frames else None,
        }

    def _clip_frames(self, source: Source, span, frames: np.ndarray | None) -> tuple[np.ndarray, int]:
        """The clip's analysis frames and their stride: sliced from memory, or decoded again (strided) when the
        source was analysed streaming."""
        if frames is not None:
            return frames[span.start : span.end], 1
        stride = max(1, int(np.ceil(span.num_frames / self.config.decode.clip_analysis_frames)))
        decoded = decode_video(
            source.path,
            size=self.config.decode.analysis_size,
            start_frame=span.start,
            end_frame=span.end,
            stride=stride,
        )
        return decoded.frames, stride


def _thin_for_parent(sample: ClipSample) -> ClipSample:
    """Keep at most ``MAX_PARENT_FRAMES`` evenly strided frames, so results stay small on the way back."""
    stride = max(1, int(np.ceil(len(sample.frames) / MAX_PARENT_FRAMES)))
    thinned = dataclasses.replace(sample, frames=np.ascontiguousarray(sample.frames[::stride]))
    thinned.metadata = {**sample.metadata, "frame_stride": int(sample.metadata.get("frame_stride", 1)) * stride}
    return thinned


def build_filters(filters: dict[str, dict[str, Any]]) -> list[ClipStage]:
    """Filter stages in config order (names from ``data_pipelines.filters.FILTERS``)."""
    if not filters:
        return []
    from data_pipelines.filters import build_filter

    return [build_filter(name, dict(options or {})) for name, options in filters.items()]


def _build_with_config(cls: type, options: dict[str, Any]):
    """Instantiate ``cls(config)`` where ``config`` is built from ``options`` with the dataclass that ``cls``'s first
    constructor argument is annotated with (or ``cls(**options)`` when it takes plain keywords)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if parameters:
        hints = typing.get_type_hints(cls.__init__)
        annotation = hints.get(parameters[0].name)
        for candidate in typing.get_args(annotation) or (annotation,):
            if dataclasses.is_dataclass(candidate):
                return cls(candidate(**options))
    return cls(**options)


# ----------------------------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """Totals of a run (over every source of the input, including those done by earlier runs)."""

    sources: int = 0
    processed_this_run: int = 0
    skipped_already_done: int = 0
    clips_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    failed_sources: dict[str, str] = field(default_factory=dict)
    rejected_inputs: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    manifest: str = ""
    manifest_root: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format(self) -> str:
        lines = [
            f"sources: {self.sources} "
            f"({self.processed_this_run} processed now, {self.skipped_already_done} already done)",
            f"clips kept: {self.clips_kept}",
            "dropped: " + (", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"),
            "failures: " + (", ".join(f"{k}={v}" for k, v in sorted(self.failures.items())) or "none"),
        ]
        for entry, reason in sorted(self.rejected_inputs.items()):
            lines.append(f"  rejected input {entry}: {reason}")
        for source, reason in sorted(self.failed_sources.items()):
            lines.append(f"  failed {source}: {reason}")
        lines.append(f"manifest: {self.manifest} (paths relative to {self.manifest_root})")
        return "\n".join(lines)


class CurationRun:
    """Stages 6-8 and the bookkeeping of a run over ``input_path`` into ``out_dir``.

    Args:
        input_path: folder, ``.txt`` list or manifest (see :func:`discover_sources`).
        out_dir: output folder (see :mod:`data_pipelines.shard` for its layout).
        config: the run's configuration.
        retry_failed: also redo sources whose status says they failed (by default a re-run only does sources
            without a status file).
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        input_path: str | os.PathLike,
        out_dir: str | os.PathLike,
        config: CurateConfig | None = None,
        retry_failed: bool = False,
        progress: bool = True,
    ) -> None:
        self.input_path = Path(input_path)
        self.out_dir = Path(out_dir)
        self.config = config or CurateConfig()
        self.retry_failed = retry_failed
        self.progress = progress
        self._deduplicator = None
        self._captioner = None

    def _executor(self):
        from data_pipelines.executors import build_executor

        executor = self.config.executor
        return build_executor(executor.kind, executor.workers, executor.timeout, executor.ray_init)

    @property
    def dedup_index_path(self) -> Path:
        return self.out_dir / "dedup_index.json"

    @property
    def deduplicator(self):
        """The dataset-wide near-duplicate index; reloaded from ``dedup_index.json`` so a resumed run still sees
        the clips kept by earlier runs."""
        if self._deduplicator is None and self.config.dedup.enabled:
            from data_pipelines.dedup import PerceptualHashDeduplicator

            self._deduplicator = _build_with_config(PerceptualHashDeduplicator, dict(self.config.dedup.options))
            if self.dedup_index_path.exists():
                self._deduplicator.load_state_dict(json.loads(self.dedup_index_path.read_text(encoding="utf-8")))
        return self._deduplicator

    @property
    def captioner(self):
        if self._captioner is None and self.config.captioning is not None:
            from data_pipelines.captioning import VideoCaptioner

            self._captioner = _build_with_config(VideoCaptioner, dict(self.config.captioning))
        return self._captioner

    def run(self) -> RunSummary:
        from tqdm.auto import tqdm

        started = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        sources, rejected, root = discover_sources(self.input_path)
        statuses = StatusStore(self.out_dir)
        ranged = self.config.shard.mode == "ranges"
        manifest_name = self.config.shard.manifest
        jsonl_path = self.out_dir / (Path(manifest_name).stem + ".jsonl")
        summary = RunSummary(
            sources=len(sources),
            rejected_inputs={item.entry: f"{item.reason}: {item.detail}" for item in rejected},
            manifest=str(self.out_dir / manifest_name),
            manifest_root=str(root if ranged else self.out_dir.resolve()),
        )
        todo = []
        for source in sources:
            status = statuses.get(source.source_id)
            if status is not None and (status.status == STATUS_DONE or not self.retry_failed):
                summary.skipped_already_done += 1
            else:
                todo.append(source)
        by_id = {source.source_id: source for source in sources}
        tasks = [(source.source_id, SourceTask(source, str(self.out_dir))) for source in todo]
        with ManifestWriter(jsonl_path) as writer, tqdm(
            total=len(tasks), desc="curate", unit="file", disable=not self.progress
        ) as bar:
            # Workers finish in any order; sources are finished in input order so that which of two near-duplicates
            # is kept (the first one) does not depend on timing.
            order = [source.source_id for source in todo]
            arrived: dict[str, Any] = {}
            for outcome in self._executor().run(SourceProcessor(self.config), tasks):
                arrived[outcome.key] = outcome
                while order and order[0] in arrived:
                    finished = arrived.pop(order.pop(0))
                    source = by_id[finished.key]
                    status = self._status_of(source, finished, writer)
                    statuses.put(source.source_id, status)
                    summary.processed_this_run += 1
                    bar.set_postfix_str(f"{source.relative}: {status.status}", refresh=False)
                    bar.update(1)
        # Totals over every source of the input, this run's and earlier runs'.
        for source in sources:
            status = statuses.get(source.source_id)
            if status is None:
                continue
            summary.clips_kept += status.kept
            for reason, count in status.dropped.items():
                summary.dropped[reason] = summary.dropped.get(reason, 0) + count
            if status.status == STATUS_FAILED:
                summary.failures[status.reason] = summary.failures.get(status.reason, 0) + 1
                summary.failed_sources[source.relative] = (
                    f"{status.reason}: {(status.detail or '').splitlines()[0] if status.detail else ''}"
                )
            if status.warnings:
                summary.warnings[source.relative] = status.warnings
        for item in rejected:
            summary.failures[item.reason] = summary.failures.get(item.reason, 0) + 1
        if Path(manifest_name).suffix == ".parquet":
            write_parquet_manifest(jsonl_path, self.out_dir / manifest_name)
        summary.seconds = round(time.monotonic() - started, 2)
        (self.out_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1), encoding="utf-8")
        return summary

    def _status_of(self, source: Source, outcome, writer: ManifestWriter) -> SourceStatus:
        """Finish a source whose worker returned (stages 6-8), or record why it failed."""
        if outcome.ok and outcome.value.ok:
            try:
                status = self._finish_source(source, outcome.value, writer)
            except Exception as error:  # noqa: BLE001 - one source's dedup/caption failure must not end the run
                status = SourceStatus(
                    source.relative, STATUS_FAILED, "postprocess_failed", f"{type(error).__name__}: {error}"
                )
        elif outcome.ok:
            result = outcome.value
            status = SourceStatus(source.relative, STATUS_FAILED, result.reason, result.detail)
        else:
            status = SourceStatus(source.relative, STATUS_FAILED, outcome.reason, outcome.detail)
        status.seconds = round(outcome.seconds, 3)
        return status

    def _finish_source(self, source: Source, result: SourceResult, writer: ManifestWriter) -> SourceStatus:
        dropped = Counter(result.dropped)
        records = {record.id: record for record in result.records}
        kept_samples, already_written = [], []
        # 6. near-duplicates across the dataset
        for sample in result.samples:
            if sample.clip_id in writer.done_ids:
                # Written by an interrupted earlier run of this source: kept then, kept now, indexed already.
                already_written.append(sample)
                continue
            duplicate_of = self.deduplicator.add(sample) if self.deduplicator is not None else None
            if duplicate_of is not None:
                dropped["duplicate"] += 1
                record = records.pop(sample.clip_id)
                if self.config.shard.mode == "files":
                    (self.out_dir / record.path).unlink(missing_ok=True)
                continue
            kept_samples.append(sample)
        # 7. captions, batched
        if self.captioner is not None and kept_samples:
            captions = self.captioner.caption_batch(kept_samples)
            for sample, caption in zip(kept_samples, captions):
                record = records[sample.clip_id]
                record.caption = caption.get("caption")
                record.shot_captions = caption.get("shot_captions") or None
                if caption.get("audio_caption"):
                    record.metadata["audio_caption"] = caption["audio_caption"]
        # 8. manifest, the dedup index, then the status file (which marks the source as done)
        for sample in kept_samples:
            record = records[sample.clip_id]
            record.metadata["probe"] = result.probe
            writer.append(record)
        if self.deduplicator is not None and kept_samples:
            self.deduplicator.save(self.dedup_index_path)
        kept_samples += already_written
        return SourceStatus(
            source.relative, STATUS_DONE, kept=len(kept_samples), dropped=dict(dropped), warnings=result.warnings
        )


def curate(
    input_path: str | os.PathLike, out_dir: str | os.PathLike, config: CurateConfig | None = None, **kwargs: Any
) -> RunSummary:
    """Run the whole pipeline; see :class:`CurationRun`."""
    return CurationRun(input_path, out_dir, config, **kwargs).run()


def iter_records(out_dir: str | os.PathLike, manifest: str = "manifest.jsonl") -> Iterator[ClipRecord]:
    """Records of a finished run's JSONL manifest."""
    yield from Manifest.read(Path(out_dir) / manifest)
