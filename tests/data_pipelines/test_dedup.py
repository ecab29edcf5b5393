"""Perceptual hashes, the multi-index table and near-duplicate detection on real re-encoded footage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipelines.dedup import (
    DedupConfig,
    MultiIndexHashTable,
    PerceptualHashDeduplicator,
    dhash,
    hamming,
    keyframe_indices,
    phash,
)
from data_pipelines.stages import ClipSample, DropClip


def _clip(clip_id: str, frames: np.ndarray) -> ClipSample:
    return ClipSample(source=f"{clip_id}.mp4", clip_id=clip_id, start_frame=0, end_frame=len(frames), fps=24.0,
                      frames=frames)


def _scene(seed: int, height: int = 90, width: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def test_hashes_are_stable_under_rescaling_and_differ_between_images():
    image = _scene(0)
    resized = np.asarray(Image.fromarray(image).resize((320, 180), Image.Resampling.BILINEAR))
    assert hamming(phash(image), phash(resized)) <= 4
    assert hamming(dhash(image), dhash(resized)) <= 4
    other = _scene(1)
    assert hamming(phash(image), phash(other)) > 16
    assert 0 <= phash(image) < 2**64 and 0 <= dhash(image) < 2**64
    # A pHash splits its 63 AC coefficients at their median: about half the bits are set.
    assert 24 <= bin(phash(image)).count("1") <= 40


def test_keyframes_avoid_clip_ends():
    np.testing.assert_array_equal(keyframe_indices(24, 3), [4, 12, 20])
    np.testing.assert_array_equal(keyframe_indices(2, 3), [0, 1])


def test_multi_index_search_equals_brute_force():
    rng = np.random.default_rng(0)
    keys = [int(value) for value in rng.integers(0, 2**63, 400, dtype=np.int64)]
    # Plant near copies at known distances so the radius boundary is exercised.
    for index in range(0, 100):
        bits = rng.choice(64, size=index % 13, replace=False)
        keys.append(keys[index] ^ sum(1 << int(bit) for bit in bits))
    table = MultiIndexHashTable(max_distance=10, num_chunks=4)
    for item, key in enumerate(keys):
        table.add(key, item)
    for query in keys[:60] + [int(value) for value in rng.integers(0, 2**63, 20, dtype=np.int64)]:
        expected = sorted(item for item, key in enumerate(keys) if hamming(key, query) <= 10)
        assert sorted(item for item, _ in table.search(query)) == expected
    with pytest.raises(ValueError, match="up to 10"):
        table.search(keys[0], max_distance=11)


def test_deduplicator_flags_copies_and_keeps_distinct_clips(tmp_path):
    frames = [np.stack([np.roll(_scene(seed), shift, axis=1) for shift in range(0, 24, 3)]) for seed in range(4)]
    deduplicator = PerceptualHashDeduplicator()
    for seed, clip in enumerate(frames):
        assert deduplicator.add(_clip(f"scene{seed}", clip)) is None
    assert len(deduplicator) == 4

    brighter = np.clip(frames[2].astype(np.int16) + 12, 0, 255).astype(np.uint8)
    sample = _clip("copy", brighter)
    with pytest.raises(DropClip) as raised:
        deduplicator(sample)
    assert raised.value.reason == "duplicate"
    assert sample.metadata["duplicate_of"] == "scene2"
    assert sample.scores["duplicate_distance"] <= deduplicator.config.phash_threshold
    assert len(deduplicator) == 4  # duplicates are not indexed

    # The index survives a save / load round trip, so resumed runs still see the clips kept before.
    restored = PerceptualHashDeduplicator.load(deduplicator.save(tmp_path / "dedup.json"))
    assert restored.add(_clip("copy2", brighter)) == "scene2"
    with pytest.raises(ValueError, match="already indexed"):
        restored.add(_clip("scene0", frames[0]))

    kept = _clip("new", np.stack([_scene(9)] * 4))
    score_only = PerceptualHashDeduplicator(DedupConfig(enforce=False))
    score_only(kept)
    assert kept.scores["duplicate_distance"] == 64.0 and len(kept.metadata["phash"]) == 3


def _variant(frames: np.ndarray, directory: Path, scale: float, crop: float, crf: int) -> np.ndarray:
    """Crop ``crop`` of each side, rescale by ``scale`` and re-encode to H.264 at ``crf``."""
    from seedkit.data.video_io import read_video, write_video

    height, width = frames.shape[1:3]
    cropped = frames[:, int(height * crop) : height - int(height * crop), int(width * crop) : width - int(width * crop)]
    size = (int(cropped.shape[2] * scale) // 2 * 2, int(cropped.shape[1] * scale) // 2 * 2)
    resized = np.stack(
        [np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR)) for frame in cropped]
    )
    path = write_video(directory / "variant.mp4", resized, fps=24.0, crf=crf)
    return read_video(path, with_audio=False).frames


def test_reencoded_resized_cropped_real_clips_are_found(tmp_path, shared_videos):
    videos = shared_videos
    from seedkit.data.video_io import read_video

    sources = {"sintel": ("sintel_example3.mp4", 0), "bbb": ("bbb_0_30.webm", 120),
               "chaplin": ("chaplin.mp4", 120), "goldeneye": ("psd/goldeneye-vfr-drop3.mp4", 0)}
    clips = {}
    for clip_id, (name, start) in sources.items():
        clips[clip_id] = read_video(videos / name, with_audio=False, max_frames=start + 24).frames[start : start + 24]

    deduplicator = PerceptualHashDeduplicator()
    for clip_id, frames in clips.items():
        assert deduplicator.add(_clip(clip_id, frames)) is None, f"{clip_id} wrongly matched an unrelated clip"

    for clip_id in ("sintel", "bbb", "chaplin"):
        copy = _variant(clips[clip_id], tmp_path, scale=0.5, crop=0.03, crf=32)
        assert deduplicator.add(_clip(f"{clip_id}-copy", copy)) == clip_id

    # Different footage, including another shot of a file already indexed, is not a duplicate.
    counter = read_video(videos / "psd" / "counter.mp4", with_audio=False, max_frames=24).frames
    later_bbb = read_video(videos / "bbb_0_30.webm", with_audio=False, max_frames=384).frames[360:384]
    assert deduplicator.add(_clip("counter", counter)) is None
    assert deduplicator.add(_clip("bbb-later", later_bbb)) is None
    assert len(deduplicator) == 6
