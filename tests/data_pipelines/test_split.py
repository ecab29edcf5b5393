"""Clip planning: trimming next to cuts and fades, duration limits, windows of long shots."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines.split import SplitConfig, fade_trim, mean_luma, split_shots


def test_cut_trim_and_min_duration():
    config = SplitConfig(min_duration=1.0, max_duration=10.0, cut_trim_frames=2, trim_fades=False)
    # 10 fps: shots of 30, 11 and 40 frames; the middle one is 7 frames after trimming both sides -> too short.
    plan = split_shots([(0, 30), (30, 41), (41, 81)], fps=10, config=config)
    assert [(span.start, span.end) for span in plan.spans] == [(0, 28), (43, 81)]
    assert plan.dropped == {"too_short": 1}
    assert plan.spans[1].trims == {"cut_head": 2}


def test_long_shot_is_split_into_equal_windows_within_max_duration():
    config = SplitConfig(min_duration=1.0, max_duration=3.0, cut_trim_frames=0, trim_fades=False)
    plan = split_shots([(0, 100)], fps=10, config=config)
    lengths = [span.num_frames for span in plan.spans]
    assert len(lengths) == 4 and all(length <= 30 for length in lengths)
    assert [span.window_index for span in plan.spans] == [0, 1, 2, 3]
    assert plan.spans[-1].end <= 100 and plan.spans[0].start == 0


def test_vae_frame_counts_are_one_plus_four_k():
    config = SplitConfig(
        min_duration=0.5, max_duration=10.0, cut_trim_frames=0, trim_fades=False, vae_frame_counts=True
    )
    plan = split_shots([(0, 23), (23, 60)], fps=10, config=config)
    assert all((span.num_frames - 1) % 4 == 0 for span in plan.spans)
    assert [span.num_frames for span in plan.spans] == [21, 37]


def test_fade_in_and_out_are_trimmed():
    luma = np.concatenate([np.linspace(0.0, 0.5, 10), np.full(40, 0.5), np.linspace(0.5, 0.0, 8)]).astype(np.float32)
    head, tail = fade_trim(luma, SplitConfig())
    # frames below half the shot's level (0.25) at each end belong to the fade
    assert head == int(np.sum(luma[:10] < 0.25)) and head >= 4
    assert tail == int(np.sum(luma[-8:] < 0.25)) and tail >= 3
    plan = split_shots([(0, len(luma))], fps=10, config=SplitConfig(min_duration=1.0), luma=luma)
    assert plan.spans[0].start == head and plan.spans[0].end == len(luma) - tail
    assert plan.spans[0].trims == {"fade_head": head, "fade_tail": tail}


def test_all_black_shot_is_dropped_as_black():
    luma = np.full(50, 0.01, np.float32)
    plan = split_shots([(0, 50)], fps=10, config=SplitConfig(), luma=luma)
    assert plan.spans == [] and plan.dropped == {"black": 1}


def test_single_dark_frame_is_not_a_fade():
    luma = np.full(30, 0.5, np.float32)
    luma[0] = 0.2  # a dark frame but no ramp, above the black level
    assert fade_trim(luma, SplitConfig()) == (0, 0)


def test_mean_luma_and_config_validation():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[1] = 255
    np.testing.assert_allclose(mean_luma(frames), [0.0, 1.0], atol=1e-5)
    with pytest.raises(ValueError, match="min_duration"):
        SplitConfig(min_duration=5, max_duration=2)
