"""ShapesWorld writers: mp4 + AAC round trip, png images, sharded resumable datasets, and `seedkit shapes`."""

import json

import numpy as np
import pytest

from seedkit.cli import main as seedkit_main
from seedkit.data.manifest import Manifest
from seedkit.data.shapes import Scene, render_scene, scene_from_prompt_spec
from seedkit.data.shapes_writers import MANIFEST_NAME, write_clip, write_shapes_dataset
from seedkit.data.video_io import read_video


def test_mp4_round_trip_keeps_frames_and_audio_onsets(tmp_path):
    fps, sample_rate = 24.0, 16000
    spec = {"objects": [{"color": "yellow", "motion": "bouncing", "size": "small"}], "background": "black"}
    scene = scene_from_prompt_spec(spec, 2, 48, 64, 41, fps=fps, sample_rate=sample_rate)
    assert scene.audio_events
    clip = render_scene(scene)
    path = write_clip(tmp_path / "clip.mp4", clip)
    decoded = read_video(path)
    assert decoded.frames.shape == clip.frames.shape and decoded.fps == pytest.approx(fps)
    assert np.median(np.abs(decoded.frames.astype(np.float32) - clip.frames)) <= 2.0
    assert decoded.sample_rate == sample_rate and decoded.audio.shape[0] == 1
    written, read = clip.audio[0], decoded.audio[0]
    assert read.shape[0] >= written.shape[0]
    # AAC priming (1024 samples) is dropped on decode, so onsets come back where they were written.
    length = written.shape[0]
    correlation = np.correlate(read[:length], written, mode="full")
    lag = int(np.argmax(correlation)) - (length - 1)
    assert abs(lag) <= 16, f"audio lag {lag} samples"
    assert abs(lag) / sample_rate < 1 / fps
    for event in scene.audio_events:
        start = round(event.time_s * sample_rate)
        window = np.abs(read[start - 160 : start + 320])
        onset = start - 160 + int(np.argmax(window > 0.1))
        assert abs(onset - start) / sample_rate < 1 / fps


def test_image_scene_writes_a_png(tmp_path):
    scene = scene_from_prompt_spec({"objects": [{"color": "pink", "shape": "square"}]}, 0, 40, 24, 1)
    clip = render_scene(scene)
    path = write_clip(tmp_path / "image.png", clip)
    np.testing.assert_array_equal(read_video(path).frames, clip.frames)


def test_dataset_manifest_shards_and_mix(tmp_path):
    summary = write_shapes_dataset(
        tmp_path, 12, seed=5, frames=[9, 17], sizes=[(32, 32), (24, 40)], multi_shot=0.5, audio=True,
        image_fraction=0.25, shard_size=5, progress=False,
    )
    assert (summary.written, summary.images, summary.videos, summary.skipped) == (12, 3, 9, 0)
    manifest = Manifest.read(tmp_path / MANIFEST_NAME)
    assert len(manifest) == 12
    assert {record.path.split("/")[0] for record in manifest} == {"shard-00000", "shard-00001", "shard-00002"}
    kinds = {record.media for record in manifest}
    assert kinds == {"video", "image"}
    assert {(record.height, record.width) for record in manifest} == {(32, 32), (24, 40)}
    assert any(record.shot_boundaries for record in manifest)
    for record in manifest:
        assert manifest.resolve(record).exists()
        scene = Scene.from_dict(record.metadata["scene"])
        assert record.caption == scene.caption and record.metadata["heldout_caption"]
        assert (record.num_frames, record.height, record.width) == (scene.num_frames, scene.height, scene.width)
        if record.media == "image":
            assert record.path.endswith(".png") and record.num_frames == 1 and not record.has_audio
        else:
            assert record.path.endswith(".mp4") and record.has_audio and record.sample_rate == 16000
            assert record.num_frames in (9, 17)
        if len(scene.shots) > 1:
            assert record.shot_boundaries == scene.shot_boundaries
            assert record.shot_captions == scene.shot_captions
        # The stored ground truth renders back to the stored media: png exactly; H.264 (4:4:4) up to coding error.
        decoded = read_video(manifest.resolve(record), with_audio=False)
        error = np.abs(decoded.frames.astype(np.float32) - render_scene(scene).frames)
        if record.media == "image":
            assert error.max() == 0
        else:
            assert error.mean() < 2.0 and np.median(error) <= 1.0 and np.percentile(error, 99) < 20


def test_dataset_is_resumable_and_independent_of_interruptions(tmp_path):
    kwargs = dict(seed=1, frames=9, sizes=(24, 24), progress=False)
    full = write_shapes_dataset(tmp_path / "full", 6, **kwargs)
    part = write_shapes_dataset(tmp_path / "part", 6, **kwargs, shard_size=2)
    # Simulate a crash: keep three records and a truncated fourth line.
    lines = (tmp_path / "part" / MANIFEST_NAME).read_text().splitlines(keepends=True)
    (tmp_path / "part" / MANIFEST_NAME).write_text("".join(lines[:3]) + lines[3][:40])
    resumed = write_shapes_dataset(tmp_path / "part", 6, **kwargs, shard_size=2)
    assert full.written == part.written == 6 and (resumed.written, resumed.skipped) == (3, 3)
    read_full = Manifest.read(tmp_path / "full" / MANIFEST_NAME)
    read_part = Manifest.read(tmp_path / "part" / MANIFEST_NAME)
    resumed_scenes = [r.metadata["scene"] for r in sorted(read_part, key=lambda r: r.id)]
    assert [r.metadata["scene"] for r in read_full] == resumed_scenes
    again = write_shapes_dataset(tmp_path / "part", 6, **kwargs, shard_size=2)
    assert (again.written, again.skipped) == (0, 6)


def test_worker_processes_write_the_same_dataset(tmp_path):
    kwargs = dict(seed=2, frames=[5, 9], sizes=[(16, 16), (16, 24)], multi_shot=0.5, image_fraction=0.2, progress=False)
    single = write_shapes_dataset(tmp_path / "single", 6, **kwargs)
    pooled = write_shapes_dataset(tmp_path / "pooled", 6, **kwargs, num_workers=2)
    assert single.written == pooled.written == 6
    records = [Manifest.read(tmp_path / name / MANIFEST_NAME).records for name in ("single", "pooled")]
    assert [r.to_dict() for r in records[0]] == [r.to_dict() for r in records[1]]


def test_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        write_shapes_dataset(tmp_path, 2, frames=[16], progress=False)
    with pytest.raises(ValueError, match=">= 9 frames"):
        write_shapes_dataset(tmp_path, 2, frames=[5], multi_shot=1.0, progress=False)
    with pytest.raises(ValueError, match="not both"):
        write_shapes_dataset(tmp_path, 2, image_fraction=0.5, num_images=1, progress=False)


def test_seedkit_shapes_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "shapes"
    code = seedkit_main([
        "shapes", "--out", str(out), "--clips", "3", "--images", "2", "--frames", "9", "--size", "24x24,16x32",
        "--multi-shot", "--audio", "--seed", "4", "--no-progress",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote 5 samples (3 videos, 2 images, 3 multi-shot, 3 with audio" in printed
    records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    assert len(records) == 5 and sum(r["media"] == "image" for r in records) == 2
    assert all(r["shot_boundaries"] for r in records if r["media"] == "video")
    with pytest.raises(SystemExit):
        seedkit_main(["shapes", "--out", str(out), "--clips", "1", "--frames", "8"])
    assert "1 + 4k" in capsys.readouterr().err


def test_seedkit_shapes_reports_bad_arguments_without_a_traceback(tmp_path, capsys):
    code = seedkit_main(["shapes", "--out", str(tmp_path), "--clips", "2", "--frames", "5", "--multi-shot"])
    assert code == 2 and ">= 9 frames" in capsys.readouterr().err
    code = seedkit_main(["shapes", "--out", str(tmp_path), "--clips", "2", "--size", "4x4", "--no-progress"])
    assert code == 2 and ">= 8 px" in capsys.readouterr().err
    assert not (tmp_path / MANIFEST_NAME).exists() or not (tmp_path / MANIFEST_NAME).read_text()
