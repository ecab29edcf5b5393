"""ShapesWorld: a procedural world of coloured shapes whose ground truth is known exactly.

A clip is a background colour plus one to three objects (a shape, a palette colour, a size and a motion) filmed in
one or more shots separated by hard cuts. Every clip carries its exact ground truth as a :class:`Scene`, which
serialises to the JSON dict stored in ``ClipRecord.metadata["scene"]`` and read back by ShapesBench.

Conventions (ShapesBench relies on them):

* Pixel coordinates: pixel ``(row i, column j)`` has its centre at ``(x=j, y=i)``, so the frame spans
  ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` and the centroid of an object's mask, in pixel indices, is its track point.
* ``radius_px`` is the *circumradius* of the drawn shape in pixels for that shot (after the camera zoom): a circle's
  radius, half the diagonal of an axis-aligned square (half side ``r / sqrt(2)``), and the circumradius of an
  equilateral triangle pointing up (apex at ``(cx, cy - r)``, base corners at ``(cx +- r * sqrt(3) / 2, cy + r / 2)``).
  The track point is the shape's centroid in all three cases.
* ``SIZES`` gives the circumradius as a fraction of ``min(H, W)`` in a wide shot; a close-up multiplies it by the
  shot's ``zoom``.
* Objects are drawn in list order (later objects cover earlier ones) with analytic anti-aliasing.
* Bounces: a bouncing object reflects off the walls (its shape's bounding box, kept ``WALL_MARGIN_PX`` inside the
  frame). A reflection at continuous time ``t*`` (frames since the shot start) is recorded at clip frame
  ``shot.start_frame + round(t*)``, the frame where the object is closest to the wall; its tone starts at
  ``frame / fps`` seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# name -> (RGB, tone frequency in Hz of a bounce): C5 upward in whole tones, so pitch identifies the colour.
PALETTE: dict[str, tuple[tuple[int, int, int], float]] = {
    "red": ((220, 40, 40), 523.25),
    "orange": ((245, 140, 20), 587.33),
    "yellow": ((240, 220, 30), 659.26),
    "green": ((40, 180, 60), 739.99),
    "cyan": ((30, 200, 220), 830.61),
    "blue": ((40, 70, 220), 932.33),
    "purple": ((150, 60, 200), 1046.50),
    "pink": ((245, 120, 190), 1174.66),
}
# Achromatic on purpose: colour segmentation of the objects never competes with the background.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (110, 110, 110),
    "dark gray": (55, 55, 55),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# size -> circumradius as a fraction of min(H, W) in a wide shot
SIZES: dict[str, float] = {"small": 0.12, "large": 0.2}
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "bouncing", "still")
# framing -> zoom factor applied to every object's radius in that shot
FRAMINGS: dict[str, float] = {"wide": 1.0, "close": 1.5}

DEFAULT_FPS = 8.0
DEFAULT_SAMPLE_RATE = 16000
# Objects keep this many pixels between their bounding box and the frame edge; walls sit there.
WALL_MARGIN_PX = 1.0


def valid_num_frames_hint(num_frames: int) -> str:
    lower = 1 + 4 * max((num_frames - 1) // 4, 0)
    return f"valid counts are 1 + 4k (1, 5, 9, 13, 17, ...); nearest: {lower} or {lower + 4}"


def check_num_frames(num_frames: int) -> int:
    """Return ``num_frames`` if it is ``1 + 4k`` (``k >= 0``), else raise a ValueError naming the valid counts."""
    if not isinstance(num_frames, (int,)) or isinstance(num_frames, bool) or num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 1 + 4k, got {num_frames!r}; {valid_num_frames_hint(int(num_frames))}")
    return num_frames


def shape_half_extents(shape: str, radius: float) -> tuple[float, float, float, float]:
    """Distances ``(left, right, top, bottom)`` from a shape's centroid to its bounding box edges, in pixels."""
    if shape == "circle":
        return radius, radius, radius, radius
    if shape == "square":
        half_side = radius / math.sqrt(2.0)
        return half_side, half_side, half_side, half_side
    if shape == "triangle":
        half_base = radius * math.sqrt(3.0) / 2.0
        return half_base, half_base, radius, radius / 2.0
    raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")


def _check_choice(kind: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid {kind}s: {', '.join(map(str, valid))}")


@dataclass
class SceneObject:
    """One object in one shot.

    Attributes:
        subject_id: identity; the same id in several shots is the same subject carried across the cut.
        shape, color, size, motion: names from ``SHAPES``, ``PALETTE``, ``SIZES``, ``MOTIONS``.
        rgb: the palette RGB of ``color``.
        radius_px: circumradius in pixels in this shot (size fraction * min(H, W) * shot zoom).
        speed_px_per_frame: speed along the path (0 for ``still``).
        track: ``[[cx, cy], ...]``, one centroid per frame of the shot, pixel coordinates (see module docstring).
        bounce_frames: clip frame indices (not shot-relative) at which the object reflected off a wall.
        visible_fraction: smallest fraction of the object's coverage left visible by objects drawn over it, over
            the frames of the shot (1.0 = never occluded); filled in by :func:`render_scene`, ``None`` before.
    """

    subject_id: int
    shape: str
    color: str
    size: str
    motion: str
    radius_px: float
    speed_px_per_frame: float
    track: list[list[float]]
    bounce_frames: list[int] = field(default_factory=list)
    rgb: tuple[int, int, int] | None = None
    visible_fraction: float | None = None

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("color", self.color, tuple(PALETTE))
        _check_choice("size", self.size, tuple(SIZES))
        _check_choice("motion", self.motion, MOTIONS)
        if self.rgb is None:
            self.rgb = PALETTE[self.color][0]
        self.rgb = tuple(int(c) for c in self.rgb)

    @property
    def frequency_hz(self) -> float:
        return PALETTE[self.color][1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "shape": self.shape,
            "color": self.color,
            "rgb": list(self.rgb),
            "size": self.size,
            "radius_px": self.radius_px,
            "motion": self.motion,
            "speed_px_per_frame": self.speed_px_per_frame,
            "track": [list(point) for point in self.track],
            "bounce_frames": list(self.bounce_frames),
            "visible_fraction": self.visible_fraction,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SceneObject":
        data = dict(data)
        data["rgb"] = tuple(data["rgb"]) if data.get("rgb") is not None else None
        data["track"] = [list(point) for point in data["track"]]
        return cls(**data)


@dataclass
class Shot:
    """A run of frames between hard cuts: ``[start_frame, start_frame + num_frames)`` of the clip."""

    start_frame: int
    num_frames: int
    objects: list[SceneObject]
    caption: str = ""
    framing: str = "wide"
    zoom: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("framing", self.framing, tuple(FRAMINGS))

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_frame": self.start_frame,
            "num_frames": self.num_frames,
            "caption": self.caption,
            "framing": self.framing,
            "zoom": self.zoom,
            "objects": [obj.to_dict() for obj in self.objects],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Shot":
        data = dict(data)
        data["objects"] = [SceneObject.from_dict(obj) for obj in data["objects"]]
        return cls(**data)


@dataclass
class AudioEvent:
    """A bounce tone: starts at ``time_s`` (= ``frame / fps``) with the pitch of the object's colour."""

    time_s: float
    frequency_hz: float
    color: str
    subject_id: int
    frame: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "frequency_hz": self.frequency_hz,
            "color": self.color,
            "subject_id": self.subject_id,
            "frame": self.frame,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AudioEvent":
        return cls(**data)


@dataclass
class Scene:
    """Exact ground truth of one ShapesWorld clip (or image when ``num_frames == 1``).

    ``audio_events`` lists every bounce tone of the world; it is rendered into a waveform only when
    ``sample_rate`` is set (``None`` means the clip has no audio track).
    """

    width: int
    height: int
    num_frames: int
    fps: float
    background: str
    shots: list[Shot]
    audio_events: list[AudioEvent] = field(default_factory=list)
    caption: str = ""
    sample_rate: int | None = None
    background_rgb: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        check_num_frames(self.num_frames)
        _check_choice("background", self.background, tuple(BACKGROUNDS))
        if self.background_rgb is None:
            self.background_rgb = BACKGROUNDS[self.background]
        self.background_rgb = tuple(int(c) for c in self.background_rgb)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"width and height must be positive, got {self.width}x{self.height}")
        covered = sum(shot.num_frames for shot in self.shots)
        if self.shots and covered != self.num_frames:
            raise ValueError(f"shots cover {covered} frames but the scene has num_frames={self.num_frames}")

    @property
    def shot_boundaries(self) -> list[int]:
        """First frame of every shot after the first (the hard cuts)."""
        return [shot.start_frame for shot in self.shots[1:]]

    @property
    def shot_captions(self) -> list[str]:
        return [shot.caption for shot in self.shots]

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "background": self.background,
            "background_rgb": list(self.background_rgb),
            "sample_rate": self.sample_rate,
            "shots": [shot.to_dict() for shot in self.shots],
            "audio_events": [event.to_dict() for event in self.audio_events],
            "caption": self.caption,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        data = dict(data)
        data["background_rgb"] = tuple(data["background_rgb"]) if data.get("background_rgb") is not None else None
        data["shots"] = [Shot.from_dict(shot) for shot in data["shots"]]
        data["audio_events"] = [AudioEvent.from_dict(event) for event in data.get("audio_events", [])]
        return cls(**data)
