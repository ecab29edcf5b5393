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
* Colours are distinct within a clip, so a colour names one subject; every object keeps at least
  ``min_visible_fraction`` (0.5) of its area visible (``SceneObject.visible_fraction`` records the minimum).
* Multi-shot clips cut at frames ``1 + 4j`` (a causal-VAE latent frame never straddles a cut), every shot has at
  least 4 frames, and a carried subject jumps by at least its radius at the cut.

Entry points: :func:`sample_scene` (random scene), :func:`scene_from_prompt_spec` (scene from named attributes),
:func:`render_scene` (frames + audio), :func:`caption_for` (train / held-out captions),
:func:`write_shapes_dataset` (sharded, resumable dataset with a manifest; in :mod:`.shapes_writers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seedkit.data.shapes_audio import render_audio
from seedkit.data.shapes_captions import apply_captions, caption_for, caption_scene

__all__ = [
    "PALETTE", "BACKGROUNDS", "SHAPES", "SIZES", "MOTIONS", "FRAMINGS", "DEFAULT_FPS", "DEFAULT_SAMPLE_RATE",
    "WALL_MARGIN_PX", "MIN_SHOT_FRAMES", "SceneObject", "Shot", "AudioEvent", "Scene", "RenderedClip",
    "check_num_frames", "shape_half_extents", "render_coverage", "sample_scene", "scene_from_prompt_spec",
    "render_scene", "caption_for", "caption_scene", "apply_captions", "render_audio", "write_shapes_dataset",
    "write_clip", "scene_record",
]
# Writers live in shapes_writers (which imports this module); they are re-exported lazily to avoid the cycle.
_LAZY_WRITERS = ("write_shapes_dataset", "write_clip", "scene_record", "ShapesDatasetSummary")


def __getattr__(name: str):
    if name in _LAZY_WRITERS:
        from seedkit.data import shapes_writers

        return getattr(shapes_writers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# ---------------------------------------------------------------------------------------------------------------------
# Motion: tracks and bounces
# ---------------------------------------------------------------------------------------------------------------------

# Speeds are fractions of min(H, W) per frame, so a clip looks the same at every resolution.
DIRECTIONAL_SPEED_RANGE = (0.025, 0.05)
BOUNCING_SPEED_RANGE = (0.04, 0.07)
# Bouncing objects travel at this many degrees from the horizontal (never axis-aligned, so they read as diagonal).
BOUNCING_ANGLE_RANGE = (25.0, 65.0)
_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclass
class _Walls:
    """Range of centroid positions that keeps a shape's bounding box inside the frame (with the wall margin)."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float


def _walls(shape: str, radius: float, height: int, width: int) -> _Walls:
    left, right, top, bottom = shape_half_extents(shape, radius)
    walls = _Walls(
        x_low=-0.5 + WALL_MARGIN_PX + left,
        x_high=width - 0.5 - WALL_MARGIN_PX - right,
        y_low=-0.5 + WALL_MARGIN_PX + top,
        y_high=height - 0.5 - WALL_MARGIN_PX - bottom,
    )
    if walls.x_high < walls.x_low or walls.y_high < walls.y_low:
        raise ValueError(
            f"a {shape} of radius {radius:.1f} px does not fit a {height}x{width} frame; "
            f"use a larger frame (min side >= 16 px is safe) or a smaller size"
        )
    return walls


def _fold(unfolded: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect positions on an unbounded line into ``[low, high]`` (a point bouncing between two walls)."""
    span = high - low
    if span <= 0:
        return np.full_like(unfolded, low)
    phase = np.mod(unfolded - low, 2.0 * span)
    return low + np.where(phase <= span, phase, 2.0 * span - phase)


def _contact_times(start: float, velocity: float, low: float, high: float, duration: float) -> list[float]:
    """Times ``t`` in ``(0, duration]`` at which ``start + velocity * t`` (unfolded) hits a wall."""
    span = high - low
    if velocity == 0 or span <= 0:
        return []
    end = start + velocity * duration
    first_index = math.floor((min(start, end) - low) / span)
    last_index = math.ceil((max(start, end) - low) / span)
    times = []
    for index in range(first_index, last_index + 1):
        time = (low + index * span - start) / velocity
        if 0 < time <= duration:
            times.append(time)
    return sorted(times)


@dataclass
class _Path:
    track: np.ndarray  # float64 [n, 2]
    contacts: list[float]  # shot-relative contact times (frames), sorted
    speed: float


def _sample_path(rng: np.random.Generator, motion: str, walls: _Walls, num_frames: int, scale: float) -> _Path:
    """Sample a start position and velocity for ``motion`` whose whole path over ``num_frames`` stays in the walls."""
    times = np.arange(num_frames, dtype=np.float64)
    duration = float(num_frames - 1)
    span_x = walls.x_high - walls.x_low
    span_y = walls.y_high - walls.y_low
    if motion == "still" or num_frames == 1:
        x = rng.uniform(walls.x_low, walls.x_high)
        y = rng.uniform(walls.y_low, walls.y_high)
        return _Path(np.tile([x, y], (num_frames, 1)), [], 0.0)
    if motion in _DIRECTIONS:
        direction_x, direction_y = _DIRECTIONS[motion]
        span_along = span_x if direction_x else span_y
        speed = rng.uniform(*DIRECTIONAL_SPEED_RANGE) * scale
        # Cap the speed so the whole path fits, leaving room to place the start randomly.
        speed = min(speed, 0.9 * span_along / duration)
        travel = speed * duration
        x = rng.uniform(walls.x_low + max(-direction_x, 0) * travel, walls.x_high - max(direction_x, 0) * travel)
        y = rng.uniform(walls.y_low + max(-direction_y, 0) * travel, walls.y_high - max(direction_y, 0) * travel)
        track = np.stack([x + direction_x * speed * times, y + direction_y * speed * times], axis=1)
        return _Path(track, [], speed)
    if motion != "bouncing":
        raise ValueError(f"unknown motion {motion!r}; valid motions: {', '.join(MOTIONS)}")
    speed = rng.uniform(*BOUNCING_SPEED_RANGE) * scale
    best = None
    for _ in range(64):
        angle = math.radians(rng.uniform(*BOUNCING_ANGLE_RANGE))
        velocity_x = speed * math.cos(angle) * rng.choice([-1.0, 1.0])
        velocity_y = speed * math.sin(angle) * rng.choice([-1.0, 1.0])
        # Place the first contact of one axis inside the clip so a bouncing object is seen to bounce.
        first_contact = rng.uniform(0.2, 0.7) * duration
        if rng.random() < 0.5:
            wall = walls.x_high if velocity_x > 0 else walls.x_low
            start_x = wall - velocity_x * first_contact
            start_y = rng.uniform(walls.y_low, walls.y_high)
        else:
            wall = walls.y_high if velocity_y > 0 else walls.y_low
            start_y = wall - velocity_y * first_contact
            start_x = rng.uniform(walls.x_low, walls.x_high)
        contacts = sorted(
            _contact_times(start_x, velocity_x, walls.x_low, walls.x_high, duration + 1.0)
            + _contact_times(start_y, velocity_y, walls.y_low, walls.y_high, duration + 1.0)
        )
        # A contact must leave one frame on either side so the reversal is visible in the track.
        clean = all(1.0 <= t <= duration - 1.0 or t > duration for t in contacts)
        counted = [t for t in contacts if t <= duration]
        best = (start_x, start_y, velocity_x, velocity_y, counted)
        if clean and counted:
            break
    start_x, start_y, velocity_x, velocity_y, counted = best
    track = np.stack(
        [
            _fold(start_x + velocity_x * times, walls.x_low, walls.x_high),
            _fold(start_y + velocity_y * times, walls.y_low, walls.y_high),
        ],
        axis=1,
    )
    return _Path(track, counted, speed)


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------

_SQRT3_HALF = math.sqrt(3.0) / 2.0


@dataclass
class _Window:
    """Per-frame pixel windows ``[y0, y0 + height) x [x0, x0 + width)`` that hold all of an object's coverage."""

    x0: np.ndarray  # int [n]
    y0: np.ndarray  # int [n]
    height: int
    width: int


def _window(radius: float, centers: np.ndarray, frame_height: int, frame_width: int) -> _Window:
    """The smallest fixed-size windows that contain every pixel a shape of circumradius ``radius`` touches.

    Coverage is zero beyond one pixel outside the circumcircle (the anti-aliasing ramp is half a pixel wide), so a
    ``ceil(2 r) + 3`` pixel square around the centre holds it all; windows are shifted (not cut) at frame edges.
    """
    size = int(math.ceil(2.0 * radius)) + 3
    height, width = min(size, frame_height), min(size, frame_width)
    x0 = np.clip(np.floor(centers[:, 0] - radius).astype(np.int64) - 1, 0, frame_width - width)
    y0 = np.clip(np.floor(centers[:, 1] - radius).astype(np.int64) - 1, 0, frame_height - height)
    return _Window(x0=x0, y0=y0, height=height, width=width)


def _coverage(shape: str, radius: float, centers: np.ndarray, window: _Window) -> np.ndarray:
    """Anti-aliased coverage ``float32 [n, h, w]`` in [0, 1] of a shape centred at ``centers`` (``[n, 2]``), on the
    pixels of ``window``.

    Coverage is ``clip(0.5 - d, 0, 1)`` with ``d`` the signed distance (pixels) from the pixel centre to the shape's
    edge: exact area coverage for a straight edge crossing a pixel along an axis, a one-pixel ramp otherwise.
    """
    columns = (window.x0[:, None] + np.arange(window.width)[None, :]).astype(np.float32)  # [n, w]
    rows = (window.y0[:, None] + np.arange(window.height)[None, :]).astype(np.float32)  # [n, h]
    delta_x = columns[:, None, :] - centers[:, 0, None, None].astype(np.float32)  # [n, 1, w]
    delta_y = rows[:, :, None] - centers[:, 1, None, None].astype(np.float32)  # [n, h, 1]
    if shape == "circle":
        distance = np.sqrt(delta_x * delta_x + delta_y * delta_y) - radius
    elif shape == "square":
        distance = np.maximum(np.abs(delta_x), np.abs(delta_y)) - radius / math.sqrt(2.0)
    elif shape == "triangle":
        # Edges of an up-pointing equilateral triangle sit at the inradius r / 2 from the centroid.
        inradius = radius / 2.0
        bottom = delta_y - inradius
        right = _SQRT3_HALF * delta_x - 0.5 * delta_y - inradius
        left = -_SQRT3_HALF * delta_x - 0.5 * delta_y - inradius
        distance = np.maximum(np.maximum(bottom, right), left)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")
    coverage = np.subtract(np.float32(0.5), distance, dtype=np.float32)
    np.clip(coverage, 0.0, 1.0, out=coverage)
    return coverage


def render_coverage(obj: SceneObject, height: int, width: int) -> np.ndarray:
    """Full-frame anti-aliased coverage ``float32 [n, H, W]`` of one object over the frames of its shot (alone,
    ignoring occlusion): the alpha ShapesWorld composites ``obj.rgb`` with."""
    centers = np.asarray(obj.track, dtype=np.float64)
    full = _Window(x0=np.zeros(len(centers), np.int64), y0=np.zeros(len(centers), np.int64), height=height, width=width)
    return _coverage(obj.shape, obj.radius_px, centers, full)


def _window_index(window: _Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fancy indices ``(frame, row, column)`` that gather the windows of a chunk as ``[n, h, w]``."""
    frames = np.arange(len(window.x0))[:, None, None]
    rows = (window.y0[:, None] + np.arange(window.height)[None, :])[:, :, None]
    columns = (window.x0[:, None] + np.arange(window.width)[None, :])[:, None, :]
    return frames, rows, columns


def _shot_visible_fractions(shot: Shot, height: int, width: int) -> list[float]:
    """Per object, the smallest share (over the shot's frames) of its coverage not hidden by objects drawn after it.

    Later objects' coverage is evaluated on each object's own window, so the cost does not grow with the frame size.
    """
    fractions = [1.0] * len(shot.objects)
    tracks = [np.asarray(obj.track, dtype=np.float64) for obj in shot.objects]
    for index, obj in enumerate(shot.objects[:-1]):
        window = _window(obj.radius_px, tracks[index], height, width)
        alpha = _coverage(obj.shape, obj.radius_px, tracks[index], window)
        uncovered = np.ones_like(alpha)
        for later, track in zip(shot.objects[index + 1 :], tracks[index + 1 :]):
            uncovered *= 1.0 - _coverage(later.shape, later.radius_px, track, window)
        total = alpha.sum(axis=(1, 2))
        visible = (alpha * uncovered).sum(axis=(1, 2))
        per_frame = np.where(total > 0, visible / np.maximum(total, 1e-12), 1.0)
        fractions[index] = float(per_frame.min())
    return fractions


def _render_shot_frames(
    shot: Shot, height: int, width: int, background_rgb: tuple[int, int, int], chunk_frames: int
) -> np.ndarray:
    """Frames ``uint8 [n, H, W, 3]`` of one shot: objects composited over the background in list order.

    Each object is drawn only inside its per-frame window, so rendering cost scales with object area, not frame area.
    """
    frames = np.empty((shot.num_frames, height, width, 3), dtype=np.uint8)
    background = np.asarray(background_rgb, dtype=np.float32)
    tracks = [np.asarray(obj.track, dtype=np.float64) for obj in shot.objects]
    for start in range(0, shot.num_frames, chunk_frames):
        stop = min(start + chunk_frames, shot.num_frames)
        image = np.empty((stop - start, height, width, 3), dtype=np.float32)
        image[...] = background
        for obj, track in zip(shot.objects, tracks):
            window = _window(obj.radius_px, track[start:stop], height, width)
            alpha = _coverage(obj.shape, obj.radius_px, track[start:stop], window)
            index = _window_index(window)
            patch = image[index]  # [n, h, w, 3]
            patch += alpha[..., None] * (np.asarray(obj.rgb, dtype=np.float32) - patch)
            image[index] = patch
        np.rint(image, out=image)
        frames[start:stop] = image.astype(np.uint8)
    return frames


@dataclass
class RenderedClip:
    """A rendered scene.

    Attributes:
        frames: ``uint8 [F, H, W, 3]`` RGB.
        audio: ``float32 [1, S]`` in [-1, 1] with ``S = round(F / fps * sample_rate)``, or ``None`` when the scene
            has no audio (``scene.sample_rate is None``).
        sample_rate: audio rate in Hz or ``None``.
        fps: frame rate.
    """

    frames: np.ndarray
    audio: np.ndarray | None
    sample_rate: int | None
    fps: float


def render_scene(scene: Scene, chunk_pixels: int = 1 << 22) -> RenderedClip:
    """Render a scene's frames (and its audio when ``scene.sample_rate`` is set). Deterministic, no randomness.

    ``chunk_pixels`` bounds the float32 working set (frames are rendered in chunks of about this many pixels).
    """
    chunk_frames = max(1, chunk_pixels // (scene.height * scene.width))
    frames = np.empty((scene.num_frames, scene.height, scene.width, 3), dtype=np.uint8)
    for shot in scene.shots:
        frames[shot.start_frame : shot.start_frame + shot.num_frames] = _render_shot_frames(
            shot, scene.height, scene.width, scene.background_rgb, chunk_frames
        )
    audio = None
    if scene.sample_rate is not None:
        audio = render_audio(scene.audio_events, scene.num_frames, scene.fps, scene.sample_rate)
    return RenderedClip(frames=frames, audio=audio, sample_rate=scene.sample_rate, fps=scene.fps)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling scenes
# ---------------------------------------------------------------------------------------------------------------------

_OBJECT_SPEC_KEYS = ("shape", "color", "size", "motion", "subject_id")
_SHOT_SPEC_KEYS = ("objects", "framing", "num_frames")
_SCENE_SPEC_KEYS = ("objects", "shots", "background", "caption")
# Minimum shot length; cuts fall on frames 1 + 4j so no latent frame of the causal VAE straddles a cut.
MIN_SHOT_FRAMES = 4
MAX_SCENE_ATTEMPTS = 16  # sample_scene redraws a scene whose objects cannot be placed


def _shot_starts(rng: np.random.Generator, num_frames: int, num_shots: int) -> list[int]:
    """Start frames of ``num_shots`` shots; cuts at frames ``1 + 4j`` so every shot has at least 4 frames."""
    if num_shots < 1:
        raise ValueError(f"num_shots must be >= 1, got {num_shots}")
    if num_shots == 1:
        return [0]
    latent_groups = (num_frames - 1) // 4
    if latent_groups < num_shots:
        raise ValueError(
            f"a {num_shots}-shot clip needs at least {1 + 4 * num_shots} frames (cuts at frames 1 + 4j, every shot "
            f">= {MIN_SHOT_FRAMES} frames), got num_frames={num_frames}"
        )
    cut_groups = np.sort(rng.choice(np.arange(1, latent_groups), size=num_shots - 1, replace=False))
    return [0] + [1 + 4 * int(group) for group in cut_groups]


def _fill_object_spec(
    rng: np.random.Generator, spec: dict[str, Any], used_colors: set[str], is_image: bool
) -> dict[str, Any]:
    """Complete an object spec: attributes not given are drawn at random (colours distinct within a clip)."""
    unknown = set(spec) - set(_OBJECT_SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown object attributes {sorted(unknown)}; valid: {', '.join(_OBJECT_SPEC_KEYS)}")
    filled = dict(spec)
    if "shape" not in filled:
        filled["shape"] = SHAPES[int(rng.integers(len(SHAPES)))]
    if "color" not in filled:
        free = [name for name in PALETTE if name not in used_colors]
        if not free:
            raise ValueError(f"all {len(PALETTE)} palette colours are already used in this clip")
        filled["color"] = free[int(rng.integers(len(free)))]
    if "size" not in filled:
        filled["size"] = tuple(SIZES)[int(rng.integers(len(SIZES)))]
    if "motion" not in filled:
        filled["motion"] = "still" if is_image else MOTIONS[int(rng.integers(len(MOTIONS)))]
    _check_choice("shape", filled["shape"], SHAPES)
    _check_choice("color", filled["color"], tuple(PALETTE))
    _check_choice("size", filled["size"], tuple(SIZES))
    _check_choice("motion", filled["motion"], MOTIONS)
    if is_image and filled["motion"] != "still":
        raise ValueError(f"an image (num_frames=1) cannot show motion {filled['motion']!r}; use 'still'")
    return filled


class PlacementError(ValueError):
    """The objects of a shot cannot be placed so that each is visible enough (and carried subjects visibly jump)."""


def _build_shot(
    rng: np.random.Generator,
    object_specs: list[dict[str, Any]],
    start_frame: int,
    num_frames: int,
    framing: str,
    height: int,
    width: int,
    previous_shot: Shot | None,
    min_visible_fraction: float,
    max_attempts: int = 32,
) -> Shot:
    """Place the objects of one shot, resampling positions until every object is visible enough and, after a cut,
    carried subjects jump by at least their radius (so the cut is a real discontinuity)."""
    _check_choice("framing", framing, tuple(FRAMINGS))
    zoom = FRAMINGS[framing]
    scale = float(min(height, width))
    previous_end = {}
    if previous_shot is not None:
        previous_end = {obj.subject_id: (obj.track[-1], obj.radius_px) for obj in previous_shot.objects}
    shot = None
    for _ in range(max_attempts):
        objects = []
        for spec in object_specs:
            radius = SIZES[spec["size"]] * scale * zoom
            walls = _walls(spec["shape"], radius, height, width)
            path = _sample_path(rng, spec["motion"], walls, num_frames, scale)
            bounce_frames = sorted({start_frame + int(round(t)) for t in path.contacts})
            objects.append(
                SceneObject(
                    subject_id=int(spec["subject_id"]),
                    shape=spec["shape"],
                    color=spec["color"],
                    size=spec["size"],
                    motion=spec["motion"],
                    radius_px=round(radius, 4),
                    speed_px_per_frame=round(path.speed, 4),
                    track=np.round(path.track, 3).tolist(),
                    bounce_frames=bounce_frames,
                )
            )
        shot = Shot(start_frame=start_frame, num_frames=num_frames, objects=objects, framing=framing, zoom=zoom)
        visible = _shot_visible_fractions(shot, height, width)
        for obj, fraction in zip(objects, visible):
            obj.visible_fraction = round(float(fraction), 4)
        jumps = all(
            math.dist(obj.track[0], previous_end[obj.subject_id][0])
            >= max(obj.radius_px, previous_end[obj.subject_id][1])
            for obj in objects
            if obj.subject_id in previous_end
        )
        if min(visible) >= min_visible_fraction and jumps:
            return shot
    raise PlacementError(
        f"could not place {len(object_specs)} object(s) in a {height}x{width} {framing} shot within {max_attempts} "
        f"attempts with every object at least {min_visible_fraction:.0%} visible"
        + (" and carried subjects jumping at the cut" if previous_end else "")
        + "; use fewer or smaller objects, a larger frame, or a lower min_visible_fraction"
    )


def _audio_events(shots: list[Shot], fps: float) -> list[AudioEvent]:
    events = [
        AudioEvent(
            time_s=round(frame / fps, 6),
            frequency_hz=obj.frequency_hz,
            color=obj.color,
            subject_id=obj.subject_id,
            frame=frame,
        )
        for shot in shots
        for obj in shot.objects
        for frame in obj.bounce_frames
    ]
    return sorted(events, key=lambda event: (event.frame, event.subject_id))


def _check_geometry(height: int, width: int, num_frames: int, fps: float, sample_rate: int | None) -> None:
    check_num_frames(num_frames)
    if min(height, width) < 8:
        raise ValueError(f"ShapesWorld frames need both sides >= 8 px, got {height}x{width}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz or None (no audio), got {sample_rate}")


def _assemble_scene(
    rng: np.random.Generator,
    shot_specs: list[tuple[list[dict[str, Any]], str, int, int]],
    *,
    height: int,
    width: int,
    num_frames: int,
    fps: float,
    background: str,
    sample_rate: int | None,
    caption_split: str | None,
    min_visible_fraction: float,
) -> Scene:
    shots: list[Shot] = []
    for object_specs, framing, start_frame, shot_frames in shot_specs:
        previous = shots[-1] if shots else None
        shots.append(
            _build_shot(
                rng, object_specs, start_frame, shot_frames, framing, height, width, previous,
                min_visible_fraction,
            )
        )
    scene = Scene(
        width=width,
        height=height,
        num_frames=num_frames,
        fps=float(fps),
        background=background,
        shots=shots,
        audio_events=_audio_events(shots, fps),
        sample_rate=None if sample_rate is None else int(sample_rate),
    )
    if caption_split is not None:
        apply_captions(scene, rng, caption_split)
    return scene


def sample_scene(
    rng: np.random.Generator,
    height: int = 64,
    width: int = 64,
    num_frames: int = 17,
    *,
    fps: float = DEFAULT_FPS,
    num_shots: int = 1,
    min_objects: int = 1,
    max_objects: int = 3,
    sample_rate: int | None = None,
    background: str | None = None,
    caption_split: str = "train",
    min_visible_fraction: float = 0.5,
) -> Scene:
    """Draw a random scene (ground truth plus captions) from ``rng``; the same generator state gives the same scene.

    Args:
        rng: numpy ``Generator``, the only source of randomness.
        height, width: frame size in pixels (any aspect ratio, both sides >= 8).
        num_frames: ``1 + 4k``; 1 makes an image (every object ``still``).
        fps: frame rate recorded in the scene (bounce tone times are ``frame / fps``).
        num_shots: shots separated by hard cuts; later shots carry one or all subjects of the previous shot
            ("the same red circle ...") and may change the framing (``"close"`` zooms by ``FRAMINGS["close"]``).
        min_objects, max_objects: object count range of the first shot (1 to 3 in the default world).
        sample_rate: audio rate in Hz, or ``None`` for a clip without an audio track.
        background: a ``BACKGROUNDS`` name, random when ``None``.
        caption_split: ``"train"`` or ``"heldout"`` caption templates.
        min_visible_fraction: positions are resampled until no object is hidden more than this by others.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    _check_geometry(height, width, num_frames, fps, sample_rate)
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects} and {max_objects}")
    if num_frames == 1 and num_shots != 1:
        raise ValueError("an image (num_frames=1) has exactly one shot; pass num_shots=1")
    if background is None:
        background = tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    _check_choice("background", background, tuple(BACKGROUNDS))
    for attempt in range(MAX_SCENE_ATTEMPTS):
        try:
            return _sample_scene_once(
                rng, height, width, num_frames, fps, num_shots, min_objects, max_objects, sample_rate, background,
                caption_split, min_visible_fraction,
            )
        except PlacementError:
            if attempt == MAX_SCENE_ATTEMPTS - 1:
                raise
            # Crowded close-ups can be unplaceable: draw other objects.


def _sample_scene_once(
    rng, height, width, num_frames, fps, num_shots, min_objects, max_objects, sample_rate, background,
    caption_split, min_visible_fraction,
) -> Scene:
    is_image = num_frames == 1
    starts = _shot_starts(rng, num_frames, num_shots)
    lengths = [end - start for start, end in zip(starts, starts[1:] + [num_frames])]

    used_colors: set[str] = set()
    first_objects = []
    for subject_id in range(int(rng.integers(min_objects, max_objects + 1))):
        spec = _fill_object_spec(rng, {"subject_id": subject_id}, used_colors, is_image)
        used_colors.add(spec["color"])
        first_objects.append(spec)
    shot_specs = [(first_objects, "wide", starts[0], lengths[0])]
    next_subject_id = len(first_objects)
    for start, length in zip(starts[1:], lengths[1:]):
        previous_objects, previous_framing = shot_specs[-1][0], shot_specs[-1][1]
        framing = "wide" if previous_framing == "close" or rng.random() < 0.5 else "close"
        if len(previous_objects) > 1 and rng.random() < 0.3:
            carried = list(previous_objects)
        else:
            carried = [previous_objects[int(rng.integers(len(previous_objects)))]]
        objects = [
            _fill_object_spec(rng, {k: obj[k] for k in ("subject_id", "shape", "color", "size")}, used_colors, False)
            for obj in carried
        ]
        if framing == "wide" and len(objects) < max_objects and rng.random() < 0.5:
            spec = _fill_object_spec(rng, {"subject_id": next_subject_id}, used_colors, False)
            used_colors.add(spec["color"])
            next_subject_id += 1
            objects.append(spec)
        shot_specs.append((objects, framing, start, length))
    return _assemble_scene(
        rng,
        shot_specs,
        height=height,
        width=width,
        num_frames=num_frames,
        fps=fps,
        background=background,
        sample_rate=sample_rate,
        caption_split=caption_split,
        min_visible_fraction=min_visible_fraction,
    )


def scene_from_prompt_spec(
    spec: dict[str, Any],
    rng: np.random.Generator | int = 0,
    height: int = 64,
    width: int = 64,
    num_frames: int = 17,
    *,
    fps: float = DEFAULT_FPS,
    sample_rate: int | None = None,
    caption_split: str = "train",
    min_visible_fraction: float = 0.5,
) -> Scene:
    """Build a scene from explicit attributes; whatever the spec leaves out is drawn from ``rng`` (or a seed).

    Single shot::

        {"objects": [{"shape": "circle", "color": "red", "size": "large", "motion": "left"}], "background": "black"}

    Multi-shot (objects of later shots that repeat an earlier ``subject_id`` are that subject, carried across the
    cut; attributes they leave out are copied from it, and attributes they give must match)::

        {"shots": [{"objects": [{"subject_id": 0, "color": "red", "shape": "circle"}]},
                   {"objects": [{"subject_id": 0, "motion": "up"}], "framing": "close"}],
         "background": "black"}

    A shot may give ``num_frames`` (then every shot must, summing to ``num_frames``); otherwise cuts fall at random
    frames ``1 + 4j``. ``"caption"`` in the spec replaces the generated whole-clip caption.
    """
    if isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(int(rng))
    _check_geometry(height, width, num_frames, fps, sample_rate)
    unknown = set(spec) - set(_SCENE_SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown prompt spec keys {sorted(unknown)}; valid: {', '.join(_SCENE_SPEC_KEYS)}")
    if ("objects" in spec) == ("shots" in spec):
        raise ValueError("a prompt spec needs exactly one of 'objects' (one shot) or 'shots' (a list of shots)")
    shot_entries = spec["shots"] if "shots" in spec else [{"objects": spec["objects"]}]
    if not shot_entries:
        raise ValueError("a prompt spec needs at least one shot")
    for entry in shot_entries:
        unknown = set(entry) - set(_SHOT_SPEC_KEYS)
        if unknown:
            raise ValueError(f"unknown shot keys {sorted(unknown)}; valid: {', '.join(_SHOT_SPEC_KEYS)}")
        if not entry.get("objects"):
            raise ValueError("every shot of a prompt spec needs a non-empty 'objects' list")
    is_image = num_frames == 1
    if is_image and len(shot_entries) != 1:
        raise ValueError("an image (num_frames=1) has exactly one shot")
    given_lengths = [entry.get("num_frames") for entry in shot_entries]
    if any(length is not None for length in given_lengths):
        if any(length is None for length in given_lengths) or sum(given_lengths) != num_frames:
            raise ValueError(
                f"shot num_frames must be given for every shot and sum to num_frames={num_frames}, got {given_lengths}"
            )
        starts = [int(s) for s in np.cumsum([0] + given_lengths[:-1])]
        lengths = [int(n) for n in given_lengths]
    else:
        starts = _shot_starts(rng, num_frames, len(shot_entries))
        lengths = [end - start for start, end in zip(starts, starts[1:] + [num_frames])]
    background = spec.get("background")
    if background is None:
        background = tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    _check_choice("background", background, tuple(BACKGROUNDS))

    # Colours named anywhere in the spec are reserved so randomly drawn colours never duplicate them.
    used_colors = {obj["color"] for entry in shot_entries for obj in entry["objects"] if "color" in obj}
    subjects: dict[int, dict[str, Any]] = {}
    explicit_ids = {int(obj["subject_id"]) for entry in shot_entries for obj in entry["objects"] if "subject_id" in obj}
    next_subject_id = 0
    shot_specs = []
    for index, (entry, start, length) in enumerate(zip(shot_entries, starts, lengths)):
        objects = []
        for obj in entry["objects"]:
            obj = dict(obj)
            if "subject_id" in obj and int(obj["subject_id"]) in subjects:
                known = subjects[int(obj["subject_id"])]
                for key in ("shape", "color", "size"):
                    if key in obj and obj[key] != known[key]:
                        raise ValueError(
                            f"subject {obj['subject_id']} is a {known['size']} {known['color']} {known['shape']}; "
                            f"a later shot cannot change its {key} to {obj[key]!r}"
                        )
                    obj[key] = known[key]
            elif "subject_id" not in obj:
                while next_subject_id in explicit_ids or next_subject_id in subjects:
                    next_subject_id += 1
                obj["subject_id"] = next_subject_id
            filled = _fill_object_spec(rng, obj, used_colors, is_image)
            used_colors.add(filled["color"])
            subjects.setdefault(int(filled["subject_id"]), filled)
            objects.append(filled)
        framing = entry.get("framing", "wide")
        shot_specs.append((objects, framing, start, length))
    scene = _assemble_scene(
        rng,
        shot_specs,
        height=height,
        width=width,
        num_frames=num_frames,
        fps=fps,
        background=background,
        sample_rate=sample_rate,
        caption_split=caption_split,
        min_visible_fraction=min_visible_fraction,
    )
    if spec.get("caption") is not None:
        scene.caption = str(spec["caption"])
    return scene
