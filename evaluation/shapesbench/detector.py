"""The ShapesBench detector: reads a clip (frames and optional audio) back into a structured ShapesWorld scene.

Everything is analytic, in numpy, and follows the geometry conventions of :mod:`seedkit.data.shapes`:

1. **Background**: the most frequent (quantised) colour of the clip.
2. **Colour segmentation**: every pixel within ``color_threshold`` of a palette colour is a *core* pixel of that
   colour. A colour is present in a frame when its core has an *interior* (core pixels whose four neighbours are
   core too): the one-pixel seams where two anti-aliased objects meet can look like a third palette colour (red
   blended with yellow is close to orange) but never have an interior.
3. **Coverage**: each present colour's *visible* coverage in [0, 1] per pixel by linear unmixing: anti-aliased
   compositing makes a pixel ``bg + sum_c v_c (c - bg)``, so each pixel is explained by the background, one colour,
   a blend of two, or two colours over the background (constrained least squares, a small cost per extra colour).
   Area and centroid from the coverage are exact for an unoccluded object.
4. **Shape and size**: on the frame where the object is most visible, the coverage is fitted with the three shape
   templates (circle, square, triangle; centroid and circumradius) by vectorised grid searches. Where other colours
   cover a pixel the shape's coverage is only bounded (``[v, v / (1 - others)]``), so a partly hidden object is
   still classified from what shows; an object never seen alone is fitted with the radii the world draws, because
   its size is not identifiable from a partial view. The size class is the nearest of ``SIZES`` (in log radius)
   after dividing out the shot's camera zoom.
5. **Tracks, motion, bounces**: one centroid per frame (the coverage centroid when the object touches nothing, the
   fitted template's centroid at its known radius when it touches another object), then per axis the direction
   and speed; a wall bounce is a direction reversal or a displacement shorter than the speed, and its continuous
   time follows from the reflection (``d = (2 f - 1) s`` for a contact at fraction ``f`` of the frame interval).
6. **Shot cuts**: an object's velocity changing where no wall reflection explains it (inside a shot motion is
   uniform but for reflections), an object outgrowing its full size (camera zoom), or a colour appearing or
   vanishing where no occluder explains it.
7. **Audio** (:mod:`.audio`): onsets from the energy envelope, pitch from the spectrum, colour from the pitch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from seedkit.data.shapes import BACKGROUNDS, PALETTE, SHAPES, SIZES

from .audio import AudioEvent, detect_audio_events

COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)
PALETTE_RGB = np.array([PALETTE[name][0] for name in COLOR_NAMES], dtype=np.float32)  # [K, 3]
PALETTE_TONES: dict[str, float] = {name: PALETTE[name][1] for name in COLOR_NAMES}
# Cost per pixel of shape coverage that a fit places under other objects (see fit_shape).
HIDDEN_COVERAGE_WEIGHT = 0.02
# Shape area as a multiple of circumradius squared.
AREA_PER_R2: dict[str, float] = {"circle": math.pi, "square": 2.0, "triangle": 3.0 * math.sqrt(3.0) / 4.0}


@dataclass
class DetectorConfig:
    """Thresholds of the detector (pixel units are RGB distances or pixels)."""

    # Palette colours are >= 80 apart (orange / yellow), so half of that is never ambiguous.
    color_threshold: float = 40.0
    # An unmixed pixel must be explained this well (RGB distance) or it belongs to nothing.
    unmix_residual: float = 40.0
    # Cost (RGB distance) of each extra colour in a pixel's explanation.
    unmix_penalty: float = 2.0
    # Fewest interior (eroded) pixels for a colour to count as present in a frame.
    min_interior_pixels: int = 1
    # Fewest core pixels, as a fraction of the smallest object ShapesWorld draws at this frame size.
    min_core_fraction: float = 0.15
    # Coverage above which a pixel belongs to an object's support.
    support_alpha: float = 0.02
    # A frame joins an object's track when its visible area is at least this fraction of its largest in the shot.
    track_area_fraction: float = 0.25
    # Below this speed (px / frame) along an axis the object does not move along it.
    still_speed: float = 0.2
    # Net displacement (px, and as a fraction of min(H, W)) below which an object is still.
    still_displacement_px: float = 1.0
    still_displacement_fraction: float = 0.03
    # A displacement shorter than speed * (1 - bounce_tolerance) - bounce_tolerance_px marks a bounce...
    bounce_tolerance: float = 0.12
    bounce_tolerance_px: float = 0.15
    # ...when, moving at its speed, the object gets within this many px of the wall it was heading for (objects
    # reflect off the frame edges only; a generated object that stutters in the open has not bounced).
    bounce_wall_px: float = 1.5
    # Cuts: a velocity change (px / frame, plus a fraction of the speed) that no wall reflection explains.
    cut_velocity_px: float = 1.0
    cut_velocity_fraction: float = 0.15
    # A reflection is possible when the object's box is within its step plus this many px of a frame edge.
    cut_wall_px: float = 2.0
    # Cuts: an object's area changing by more than this ratio between consecutive frames (a camera zoom).
    cut_area_ratio: float = 1.4


@dataclass
class DetectedObject:
    """One object read from one shot.

    Attributes:
        color: palette colour name.
        shape: ``circle``, ``square`` or ``triangle``.
        size: ``small`` or ``large`` (after dividing out the shot's zoom).
        radius_px: fitted circumradius in pixels.
        motion: ``left``, ``right``, ``up``, ``down``, ``bouncing`` or ``still``.
        speed_px_per_frame: median speed along the path.
        track: ``[[cx, cy] or None, ...]`` one centroid per frame of the shot (``None`` where not visible).
        bounce_frames: clip frame indices of wall contacts (nearest frame to the continuous contact time).
        bounce_times: continuous contact times in clip frames.
        count: number of separate objects of this colour (ShapesWorld normally draws each colour once).
        shape_residuals: template fit residual per shape (lower is better), for diagnostics.
        visible_frames: number of frames where the object was seen.
    """

    color: str
    shape: str
    size: str
    radius_px: float
    motion: str
    speed_px_per_frame: float
    track: list[list[float] | None]
    bounce_frames: list[int] = field(default_factory=list)
    bounce_times: list[float] = field(default_factory=list)
    count: int = 1
    shape_residuals: dict[str, float] = field(default_factory=dict)
    visible_frames: int = 0


@dataclass
class DetectedShot:
    start_frame: int
    num_frames: int
    objects: list[DetectedObject]


@dataclass
class DetectedScene:
    """A clip read back by :func:`detect_scene`; serialises with :meth:`to_dict`."""

    width: int
    height: int
    num_frames: int
    background: str
    background_rgb: list[float]
    cut_frames: list[int]
    shots: list[DetectedShot]
    audio_events: list[AudioEvent] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def objects_by_color(self, shot_index: int = 0) -> dict[str, DetectedObject]:
        return {obj.color: obj for obj in self.shots[shot_index].objects}


# --------------------------------------------------------------------------------------------------------------
# Pixel-level helpers
# --------------------------------------------------------------------------------------------------------------


def _erode4(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion over the last two axes; outside the frame counts as not set."""
    out = mask.copy()
    out[..., 1:, :] &= mask[..., :-1, :]
    out[..., :-1, :] &= mask[..., 1:, :]
    out[..., :, 1:] &= mask[..., :, :-1]
    out[..., :, :-1] &= mask[..., :, 1:]
    out[..., 0, :] = False
    out[..., -1, :] = False
    out[..., :, 0] = False
    out[..., :, -1] = False
    return out


def _dilate8(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation over the last two axes."""
    out = mask.copy()
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    rows = out.copy()
    out[..., :, 1:] |= rows[..., :, :-1]
    out[..., :, :-1] |= rows[..., :, 1:]
    return out


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a 2-D boolean mask by min-label propagation.

    Returns ``(labels, count)`` with labels ``0..count-1`` on the mask and ``-1`` elsewhere. Iterates at most the
    longest component path length; ShapesWorld components are small and convex, so this takes a few dozen passes.
    """
    height, width = mask.shape
    big = height * width
    labels = np.where(mask, np.arange(big).reshape(height, width), big)
    while True:
        previous = labels
        shifted = labels.copy()
        shifted[1:, :] = np.minimum(shifted[1:, :], labels[:-1, :])
        shifted[:-1, :] = np.minimum(shifted[:-1, :], labels[1:, :])
        shifted[:, 1:] = np.minimum(shifted[:, 1:], labels[:, :-1])
        shifted[:, :-1] = np.minimum(shifted[:, :-1], labels[:, 1:])
        labels = np.where(mask, shifted, big)
        if np.array_equal(labels, previous):
            break
    unique, inverse = np.unique(labels[mask], return_inverse=True)
    out = np.full(mask.shape, -1, dtype=np.int64)
    out[mask] = inverse
    return out, int(unique.size)


def estimate_background(frames: np.ndarray) -> tuple[str, np.ndarray]:
    """Background as the mean colour of the most frequent 16-level colour bin; returns ``(name, rgb float[3])``.

    ``name`` is the nearest of ``BACKGROUNDS``.
    """
    step = max(1, frames.shape[0] // 5)
    pixels = frames[::step].reshape(-1, 3)
    quantised = (pixels // 16).astype(np.int64)
    keys = quantised[:, 0] * 256 + quantised[:, 1] * 16 + quantised[:, 2]
    counts = np.bincount(keys, minlength=4096)
    mode = int(np.argmax(counts))
    rgb = pixels[keys == mode].astype(np.float64).mean(axis=0)
    names = list(BACKGROUNDS)
    distances = [np.linalg.norm(rgb - np.array(BACKGROUNDS[name])) for name in names]
    return names[int(np.argmin(distances))], rgb


def color_coverage(
    frames: np.ndarray, background_rgb: np.ndarray, config: DetectorConfig
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Present colours and their soft coverage.

    Args:
        frames: uint8 ``[F, H, W, 3]``.
        background_rgb: float ``[3]``.

    Returns:
        ``(colors, alpha, present, unexplained)``: the colours present in at least one frame, their visible
        coverage ``float32 [len(colors), F, H, W]`` in [0, 1], ``bool [len(colors), F]`` per-frame presence, and
        ``bool [F, H, W]`` pixels that no present colour nor the background explains.
    """
    num_frames, height, width = frames.shape[:3]
    pixels = frames.astype(np.float32)
    distances = np.linalg.norm(pixels[..., None, :] - PALETTE_RGB, axis=-1)  # [F, H, W, K]
    nearest = distances.argmin(axis=-1)
    close = distances.min(axis=-1) < config.color_threshold
    smallest_area = AREA_PER_R2["triangle"] * (min(SIZES.values()) * min(height, width)) ** 2
    min_core = max(2, int(config.min_core_fraction * smallest_area))

    colors: list[int] = []
    presence: list[np.ndarray] = []
    for index in range(len(COLOR_NAMES)):
        core = close & (nearest == index)
        interior = _erode4(core).reshape(num_frames, -1).sum(axis=1)
        present = (interior >= config.min_interior_pixels) & (core.reshape(num_frames, -1).sum(axis=1) >= min_core)
        if present.any():
            colors.append(index)
            presence.append(present)
    if not colors:
        empty = np.zeros((0, num_frames, height, width), np.float32)
        return [], empty, np.zeros((0, num_frames), bool), np.zeros((num_frames, height, width), bool)

    alphas, unexplained = unmix_coverage(frames, background_rgb, colors, distances, close, nearest, config)
    return [COLOR_NAMES[index] for index in colors], alphas, np.stack(presence), unexplained


def unmix_coverage(
    frames: np.ndarray,
    background_rgb: np.ndarray,
    colors: list[int],
    distances: np.ndarray,
    close: np.ndarray,
    nearest: np.ndarray,
    config: DetectorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Visible coverage ``float32 [C, F, H, W]`` of each present colour by linear unmixing, and ``bool [F, H, W]``
    marking pixels nothing explains (they may hide any object).

    Anti-aliased compositing makes every pixel ``p = bg + sum_c v_c (c - bg)`` with ``v_c`` the colour's *visible*
    coverage (whatever the drawing order). Each pixel is explained by the best of: background alone, one colour
    over the background, a blend of two colours, or two colours over the background (constrained least squares);
    each extra colour costs ``unmix_penalty`` so that a pure pixel is not explained by a needless mixture. A colour
    may only explain pixels within two pixels of a present colour's core.
    """
    num_frames, height, width = frames.shape[:3]
    pixels = frames.reshape(-1, 3).astype(np.float32) - np.asarray(background_rgb, np.float32)  # [N, 3]
    directions = PALETTE_RGB[colors] - np.asarray(background_rgb, np.float32)  # [C, 3]
    # Present colours may explain pixels near any present colour's core: a colour hidden but for a sliver in this
    # frame has no core of its own there, yet its sliver must not be read as the colour on top of it.
    near_any = _dilate8(_dilate8(close & np.isin(nearest, colors))).reshape(-1)
    allowed = np.broadcast_to(near_any, (len(colors), near_any.size))  # [C, N]
    count = len(colors)
    penalty = config.unmix_penalty
    best_cost = np.linalg.norm(pixels, axis=1)  # background alone
    coverage = np.zeros((count, pixels.shape[0]), np.float32)

    def consider(cost: np.ndarray, values: dict[int, np.ndarray]) -> None:
        nonlocal best_cost
        better = cost < best_cost
        best_cost = np.where(better, cost, best_cost)
        for slot in range(count):
            coverage[slot] = np.where(better, values.get(slot, 0.0), coverage[slot])

    for slot in range(count):
        direction = directions[slot]
        amount = np.clip(pixels @ direction / float(direction @ direction), 0.0, 1.0)
        residual = np.linalg.norm(pixels - amount[:, None] * direction, axis=1)
        consider(np.where(allowed[slot], residual + penalty, np.inf), {slot: amount})
    for first in range(count):
        for second in range(first + 1, count):
            both = allowed[first] & allowed[second]
            if not both.any():
                continue
            # Blend of the two colours with no background: p = bg + w a + (1 - w) b.
            edge = directions[first] - directions[second]
            weight = np.clip((pixels - directions[second]) @ edge / float(edge @ edge), 0.0, 1.0)
            residual = np.linalg.norm(pixels - directions[second] - weight[:, None] * edge, axis=1)
            consider(np.where(both, residual + penalty, np.inf), {first: weight, second: 1.0 - weight})
            # Both colours over the background: least squares in (u, v), kept only where feasible.
            basis = np.stack([directions[first], directions[second]], axis=1)  # [3, 2]
            solution = np.linalg.lstsq(basis, pixels.T, rcond=None)[0]  # [2, N]
            first_amount, second_amount = solution
            feasible = (first_amount >= 0) & (second_amount >= 0) & (first_amount + second_amount <= 1)
            residual = np.linalg.norm(pixels - (basis @ solution).T, axis=1)
            cost = np.where(both & feasible, residual + 2 * penalty, np.inf)
            consider(cost, {first: first_amount.astype(np.float32), second: second_amount.astype(np.float32)})
    unexplained = best_cost > config.unmix_residual
    coverage[:, unexplained] = 0.0
    return coverage.reshape(count, num_frames, height, width), unexplained.reshape(num_frames, height, width)


# --------------------------------------------------------------------------------------------------------------
# Shape templates
# --------------------------------------------------------------------------------------------------------------


def render_coverage(
    shape: str, centers_x: np.ndarray, centers_y: np.ndarray, radii: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """Approximate anti-aliased coverage of ``N`` candidate shapes on a pixel grid.

    Args:
        centers_x, centers_y, radii: ``[N]`` centroid and circumradius per candidate.
        xs, ys: ``[h, w]`` pixel-centre coordinates.

    Returns:
        ``float32 [N, h, w]`` coverage ``clip(0.5 - d, 0, 1)`` with ``d`` the signed distance from the pixel centre to
        the shape's edge, the anti-aliasing ShapesWorld draws with.
    """
    cx = centers_x[:, None, None]
    cy = centers_y[:, None, None]
    radius = radii[:, None, None]
    dx = xs[None] - cx
    dy = ys[None] - cy
    if shape == "circle":
        distance = np.sqrt(dx * dx + dy * dy) - radius
    elif shape == "square":
        distance = np.maximum(np.abs(dx), np.abs(dy)) - radius / math.sqrt(2.0)
    elif shape == "triangle":
        # Upward equilateral triangle: its three edges sit at the inradius r / 2 from the centroid.
        inradius = radius / 2.0
        bottom = dy - inradius
        right = math.sqrt(3.0) / 2.0 * dx - 0.5 * dy - inradius
        left = -math.sqrt(3.0) / 2.0 * dx - 0.5 * dy - inradius
        distance = np.maximum(np.maximum(bottom, right), left)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")
    return np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)


@dataclass
class ShapeFit:
    shape: str
    center_x: float
    center_y: float
    radius: float
    residual: float


def fit_shape(
    alpha: np.ndarray,
    ceiling: np.ndarray | None = None,
    shapes: Sequence[str] = SHAPES,
    radii: Sequence[float] | None = None,
) -> list[ShapeFit]:
    """Fit shape templates to one object's coverage in one frame; best fit first.

    Args:
        alpha: ``float [H, W]`` visible coverage of the object: a lower bound of the shape's coverage.
        ceiling: ``float [H, W]`` upper bound of the shape's coverage where other objects may hide it
            (``alpha / (1 - others)``, 1 where others cover the pixel fully); ``None`` when nothing occludes.
        shapes: templates to try.
        radii: candidate circumradii. ``None`` fits the radius freely, starting from the one the visible area
            implies, which is right only for an unoccluded object; an occluded object's size is not identifiable
            from what shows (a larger shape shifted under the occluder fits as well), so give it the radius seen
            on another frame, or the radii the world allows.

    The centre starts at the coverage centroid and is refined over shrinking grids. The residual is the squared
    error outside ``[alpha, ceiling]`` divided by the visible area.
    """
    if ceiling is None:
        ceiling = alpha
    height, width = alpha.shape
    total = float(alpha.sum())
    if total <= 0:
        return []
    ys_all, xs_all = np.nonzero(alpha > 0.02)
    centroid_x = float((alpha.sum(axis=0) * np.arange(width)).sum() / total)
    centroid_y = float((alpha.sum(axis=1) * np.arange(height)).sum() / total)
    occluded = bool((ceiling > alpha + 1e-3).any())
    fits = []
    for shape in shapes:
        free_radius = radii is None
        candidates = np.array([math.sqrt(total / AREA_PER_R2[shape])] if free_radius else list(radii), np.float64)
        largest = float(candidates.max())
        # The window holds the visible pixels plus room for a hidden part when occluded.
        margin = int(math.ceil(largest)) + 2 if occluded else 2
        top, bottom = max(0, ys_all.min() - margin), min(height, ys_all.max() + margin + 1)
        left, right = max(0, xs_all.min() - margin), min(width, xs_all.max() + margin + 1)
        window_low = alpha[top:bottom, left:right]
        window_high = ceiling[top:bottom, left:right]
        ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
        spans = [0.7 * largest, 0.15 * largest, 0.04 * largest] if occluded else [0.6, 0.2, 0.07]
        best_x, best_y, best_error = centroid_x, centroid_y, float("inf")
        radius_options = candidates
        for round_index, span in enumerate(spans):
            offsets = np.linspace(-span, span, 9 if round_index == 0 and occluded else 7)
            if free_radius and round_index > 0:
                radius_options = candidates[0] * (1.0 + 0.01 * (3 - round_index) * np.arange(-3, 4))
            grid_x, grid_y, grid_r = np.meshgrid(best_x + offsets, best_y + offsets, radius_options, indexing="ij")
            coverage = render_coverage(
                shape,
                grid_x.ravel().astype(np.float32),
                grid_y.ravel().astype(np.float32),
                grid_r.ravel().astype(np.float32),
                xs,
                ys,
            )
            bounded = np.clip(coverage, window_low[None], window_high[None])
            outside = coverage - bounded
            # Coverage claimed under other colours is allowed but not free: without the penalty a fully visible
            # shape drawn on top of another object fits a larger shape "hidden" under that object equally well
            # (a small triangle inside a circle would read as a circle).
            hidden = np.clip(bounded - window_low[None], 0.0, None).sum(axis=(1, 2))
            errors = (outside**2).sum(axis=(1, 2)) + HIDDEN_COVERAGE_WEIGHT * hidden
            pick = int(np.argmin(errors))
            best_x, best_y = float(grid_x.ravel()[pick]), float(grid_y.ravel()[pick])
            best_error = float(errors[pick])
            radius_options = np.array([grid_r.ravel()[pick]])
            if free_radius:
                candidates = radius_options
        fits.append(ShapeFit(shape, best_x, best_y, float(radius_options[0]), best_error / max(total, 1.0)))
    fits.sort(key=lambda fit: fit.residual)
    return fits


# --------------------------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------------------------


def _axis_bounces(
    positions: np.ndarray, speed: float, config: DetectorConfig, wall_gaps: np.ndarray | None = None
) -> list[float]:
    """Continuous contact times (frames from the first position) of reflections along one axis.

    ``positions`` ``[T]`` holds a coordinate per frame (NaN where unknown). Walking the frame intervals with the
    current direction ``sigma``: an interval whose displacement ``d`` is short of the speed (``sigma d < s - tol``)
    holds a reflection at fraction ``f = (1 + sigma d / s) / 2`` of it, after which the direction flips.
    ``wall_gaps`` ``[T, 2]`` (px between the object and the low / high wall of the axis, per frame) limits
    reflections to intervals in which the object reaches the wall ahead; without it any short interval counts.
    """
    steps = np.diff(positions)
    valid = np.isfinite(steps)
    if speed < config.still_speed or valid.sum() < 2:
        return []
    tolerance = config.bounce_tolerance * speed + config.bounce_tolerance_px

    def reflects(interval: int, direction: float, heading: float) -> bool:
        """Whether ``interval`` is short along ``direction`` and, moving along ``heading`` before it, the object
        gets within ``bounce_wall_px`` of the wall ahead: a reflection at fraction ``f`` of the interval covers
        ``f s`` towards the wall (from the first frame's gap) and ``(1 - f) s`` back (to the second frame's)."""
        step = steps[interval]
        if not valid[interval] or direction * step >= speed - tolerance:
            return False
        if wall_gaps is None:
            return True
        side = 1 if heading > 0 else 0
        towards = (speed + heading * step) / 2.0
        reach = (wall_gaps[interval, side] - towards, wall_gaps[interval + 1, side] - (speed - towards))
        return bool(np.nanmin(reach, initial=np.inf) <= config.bounce_wall_px)

    full = valid & (np.abs(steps) > speed - tolerance)
    if not full.any():
        return []
    first_full = int(np.flatnonzero(full)[0])
    # Direction before interval 0: walk back from the first full-speed interval, flipping at every reflection.
    sigma = float(np.sign(steps[first_full]))
    for interval in range(first_full - 1, -1, -1):
        # Walking backwards, the wall ahead of the earlier motion is the one behind the later one.
        if reflects(interval, sigma, -sigma):
            sigma = -sigma
    times = []
    for interval, step in enumerate(steps):
        if reflects(interval, sigma, sigma):
            fraction = float(np.clip((1.0 + sigma * step / speed) / 2.0, 0.0, 1.0))
            times.append(interval + fraction)
            sigma = -sigma
    return times


def classify_motion(
    track: np.ndarray, min_side: int, config: DetectorConfig, wall_gaps: np.ndarray | None = None
) -> tuple[str, float, list[float]]:
    """Motion class, speed (px / frame) and contact times (frames from the track start) of a ``[T, 2]`` track.

    ``wall_gaps`` ``[T, 4]``: px between the object and the left, right, top and bottom frame edges per frame (inf
    where unknown); when given, only intervals near the wall ahead can hold a reflection (see :func:`_axis_bounces`).
    """
    finite = np.isfinite(track).all(axis=1)
    if finite.sum() < 2:
        return "still", 0.0, []
    steps = np.diff(track, axis=0)
    step_valid = np.isfinite(steps).all(axis=1)
    axis_speeds = [float(np.median(np.abs(steps[step_valid, axis]))) if step_valid.any() else 0.0 for axis in (0, 1)]
    speed = float(np.hypot(*axis_speeds))
    bounces: list[float] = []
    for axis in (0, 1):
        axis_gaps = None if wall_gaps is None else wall_gaps[:, 2 * axis : 2 * axis + 2]
        bounces += _axis_bounces(track[:, axis], axis_speeds[axis], config, axis_gaps)
    points = track[finite]
    displacement = points[-1] - points[0]
    threshold = max(config.still_displacement_px, config.still_displacement_fraction * min_side)
    if bounces:
        return "bouncing", speed, sorted(bounces)
    if np.hypot(*displacement) < threshold:
        return "still", 0.0, []
    if abs(displacement[0]) >= abs(displacement[1]):
        return ("right" if displacement[0] > 0 else "left"), speed, []
    return ("down" if displacement[1] > 0 else "up"), speed, []


# --------------------------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------------------------


def _centroids(alpha: np.ndarray) -> np.ndarray:
    """``[F, H, W]`` coverage to ``[F, 2]`` centroids (NaN where empty)."""
    num_frames, height, width = alpha.shape
    mass = alpha.reshape(num_frames, -1).sum(axis=1)
    cx = (alpha.sum(axis=1) * np.arange(width)).sum(axis=1)
    cy = (alpha.sum(axis=2) * np.arange(height)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([cx / mass, cy / mass], axis=1).astype(np.float64)


def _wall_gaps(support: np.ndarray, track: np.ndarray, radius: float, touching: np.ndarray) -> np.ndarray:
    """``[T, 4]`` px between an object and the left, right, top and bottom frame edges (inf where not tracked).

    The visible support's bounding box, exact for an object that touches nothing. Where another object may hide
    part of it, also the track point plus the circumradius (never larger than the true gap), so a hidden side facing
    a wall still counts as near it.
    """
    num_frames, height, width = support.shape
    gaps = np.full((num_frames, 4), np.inf)
    for frame in range(num_frames):
        x, y = track[frame]
        rows = np.flatnonzero(support[frame].any(axis=1))
        columns = np.flatnonzero(support[frame].any(axis=0))
        if not (np.isfinite(x) and np.isfinite(y)) or not rows.size:
            continue
        gaps[frame] = (columns[0], width - 1 - columns[-1], rows[0], height - 1 - rows[-1])
        if touching[frame]:
            around_track = (x - radius, width - 1 - x - radius, y - radius, height - 1 - y - radius)
            gaps[frame] = np.minimum(gaps[frame], around_track)
    return gaps


def _largest_view(areas: np.ndarray, touching: np.ndarray) -> np.ndarray:
    """``[C]`` full size of each object over a run of frames (``areas``, ``touching``: ``[C, T]``).

    The largest untouched area when there is one; else the largest area if the run has at least three frames (an
    object on top keeps its full area while touching); else unknown (``inf``).
    """
    untouched = np.where(touching, 0.0, areas).max(axis=1, initial=0.0)
    steady = areas.max(axis=1, initial=0.0) if areas.shape[1] >= 3 else np.zeros(areas.shape[0])
    largest = np.where(untouched > 0, untouched, steady)
    return np.where(largest > 0, largest, np.inf)


def _covered_fraction(mask: np.ndarray, cover: np.ndarray) -> float:
    """Share of ``mask``'s pixels inside ``cover`` (two more pixels of slack for motion between the frames)."""
    total = int(mask.sum())
    return float((mask & _dilate8(_dilate8(cover))).sum()) / total if total else 1.0


def detect_cuts(colors: list[str], alphas: np.ndarray, presence: np.ndarray, config: DetectorConfig) -> list[int]:
    """First frames of new shots.

    Inside a shot every object moves at constant velocity except where it reflects off a wall. So frame ``t`` starts
    a new shot when an object's velocity changes (``|v_t - v_{t-1}|`` beyond a tolerance on an axis) away from any
    wall on that axis, when an object's size jumps (a camera zoom), or when a colour appears or vanishes in the
    open. Partly hidden objects are left out of the velocity and size tests (their centroids and areas are biased),
    and an object vanishing behind or emerging from another one is occlusion, not a cut.
    """
    num_colors = len(colors)
    num_frames = presence.shape[1] if presence.size else 0
    if num_frames < 2 or not colors:
        return []
    height, width = alphas.shape[2:]
    support = alphas > config.support_alpha  # [C, F, H, W]
    areas = alphas.reshape(num_colors, num_frames, -1).sum(axis=2)  # [C, F]
    centers = np.stack([_centroids(alphas[slot]) for slot in range(num_colors)])  # [C, F, 2]
    near_others = np.zeros_like(support)
    for slot in range(num_colors):
        others = np.delete(support, slot, axis=0).any(axis=0) if num_colors > 1 else np.zeros_like(support[0])
        near_others[slot] = _dilate8(others)
    touching = (support & near_others).reshape(num_colors, num_frames, -1).any(axis=2)  # [C, F]
    # An object's centroid and area are exact when it touches nothing, or when it shows its full area (it is on
    # top): the area is as large as in the neighbouring frames of the same side of a possible cut.
    full_before = np.zeros_like(presence)
    full_after = np.zeros_like(presence)
    for frame in range(num_frames):
        # Windows reach one frame across a possible cut: an occluded object's area grows when it is uncovered.
        full_before[:, frame] = areas[:, frame] >= 0.97 * areas[:, max(0, frame - 3) : frame + 2].max(axis=1)
        full_after[:, frame] = areas[:, frame] >= 0.97 * areas[:, max(0, frame - 1) : frame + 4].max(axis=1)
    clean_before = presence & (~touching | full_before)
    clean_after = presence & (~touching | full_after)
    # Gap between the object's bounding box and the frame edge, per side: [C, F, 4] as (left, right, top, bottom).
    gaps = np.full((num_colors, num_frames, 4), np.inf)
    for slot in range(num_colors):
        for frame in range(num_frames):
            rows = np.flatnonzero(support[slot, frame].any(axis=1))
            columns = np.flatnonzero(support[slot, frame].any(axis=0))
            if rows.size:
                gaps[slot, frame] = (columns[0], width - 1 - columns[-1], rows[0], height - 1 - rows[-1])
    steps = np.abs(np.diff(centers, axis=1))  # [C, F-1, 2]
    largest = areas.max(axis=1)
    cuts: list[int] = []
    for frame in range(1, num_frames):
        before, after = frame - 1, frame
        changed_set = False
        for slot in range(num_colors):
            if presence[slot, after] and not presence[slot, before]:
                emerged = _covered_fraction(support[slot, after], near_others[slot, before]) >= 0.8
                changed_set |= not emerged and areas[slot, after] > 0.6 * largest[slot]
            if presence[slot, before] and not presence[slot, after]:
                hidden = _covered_fraction(support[slot, before], near_others[slot, after]) >= 0.8
                changed_set |= not hidden and areas[slot, before] > 0.6 * largest[slot]
        both = clean_before[:, before] & clean_after[:, after]
        # Occlusion only ever hides area, so an object larger than its largest view on the other side of the
        # boundary has been zoomed (in or out).
        # The full size is known only from frames where the object touches nothing.
        shot_start = cuts[-1] if cuts else 0
        largest_before = _largest_view(areas[:, shot_start : before + 1], touching[:, shot_start : before + 1])
        largest_after = _largest_view(areas[:, after : after + 4], touching[:, after : after + 4])
        seen = presence[:, before] & presence[:, after]
        zoom = bool(
            (seen & ((areas[:, after] > config.cut_area_ratio * largest_before)
                     | (areas[:, before] > config.cut_area_ratio * largest_after))).any()
        )
        swerved = False
        if frame >= 2 and (not cuts or cuts[-1] < before):
            for slot in np.flatnonzero(both & clean_before[:, frame - 2]):
                velocity_before = centers[slot, before] - centers[slot, frame - 2]
                velocity_after = centers[slot, after] - centers[slot, before]
                window = steps[slot, max(0, frame - 4) : frame + 3]
                for axis in (0, 1):
                    change = abs(velocity_after[axis] - velocity_before[axis])
                    tolerance = config.cut_velocity_px + config.cut_velocity_fraction * abs(velocity_before[axis])
                    if change <= tolerance:
                        continue
                    # A reflection keeps the axis speed (the median step nearby; a cut's jump is one outlier among
                    # them) and happens within a step of the wall the object was heading for.
                    speed = float(np.nanmedian(window[:, axis])) if np.isfinite(window[:, axis]).any() else 0.0
                    near_wall = bool(
                        (gaps[slot, before, 2 * axis : 2 * axis + 2] <= 2.0 * speed + config.cut_wall_px).any()
                    )
                    limit = speed + tolerance
                    keeps_speed = abs(velocity_after[axis]) <= limit and abs(velocity_before[axis]) <= limit
                    swerved |= not (near_wall and keeps_speed)
        if changed_set or zoom or swerved:
            cuts.append(frame)
    return cuts


def detect_scene(
    frames: np.ndarray,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    shot_starts: Sequence[int] | None = None,
    zooms: Sequence[float] | None = None,
    config: DetectorConfig | None = None,
) -> DetectedScene:
    """Read a ShapesWorld clip back into a :class:`DetectedScene`.

    Args:
        frames: uint8 ``[F, H, W, 3]`` (an image is ``F = 1``).
        audio: optional float ``[channels, samples]`` in [-1, 1]; audio events are detected when given.
        sample_rate: audio sample rate in Hz (required with ``audio``).
        shot_starts: first frame of every shot (``[0, ...]``); detected from cuts when ``None``.
        zooms: camera zoom per shot (``FRAMINGS`` values) to classify sizes; all wide (1.0) when ``None``.
        config: detector thresholds.
    """
    config = config or DetectorConfig()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    num_frames, height, width = frames.shape[:3]
    min_side = min(height, width)
    background_name, background_rgb = estimate_background(frames)
    colors, alphas, presence, unexplained = color_coverage(frames, background_rgb, config)
    cuts = detect_cuts(colors, alphas, presence, config)
    if shot_starts is None:
        shot_starts = [0] + cuts
    shot_starts = sorted(int(s) for s in shot_starts)
    if not shot_starts or shot_starts[0] != 0 or shot_starts[-1] >= num_frames:
        raise ValueError(f"shot_starts must begin with 0 and stay below num_frames={num_frames}, got {shot_starts}")
    if zooms is None:
        zooms = [1.0] * len(shot_starts)
    if len(zooms) != len(shot_starts):
        raise ValueError(f"got {len(zooms)} zooms for {len(shot_starts)} shots; give one zoom per shot")

    ends = list(shot_starts[1:]) + [num_frames]
    shots = []
    for start, end, zoom in zip(shot_starts, ends, zooms):
        objects = [
            obj
            for slot, color in enumerate(colors)
            if presence[slot, start:end].any()
            for obj in [
                _read_object(
                    color,
                    slot,
                    alphas[:, start:end],
                    unexplained[start:end],
                    presence[:, start:end],
                    start,
                    zoom,
                    min_side,
                    config,
                )
            ]
            if obj is not None
        ]
        shots.append(DetectedShot(start_frame=start, num_frames=end - start, objects=objects))

    audio_events = None
    if audio is not None:
        if sample_rate is None:
            raise ValueError("audio given without sample_rate; pass the track's rate in Hz")
        audio_events = detect_audio_events(audio, int(sample_rate), PALETTE_TONES)
    return DetectedScene(
        width=width,
        height=height,
        num_frames=num_frames,
        background=background_name,
        background_rgb=[float(c) for c in background_rgb],
        cut_frames=cuts,
        shots=shots,
        audio_events=audio_events,
    )


def _read_object(
    color: str,
    slot: int,
    alphas: np.ndarray,
    unexplained: np.ndarray,
    presence: np.ndarray,
    start_frame: int,
    zoom: float,
    min_side: int,
    config: DetectorConfig,
) -> DetectedObject | None:
    """Shape, size, track, motion and bounces of colour ``slot`` within one shot (``alphas`` ``[C, T, H, W]``);
    ``None`` when the colour has no coverage on any frame of the shot."""
    alpha = alphas[slot]  # [T, H, W]
    num_frames = alpha.shape[0]
    support = alpha > config.support_alpha
    others = np.clip(np.delete(alphas, slot, axis=0).sum(axis=0) + unexplained, 0.0, 1.0)  # [T, H, W]
    touching = (support & (others > config.support_alpha)).reshape(num_frames, -1).any(axis=1)
    # Where others cover a pixel partly, this object's own coverage can be up to alpha / (1 - others).
    with np.errstate(divide="ignore", invalid="ignore"):
        ceiling = np.where(others > 0.98, 1.0, np.minimum(1.0, alpha / np.maximum(1.0 - others, 1e-6)))
    ceiling = np.maximum(ceiling, alpha).astype(np.float32)
    areas = alpha.reshape(num_frames, -1).sum(axis=1)
    # Tracked wherever enough of it shows, even as a sliver without interior pixels (half hidden small shapes).
    visible = presence[slot] | (areas >= max(2.0, config.track_area_fraction * areas.max(initial=0.0)))

    # Count separate blobs of this colour on the frame where it is largest. A frame can hold the colour's core
    # pixels (presence) and still no coverage once unmixed (a generated clip's colour fringe): never pick it.
    has_area = visible & (areas > 0)
    if not has_area.any():
        return None
    best_frame = int(np.argmax(np.where(has_area, areas + (~touching) * areas.max(initial=0.0) * 10, -1)))
    labels, count = connected_components(support[best_frame] & (alpha[best_frame] > 0.5))
    if count > 1:
        sizes = np.bincount(labels[labels >= 0])
        count = int((sizes >= max(2, 0.25 * sizes.max())).sum())
    count = max(count, 1)

    if touching[best_frame]:
        # Never seen alone: its size is not identifiable from the visible part, so try the sizes the world draws.
        world_radii = [SIZES[name] * min_side * zoom for name in SIZES]
        fits = fit_shape(alpha[best_frame], ceiling[best_frame], radii=world_radii)
    else:
        fits = fit_shape(alpha[best_frame])
    shape_fit = fits[0]
    radius = shape_fit.radius
    size_fraction = radius / (min_side * zoom)
    size = min(SIZES, key=lambda name: abs(math.log(size_fraction / SIZES[name])))

    # Track: coverage centroid where the object touches nothing, template centroid where it may be hidden.
    centers = _centroids(alpha)
    track = np.full((num_frames, 2), np.nan)
    for frame in range(num_frames):
        if not visible[frame]:
            continue
        if touching[frame]:
            frame_fit = fit_shape(alpha[frame], ceiling[frame], shapes=(shape_fit.shape,), radii=(radius,))
            if frame_fit:
                track[frame] = (frame_fit[0].center_x, frame_fit[0].center_y)
        else:
            track[frame] = centers[frame]
    motion, speed, contact_times = classify_motion(
        track, min_side, config, _wall_gaps(support, track, radius, touching)
    )
    # A corner hit reflects both axes in one frame: ShapesWorld records (and sounds) it once.
    bounce_frames = sorted({start_frame + int(math.floor(time + 0.5)) for time in contact_times})
    return DetectedObject(
        color=color,
        shape=shape_fit.shape,
        size=size,
        radius_px=radius,
        motion=motion,
        speed_px_per_frame=speed,
        track=[None if not np.isfinite(point).all() else [float(point[0]), float(point[1])] for point in track],
        bounce_frames=bounce_frames,
        bounce_times=[start_frame + time for time in contact_times],
        count=count,
        shape_residuals={fit.shape: fit.residual for fit in fits},
        visible_frames=int(visible.sum()),
    )
