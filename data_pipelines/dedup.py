"""Near-duplicate detection across a dataset with perceptual hashes of keyframes.

Each clip is reduced to a few keyframes (evenly spread, away from the clip's ends where fades live) and each
keyframe to two 64-bit perceptual hashes:

* pHash: the grey keyframe box-resized to 32x32, its 2-D DCT-II, and one bit per coefficient of the 8x8
  lowest-frequency block (above or below the block's median, DC excluded from the median). It survives
  re-encoding, rescaling, mild colour changes and crops of a few percent.
* dHash: the grey keyframe resized to 9x8 and one bit per horizontally adjacent pair (is the right pixel
  brighter?). A cheap second opinion that rejects pHash collisions between unrelated flat frames.

Two clips are near-duplicates when the median Hamming distance between their aligned keyframes' pHashes is at most
``phash_threshold`` (and, if set, the dHash median at most ``dhash_threshold``). Lookups use multi-index hashing:
each pHash is split into ``num_chunks`` chunks indexed in hash tables; by the pigeonhole principle two hashes within
distance ``t`` agree within ``t // num_chunks`` bits on at least one chunk, so probing every chunk value within that
radius finds every candidate without comparing against the whole dataset. A clip within the threshold of an
indexed clip always shares such a keyframe, so the search is exact, not approximate.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_pipelines.stages import ClipSample, ClipStage, DropClip

HASH_BITS = 64


def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``[size, size]``: ``coefficients = M @ signal``."""
    frequencies = np.arange(size)[:, None]
    positions = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * positions + 1) * frequencies / (2 * size)) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT_32 = _dct_matrix(32)


def _grey_image(frame: np.ndarray) -> Image.Image:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"a keyframe must be uint8 [H, W, 3], got shape {frame.shape}")
    return Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).convert("L")


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.reshape(-1):
        value = (value << 1) | int(bit)
    return value


def phash(frame: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an RGB ``uint8 [H, W, 3]`` frame."""
    grey = np.asarray(_grey_image(frame).resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    low_frequencies = (_DCT_32 @ grey @ _DCT_32.T)[:8, :8]
    # The DC term only carries the mean brightness; leaving it out of the median keeps the split balanced.
    median = np.median(low_frequencies.reshape(-1)[1:])
    return _bits_to_int(low_frequencies > median)


def dhash(frame: np.ndarray) -> int:
    """64-bit difference hash of an RGB ``uint8 [H, W, 3]`` frame."""
    grey = np.asarray(_grey_image(frame).resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    return _bits_to_int(grey[:, 1:] > grey[:, :-1])


def hamming(first: int, second: int) -> int:
    """Number of differing bits of two hashes."""
    return (first ^ second).bit_count()


def keyframe_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` keyframe indices at the centres of ``count`` equal segments of the clip (never the first or last
    frame unless the clip is that short), so fades at clip ends weigh less."""
    if num_frames <= 0:
        raise ValueError("the clip holds no frames; near-duplicate detection needs at least one")
    count = max(1, min(count, num_frames))
    return np.minimum(((np.arange(count) + 0.5) * num_frames / count).astype(np.int64), num_frames - 1)


class MultiIndexHashTable:
    """Exact Hamming-radius search over 64-bit hashes by multi-index hashing.

    Args:
        max_distance: the largest Hamming distance queries will ask for.
        num_chunks: the hash is cut into this many contiguous chunks, each with its own table; a query probes all
            chunk values within ``max_distance // num_chunks`` bits of its own chunks.
    """

    def __init__(self, max_distance: int, num_chunks: int = 4) -> None:
        if not 1 <= num_chunks <= HASH_BITS:
            raise ValueError(f"num_chunks must be in [1, {HASH_BITS}], got {num_chunks}")
        if max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {max_distance}")
        self.max_distance = max_distance
        self.num_chunks = num_chunks
        edges = np.linspace(0, HASH_BITS, num_chunks + 1).round().astype(int)
        self._chunks = [(int(start), int(stop - start)) for start, stop in zip(edges[:-1], edges[1:])]
        self._tables: list[dict[int, list[tuple[int, Any]]]] = [{} for _ in self._chunks]
        chunk_radius = max_distance // num_chunks
        # Every flip mask within the chunk radius, per chunk width (chunks differ by at most one bit in width).
        self._flip_masks = {
            width: [sum(1 << bit for bit in flipped)
                    for radius in range(min(chunk_radius, width) + 1)
                    for flipped in itertools.combinations(range(width), radius)]
            for width in {width for _, width in self._chunks}
        }
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _chunk_values(self, key: int) -> list[int]:
        return [(key >> start) & ((1 << width) - 1) for start, width in self._chunks]

    def add(self, key: int, item: Any) -> None:
        """Index ``key`` (a 64-bit hash) for ``item``."""
        for table, value in zip(self._tables, self._chunk_values(key)):
            table.setdefault(value, []).append((key, item))
        self._size += 1

    def search(self, key: int, max_distance: int | None = None) -> list[tuple[Any, int]]:
        """Items whose hash is within ``max_distance`` (default: the table's) of ``key``, with their distances."""
        max_distance = self.max_distance if max_distance is None else max_distance
        if max_distance > self.max_distance:
            raise ValueError(f"this table answers distances up to {self.max_distance}, asked for {max_distance}")
        found: dict[Any, int] = {}
        for (_, width), table, value in zip(self._chunks, self._tables, self._chunk_values(key)):
            for mask in self._flip_masks[width]:
                for stored_key, item in table.get(value ^ mask, ()):
                    distance = hamming(stored_key, key)
                    if distance <= max_distance and distance < found.get(item, HASH_BITS + 1):
                        found[item] = distance
        return sorted(found.items(), key=lambda pair: pair[1])


@dataclass
class DedupConfig:
    """Near-duplicate detection settings.

    Attributes:
        enabled: ``False`` makes the stage a no-op.
        enforce: ``False`` records ``duplicate_of`` in the metadata but keeps the clip.
        num_keyframes: keyframes hashed per clip.
        phash_threshold: largest median pHash Hamming distance (of 64 bits) between aligned keyframes of
            near-duplicates. Re-encoded and rescaled copies land around 0-6, unrelated footage around 25-40.
        dhash_threshold: largest median dHash distance, or ``None`` to decide on pHash alone.
        num_chunks: multi-index chunks (see :class:`MultiIndexHashTable`).
    """

    enabled: bool = True
    enforce: bool = True
    num_keyframes: int = 3
    phash_threshold: int = 10
    dhash_threshold: int | None = 16
    num_chunks: int = 4


@dataclass(frozen=True)
class ClipHashes:
    """Keyframe hashes of one clip (``phashes[i]`` and ``dhashes[i]`` belong to keyframe ``i``)."""

    clip_id: str
    phashes: tuple[int, ...]
    dhashes: tuple[int, ...]


@dataclass
class DuplicateMatch:
    """The indexed clip a query matched, with the median keyframe distances."""

    clip_id: str
    phash_distance: float
    dhash_distance: float


class PerceptualHashDeduplicator(ClipStage):
    """Dataset-level near-duplicate detector; the index is explicit state that can be saved and reloaded so resumed
    runs keep deduplicating against clips kept earlier.

    ``add(sample)`` returns the id of the indexed clip ``sample`` duplicates (and does not index it) or ``None``
    (and indexes it). As a stage, ``dedup(sample)`` also writes ``scores["duplicate_distance"]`` (the median pHash
    distance to the nearest indexed clip, 64 when none is within the threshold), ``metadata["phash"]`` (hex
    keyframe hashes) and ``metadata["duplicate_of"]``, and drops duplicates with reason ``"duplicate"``.
    """

    name = "dedup"

    def __init__(self, config: DedupConfig | None = None, **overrides: Any) -> None:
        config = config if config is not None else DedupConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self._table = MultiIndexHashTable(self.config.phash_threshold, self.config.num_chunks)
        self._clips: dict[str, ClipHashes] = {}

    def __len__(self) -> int:
        return len(self._clips)

    def hash_clip(self, sample: ClipSample) -> ClipHashes:
        """Keyframe pHashes and dHashes of ``sample``."""
        keyframes = np.asarray(sample.frames)[keyframe_indices(len(sample.frames), self.config.num_keyframes)]
        return ClipHashes(sample.clip_id, tuple(phash(frame) for frame in keyframes),
                          tuple(dhash(frame) for frame in keyframes))

    def _distances(self, first: ClipHashes, second: ClipHashes) -> tuple[float, float]:
        pairs = min(len(first.phashes), len(second.phashes))
        # Clips with different keyframe counts (very short clips) are aligned by relative position.
        first_index = keyframe_indices(len(first.phashes), pairs)
        second_index = keyframe_indices(len(second.phashes), pairs)
        phash_distances = [hamming(first.phashes[i], second.phashes[j]) for i, j in zip(first_index, second_index)]
        dhash_distances = [hamming(first.dhashes[i], second.dhashes[j]) for i, j in zip(first_index, second_index)]
        return float(np.median(phash_distances)), float(np.median(dhash_distances))

    def query(self, hashes: ClipHashes) -> DuplicateMatch | None:
        """The closest indexed near-duplicate of ``hashes``, or ``None``."""
        candidates = {item for key in hashes.phashes for item, _ in self._table.search(key)}
        best: DuplicateMatch | None = None
        for clip_id in sorted(candidates):
            if clip_id == hashes.clip_id:
                continue
            phash_distance, dhash_distance = self._distances(hashes, self._clips[clip_id])
            if phash_distance > self.config.phash_threshold:
                continue
            if self.config.dhash_threshold is not None and dhash_distance > self.config.dhash_threshold:
                continue
            if best is None or phash_distance < best.phash_distance:
                best = DuplicateMatch(clip_id, phash_distance, dhash_distance)
        return best

    def _index(self, hashes: ClipHashes) -> None:
        if hashes.clip_id in self._clips:
            raise ValueError(f"clip id {hashes.clip_id!r} is already indexed; clip ids must be unique")
        self._clips[hashes.clip_id] = hashes
        for key in hashes.phashes:
            self._table.add(key, hashes.clip_id)

    def add(self, sample: ClipSample) -> str | None:
        """Index ``sample`` unless it duplicates an indexed clip; returns that clip's id, or ``None``."""
        match, _ = self._add_hashes(self.hash_clip(sample))
        return None if match is None else match.clip_id

    def _add_hashes(self, hashes: ClipHashes) -> tuple[DuplicateMatch | None, ClipHashes]:
        match = self.query(hashes)
        if match is None:
            self._index(hashes)
        return match, hashes

    def __call__(self, sample: ClipSample) -> ClipSample:
        if not self.config.enabled:
            return sample
        match, hashes = self._add_hashes(self.hash_clip(sample))
        sample.metadata["phash"] = [f"{key:016x}" for key in hashes.phashes]
        sample.scores["duplicate_distance"] = float(HASH_BITS) if match is None else match.phash_distance
        if match is not None:
            sample.metadata["duplicate_of"] = match.clip_id
            if self.config.enforce:
                raise DropClip("duplicate", f"of {match.clip_id} (median pHash distance {match.phash_distance:g})")
        return sample

    # ------------------------------------------------------------------------------------------------------------
    # State
    # ------------------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-friendly index state (hashes as hex strings)."""
        return {
            "config": dataclasses.asdict(self.config),
            "clips": [
                {"clip_id": clip.clip_id, "phash": [f"{key:016x}" for key in clip.phashes],
                 "dhash": [f"{key:016x}" for key in clip.dhashes]}
                for clip in self._clips.values()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Add the clips of a saved index (the current config's thresholds apply)."""
        for clip in state["clips"]:
            self._index(ClipHashes(clip["clip_id"], tuple(int(key, 16) for key in clip["phash"]),
                                   tuple(int(key, 16) for key in clip["dhash"])))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to ``path`` (JSON) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(json.dumps(self.state_dict()))
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, config: DedupConfig | None = None) -> "PerceptualHashDeduplicator":
        """A deduplicator with the index saved at ``path`` (its saved config unless ``config`` is given)."""
        state = json.loads(Path(path).read_text())
        deduplicator = cls(config if config is not None else DedupConfig(**state["config"]))
        deduplicator.load_state_dict(state)
        return deduplicator
