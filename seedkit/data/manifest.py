"""One manifest format for every dataset seedkit touches.

ShapesWorld shards, curated real footage and the latent cache all describe their samples with :class:`ClipRecord`
lines in a JSONL file (Parquet when ``pyarrow`` is installed and the file name ends in ``.parquet``). Paths inside
a manifest are relative to the manifest's directory (its *root*) and may never leave it: ``..`` segments, absolute
paths and symlinks that resolve outside the root are rejected when the manifest is read and when a path is resolved.

Writing is append-only and line-atomic through :class:`ManifestWriter`, so an interrupted run leaves a valid
manifest and a re-run can skip the ids it already holds (``ManifestWriter.done_ids``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

MANIFEST_VERSION = 1


class UnsafePathError(ValueError):
    """A manifest path points outside the manifest's root directory."""


@dataclass
class ClipRecord:
    """One training sample: a clip, an image, a frame range of a longer file, or a cached latent.

    Attributes:
        id: unique key within the manifest (resumable runs skip ids already written).
        path: media file relative to the manifest root, POSIX separators.
        media: ``"video"``, ``"image"`` or ``"latent"``.
        num_frames, height, width, fps: geometry of the sample (after any frame range is applied).
        start_frame, end_frame: frame range ``[start, end)`` inside ``path``; ``end_frame=None`` means to the end.
        caption: caption for the whole sample.
        shot_captions: one caption per shot for multi-shot samples, in order.
        shot_boundaries: first frame index of every shot after the first (hard cuts), relative to ``start_frame``.
        has_audio, sample_rate: audio track presence and its rate in Hz.
        scores: filter scores (motion, sharpness, aesthetic, ...), kept so thresholds can change without re-running.
        metadata: anything else; ShapesWorld puts its exact scene ground truth under ``metadata["scene"]``,
            the curation pipeline puts the source file and its probe there.
    """

    id: str
    path: str
    media: str = "video"
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    start_frame: int = 0
    end_frame: int | None = None
    caption: str | None = None
    shot_captions: list[str] | None = None
    shot_boundaries: list[int] | None = None
    has_audio: bool = False
    sample_rate: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.media not in ("video", "image", "latent"):
            raise ValueError(f"media must be 'video', 'image' or 'latent', got {self.media!r}")
        check_relative_path(self.path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown manifest fields {sorted(unknown)}; valid fields: {sorted(known)}")
        return cls(**data)


def check_relative_path(path: str) -> str:
    """Reject paths that could escape a manifest root by their spelling alone (``..``, absolute, drive letters)."""
    if not path:
        raise UnsafePathError("manifest path is empty")
    if "\\" in path:
        raise UnsafePathError(f"manifest path {path!r} uses backslashes; use POSIX '/' separators")
    pure = PurePosixPath(path)
    if pure.is_absolute() or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError(f"manifest path {path!r} is absolute; paths must be relative to the manifest root")
    if any(part == ".." for part in pure.parts):
        raise UnsafePathError(f"manifest path {path!r} contains '..'; paths must stay inside the manifest root")
    return path


def resolve_inside(root: str | os.PathLike, relative: str) -> Path:
    """Resolve ``relative`` under ``root``, following symlinks, and refuse anything that lands outside ``root``."""
    check_relative_path(relative)
    root_resolved = Path(root).resolve()
    target = (root_resolved / relative).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(f"manifest path {relative!r} resolves to {target}, outside the root {root_resolved}")
    return target


class Manifest:
    """An in-memory manifest: records plus the root directory their paths are relative to."""

    def __init__(self, records: Iterable[ClipRecord] = (), root: str | os.PathLike = ".") -> None:
        self.root = Path(root)
        self.records: list[ClipRecord] = list(records)
        ids = [r.id for r in self.records]
        if len(ids) != len(set(ids)):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"manifest has duplicate ids: {duplicates[:5]}")

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ClipRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> ClipRecord:
        return self.records[index]

    def resolve(self, record: ClipRecord) -> Path:
        return resolve_inside(self.root, record.path)

    @classmethod
    def read(cls, path: str | os.PathLike, root: str | os.PathLike | None = None) -> "Manifest":
        """Read a JSONL or Parquet manifest; the root defaults to the manifest file's directory.

        A truncated last line (an interrupted writer) is ignored; any other malformed line is an error.
        """
        path = Path(path)
        root = Path(root) if root is not None else path.parent
        if path.suffix == ".parquet":
            rows = _read_parquet(path)
        else:
            rows = list(_read_jsonl(path))
        return cls((ClipRecord.from_dict(row) for row in rows), root=root)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the whole manifest atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        if path.suffix == ".parquet":
            _write_parquet(temporary, [r.to_dict() for r in self.records])
        else:
            with open(temporary, "w", encoding="utf-8") as handle:
                for record in self.records:
                    handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        os.replace(temporary, path)
        return path


class ManifestWriter:
    """Append records to a JSONL manifest one flushed line at a time, for resumable producers.

    >>> with ManifestWriter(out_dir / "manifest.jsonl") as writer:
    ...     for clip in clips:
    ...         if clip.id in writer.done_ids: continue
    ...         writer.append(make_record(clip))
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise ValueError(f"ManifestWriter appends JSONL; got {self.path.name!r} (use a .jsonl file name)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done_ids: set[str] = set()
        if self.path.exists():
            self._drop_truncated_tail()
            self.done_ids = {row["id"] for row in _read_jsonl(self.path)}
        self._handle = open(self.path, "a", encoding="utf-8")

    def _drop_truncated_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)

    def append(self, record: ClipRecord) -> None:
        if record.id in self.done_ids:
            raise ValueError(f"record id {record.id!r} is already in {self.path}")
        self._handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done_ids.add(record.id)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    last_index = len(lines) - 1
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            if number == last_index:  # no trailing newline: a writer was interrupted mid-line
                return
            raise ValueError(f"{path}:{number + 1}: not a JSON object ({error})") from error


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise ImportError("reading a .parquet manifest needs pyarrow: pip install 'seedkit[curate]'") from error
    rows = parquet.read_table(path).to_pylist()
    # Nested dicts are stored as JSON strings so the schema stays flat and stable across records.
    for row in rows:
        for key in ("scores", "metadata"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
    return rows


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        import pyarrow as arrow
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise ImportError("writing a .parquet manifest needs pyarrow: pip install 'seedkit[curate]'") from error
    flat = [{**row, "scores": json.dumps(row["scores"]), "metadata": json.dumps(row["metadata"])} for row in rows]
    parquet.write_table(arrow.Table.from_pylist(flat), path)
