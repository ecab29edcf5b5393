"""Configuration of a curation run, one dataclass per stage, loadable from YAML.

.. code-block:: yaml

    decode: {analysis_size: 256, reader: pyav}
    shots: {detector: transnetv2}
    split: {min_duration: 2.0, max_duration: 8.0, vae_frame_counts: true}
    filters:
      motion: {min_motion: 0.5}
      text: {enforce: false}
    dedup: {enabled: true}
    captioning: null            # or the options of data_pipelines.captioning's captioner config
    shard: {mode: files, manifest: manifest.jsonl}
    executor: {kind: local, workers: 2, timeout: 600}

Unknown keys are errors that name the valid keys, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipelines.shots import HistogramShotDetectorConfig, TransNetV2ShotDetectorConfig
from data_pipelines.split import SplitConfig

READERS = ("pyav", "decord")
SHOT_DETECTOR_NAMES = ("histogram", "transnetv2", "none")
SHARD_MODES = ("files", "ranges")
EXECUTORS = ("local", "ray")


@dataclass
class DecodeConfig:
    """How sources are read.

    Attributes:
        analysis_size: longer side, in pixels, of the frames the shot detector and the filters see.
        reader: ``"pyav"`` (frame-accurate, variable frame rate aware) or ``"decord"`` (optional, faster seeking of
            constant-frame-rate files when writing clips).
        with_audio: decode audio for the clips (written with them and passed to the audio captioner).
        max_frames: analyse at most this many frames of each source (``None``: all); useful for quick runs.
        max_frames_in_memory: sources with more analysis frames than this are analysed streaming (shot detection
            chunk by chunk) and each clip's frames are decoded again for the filters, so memory stays bounded.
        clip_analysis_frames: in streaming mode, at most this many evenly strided frames per clip reach the filters.
    """

    analysis_size: int = 256
    reader: str = "pyav"
    with_audio: bool = True
    max_frames: int | None = None
    max_frames_in_memory: int = 2048
    clip_analysis_frames: int = 64

    def __post_init__(self) -> None:
        _check_choice("decode.reader", self.reader, READERS)
        if self.analysis_size < 16:
            raise ValueError(f"decode.analysis_size must be >= 16 pixels, got {self.analysis_size}")


@dataclass
class ShotConfig:
    """Shot boundary detection: ``detector`` is ``"histogram"``, ``"transnetv2"`` or ``"none"`` (one shot per file)."""

    detector: str = "histogram"
    histogram: HistogramShotDetectorConfig = field(default_factory=HistogramShotDetectorConfig)
    transnetv2: TransNetV2ShotDetectorConfig = field(default_factory=TransNetV2ShotDetectorConfig)

    def __post_init__(self) -> None:
        _check_choice("shots.detector", self.detector, SHOT_DETECTOR_NAMES)


@dataclass
class DedupConfig:
    """Near-duplicate detection across the dataset; ``options`` go to the deduplicator's config."""

    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShardConfig:
    """How kept clips are stored.

    Attributes:
        mode: ``"files"`` re-encodes each clip to its own file (with audio when present); ``"ranges"`` writes no
            media, the manifest points at frame ranges of the sources.
        manifest: manifest file name in the output folder: ``.jsonl`` (appended as clips are kept) or ``.parquet``
            (written at the end of the run from the JSONL, needs pyarrow).
        sources_per_shard: the clips of this many consecutive sources share one ``clips/shard-XXXXX`` folder (a
            source's clips always land in the same folder, whichever worker wrote them).
        output_size: longer side, in pixels, of written clips (``None`` keeps the source size).
        crf: H.264 quality of written clips.
    """

    mode: str = "files"
    manifest: str = "manifest.jsonl"
    sources_per_shard: int = 100
    output_size: int | None = None
    crf: int = 20

    def __post_init__(self) -> None:
        _check_choice("shard.mode", self.mode, SHARD_MODES)
        if Path(self.manifest).suffix not in (".jsonl", ".parquet"):
            raise ValueError(f"shard.manifest must end in .jsonl or .parquet, got {self.manifest!r}")
        if self.sources_per_shard < 1:
            raise ValueError(f"shard.sources_per_shard must be >= 1, got {self.sources_per_shard}")


@dataclass
class ExecutorConfig:
    """Where per-file work runs.

    Attributes:
        kind: ``"local"`` (a pool of worker processes, default) or ``"ray"`` (Ray tasks; ``ray.init`` arguments in
            ``ray_init``, e.g. ``{address: auto}`` on a cluster).
        workers: worker processes (local) or concurrent tasks (Ray).
        timeout: seconds one source may take before its worker is killed and the source recorded as failed.
        debug_hang_on, debug_crash_on: test hooks: a worker processing a source whose file name contains one of
            these strings hangs (sleeps forever) or exits abruptly (``os._exit``), to exercise recovery.
    """

    kind: str = "local"
    workers: int = 2
    timeout: float = 600.0
    ray_init: dict[str, Any] = field(default_factory=dict)
    debug_hang_on: list[str] = field(default_factory=list)
    debug_crash_on: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_choice("executor.kind", self.kind, EXECUTORS)
        if self.workers < 1:
            raise ValueError(f"executor.workers must be >= 1, got {self.workers}")
        if self.timeout <= 0:
            raise ValueError(f"executor.timeout must be positive seconds, got {self.timeout}")


def _default_filters() -> dict[str, dict[str, Any]]:
    return {"brightness": {}, "sharpness": {}, "motion": {}, "static": {}, "text": {"enforce": False}}


@dataclass
class CurateConfig:
    """A whole curation run. ``filters`` maps filter names (``data_pipelines.filters.FILTERS``) to their options,
    applied in order; ``captioning`` is ``None`` (no captions) or the captioner's options."""

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    filters: dict[str, dict[str, Any]] = field(default_factory=_default_filters)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    captioning: dict[str, Any] | None = None
    shard: ShardConfig = field(default_factory=ShardConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "CurateConfig":
        return _from_dict(cls, data or {}, "config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None) -> CurateConfig:
    """Read a YAML config file (``None``: the defaults)."""
    if path is None:
        return CurateConfig()
    import yaml

    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: a curation config is a YAML mapping, got {type(data).__name__}")
    return CurateConfig.from_dict(data)


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")


def _from_dict(cls: type, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in {where}; valid keys: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            values[name] = _from_dict(type(default), value, f"{where}.{name}")
        else:
            values[name] = value
    return cls(**values)
