"""Motion steering probe: closed-form cases (ShapesWorld's own renders steer fully, a caption-blind generator not
at all, a reversed one negatively) and the CLI end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.shapesbench.runner import oracle_generate_fn
from evaluation.shapesbench.steering import DIRECTIONS, direction_items, motion_steering
from seedkit.data.shapes import render_scene

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _motion_of(item) -> str:
    return item.truth().shots[0].objects[0].motion


def _render(item) -> np.ndarray:
    return render_scene(item.truth()).frames


def test_direction_items_differ_only_in_motion():
    items = direction_items(4, 64, 64, 17)
    assert [_motion_of(item) for item in items.values()] == list(DIRECTIONS)
    objects = [item.truth().shots[0].objects[0] for item in items.values()]
    assert len({(obj.shape, obj.color, obj.size) for obj in objects}) == 1
    assert len({item.truth().background for item in items.values()}) == 1
    assert {item.seed for item in items.values()} == {4}  # the same starting noise
    # the same template draws: the captions share everything outside the motion phrase
    first_words = {item.prompt.split()[0] for item in items.values()}
    assert len(first_words) == 1


def test_the_truth_steers_fully_and_a_caption_blind_generator_not_at_all():
    def blind(item):  # draws the "left" clip whatever the caption says
        return _render(direction_items(item.seed, item.height, item.width, item.num_frames)["left"])

    def reversed_words(item):
        items = direction_items(item.seed, item.height, item.width, item.num_frames)
        return _render(items[OPPOSITE[_motion_of(item)]])

    truth = motion_steering(oracle_generate_fn, num_scenes=3, progress=False)
    assert truth.steering == pytest.approx(1.0, abs=0.02)
    assert truth.found == 1.0
    assert truth.mean_displacement["left"][0] < -10 and truth.mean_displacement["down"][1] > 10
    ignored = motion_steering(blind, num_scenes=3, progress=False)
    assert ignored.steering_x == 0.0 and ignored.steering_y == 0.0
    backwards = motion_steering(reversed_words, num_scenes=3, progress=False)
    assert backwards.steering == pytest.approx(-1.0, abs=0.02)


def test_a_missing_object_counts_as_no_motion():
    def empty(item):
        return np.zeros((item.num_frames, item.height, item.width, 3), dtype=np.uint8)

    report = motion_steering(empty, num_scenes=2, progress=False)
    assert report.found == 0.0 and report.steering == 0.0
    with pytest.raises(ValueError, match="num_scenes"):
        motion_steering(empty, num_scenes=0)


def test_cli_steering_writes_a_report(tmp_path, capsys):
    from seedkit.cli import main
    from seedkit.pipelines import SeedkitTextToVideoPipeline

    pipe = SeedkitTextToVideoPipeline.from_flavor(
        "debug", seed=0, default_height=16, default_width=16, default_num_frames=5, max_sequence_length=128
    )
    pipe.save_pretrained(tmp_path / "model")
    argv = ["eval", "steering", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "report"), "--clips", "1",
            "--steps", "2", "--height", "32", "--width", "32", "--frames", "5", "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report" / "steering.json").read_text())
    assert report["scenes"] == 1 and report["height"] == 32
    assert set(report["per_scene"][0]["captions"]) == set(DIRECTIONS)
    assert "steering" in capsys.readouterr().out
    oracle = ["eval", "steering", "--oracle", "--out", str(tmp_path / "oracle"), "--clips", "1", "--no-progress"]
    assert main(oracle) == 0
    assert json.loads((tmp_path / "oracle" / "steering.json").read_text())["steering"] == pytest.approx(1.0, abs=0.02)
