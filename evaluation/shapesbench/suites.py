"""ShapesBench prompt suites: deterministic prompts with their exact ground truth.

Every suite is a JSONL file ``evaluation/suites/shapes_<name>.jsonl``; each line is one item::

    {"id": "single_object-003", "suite": "single_object", "task": "t2v", "prompt": "...", "split": "heldout",
     "spec": {...prompt spec...}, "scene": {...ground-truth scene...}, "num_frames": 17, "height": 64, "width": 64,
     "seed": 3, "fps": 8.0, "sample_rate": null}

``spec`` is what the prompt asks for (the input of :func:`seedkit.data.shapes.scene_from_prompt_spec`); ``scene`` is
the ground truth that spec and seed give at the item's size (positions, tracks, bounces, tones), used by the oracle,
by image-to-video conditioning (its first frame) and by the metrics. Items alternate between training caption
wording (``split="train"``) and held-out paraphrases (``split="heldout"``).

Regenerate the committed suites with ``python -m evaluation.shapesbench.suites --out evaluation/suites``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from seedkit.data.shapes import (
    BACKGROUNDS,
    MOTIONS,
    PALETTE,
    SHAPES,
    SIZES,
    Scene,
    render_scene,
    scene_from_prompt_spec,
)

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
DEFAULT_HEIGHT = 64
DEFAULT_WIDTH = 64
DEFAULT_NUM_FRAMES = 17
AUDIO_SAMPLE_RATE = 16000
ITEMS_PER_SUITE = 24


@dataclass
class SuiteItem:
    """One prompt of a suite (see the module docstring for the fields)."""

    id: str
    suite: str
    task: str
    prompt: str
    split: str
    spec: dict[str, Any]
    scene: dict[str, Any]
    num_frames: int
    height: int
    width: int
    seed: int
    fps: float
    sample_rate: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SuiteItem":
        missing = {name for name in cls.__dataclass_fields__} - set(data)
        if missing:
            raise ValueError(f"suite item {data.get('id', '?')!r} lacks fields {sorted(missing)}")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    def truth(self) -> Scene:
        return Scene.from_dict(self.scene)

    def conditioning_image(self) -> np.ndarray:
        """The ground truth's first frame, ``uint8 [H, W, 3]``: the image an image-to-video model starts from."""
        first_shot = self.truth()
        first_shot.num_frames = 1
        first_shot.shots = [first_shot.shots[0]]
        shot = first_shot.shots[0]
        shot.num_frames = 1
        for obj in shot.objects:
            obj.track = obj.track[:1]
        first_shot.sample_rate = None
        return render_scene(first_shot).frames[0]

    def as_image(self) -> "SuiteItem":
        """The same prompt as a text-to-image item: one frame, every object still.

        The prompt is kept word for word (a text-to-image model is asked for the same words, motion included), so a
        model's shape and colour accuracy can be compared between its images and its videos, and an image-only
        experiment read on the prompts a video suite uses. Only single-shot text-to-video items have an image form.
        """
        if self.task != "t2v" or "shots" in self.spec:
            raise ValueError(f"{self.id} is a {self.task} item with spec {self.spec}; only single-shot t2v items "
                             "have an image form")
        spec = dict(self.spec, objects=[dict(obj, motion="still") for obj in self.spec["objects"]])
        return replace(self, task="t2i", spec=spec, sample_rate=None).with_geometry(num_frames=1)

    def with_geometry(
        self, height: int | None = None, width: int | None = None, num_frames: int | None = None
    ) -> "SuiteItem":
        """The same prompt at another size: the ground truth is rebuilt from the spec and seed at that size."""
        height = height or self.height
        width = width or self.width
        num_frames = num_frames or self.num_frames
        if (height, width, num_frames) == (self.height, self.width, self.num_frames):
            return self
        spec = dict(self.spec)
        if "shots" in spec:
            # Shot lengths were fixed for the original frame count; let the generator place cuts for the new one.
            spec["shots"] = [{k: v for k, v in shot.items() if k != "num_frames"} for shot in spec["shots"]]
        scene = scene_from_prompt_spec(
            spec, self.seed, height, width, num_frames, fps=self.fps, sample_rate=self.sample_rate,
            caption_split=self.split,
        )
        scene.caption = self.prompt
        return SuiteItem(**(self.to_dict() | {
            "scene": scene.to_dict(), "height": height, "width": width, "num_frames": num_frames,
        }))


def _choice(rng: np.random.Generator, options) -> Any:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _object(rng: np.random.Generator, used: set[str], motion: str | None = None, still: bool = False) -> dict[str, Any]:
    color = _choice(rng, [name for name in PALETTE if name not in used])
    used.add(color)
    return {
        "shape": _choice(rng, SHAPES),
        "color": color,
        "size": _choice(rng, SIZES),
        "motion": "still" if still else (motion or _choice(rng, MOTIONS)),
    }


def _spec_single_object(rng, index):
    # Cycle through shapes and colours so the suite covers every one.
    return {
        "objects": [
            {
                "shape": SHAPES[index % len(SHAPES)],
                "color": tuple(PALETTE)[index % len(PALETTE)],
                "size": tuple(SIZES)[(index // len(SHAPES)) % len(SIZES)],
                "motion": _choice(rng, MOTIONS),
            }
        ],
        "background": _choice(rng, BACKGROUNDS),
    }


def _spec_two_objects(rng, index):
    used: set[str] = set()
    return {"objects": [_object(rng, used), _object(rng, used)], "background": _choice(rng, BACKGROUNDS)}


def _spec_motion(rng, index):
    used: set[str] = set()
    return {
        "objects": [_object(rng, used, motion=MOTIONS[index % len(MOTIONS)])],
        "background": _choice(rng, BACKGROUNDS),
    }


def _spec_multi_shot(rng, index):
    used: set[str] = set()
    subject = _object(rng, used) | {"subject_id": 0}
    first = [subject]
    if index % 2:
        first.append(_object(rng, used) | {"subject_id": 1})
    second_objects = [{"subject_id": 0, "motion": _choice(rng, MOTIONS)}]
    framing = "close" if index % 3 == 0 else "wide"
    if framing == "wide" and index % 4 == 1:
        second_objects.append(_object(rng, used) | {"subject_id": 2})
    return {
        "shots": [
            {"objects": first, "num_frames": 9},
            {"objects": second_objects, "framing": framing, "num_frames": 8},
        ],
        "background": _choice(rng, BACKGROUNDS),
    }


def _spec_image_to_video(rng, index):
    used: set[str] = set()
    objects = [_object(rng, used) for _ in range(1 + index % 2)]
    return {"objects": objects, "background": _choice(rng, BACKGROUNDS)}


def _spec_audio_video(rng, index):
    used: set[str] = set()
    objects = [_object(rng, used, motion="bouncing")]
    if index % 2:
        objects.append(_object(rng, used, motion=_choice(rng, ("bouncing", "still", "left", "up"))))
    return {"objects": objects, "background": _choice(rng, BACKGROUNDS)}


def _spec_image(rng, index):
    used: set[str] = set()
    return {
        "objects": [_object(rng, used, still=True) for _ in range(1 + index % 3)],
        "background": _choice(rng, BACKGROUNDS),
    }


@dataclass
class SuiteDefinition:
    task: str
    make_spec: Callable[[np.random.Generator, int], dict[str, Any]]
    num_frames: int = DEFAULT_NUM_FRAMES
    sample_rate: int | None = None


SUITES: dict[str, SuiteDefinition] = {
    "single_object": SuiteDefinition("t2v", _spec_single_object),
    "two_objects": SuiteDefinition("t2v", _spec_two_objects),
    "motion": SuiteDefinition("t2v", _spec_motion),
    "multi_shot": SuiteDefinition("t2v", _spec_multi_shot),
    "image_to_video": SuiteDefinition("i2v", _spec_image_to_video),
    "audio_video": SuiteDefinition("t2av", _spec_audio_video, sample_rate=AUDIO_SAMPLE_RATE),
    "image": SuiteDefinition("t2i", _spec_image, num_frames=1),
}


def build_suite(
    name: str,
    num_items: int = ITEMS_PER_SUITE,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    base_seed: int = 0,
) -> list[SuiteItem]:
    """Build suite ``name`` deterministically: item ``i`` uses seed ``base_seed * 10000 + i``."""
    if name not in SUITES:
        raise ValueError(f"unknown ShapesBench suite {name!r}; valid suites: {', '.join(SUITES)}")
    definition = SUITES[name]
    items = []
    for index in range(num_items):
        seed = base_seed * 10000 + index
        rng = np.random.default_rng([seed, list(SUITES).index(name)])
        spec = definition.make_spec(rng, index)
        split = "train" if index % 2 == 0 else "heldout"
        scene = scene_from_prompt_spec(
            spec, seed, height, width, definition.num_frames, sample_rate=definition.sample_rate, caption_split=split
        )
        items.append(
            SuiteItem(
                id=f"{name}-{index:03d}",
                suite=name,
                task=definition.task,
                prompt=scene.caption,
                split=split,
                spec=spec,
                scene=scene.to_dict(),
                num_frames=definition.num_frames,
                height=height,
                width=width,
                seed=seed,
                fps=scene.fps,
                sample_rate=definition.sample_rate,
            )
        )
    return items


def suite_path(name: str, directory: str | os.PathLike = SUITES_DIR) -> Path:
    return Path(directory) / f"shapes_{name}.jsonl"


def write_suite(items: Iterable[SuiteItem], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "w") as handle:
        for item in items:
            handle.write(json.dumps(item.to_dict(), sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def load_suite(name_or_path: str | os.PathLike, directory: str | os.PathLike = SUITES_DIR) -> list[SuiteItem]:
    """Load a suite by name (``single_object`` or ``shapes_single_object``) or by path to a JSONL file."""
    path = Path(name_or_path)
    if path.suffix != ".jsonl":
        name = str(name_or_path).removeprefix("shapes_")
        path = suite_path(name, directory)
        if not path.exists():
            available = sorted(p.stem.removeprefix("shapes_") for p in Path(directory).glob("shapes_*.jsonl"))
            raise FileNotFoundError(f"no ShapesBench suite {name_or_path!r} in {directory}; available: {available}")
    items = []
    with open(path) as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                items.append(SuiteItem.from_dict(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError) as error:
                raise ValueError(f"{path}:{line_number}: not a ShapesBench suite item ({error})") from error
    return items


def available_suites(directory: str | os.PathLike = SUITES_DIR) -> list[str]:
    return sorted(p.stem.removeprefix("shapes_") for p in Path(directory).glob("shapes_*.jsonl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the ShapesBench prompt suites (deterministic).")
    parser.add_argument("--out", default=str(SUITES_DIR), help="directory for shapes_<suite>.jsonl")
    parser.add_argument("--items", type=int, default=ITEMS_PER_SUITE, help="items per suite")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    parser.add_argument("--suite", action="append", choices=list(SUITES), help="only these suites (repeatable)")
    parser.add_argument("--base-seed", type=int, default=0,
                        help="item seeds start at base_seed * 10000; the bundled suites use 0, so another value "
                             "gives a disjoint dev suite for checkpoint selection")
    parser.add_argument("--as-images", action="store_true",
                        help="write each (single-shot text-to-video) suite's prompts as text-to-image items, one "
                             "frame with every object still, to shapes_<suite>_images.jsonl")
    args = parser.parse_args(argv)
    for name in args.suite or list(SUITES):
        items = build_suite(name, args.items, args.height, args.width, base_seed=args.base_seed)
        if args.as_images:
            items = [item.as_image() for item in items]
            name = f"{name}_images"
        path = write_suite(items, suite_path(name, args.out))
        print(f"{path}: {len(items)} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
