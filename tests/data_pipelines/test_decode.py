"""Probing and decoding: frame-accurate ranges, variable frame rate grid, audio, and unreadable files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from data_pipelines.decode import DecodeError, decode_audio, decode_video, decode_video_decord, probe_video
from seedkit.data.video_io import write_video


def counting_frames(num_frames: int = 20, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """Frames whose mean brightness encodes their index, so a decoded frame tells which one it is."""
    width, height = size
    levels = np.linspace(10, 245, num_frames).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def test_decode_range_matches_full_decode(tmp_path):
    path = write_video(tmp_path / "count.mp4", counting_frames(20), fps=10)
    full = decode_video(path)
    assert full.frames.shape == (20, 24, 32, 3)
    assert full.frame_indices.tolist() == list(range(20))
    levels = full.frames.reshape(20, -1).mean(axis=1)
    assert np.all(np.diff(levels) > 0), "frames came out of order"
    part = decode_video(path, start_frame=7, end_frame=12)
    assert part.frame_indices.tolist() == [7, 8, 9, 10, 11]
    np.testing.assert_array_equal(part.frames, full.frames[7:12])
    strided = decode_video(path, start_frame=2, stride=5)
    assert strided.frame_indices.tolist() == [2, 7, 12, 17]
    np.testing.assert_array_equal(strided.frames, full.frames[2::5])


def test_decode_resizes_longer_side_and_thumbnails(tmp_path):
    path = write_video(tmp_path / "wide.mp4", counting_frames(5, size=(96, 48)), fps=10)
    decoded = decode_video(path, size=32, thumbnail_size=(48, 27))
    assert decoded.frames.shape == (5, 16, 32, 3)
    assert decoded.thumbnails.shape == (5, 27, 48, 3)


def _write_vfr(path: Path, pts_ms: list[int]) -> None:
    """An mp4 whose frames sit at the given millisecond timestamps (gaps = dropped frames), 25 fps nominal."""
    import av

    frames = counting_frames(len(pts_ms))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for picture, pts in zip(frames, pts_ms):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_variable_frame_rate_maps_timestamps_to_a_constant_grid(tmp_path):
    # 25 fps with frames 3, 4 and 8 dropped: 7 decoded frames on a 10-frame grid.
    kept = [0, 1, 2, 5, 6, 7, 9]
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, [40 * i for i in kept])
    probe = probe_video(path, count_frames=True)
    assert probe.variable_frame_rate is True
    assert probe.fps == pytest.approx(25.0)
    decoded = decode_video(path)
    assert decoded.frame_indices.tolist() == list(range(10))
    assert decoded.repeated.tolist() == [i not in kept for i in range(10)]
    levels = decoded.frames.reshape(10, -1).mean(axis=1)
    # A dropped frame repeats the picture before it.
    assert levels[3] == pytest.approx(levels[2], abs=2) and levels[4] == pytest.approx(levels[2], abs=2)
    assert levels[5] > levels[2] + 10
    # Seeking into a gap starts with the repeated picture, exactly as in the full decode.
    part = decode_video(path, start_frame=3, end_frame=6)
    np.testing.assert_array_equal(part.frames, decoded.frames[3:6])


def test_audio_range_and_missing_audio(tmp_path):
    sample_rate = 16000
    time = np.arange(sample_rate * 2) / sample_rate
    audio = (0.5 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)[None]
    path = write_video(tmp_path / "tone.mp4", counting_frames(20), fps=10, audio=audio, sample_rate=sample_rate)
    samples, rate, error = decode_audio(path, 0.5, 1.5)
    assert error is None and rate == sample_rate
    assert samples.shape[0] == 1 and abs(samples.shape[1] - sample_rate) <= 1024
    assert 0.3 < float(np.abs(samples).max()) < 0.7
    silent = write_video(tmp_path / "silent.mp4", counting_frames(5), fps=10)
    assert decode_audio(silent) == (None, None, None)
    assert probe_video(silent).has_audio is False


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("zero.mp4", b"", "empty_file"),
        ("random.mp4", bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)), "not_a_video"),
        ("text.webm", b"this is not a video\n" * 100, "not_a_video"),
    ],
)
def test_unreadable_files_raise_decode_error_with_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecodeError) as caught:
        probe_video(path)
    assert caught.value.reason == reason
    with pytest.raises(DecodeError):
        decode_video(path)


def test_header_only_and_truncated_files(tmp_path):
    good = write_video(tmp_path / "good.mp4", counting_frames(40), fps=10)
    data = good.read_bytes()
    header_only = tmp_path / "header.mp4"
    header_only.write_bytes(data[:64])
    with pytest.raises(DecodeError):
        decode_video(header_only)
    # A truncated file either decodes a prefix or fails cleanly with a reason, never anything else.
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    try:
        decoded = decode_video(truncated)
    except DecodeError as error:
        assert error.reason
    else:
        assert 0 < len(decoded.frames) <= 40


def test_wrongly_named_file_is_decoded_by_content(tmp_path):
    real = write_video(tmp_path / "clip.webm", counting_frames(6), fps=10)
    renamed = tmp_path / "clip.mp4"
    real.rename(renamed)
    probe = probe_video(renamed)
    assert "webm" in probe.container or "matroska" in probe.container
    assert len(decode_video(renamed).frames) == 6


def test_decord_reader_matches_pyav(tmp_path):
    pytest.importorskip("decord")
    path = write_video(tmp_path / "count.mp4", counting_frames(20), fps=10)
    pyav = decode_video(path, start_frame=4, end_frame=9).frames
    decord = decode_video_decord(path, start_frame=4, end_frame=9)
    assert decord.shape == pyav.shape
    assert np.abs(decord.astype(int) - pyav.astype(int)).mean() < 3


def test_shared_clips_probe_and_seek(shared_videos):
    root = shared_videos
    counter = root / "psd" / "counter.mp4"
    full = decode_video(counter, size=64)
    assert len(full.frames) == 30
    for start in (0, 13, 25):
        part = decode_video(counter, size=64, start_frame=start, end_frame=start + 3)
        np.testing.assert_array_equal(part.frames, full.frames[start : start + 3])
    vfr = probe_video(root / "psd" / "goldeneye-vfr-drop3.mp4", count_frames=True)
    assert vfr.variable_frame_rate is True and vfr.num_frames == 239
    no_duration = probe_video(root / "no_duration.webm")
    assert no_duration.counted and no_duration.num_frames > 0
    audio, rate, error = decode_audio(root / "failing_audio.mp4", 0.0, 1.0)
    # PyAV decodes this track; whatever happens, a failure would be reported, not raised.
    assert (audio is not None and rate == 44100) or error is not None
