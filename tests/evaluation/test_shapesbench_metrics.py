"""ShapesBench metrics on crafted cases: wrong colour / shape / count / motion, broken multi-shot consistency,
first-frame PSNR, audio-video offset with a known shift, pitch-to-colour, and the per-value confusion table."""

import math

import numpy as np
import pytest

from evaluation.shapesbench.detector import detect_scene
from evaluation.shapesbench.metrics import attribute_confusion, format_attribute_confusion, psnr, score_item
from seedkit.data.shapes import render_scene, scene_from_prompt_spec


def _scene(objects, seed=0, num_frames=17, sample_rate=None, background="black", **kwargs):
    return scene_from_prompt_spec(
        {"objects": objects, "background": background}, seed, 48, 64, num_frames, sample_rate=sample_rate, **kwargs
    )


def _score(clip_scene, truth, task="t2v", **kwargs):
    clip = render_scene(clip_scene)
    detected = detect_scene(
        clip.frames,
        clip.audio if task == "t2av" else None,
        clip.sample_rate if task == "t2av" else None,
        shot_starts=[shot.start_frame for shot in truth.shots],
        zooms=[shot.zoom for shot in truth.shots],
    )
    return score_item(detected, truth, task, first_frame=clip.frames[0], **kwargs)


RED_CIRCLE = {"shape": "circle", "color": "red", "size": "large", "motion": "right"}


def test_matching_clip_scores_one():
    truth = _scene([RED_CIRCLE])
    metrics = _score(truth, truth).metrics
    assert metrics["color"] == metrics["shape"] == metrics["size"] == metrics["count"] == metrics["motion"] == 1.0
    assert metrics["persistence"] == metrics["continuity"] == 1.0
    assert metrics["consistency"] is None and metrics["first_frame_psnr"] is None and metrics["av_offset_ms"] is None


def test_object_vanishing_halfway_loses_persistence_and_one_transition():
    truth = _scene([RED_CIRCLE])
    clip = render_scene(truth)
    frames = clip.frames.copy()
    frames[9:] = frames[9:, :1, :1]  # from frame 9 on, every pixel is the background's (the corner pixel)
    detected = detect_scene(frames, shot_starts=[0], zooms=[1.0])
    score = score_item(detected, truth, "t2v")
    assert score.metrics["color"] == 1.0  # found, in the first half
    assert score.metrics["persistence"] == pytest.approx(9 / 17)
    assert score.metrics["continuity"] == pytest.approx(1 - 1 / 16)
    assert score.details["spurious_cuts"] == [9]


def test_images_have_no_temporal_metrics():
    truth = _scene([{"shape": "circle", "color": "red", "size": "large", "motion": "still"}], num_frames=1)
    metrics = _score(truth, truth, task="t2i").metrics
    assert metrics["color"] == 1.0 and metrics["persistence"] is None and metrics["continuity"] is None


def test_blue_square_asked_for_red_circle_scores_zero_on_colour_and_shape():
    truth = _scene([RED_CIRCLE])
    clip_scene = _scene([{"shape": "square", "color": "blue", "size": "large", "motion": "right"}])
    score = _score(clip_scene, truth)
    assert score.metrics["color"] == 0.0 and score.metrics["shape"] == 0.0 and score.metrics["motion"] == 0.0
    assert score.metrics["count"] == 1.0  # one object was asked for and one was drawn
    assert score.details["unexpected_objects"] == [{"color": "blue", "shot": 0}]


def test_right_colour_wrong_shape_and_motion():
    truth = _scene([RED_CIRCLE])
    clip_scene = _scene([{"shape": "triangle", "color": "red", "size": "large", "motion": "left"}])
    metrics = _score(clip_scene, truth).metrics
    assert metrics["color"] == 1.0 and metrics["size"] == 1.0
    assert metrics["shape"] == 0.0 and metrics["motion"] == 0.0


def test_extra_object_breaks_count_only():
    truth = _scene([RED_CIRCLE])
    clip_scene = _scene([RED_CIRCLE, {"shape": "square", "color": "green", "size": "small", "motion": "still"}], seed=3)
    metrics = _score(clip_scene, truth).metrics
    assert metrics["count"] == 0.0 and metrics["color"] == 1.0 and metrics["shape"] == 1.0


def test_multi_shot_consistency_detects_a_changed_subject():
    spec = {
        "shots": [
            {
                "objects": [{"subject_id": 0, "shape": "circle", "color": "pink", "size": "large", "motion": "still"}],
                "num_frames": 9,
            },
            {"objects": [{"subject_id": 0, "motion": "right"}], "num_frames": 8},
        ],
        "background": "gray",
    }
    truth = scene_from_prompt_spec(spec, 1, 48, 64, 17)
    assert _score(truth, truth).metrics["consistency"] == 1.0
    # Same prompt, but the clip's second shot draws a pink square instead of the pink circle.
    broken = dict(spec)
    broken["shots"] = [
        spec["shots"][0],
        {
            "objects": [{"subject_id": 5, "shape": "square", "color": "pink", "size": "large", "motion": "right"}],
            "num_frames": 8,
        },
    ]
    clip_scene = scene_from_prompt_spec(broken, 1, 48, 64, 17)
    metrics = _score(clip_scene, truth).metrics
    assert metrics["consistency"] == 0.0
    assert metrics["shape"] == 0.5  # right in the first shot, wrong in the second


def test_psnr_known_values_and_i2v_metric():
    image = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(image, image + 10) == pytest.approx(20 * math.log10(255 / 10))
    assert psnr(image, image) == 100.0
    truth = _scene([RED_CIRCLE])
    first = render_scene(truth).frames[0]
    metrics = _score(truth, truth, task="i2v", conditioning_image=first).metrics
    assert metrics["first_frame_psnr"] == 100.0
    darker = (first.astype(np.int16) - 8).clip(0, 255).astype(np.uint8)
    assert _score(truth, truth, task="i2v", conditioning_image=darker).metrics["first_frame_psnr"] < 35.0
    with pytest.raises(ValueError, match="conditioning image"):
        _score(truth, truth, task="i2v")


def _bouncing_scene():
    return _scene(
        [{"shape": "square", "color": "cyan", "size": "small", "motion": "bouncing"}], seed=4, num_frames=25,
        sample_rate=16000,
    )


def test_av_offset_measures_a_known_shift():
    truth = _bouncing_scene()
    assert truth.audio_events, "the scene must bounce for this test"
    clip = render_scene(truth)
    shift_ms = 40.0
    shift = int(round(shift_ms / 1000 * clip.sample_rate))
    late_audio = np.concatenate([np.zeros((1, shift), np.float32), clip.audio[:, :-shift]], axis=1)
    starts = [shot.start_frame for shot in truth.shots]
    in_sync = score_item(detect_scene(clip.frames, clip.audio, clip.sample_rate, shot_starts=starts), truth, "t2av")
    late = score_item(detect_scene(clip.frames, late_audio, clip.sample_rate, shot_starts=starts), truth, "t2av")
    assert in_sync.metrics["av_offset_ms"] < 1.0
    assert late.metrics["av_offset_ms"] == pytest.approx(shift_ms, abs=1.0)
    assert in_sync.metrics["pitch_color"] == late.metrics["pitch_color"] == 1.0


def test_pitch_of_the_wrong_colour_scores_zero():
    truth = _bouncing_scene()
    clip = render_scene(truth)
    # Re-render the tones at the pitch of another colour.
    wrong = scene_from_prompt_spec(
        {
            "objects": [{"shape": "square", "color": "red", "size": "small", "motion": "bouncing"}],
            "background": "black",
        },
        4, 48, 64, 25, sample_rate=16000,
    )
    wrong_audio = render_scene(wrong).audio
    detected = detect_scene(clip.frames, wrong_audio, clip.sample_rate, shot_starts=[0])
    metrics = score_item(detected, truth, "t2av").metrics
    assert metrics["pitch_color"] == 0.0
    silent = detect_scene(clip.frames, np.zeros_like(clip.audio), clip.sample_rate, shot_starts=[0])
    assert score_item(silent, truth, "t2av").metrics["pitch_color"] == 0.0


def test_t2av_needs_audio_analysis():
    truth = _bouncing_scene()
    clip = render_scene(truth)
    with pytest.raises(ValueError, match="audio"):
        score_item(detect_scene(clip.frames, shot_starts=[0]), truth, "t2av")
    with pytest.raises(ValueError, match="valid tasks"):
        score_item(detect_scene(clip.frames, shot_starts=[0]), truth, "v2v")


def test_attribute_confusion_counts_what_each_asked_value_was_drawn_as():
    def obj(shape, detected_shape, size="small", detected_size="small", motion=None):
        record = {"shape": {"expected": shape, "detected": detected_shape},
                  "size": {"expected": size, "detected": detected_size}}
        if motion is not None:
            record["motion"] = {"expected": motion[0], "detected": motion[1]}
        return record

    objects = [
        obj("square", "circle"), obj("square", "circle"), obj("square", "square"), obj("square", None),
        obj("circle", "circle", "large", "small", motion=("left", "left")),
        obj("triangle", "triangle", "large", "large", motion=("up", None)),
    ]
    table = attribute_confusion(objects)
    assert list(table) == ["motion", "shape", "size"]
    assert table["shape"]["square"] == {"objects": 4, "detected": {"circle": 2, "not found": 1, "square": 1},
                                        "accuracy": 0.25}
    assert table["shape"]["circle"]["accuracy"] == 1.0 and table["shape"]["triangle"]["objects"] == 1
    assert table["size"]["large"] == {"objects": 2, "detected": {"large": 1, "small": 1}, "accuracy": 0.5}
    assert table["motion"]["up"] == {"objects": 1, "detected": {"not found": 1}, "accuracy": 0.0}
    lines = format_attribute_confusion(table).splitlines()
    assert lines[1] == "shape: circle 1.00 (1), square 0.25 (4; drawn as circle 2, not found 1), triangle 1.00 (1)"
    assert attribute_confusion([]) == {}
