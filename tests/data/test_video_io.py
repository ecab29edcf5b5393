import numpy as np
import pytest
import torch

from seedkit.data.video_io import frames_to_tensor, read_video, tensor_to_frames, write_video


def _gradient_clip(num_frames=9, height=34, width=46):
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for index in range(num_frames):
        frames[index, ..., 0] = (xs * 5 + index * 8) % 256
        frames[index, ..., 1] = (ys * 7) % 256
        frames[index, ..., 2] = 128
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_round_trip(tmp_path, suffix):
    frames = _gradient_clip()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=8)
    clip = read_video(path)
    assert clip.frames.shape == frames.shape
    # gif stores delays in centiseconds, so 8 fps comes back as 1 / 0.12 s
    assert clip.fps == pytest.approx(8.0, rel=0.05 if suffix == ".gif" else 1e-6)
    # lossy codecs: close on average, not exact
    assert np.abs(clip.frames.astype(int) - frames).mean() < (4 if suffix == ".mp4" else 24)
    assert not list(tmp_path.glob(".*partial*")), "the temporary file must be renamed away"


def test_mp4_with_audio_keeps_tone_timing(tmp_path):
    sample_rate = 16000
    audio = np.zeros(sample_rate, np.float32)
    onset = 8000  # 0.5 s
    time = np.arange(1600) / sample_rate
    audio[onset : onset + 1600] = 0.5 * np.sin(2 * np.pi * 880 * time)
    path = write_video(tmp_path / "a.mp4", _gradient_clip(num_frames=8), fps=8, audio=audio, sample_rate=sample_rate)
    clip = read_video(path)
    assert clip.sample_rate == sample_rate and clip.audio.shape[0] == 1
    envelope = np.abs(clip.audio[0])
    detected = int(np.argmax(envelope > 0.1))
    assert abs(detected - onset) < sample_rate * 0.07  # within about half a frame at 8 fps
    spectrum = np.abs(np.fft.rfft(clip.audio[0][onset : onset + 1600]))
    assert np.fft.rfftfreq(1600, 1 / sample_rate)[np.argmax(spectrum)] == pytest.approx(880, abs=15)


def test_png_and_tensor_conversions(tmp_path):
    video = torch.rand(3, 1, 8, 8) * 2 - 1
    frames = tensor_to_frames(video)
    assert frames.shape == (1, 8, 8, 3) and frames.dtype == np.uint8
    write_video(tmp_path / "a.png", frames)
    back = frames_to_tensor(read_video(tmp_path / "a.png").frames)
    assert torch.allclose(back, video, atol=1 / 127.5)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="one frame"):
        write_video(tmp_path / "a.png", _gradient_clip(num_frames=2))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="unsupported output suffix"):
        write_video(tmp_path / "a.xyz", _gradient_clip(num_frames=2))
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def test_yuv444_keeps_colour_edges(tmp_path):
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = (220, 40, 40)  # a red square on black: 4:2:0 smears its edges
    errors = {}
    for pix_fmt in ("yuv420p", "yuv444p"):
        clip = read_video(write_video(tmp_path / f"{pix_fmt}.mp4", frames, fps=8, pix_fmt=pix_fmt))
        errors[pix_fmt] = np.abs(clip.frames.astype(int) - frames).max()
    assert errors["yuv444p"] < errors["yuv420p"]
    assert errors["yuv444p"] <= 24
