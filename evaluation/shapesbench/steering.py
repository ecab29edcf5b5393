"""Motion steering: do direction words move the generated object the way they say, everything else equal?

ShapesBench's motion accuracy needs a clean object, a clean track and the right direction at once, so a model that
follows direction words but draws blurry objects scores near chance, and so does one that draws clean objects
ignoring the words. This probe isolates the words: for each of ``num_scenes`` one-object scenes it generates the
four direction captions ("moving left / right / up / down", the rest of the caption and the starting noise the
same), tracks the object's colour with the ShapesBench detector and compares the displacements (last visible
centroid minus first). Per scene and axis

    steering_x = (dx(right) - dx(left)) / (|dx_truth(right)| + |dx_truth(left)|)

and ``steering_y`` from ``up`` / ``down`` likewise: 1 when the words move the object as far as ShapesWorld does,
0 when they change nothing, negative when reversed. A missing object counts as no displacement.

    seedkit eval steering --model DIR --out report_dir [--clips 8]

Generators have ShapesBench's interface (``generate_fn(item) -> clip``, :mod:`evaluation.shapesbench.runner`), so a
model directory runs through ``PipelineGenerator`` and ``--oracle`` scores ShapesWorld's own renders (steering 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from evaluation.shapesbench.detector import detect_scene
from evaluation.shapesbench.runner import GenerateFn, to_clip
from evaluation.shapesbench.suites import SuiteItem
from seedkit.data.shapes import BACKGROUNDS, PALETTE, SHAPES, SIZES, scene_from_prompt_spec

DIRECTIONS = ("left", "right", "up", "down")


@dataclass
class SceneSteering:
    """One scene: its captions, the detected and true displacements ``{direction: [dx, dy]}`` and its steering."""

    seed: int
    captions: dict[str, str]
    displacement: dict[str, list[float]]
    true_displacement: dict[str, list[float]]
    found: dict[str, bool]
    steering_x: float
    steering_y: float


@dataclass
class SteeringReport:
    """Means over scenes; ``mean_displacement`` is ``{direction: [dx, dy]}`` in pixels, ``found`` the share of
    generations where the detector saw the object."""

    scenes: int
    steering: float
    steering_x: float
    steering_y: float
    mean_displacement: dict[str, list[float]]
    found: float
    per_scene: list[SceneSteering]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def direction_items(seed: int, height: int, width: int, num_frames: int) -> dict[str, SuiteItem]:
    """The four direction variants of one random object on a random background, captioned with the same draws and
    all seeded with ``seed`` (the same starting noise)."""
    rng = np.random.default_rng(seed)
    obj = {
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "color": tuple(PALETTE)[int(rng.integers(len(PALETTE)))],
        "size": tuple(SIZES)[int(rng.integers(len(SIZES)))],
    }
    background = tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    items = {}
    for direction in DIRECTIONS:
        spec = {"objects": [obj | {"motion": direction}], "background": background}
        scene = scene_from_prompt_spec(spec, seed, height, width, num_frames)
        items[direction] = SuiteItem(
            id=f"steering-{seed}-{direction}", suite="steering", task="t2v", prompt=scene.caption, split="train",
            spec=spec, scene=scene.to_dict(), num_frames=num_frames, height=height, width=width, seed=seed,
            fps=scene.fps, sample_rate=None,
        )
    return items


def _displacement(track: list) -> list[float]:
    points = [point for point in track if point is not None]
    if len(points) < 2:
        return [0.0, 0.0]
    return [float(points[-1][0] - points[0][0]), float(points[-1][1] - points[0][1])]


def _axis_steering(moved: float, moved_back: float, true_moved: float, true_moved_back: float) -> float:
    scale = abs(true_moved) + abs(true_moved_back)
    return (moved - moved_back) / scale if scale > 0 else 0.0


def motion_steering(
    generate_fn: GenerateFn,
    num_scenes: int = 8,
    seed: int = 0,
    height: int = 64,
    width: int = 64,
    num_frames: int = 17,
    progress: bool = True,
) -> SteeringReport:
    """Run the probe (see the module docstring) over ``num_scenes`` scenes with seeds ``seed * 1000 + i``."""
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    if num_frames < 5:
        raise ValueError(f"motion needs frames to move over: num_frames must be >= 5, got {num_frames}")
    per_scene = []
    for index in tqdm(range(num_scenes), desc="steering", disable=not progress):
        scene_seed = seed * 1000 + index
        items = direction_items(scene_seed, height, width, num_frames)
        displacement, true_displacement, found = {}, {}, {}
        for direction, item in items.items():
            truth = item.truth().shots[0].objects[0]
            detected = detect_scene(to_clip(generate_fn(item)).frames, shot_starts=[0])
            match = [obj for obj in detected.shots[0].objects if obj.color == truth.color]
            found[direction] = bool(match)
            displacement[direction] = _displacement(match[0].track) if match else [0.0, 0.0]
            true_displacement[direction] = [float(a - b) for a, b in zip(truth.track[-1], truth.track[0])]
        per_scene.append(
            SceneSteering(
                seed=scene_seed,
                captions={direction: item.prompt for direction, item in items.items()},
                displacement=displacement,
                true_displacement=true_displacement,
                found=found,
                steering_x=_axis_steering(
                    displacement["right"][0], displacement["left"][0],
                    true_displacement["right"][0], true_displacement["left"][0],
                ),
                steering_y=_axis_steering(
                    displacement["down"][1], displacement["up"][1],
                    true_displacement["down"][1], true_displacement["up"][1],
                ),
            )
        )
    steering_x = float(np.mean([row.steering_x for row in per_scene]))
    steering_y = float(np.mean([row.steering_y for row in per_scene]))
    return SteeringReport(
        scenes=num_scenes,
        steering=(steering_x + steering_y) / 2,
        steering_x=steering_x,
        steering_y=steering_y,
        mean_displacement={
            direction: np.mean([row.displacement[direction] for row in per_scene], axis=0).round(3).tolist()
            for direction in DIRECTIONS
        },
        found=float(np.mean([found for row in per_scene for found in row.found.values()])),
        per_scene=per_scene,
    )


def format_table(report: SteeringReport) -> str:
    """Steering per axis and the mean displacement per direction word."""
    lines = [
        f"steering {report.steering:+.3f} (x {report.steering_x:+.3f}, y {report.steering_y:+.3f}; 1 = as far as the "
        f"truth, 0 = words ignored) over {report.scenes} scenes, object found in {report.found:.0%} of generations",
        "word    mean dx   mean dy (pixels)",
    ]
    for direction, (dx, dy) in report.mean_displacement.items():
        lines.append(f"{direction:<6} {dx:+8.2f}  {dy:+8.2f}")
    return "\n".join(lines)
