"""ShapesWorld scenes: determinism, geometry, motion ground truth, rendering, multi-shot structure, prompt specs."""

import json

import numpy as np
import pytest

from seedkit.data.shapes import (
    BACKGROUNDS,
    BOUNCING_SPEED_RANGE,
    DIRECTIONAL_SPEED_RANGE,
    FRAMINGS,
    PALETTE,
    SIZES,
    WALL_MARGIN_PX,
    Scene,
    check_num_frames,
    render_scene,
    sample_scene,
    scene_from_prompt_spec,
    shape_half_extents,
)

SIZES_HW = [(64, 64), (48, 80), (96, 40), (16, 16)]


def _scenes(count=30, height=64, width=64, num_frames=17, **kwargs):
    return [sample_scene(np.random.default_rng(seed), height, width, num_frames, **kwargs) for seed in range(count)]


def test_palette_and_backgrounds_are_the_binding_values():
    assert list(PALETTE) == ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
    assert PALETTE["red"] == ((220, 40, 40), 523.25) and PALETTE["pink"] == ((245, 120, 190), 1174.66)
    assert BACKGROUNDS == {
        "black": (15, 15, 15), "white": (240, 240, 240), "gray": (110, 110, 110), "dark gray": (55, 55, 55)
    }
    # Backgrounds are achromatic so colour segmentation never confuses them with an object.
    assert all(len(set(rgb)) == 1 for rgb in BACKGROUNDS.values())


def test_same_seed_same_scene_and_frames_different_seed_differs():
    first = sample_scene(np.random.default_rng(7), 48, 80, 17, num_shots=2, sample_rate=16000)
    second = sample_scene(np.random.default_rng(7), 48, 80, 17, num_shots=2, sample_rate=16000)
    other = sample_scene(np.random.default_rng(8), 48, 80, 17, num_shots=2, sample_rate=16000)
    assert first.to_dict() == second.to_dict()
    assert first.to_dict() != other.to_dict()
    clip_a, clip_b = render_scene(first), render_scene(second)
    np.testing.assert_array_equal(clip_a.frames, clip_b.frames)
    np.testing.assert_array_equal(clip_a.audio, clip_b.audio)


@pytest.mark.parametrize("num_frames", [0, 2, 6, 16, 18])
def test_bad_frame_counts_name_the_valid_counts(num_frames):
    with pytest.raises(ValueError, match=r"1 \+ 4k"):
        sample_scene(np.random.default_rng(0), 32, 32, num_frames)
    with pytest.raises(ValueError, match="nearest"):
        check_num_frames(num_frames)


@pytest.mark.parametrize("num_frames", [1, 5, 9, 21])
@pytest.mark.parametrize("height,width", SIZES_HW)
def test_any_valid_size_renders_with_the_right_shape(num_frames, height, width):
    scene = sample_scene(np.random.default_rng(num_frames), height, width, num_frames)
    clip = render_scene(scene)
    assert clip.frames.shape == (num_frames, height, width, 3) and clip.frames.dtype == np.uint8
    assert clip.audio is None and clip.fps == scene.fps
    if num_frames == 1:
        assert all(obj.motion == "still" for obj in scene.shots[0].objects)


def test_scene_dict_is_json_and_round_trips():
    scene = sample_scene(np.random.default_rng(3), 48, 80, 17, num_shots=2, sample_rate=16000)
    data = json.loads(json.dumps(scene.to_dict()))
    assert set(data) >= {"width", "height", "num_frames", "fps", "background", "background_rgb", "sample_rate",
                         "shots", "audio_events", "caption"}
    obj = data["shots"][0]["objects"][0]
    assert set(obj) >= {"subject_id", "shape", "color", "rgb", "size", "radius_px", "motion", "speed_px_per_frame",
                        "track", "bounce_frames", "visible_fraction"}
    assert Scene.from_dict(data).to_dict() == data


@pytest.mark.parametrize("height,width", SIZES_HW)
def test_objects_stay_in_frame_on_every_frame(height, width):
    for scene in _scenes(25, height, width, 33, num_shots=2):
        for shot in scene.shots:
            for obj in shot.objects:
                track = np.asarray(obj.track)
                assert track.shape == (shot.num_frames, 2)
                left, right, top, bottom = shape_half_extents(obj.shape, obj.radius_px)
                eps = 1e-3
                assert (track[:, 0] - left >= -0.5 + WALL_MARGIN_PX - eps).all()
                assert (track[:, 0] + right <= width - 0.5 - WALL_MARGIN_PX + eps).all()
                assert (track[:, 1] - top >= -0.5 + WALL_MARGIN_PX - eps).all()
                assert (track[:, 1] + bottom <= height - 0.5 - WALL_MARGIN_PX + eps).all()
                expected = SIZES[obj.size] * min(height, width) * FRAMINGS[shot.framing]
                assert obj.radius_px == pytest.approx(expected, abs=1e-3)


def test_motion_tracks_match_their_labels_and_bounces_are_reversals():
    seen = set()
    bouncing_with_bounce = bouncing_total = 0
    for scene in _scenes(60, 64, 64, 33):
        for obj in scene.shots[0].objects:
            seen.add(obj.motion)
            track = np.asarray(obj.track)
            step = np.diff(track, axis=0)
            scale = min(scene.height, scene.width)
            if obj.motion == "still":
                assert np.abs(step).max() == 0 and obj.speed_px_per_frame == 0
            elif obj.motion in ("left", "right", "up", "down"):
                axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[obj.motion]
                assert (sign * step[:, axis] > 0).all(), "directional motion must be monotonic"
                assert np.abs(step[:, 1 - axis]).max() < 1e-2, "directional motion has no sideways drift"
                assert obj.speed_px_per_frame <= DIRECTIONAL_SPEED_RANGE[1] * scale + 1e-6
                assert obj.bounce_frames == []
            else:
                bouncing_total += 1
                # No wall contact before frame 1, so the first step is a straight move at full speed.
                assert np.hypot(*step[0]) == pytest.approx(obj.speed_px_per_frame, abs=0.01)
                low, high = BOUNCING_SPEED_RANGE
                assert low * scale - 1e-6 <= obj.speed_px_per_frame <= high * scale + 1e-6
                # Every velocity reversal is a recorded bounce, and every recorded bounce is a reversal.
                reversals = set()
                for axis in (0, 1):
                    flips = np.flatnonzero(np.sign(step[1:, axis]) != np.sign(step[:-1, axis])) + 1
                    reversals.update(int(frame) for frame in flips)
                assert reversals == set(obj.bounce_frames)
                bouncing_with_bounce += bool(obj.bounce_frames)
    assert seen == {"left", "right", "up", "down", "bouncing", "still"}
    assert bouncing_total > 5 and bouncing_with_bounce == bouncing_total


def test_speed_scales_with_frame_size():
    small = scene_from_prompt_spec({"objects": [{"motion": "bouncing"}]}, 5, 32, 32, 17)
    large = scene_from_prompt_spec({"objects": [{"motion": "bouncing"}]}, 5, 128, 128, 17)
    ratio = large.shots[0].objects[0].speed_px_per_frame / small.shots[0].objects[0].speed_px_per_frame
    assert ratio == pytest.approx(4.0, rel=1e-3)


def test_rendered_centroid_and_colour_match_the_ground_truth():
    for shape in ("circle", "square", "triangle"):
        scene = scene_from_prompt_spec(
            {"objects": [{"shape": shape, "color": "blue", "size": "large", "motion": "right"}], "background": "black"},
            1, 64, 96, 9,
        )
        frames = render_scene(scene).frames.astype(np.float64)
        obj = scene.shots[0].objects[0]
        background = np.asarray(BACKGROUNDS["black"], dtype=np.float64)
        color = np.asarray(PALETTE["blue"][0], dtype=np.float64)
        for index, (cx, cy) in enumerate(obj.track):
            # Coverage recovered from the blue channel: frame = background + alpha * (colour - background).
            alpha = (frames[index, ..., 2] - background[2]) / (color[2] - background[2])
            rows, cols = np.mgrid[: scene.height, : scene.width]
            assert (alpha * cols).sum() / alpha.sum() == pytest.approx(cx, abs=0.3)
            assert (alpha * rows).sum() / alpha.sum() == pytest.approx(cy, abs=0.3)
        interior = frames[0][int(round(obj.track[0][1])), int(round(obj.track[0][0]))]
        np.testing.assert_allclose(interior, color, atol=1)
        # Anti-aliasing: edge pixels take values between the background and the object colour.
        alpha = (frames[0, ..., 2] - background[2]) / (color[2] - background[2])
        assert ((alpha > 0.05) & (alpha < 0.95)).sum() > 10


def test_fill_ratio_tells_shapes_apart():
    expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
    for shape, ratio in expected.items():
        spec = {"objects": [{"shape": shape, "size": "large", "motion": "still"}]}
        scene = scene_from_prompt_spec(spec, 2, 128, 128, 1)
        alpha = np.abs(render_scene(scene).frames[0].astype(np.float64) - scene.background_rgb).max(axis=-1)
        alpha /= alpha.max()
        rows, cols = np.nonzero(alpha > 0.5)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert alpha.sum() / box == pytest.approx(ratio, abs=0.06)


def test_overlaps_are_allowed_but_every_object_stays_visible():
    fractions = [
        obj.visible_fraction
        for scene in _scenes(40, 32, 32, 9, min_objects=3)
        for obj in scene.shots[0].objects
    ]
    assert min(fractions) >= 0.5
    assert min(fractions) < 1.0, "some objects should overlap in crowded 32x32 scenes"


def test_colours_are_distinct_within_a_clip():
    for scene in _scenes(30, 48, 48, 17, num_shots=3, min_objects=3):
        colours = {}
        for shot in scene.shots:
            assert len({obj.color for obj in shot.objects}) == len(shot.objects)
            for obj in shot.objects:
                assert colours.setdefault(obj.subject_id, obj.color) == obj.color


def test_multi_shot_structure_cuts_and_carried_subjects():
    for seed in range(12):
        scene = sample_scene(np.random.default_rng(seed), 48, 80, 33, num_shots=3)
        assert len(scene.shots) == 3
        assert scene.shots[0].start_frame == 0
        assert sum(shot.num_frames for shot in scene.shots) == 33
        for previous, shot in zip(scene.shots, scene.shots[1:]):
            assert shot.start_frame == previous.start_frame + previous.num_frames
            assert (shot.start_frame - 1) % 4 == 0 and shot.num_frames >= 4
            carried = {o.subject_id for o in shot.objects} & {o.subject_id for o in previous.objects}
            assert carried, "a later shot carries a subject of the previous shot"
            for obj in shot.objects:
                if obj.subject_id in carried:
                    before = next(o for o in previous.objects if o.subject_id == obj.subject_id)
                    assert (obj.shape, obj.color, obj.size) == (before.shape, before.color, before.size)
        assert scene.shot_boundaries == [shot.start_frame for shot in scene.shots[1:]]
        # Hard cuts: the frame difference across a cut beats every difference inside a shot.
        frames = render_scene(scene).frames.astype(np.float32)
        difference = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
        cut_steps = [boundary - 1 for boundary in scene.shot_boundaries]
        assert difference[cut_steps].min() > np.delete(difference, cut_steps).max()
    assert any(shot.framing == "close" for seed in range(12)
               for shot in sample_scene(np.random.default_rng(seed), 48, 80, 33, num_shots=3).shots)


def test_multi_shot_needs_enough_frames():
    with pytest.raises(ValueError, match="at least 9 frames"):
        sample_scene(np.random.default_rng(0), 32, 32, 5, num_shots=2)
    with pytest.raises(ValueError, match="one shot"):
        sample_scene(np.random.default_rng(0), 32, 32, 1, num_shots=2)


def test_prompt_spec_builds_the_named_scene():
    spec = {"objects": [{"shape": "circle", "color": "red", "size": "large", "motion": "left"},
                        {"shape": "triangle", "color": "green", "size": "small", "motion": "bouncing"}],
            "background": "black"}
    scene = scene_from_prompt_spec(spec, 0, 48, 64, 17)
    objects = scene.shots[0].objects
    assert [(o.shape, o.color, o.size, o.motion) for o in objects] == [
        ("circle", "red", "large", "left"), ("triangle", "green", "small", "bouncing")]
    assert scene.background == "black" and scene.background_rgb == (15, 15, 15)
    assert scene_from_prompt_spec(spec, 0, 48, 64, 17).to_dict() == scene.to_dict()
    assert scene_from_prompt_spec(spec, 1, 48, 64, 17).to_dict() != scene.to_dict()
    assert "red" in scene.caption.lower() or "scarlet" in scene.caption.lower()


def test_prompt_spec_multi_shot_carries_and_validates_subjects():
    first_objects = [{"subject_id": 0, "shape": "circle", "color": "red", "size": "small"}]
    spec = {"shots": [{"objects": first_objects, "num_frames": 9},
                      {"objects": [{"subject_id": 0, "motion": "up"}], "framing": "close", "num_frames": 8}],
            "background": "white"}
    scene = scene_from_prompt_spec(spec, 3, 64, 64, 17)
    first, second = scene.shots[0].objects[0], scene.shots[1].objects[0]
    assert (second.shape, second.color, second.size, second.motion) == ("circle", "red", "small", "up")
    assert second.radius_px == pytest.approx(first.radius_px * FRAMINGS["close"])
    assert scene.shot_boundaries == [9] and "the same" in scene.shots[1].caption
    bad = {"shots": [{"objects": spec["shots"][0]["objects"]}, {"objects": [{"subject_id": 0, "color": "blue"}]}]}
    with pytest.raises(ValueError, match="cannot change its color"):
        scene_from_prompt_spec(bad, 0, 64, 64, 17)
    with pytest.raises(ValueError, match="valid colors"):
        scene_from_prompt_spec({"objects": [{"color": "teal"}]}, 0)
    with pytest.raises(ValueError, match="valid"):
        scene_from_prompt_spec({"objects": [{"colour": "red"}]}, 0)
    with pytest.raises(ValueError, match="cannot show motion"):
        scene_from_prompt_spec({"objects": [{"motion": "left"}]}, 0, 32, 32, 1)


def test_windowed_rendering_equals_full_frame_compositing():
    """Objects are drawn inside small per-frame windows; the result must equal compositing full-frame coverage."""
    from seedkit.data.shapes import render_coverage

    for seed, (height, width) in enumerate([(40, 40), (24, 72), (12, 9)]):
        scene = sample_scene(np.random.default_rng(seed), height, width, 9, min_objects=3, num_shots=2)
        frames = render_scene(scene).frames
        for shot in scene.shots:
            image = np.empty((shot.num_frames, height, width, 3), dtype=np.float32)
            image[...] = np.asarray(scene.background_rgb, dtype=np.float32)
            for obj in shot.objects:
                alpha = render_coverage(obj, height, width)[..., None]
                image += alpha * (np.asarray(obj.rgb, dtype=np.float32) - image)
            expected = np.rint(image).astype(np.uint8)
            np.testing.assert_array_equal(frames[shot.start_frame : shot.start_frame + shot.num_frames], expected)


def test_unplaceable_objects_are_an_error_and_sample_scene_redraws():
    from seedkit.data.shapes import PlacementError, _build_shot

    crowded = [
        {"subject_id": index, "shape": "square", "color": color, "size": "large", "motion": "still"}
        for index, color in enumerate(["red", "green", "blue"])
    ]
    with pytest.raises(PlacementError, match="visible"):
        _build_shot(np.random.default_rng(0), crowded, 0, 5, "close", 16, 16, None, min_visible_fraction=0.9)
    # The same seed that used to yield a fully hidden object now redraws until every object is visible enough.
    for index in range(40):
        scene = sample_scene(np.random.default_rng([1, index]), height=32, width=32, num_frames=9, num_shots=2)
        assert min(obj.visible_fraction for shot in scene.shots for obj in shot.objects) >= 0.5
