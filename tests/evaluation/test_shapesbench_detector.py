"""ShapesBench detector: reads ShapesWorld's own clips back exactly (colour, shape, size, count, motion, bounces,
cuts, audio), including overlapping objects and non-square frames."""

import numpy as np
import pytest

from evaluation.shapesbench.audio import detect_audio_events, detect_onsets
from evaluation.shapesbench.detector import (
    DetectorConfig,
    _read_object,
    connected_components,
    detect_scene,
    fit_shape,
    render_coverage,
)
from evaluation.shapesbench.validate import validate
from seedkit.data.shapes import PALETTE, render_scene, scene_from_prompt_spec
from seedkit.data.shapes_audio import tone


def test_validation_sample_reads_every_attribute():
    # 30 varied clips: six frame sizes (square, landscape, portrait), 9/17/25 frames, 1-3 objects that may overlap
    # (down to half hidden), a third of them two-shot with close-ups, half with audio.
    result = validate(30, seed=1, progress=False)
    accuracy = result.accuracy()
    for attribute in ("color", "shape", "size", "count", "motion", "background", "consistency", "audio_tone"):
        assert accuracy[attribute] >= 0.99, (attribute, accuracy, result.failures[:5])
    assert accuracy["bounce_frames_within_1"] >= 0.99, result.failures[:5]
    assert accuracy["cuts"] >= 0.97, result.failures[:5]
    assert result.trials["color"] >= 50  # the sample really holds many objects


def test_overlapping_objects_keep_their_shapes():
    # A large square still under a circle that crosses it, in a non-square frame.
    spec = {
        "objects": [
            {"shape": "square", "color": "green", "size": "large", "motion": "still"},
            {"shape": "circle", "color": "orange", "size": "small", "motion": "right"},
            {"shape": "triangle", "color": "blue", "size": "small", "motion": "up"},
        ],
        "background": "white",
    }
    scene = scene_from_prompt_spec(spec, 7, height=40, width=72, num_frames=17, min_visible_fraction=0.6)
    clip = render_scene(scene)
    detected = detect_scene(clip.frames)
    found = detected.objects_by_color(0)
    assert set(found) == {"green", "orange", "blue"}
    for obj in scene.shots[0].objects:
        assert (found[obj.color].shape, found[obj.color].size, found[obj.color].motion) == (
            obj.shape,
            obj.size,
            obj.motion,
        ), obj.color


def test_template_fit_recovers_centre_and_radius_exactly():
    height, width = 40, 50
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for shape in ("circle", "square", "triangle"):
        coverage = render_coverage(
            shape, np.array([21.3], np.float32), np.array([17.6], np.float32), np.array([9.0], np.float32), xs, ys
        )[0]
        fits = fit_shape(coverage)
        assert fits[0].shape == shape
        assert abs(fits[0].center_x - 21.3) < 0.05 and abs(fits[0].center_y - 17.6) < 0.05
        assert abs(fits[0].radius - 9.0) < 0.1


def test_frame_with_core_pixels_but_no_unmixed_coverage_is_never_the_reference_frame():
    """A generated clip can hold a colour's core pixels on a frame whose unmixed coverage is empty (measured on a
    real generation); that frame used to win the reference-frame choice and crash the shape fit."""
    height = width = 48
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    num_frames = 5
    alphas = np.zeros((1, num_frames, height, width), np.float32)
    for frame in range(num_frames - 1):
        center = np.array([12.0 + 4 * frame], np.float32)
        alphas[0, frame] = render_coverage(
            "square", center, np.array([24.0], np.float32), np.array([6.0], np.float32), xs, ys
        )[0]
    presence = np.ones((1, num_frames), bool)  # the last frame is "present" with zero coverage
    unexplained = np.zeros((num_frames, height, width), bool)
    obj = _read_object("red", 0, alphas, unexplained, presence, 0, 1.0, height, DetectorConfig())
    assert obj is not None and obj.shape == "square" and obj.motion == "right"
    assert (
        _read_object("red", 0, np.zeros_like(alphas), unexplained, presence, 0, 1.0, height, DetectorConfig()) is None
    )


def test_partly_hidden_square_is_still_a_square():
    height, width = 40, 40
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    square = render_coverage(
        "square", np.array([20.0], np.float32), np.array([20.0], np.float32), np.array([10.0], np.float32), xs, ys
    )[0]
    # Hide the right third behind another object: visible coverage drops there, the ceiling is 1.
    hidden = xs > 23
    visible = np.where(hidden, 0.0, square)
    ceiling = np.where(hidden, 1.0, square)
    fits = fit_shape(visible, ceiling, radii=(10.0, 6.0))
    assert fits[0].shape == "square"
    assert abs(fits[0].center_x - 20.0) < 0.3 and fits[0].radius == 10.0


def test_connected_components_counts_blobs():
    mask = np.zeros((10, 12), bool)
    mask[1:3, 1:4] = True
    mask[5:9, 6:11] = True
    mask[8, 0] = True
    labels, count = connected_components(mask)
    assert count == 3
    assert len(np.unique(labels[1:3, 1:4])) == 1 and labels[1, 1] != labels[6, 7]
    assert (labels[~mask] == -1).all()


def test_audio_onsets_and_pitch_read_every_palette_tone():
    sample_rate = 16000
    audio = np.zeros(sample_rate * 3, np.float32)
    times = {}
    for index, (color, (_, frequency)) in enumerate(PALETTE.items()):
        start = int((0.1 + 0.3 * index) * sample_rate)
        piece = tone(frequency, sample_rate)
        audio[start : start + piece.size] += piece
        times[color] = start / sample_rate
    events = detect_audio_events(audio[None], sample_rate, {c: f for c, (_, f) in PALETTE.items()})
    assert [event.color for event in events] == list(PALETTE)
    for event in events:
        assert abs(event.time_s - times[event.color]) < 0.002
    assert detect_onsets(np.zeros(4000), sample_rate) == []


def test_two_simultaneous_tones_are_both_heard():
    sample_rate = 16000
    audio = np.zeros(sample_rate, np.float32)
    start = 3200
    for color in ("red", "cyan"):
        piece = tone(PALETTE[color][1], sample_rate)
        audio[start : start + piece.size] += piece
    events = detect_audio_events(audio, sample_rate, {c: f for c, (_, f) in PALETTE.items()})
    assert sorted(event.color for event in events) == ["cyan", "red"]


def test_bad_frames_raise_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        detect_scene(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        detect_scene(np.zeros((8, 8, 3), np.uint8))


def _stuttering_clip(motion: str) -> tuple[np.ndarray, np.ndarray]:
    """A ShapesWorld clip with uneven per-frame steps (as a generator or a VAE makes them) and the even original.

    Rendered at 17 frames and sampled at frames 0, 1, 4, 5, 8, 9, ...: the object moves one step, then three. The
    first seed whose object stays at least 4 px from every edge: the stutter happens in the open.
    """
    spec = {"objects": [{"shape": "square", "color": "red", "size": "small", "motion": motion}], "background": "black"}
    for seed in range(100):
        frames = render_scene(scene_from_prompt_spec(spec, seed, num_frames=17)).frames
        background = frames[0, 0, 0].astype(int)
        rows, columns = np.nonzero((np.abs(frames.astype(int) - background).max(axis=3) > 10).any(axis=0))
        if min(rows.min(), columns.min(), 63 - rows.max(), 63 - columns.max()) >= 4:
            break
    else:
        raise AssertionError(f"no seed keeps a {motion} object away from the edges")
    uneven = [index for start in range(0, 17, 4) for index in (start, start + 1) if index < 17]
    return frames[uneven], frames[::2]


@pytest.mark.parametrize("motion", ["left", "up", "right", "down"])
def test_stutter_in_the_open_is_not_a_bounce(motion):
    uneven, even = _stuttering_clip(motion)
    assert detect_scene(even).objects_by_color(0)["red"].motion == motion
    # One shot, as ShapesBench reads generated clips (shot starts from the prompt; uneven steps would read as cuts).
    detected = detect_scene(uneven, shot_starts=[0]).objects_by_color(0)["red"]
    assert (detected.motion, detected.bounce_frames) == (motion, [])
    # Without the wall condition the slow steps read as reflections.
    anywhere = DetectorConfig(bounce_wall_px=float("inf"))
    assert detect_scene(uneven, shot_starts=[0], config=anywhere).objects_by_color(0)["red"].motion == "bouncing"


def test_bounce_at_a_wall_is_still_found_when_the_clip_stutters():
    spec = {
        "objects": [{"shape": "circle", "color": "blue", "size": "small", "motion": "bouncing"}],
        "background": "gray",
    }
    for seed in range(40):
        scene = scene_from_prompt_spec(spec, seed, num_frames=33)
        if scene.shots[0].objects[0].bounce_frames:
            break
    frames = render_scene(scene).frames
    detected = detect_scene(frames).objects_by_color(0)["blue"]
    assert detected.motion == "bouncing"
    assert detected.bounce_frames == scene.shots[0].objects[0].bounce_frames
