"""Per-clip quality filters: motion, sharpness, brightness / black frames, static or slideshow clips, on-screen text
and aesthetics.

Every filter follows the same shape (see :class:`ClipFilter`):

* a config dataclass with its thresholds plus ``enabled`` (skip the filter entirely) and ``enforce`` (``False``
  records the scores but never drops, so thresholds can be chosen later from the manifest);
* ``score(sample) -> dict[str, float]``: the measurements, kept in the manifest under the names listed in
  ``score_names``;
* ``keep(scores) -> (keep, reason)``: the threshold decision, separate from scoring;
* ``__call__(sample)``: scores into ``sample.scores`` and raises :class:`~data_pipelines.stages.DropClip` with the
  reason (``"low_motion"``, ``"black_frames"``, ...) when the clip is dropped.

All measurements run on grey (BT.601 luma, 0-255) frames downscaled so that their longer side is
``analysis_size`` pixels, which makes scores comparable across source resolutions. ``FILTERS`` maps the names used
in curation configs to the classes; :func:`build_filter` builds one from a plain dict (e.g. parsed YAML).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from data_pipelines.stages import ClipSample, ClipStage, DropClip

# ----------------------------------------------------------------------------------------------------------------
# Shared frame helpers
# ----------------------------------------------------------------------------------------------------------------


def sample_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` (at most ``num_frames``) indices spread evenly over ``[0, num_frames)``, first and last included."""
    if num_frames <= 0:
        raise ValueError("the clip holds no frames; a filter needs at least one frame")
    count = max(1, min(count, num_frames))
    return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64))


def to_grey(frames: np.ndarray, analysis_size: int | None = None) -> np.ndarray:
    """RGB ``uint8 [F, H, W, 3]`` to BT.601 luma ``float32 [F, h, w]`` in 0-255, downscaled (box filter) so that the
    longer side is at most ``analysis_size``; frames are never upscaled."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [F, H, W, 3] with F >= 1, got shape {frames.shape}")
    height, width = frames.shape[1:3]
    scale = 1.0 if analysis_size is None else min(1.0, analysis_size / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = []
    for frame in frames:
        image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
        if size != (width, height):
            image = image.resize(size, Image.Resampling.BOX)
        rgb = np.asarray(image, dtype=np.float32)
        grey.append(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)
    return np.stack(grey)


def laplacian(grey: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian of ``[..., H, W]`` images (valid region, ``[..., H-2, W-2]``)."""
    return (
        grey[..., :-2, 1:-1] + grey[..., 2:, 1:-1] + grey[..., 1:-1, :-2] + grey[..., 1:-1, 2:]
        - 4.0 * grey[..., 1:-1, 1:-1]
    )


def frame_stride(sample: ClipSample) -> int:
    """How many source frames separate two consecutive frames of ``sample.frames``."""
    stride = int(sample.metadata.get("frame_stride", 1))
    if stride < 1:
        raise ValueError(f"metadata['frame_stride'] must be >= 1, got {stride}")
    return stride


def _box_sum(images: np.ndarray, radius: int) -> np.ndarray:
    """Sum over a ``(2r+1) x (2r+1)`` window around every pixel of ``[..., H, W]`` (edge padding), via an integral
    image so the cost does not depend on the window size."""
    pad = [(0, 0)] * (images.ndim - 2) + [(radius + 1, radius), (radius + 1, radius)]
    # One extra padded row / column in front: the window of pixel i is then integral[i + size] - integral[i].
    integral = np.pad(images, pad, mode="edge").astype(np.float64).cumsum(-2).cumsum(-1)
    size = 2 * radius + 1
    window_sums = (
        integral[..., size:, size:] - integral[..., :-size, size:] - integral[..., size:, :-size]
        + integral[..., :-size, :-size]
    )
    return window_sums.astype(images.dtype)


def _warp_bilinear(image: np.ndarray, flow_x: np.ndarray, flow_y: np.ndarray) -> np.ndarray:
    """Sample ``image [H, W]`` at ``(y + flow_y, x + flow_x)`` with bilinear interpolation, clamped at the borders."""
    height, width = image.shape
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    sample_x = np.clip(grid_x + flow_x, 0.0, width - 1.0)
    sample_y = np.clip(grid_y + flow_y, 0.0, height - 1.0)
    x0 = np.minimum(np.floor(sample_x).astype(np.int64), width - 2 if width > 1 else 0)
    y0 = np.minimum(np.floor(sample_y).astype(np.int64), height - 2 if height > 1 else 0)
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    weight_x = sample_x - x0
    weight_y = sample_y - y0
    top = image[y0, x0] * (1.0 - weight_x) + image[y0, x1] * weight_x
    bottom = image[y1, x0] * (1.0 - weight_x) + image[y1, x1] * weight_x
    return top * (1.0 - weight_y) + bottom * weight_y


def lucas_kanade_flow(
    previous: np.ndarray,
    current: np.ndarray,
    pyramid_levels: int = 3,
    window_radius: int = 3,
    iterations: int = 3,
    min_eigenvalue: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense coarse-to-fine Lucas-Kanade optical flow between two grey images.

    At every pyramid level (coarsest first) the current estimate warps ``current`` back onto ``previous``, the
    windowed structure tensor of the averaged gradients is accumulated with box sums and the 2x2 system is solved
    per pixel; pixels whose smaller structure-tensor eigenvalue is below ``min_eigenvalue`` (per pixel of the
    window, images scaled to [0, 1]) carry no information (flat areas, the aperture problem) and are marked
    unreliable.

    Args:
        previous, current: ``float [H, W]`` grey images (any range; scaled internally).
        pyramid_levels: number of levels; each halves the size, so motions up to about ``2**levels`` times the
            window radius are recovered.
        window_radius: half size of the square integration window.
        iterations: warping refinements per level.
        min_eigenvalue: reliability threshold for the structure tensor.

    Returns:
        ``flow [2, H, W]`` (x then y displacement in pixels, from ``previous`` to ``current``) and a boolean
        ``reliable [H, W]`` mask (false on flat areas and on a border of ``2 * window_radius + 1`` pixels).
    """
    # A light 3x3 pre-blur keeps the gradients consistent with the linearisation (less aliasing at coarse levels).
    previous = _box_sum(np.asarray(previous, dtype=np.float32) / 255.0, 1) / 9.0
    current = _box_sum(np.asarray(current, dtype=np.float32) / 255.0, 1) / 9.0
    pyramid = [(previous, current)]
    for _ in range(pyramid_levels - 1):
        top_previous, top_current = pyramid[-1]
        height, width = (top_previous.shape[0] // 2) * 2, (top_previous.shape[1] // 2) * 2
        if min(height, width) < 4 * window_radius + 2:
            break
        pyramid.append(tuple(
            image[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
            for image in (top_previous, top_current)
        ))

    flow_x = np.zeros_like(pyramid[-1][0])
    flow_y = np.zeros_like(pyramid[-1][0])
    window_area = float((2 * window_radius + 1) ** 2)
    reliable = np.zeros(previous.shape, dtype=bool)
    for level_previous, level_current in reversed(pyramid):
        if flow_x.shape != level_previous.shape:
            # Upsample the coarser estimate: repeat 2x2, fix odd sizes by edge padding, and double the vectors.
            height, width = level_previous.shape
            flow_x, flow_y = (
                np.pad(
                    2.0 * np.repeat(np.repeat(component, 2, axis=0), 2, axis=1)[:height, :width],
                    ((0, max(0, height - 2 * component.shape[0])), (0, max(0, width - 2 * component.shape[1]))),
                    mode="edge",
                )
                for component in (flow_x, flow_y)
            )
        for _ in range(iterations):
            warped = _warp_bilinear(level_current, flow_x, flow_y)
            average = 0.5 * (level_previous + warped)
            gradient_y, gradient_x = np.gradient(average)
            temporal = warped - level_previous
            sums = _box_sum(
                np.stack([
                    gradient_x * gradient_x, gradient_x * gradient_y, gradient_y * gradient_y,
                    gradient_x * temporal, gradient_y * temporal,
                ]),
                window_radius,
            )
            sum_xx, sum_xy, sum_yy, sum_xt, sum_yt = sums
            determinant = sum_xx * sum_yy - sum_xy * sum_xy
            half_trace = 0.5 * (sum_xx + sum_yy)
            smaller_eigenvalue = half_trace - np.sqrt(np.maximum(half_trace**2 - determinant, 0.0))
            reliable_level = smaller_eigenvalue > min_eigenvalue * window_area
            safe_determinant = np.where(reliable_level, determinant, 1.0)
            delta_x = np.where(reliable_level, (-sum_yy * sum_xt + sum_xy * sum_yt) / safe_determinant, 0.0)
            delta_y = np.where(reliable_level, (sum_xy * sum_xt - sum_xx * sum_yt) / safe_determinant, 0.0)
            # A single Gauss-Newton step is only trusted within about a pixel; larger steps come from the pyramid.
            flow_x = flow_x + np.clip(delta_x, -1.0, 1.0)
            flow_y = flow_y + np.clip(delta_y, -1.0, 1.0)
        reliable = reliable_level
    # Content enters and leaves at the borders, where no displacement explains the change: never trust them.
    margin = min(2 * window_radius + 1, (min(reliable.shape) - 1) // 2)
    reliable[:margin] = False
    reliable[-margin:] = False
    reliable[:, :margin] = False
    reliable[:, -margin:] = False
    return np.stack([flow_x, flow_y]).astype(np.float32), reliable


# ----------------------------------------------------------------------------------------------------------------
# Base class and registry
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FilterConfig:
    """Fields every filter config has.

    Attributes:
        enabled: ``False`` skips the filter (no scores, never drops).
        enforce: ``False`` records the scores but never drops a clip.
        analysis_size: longer side, in pixels, of the grey frames the measurements run on.
        max_frames: at most this many frames (spread evenly over the clip) are analysed.
    """

    enabled: bool = True
    enforce: bool = True
    analysis_size: int = 256
    max_frames: int = 16


class ClipFilter(ClipStage):
    """Base class of the filters: a config, ``score``, ``keep`` and a ``__call__`` that drops clips.

    Subclasses set ``name``, ``config_class``, ``score_names`` and implement ``score`` and ``_drop_reason``.
    """

    name: ClassVar[str] = "filter"
    config_class: ClassVar[type] = FilterConfig
    score_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: FilterConfig | None = None, **overrides: Any) -> None:
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = dataclasses.replace(config, **overrides) if overrides else config

    def score(self, sample: ClipSample) -> dict[str, float]:
        raise NotImplementedError

    def _drop_reason(self, scores: dict[str, float]) -> tuple[str, str] | None:
        """``(reason, detail)`` when the scores fail a threshold, else ``None``."""
        raise NotImplementedError

    def keep(self, scores: dict[str, float]) -> tuple[bool, str | None]:
        """Whether a clip with these scores passes; the second item is the drop reason."""
        drop = self._drop_reason(scores)
        return (True, None) if drop is None else (False, drop[0])

    def __call__(self, sample: ClipSample) -> ClipSample:
        if not self.config.enabled:
            return sample
        scores = self.score(sample)
        sample.scores.update({key: float(value) for key, value in scores.items()})
        drop = self._drop_reason(scores)
        if drop is not None and self.config.enforce:
            raise DropClip(*drop)
        return sample

    def _analysis_frames(self, sample: ClipSample, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Evenly spread frame indices of the clip and their grey analysis frames."""
        indices = sample_indices(len(sample.frames), count or self.config.max_frames)
        return indices, to_grey(sample.frames[indices], self.config.analysis_size)


def _below(value: float, threshold: float | None) -> bool:
    return threshold is not None and value < threshold


def _above(value: float, threshold: float | None) -> bool:
    return threshold is not None and value > threshold


# ----------------------------------------------------------------------------------------------------------------
# Motion
# ----------------------------------------------------------------------------------------------------------------

MOTION_METHODS = ("flow", "frame_difference")


@dataclass
class MotionFilterConfig(FilterConfig):
    """Motion thresholds.

    ``method="flow"`` (default) estimates dense optical flow with a pyramidal Lucas-Kanade solver
    (:func:`lucas_kanade_flow`) and measures ``motion_flow``: the mean displacement of textured pixels, in percent
    of the frame width per source frame (so 1.0 means content crosses the frame in 100 frames); it is independent
    of resolution and contrast. ``method="frame_difference"`` measures ``motion_frame_difference``: the mean
    absolute grey-level change per source frame (0-255). It is ten times cheaper but conflates speed with
    texture and contrast (a slow pan over a detailed scene scores like a fast pan over a plain one) and cannot
    tell camera shake from motion. Both are measured between neighbouring frames of ``sample.frames`` at
    ``max_frames`` positions spread over the clip. The flow solver recovers displacements up to about 10 analysis
    pixels per frame pair (about 8 % of the width at the default size) and underestimates beyond, so ``max_flow``
    is only meaningful below that. Both scores are written when ``method="flow"``; the thresholds of the chosen
    method decide.
    """

    analysis_size: int = 128
    max_frames: int = 8  # pairs of neighbouring frames analysed
    method: str = "flow"
    min_flow: float | None = 0.05
    max_flow: float | None = None
    min_frame_difference: float | None = 0.3
    max_frame_difference: float | None = None
    pyramid_levels: int = 3
    window_radius: int = 3
    iterations: int = 3


class MotionFilter(ClipFilter):
    """Drops clips that hardly move (``"low_motion"``) or move chaotically fast (``"high_motion"``)."""

    name = "motion"
    config_class = MotionFilterConfig
    score_names = ("motion_flow", "motion_frame_difference")

    def __init__(self, config: MotionFilterConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.method not in MOTION_METHODS:
            raise ValueError(f"unknown motion method {self.config.method!r}; valid: {', '.join(MOTION_METHODS)}")

    def score(self, sample: ClipSample) -> dict[str, float]:
        if len(sample.frames) < 2:
            return {"motion_flow": 0.0, "motion_frame_difference": 0.0}
        # Neighbouring frames at evenly spread positions: displacements stay small enough for the flow solver
        # however long the clip, and the mean covers the whole clip.
        firsts = sample_indices(len(sample.frames) - 1, self.config.max_frames)
        grey = to_grey(sample.frames[np.stack([firsts, firsts + 1], axis=1).reshape(-1)], self.config.analysis_size)
        previous_frames, current_frames = grey[0::2], grey[1::2]
        gap = float(frame_stride(sample))
        differences = np.abs(current_frames - previous_frames).mean(axis=(1, 2)) / gap
        scores = {"motion_frame_difference": float(differences.mean())}
        if self.config.method == "flow":
            width = grey.shape[2]
            magnitudes = []
            for previous, current in zip(previous_frames, current_frames):
                flow, reliable = lucas_kanade_flow(
                    previous, current, self.config.pyramid_levels, self.config.window_radius, self.config.iterations
                )
                speed = np.sqrt(flow[0] ** 2 + flow[1] ** 2)
                # Flat frames have no reliable pixel and no visible motion.
                magnitudes.append(float(speed[reliable].mean()) / gap if reliable.any() else 0.0)
            scores["motion_flow"] = 100.0 * float(np.mean(magnitudes)) / width
        return scores

    def _drop_reason(self, scores: dict[str, float]) -> tuple[str, str] | None:
        if self.config.method == "flow":
            key, low, high = "motion_flow", self.config.min_flow, self.config.max_flow
        else:
            key, low, high = (
                "motion_frame_difference", self.config.min_frame_difference, self.config.max_frame_difference
            )
        value = scores[key]
        if _below(value, low):
            return "low_motion", f"{key}={value:.4g} < {low}"
        if _above(value, high):
            return "high_motion", f"{key}={value:.4g} > {high}"
        return None


# ----------------------------------------------------------------------------------------------------------------
# Sharpness
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SharpnessFilterConfig(FilterConfig):
    """``sharpness`` is the median over analysed frames of the variance of the Laplacian of the grey frame at
    ``analysis_size`` (0-255 levels). Blur removes high frequencies and lowers it; it also depends on content
    (a plain sky is "blurry"), so the threshold should be low."""

    max_frames: int = 8
    min_sharpness: float | None = 15.0


class SharpnessFilter(ClipFilter):
    """Drops blurry clips (``"blurry"``)."""

    name = "sharpness"
    config_class = SharpnessFilterConfig
    score_names = ("sharpness",)

    def score(self, sample: ClipSample) -> dict[str, float]:
        _, grey = self._analysis_frames(sample)
        if min(grey.shape[1:]) < 3:
            raise ValueError(f"frames of {grey.shape[1:]} pixels are too small to measure sharpness")
        return {"sharpness": float(np.median(laplacian(grey).var(axis=(1, 2))))}

    def _drop_reason(self, scores: dict[str, float]) -> tuple[str, str] | None:
        if _below(scores["sharpness"], self.config.min_sharpness):
            return "blurry", f"sharpness={scores['sharpness']:.4g} < {self.config.min_sharpness}"
        return None


# ----------------------------------------------------------------------------------------------------------------
# Brightness and black frames
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class BrightnessFilterConfig(FilterConfig):
    """``brightness`` is the mean luma (0-255) over analysed frames; ``black_fraction`` the fraction of analysed
    frames whose mean luma is below ``black_level`` (fades, leaders, dropouts)."""

    analysis_size: int = 64
    max_frames: int = 16
    black_level: float = 16.0
    max_black_fraction: float | None = 0.3
    min_brightness: float | None = 20.0
    max_brightness: float | None = 240.0


class BrightnessFilter(ClipFilter):
    """Drops clips with many black frames (``"black_frames"``), too dark (``"too_dark"``) or washed out
    (``"too_bright"``)."""

    name = "brightness"
    config_class = BrightnessFilterConfig
    score_names = ("brightness", "black_fraction")

    def score(self, sample: ClipSample) -> dict[str, float]:
        _, grey = self._analysis_frames(sample)
        frame_means = grey.mean(axis=(1, 2))
        return {
            "brightness": float(frame_means.mean()),
            "black_fraction": float((frame_means < self.config.black_level).mean()),
        }

    def _drop_reason(self, scores: dict[str, float]) -> tuple[str, str] | None:
        config = self.config
        if _above(scores["black_fraction"], config.max_black_fraction):
            return "black_frames", f"black_fraction={scores['black_fraction']:.3g} > {config.max_black_fraction}"
        if _below(scores["brightness"], config.min_brightness):
            return "too_dark", f"brightness={scores['brightness']:.4g} < {config.min_brightness}"
        if _above(scores["brightness"], config.max_brightness):
            return "too_bright", f"brightness={scores['brightness']:.4g} > {config.max_brightness}"
        return None


# ----------------------------------------------------------------------------------------------------------------
# Static clips and slideshows
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class StaticFilterConfig(FilterConfig):
    """Static and slideshow detection from consecutive-frame differences.

    Each pair of consecutive analysed frames is *still* when fewer than ``still_changed_fraction`` of its pixels
    change by more than ``change_level`` grey levels (compression noise and grain stay below the level; a burned-in
    counter or a blinking cursor changes too few pixels to count as motion), and a *jump* when the mean absolute
    difference exceeds ``jump_threshold`` levels. ``static_fraction`` is the fraction of still pairs and
    ``static_change_points`` the number of jumps. A clip whose ``static_fraction`` reaches ``max_static_fraction``
    is dropped as ``"static"`` (a frozen image) or, when it has change points, ``"slideshow"`` (piecewise-constant
    frames). The pairs are consecutive frames of the ``max_frames`` analysed ones (spread evenly; every frame when
    the clip is that short), so very slow motion on long clips still separates analysed frames enough to count.
    """

    analysis_size: int = 64
    max_frames: int = 48
    change_level: float = 2.5
    still_changed_fraction: float = 0.03
    jump_threshold: float = 12.0
    max_static_fraction: float | None = 0.8


class StaticFilter(ClipFilter):
    """Drops frozen clips (``"static"``) and slideshows (``"slideshow"``)."""

    name = "static"
    config_class = StaticFilterConfig
    score_names = ("static_fraction", "static_change_points")

    def score(self, sample: ClipSample) -> dict[str, float]:
        _, grey = self._analysis_frames(sample)
        if len(grey) < 2:
            return {"static_fraction": 1.0, "static_change_points": 0.0}
        differences = np.abs(np.diff(grey, axis=0))
        changed = (differences > self.config.change_level).mean(axis=(1, 2))
        differences = differences.mean(axis=(1, 2))
        return {
            "static_fraction": float((changed < self.config.still_changed_fraction).mean()),
            "static_change_points": float((differences > self.config.jump_threshold).sum()),
        }

    def _drop_reason(self, scores: dict[str, float]) -> tuple[str, str] | None:
        limit = self.config.max_static_fraction
        if limit is not None and scores["static_fraction"] >= limit:
            reason = "slideshow" if scores["static_change_points"] > 0 else "static"
            return reason, (
                f"static_fraction={scores['static_fraction']:.3g} >= {limit} with "
                f"{int(scores['static_change_points'])} change points"
            )
        return None


# ----------------------------------------------------------------------------------------------------------------
# On-screen text
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TextFilterConfig(FilterConfig):
    """A heuristic detector of rendered text (subtitles, captions, titles, watermarks with letters).

    What it detects: horizontal runs of small blocks that look like glyph strokes: many strong edges in both
    directions (at least ``min_edge_density`` of the block's pixels change by more than ``edge_threshold`` levels
    to their right neighbour, and half that share to the neighbour below, so straight borders do not count), a
    two-tone intensity distribution (``min_bimodality``: the split at the block mean explains that share of the
    variance, as for letters over a plain or blurred background) and enough contrast (``min_contrast``, the block's
    standard deviation), with at least ``min_run`` such blocks side by side (a word or a line, not an isolated
    edge). ``text_coverage`` is the mean over analysed frames of the fraction of the frame covered by those runs.

    What it is not: an OCR model. Fine high-contrast regular texture (striped clothing, fences, keyboards, tiled
    walls) can trigger it, and large stylised or low-contrast text can be missed. It is validated on frames with
    text rendered by PIL versus the same backgrounds without text and versus natural footage (tests).
    """

    analysis_size: int = 384
    max_frames: int = 6
    block_size: int = 8
    edge_threshold: float = 40.0
    min_edge_density: float = 0.12
    min_bimodality: float = 0.7
    min_contrast: float = 30.0
    min_run: int = 3
    max_text_coverage: float | None = 0.05


def text_block_mask(grey: np.ndarray, config: TextFilterConfig) -> np.ndarray:
    """Boolean ``[H // block, W // block]`` mask of blocks of ``grey [H, W]`` (0-255) that belong to a text run."""
    block = config.block_size
    rows, columns = grey.shape[0] // block, grey.shape[1] // block
    if rows == 0 or columns == 0:
        return np.zeros((rows, columns), dtype=bool)
    grey = grey[: rows * block, : columns * block]
    change_x = np.zeros_like(grey)
    change_y = np.zeros_like(grey)
    change_x[:, :-1] = np.abs(np.diff(grey, axis=1))
    change_y[:-1, :] = np.abs(np.diff(grey, axis=0))
    strong_x = change_x > config.edge_threshold
    strong_y = change_y > config.edge_threshold

    def blocks(image: np.ndarray) -> np.ndarray:
        return image.reshape(rows, block, columns, block).transpose(0, 2, 1, 3).reshape(rows, columns, block * block)

    pixels = blocks(grey)
    # Glyphs have vertical stems (changes along x) and bars, bowls and serifs (changes along y); a straight border
    # or a bar edge only has one of the two, so both densities are required.
    density_x = blocks(strong_x.astype(np.float32)).mean(axis=-1)
    density_y = blocks(strong_y.astype(np.float32)).mean(axis=-1)
    mean = pixels.mean(axis=-1, keepdims=True)
    total_variance = pixels.var(axis=-1)
    # Two-class split at the block mean: the share of variance explained by the split (1 = two flat tones).
    bright = pixels >= mean
    count_bright = bright.sum(-1)
    count_dark = block * block - count_bright
    mean_bright = np.where(bright, pixels, 0).sum(-1) / np.maximum(count_bright, 1)
    mean_dark = np.where(bright, 0, pixels).sum(-1) / np.maximum(count_dark, 1)
    between_variance = count_bright * count_dark * (mean_bright - mean_dark) ** 2 / float(block * block) ** 2
    bimodality = between_variance / np.maximum(total_variance, 1e-6)

    candidate = (
        (density_x >= config.min_edge_density)
        & (density_y >= config.min_edge_density / 2.0)
        & (bimodality >= config.min_bimodality)
        & (np.sqrt(total_variance) >= config.min_contrast)
    )
    # Keep only horizontal runs of at least min_run candidate blocks (run lengths via a cumulative count).
    keep = np.zeros_like(candidate)
    for row in range(rows):
        start = None
        for column in range(columns + 1):
            inside = column < columns and candidate[row, column]
            if inside and start is None:
                start = column
            elif not inside and start is not None:
                if column - start >= config.min_run:
                    keep[row, start:column] = True
                start = None
    return keep


class TextFilter(ClipFilter):
    """Drops clips with much on-screen text (``"text"``)."""

    name = "text"
    config_class = TextFilterConfig
    score_names = ("text_coverage", "text_coverage_max")

    def score(self, sample: ClipSample) -> dict[str, float]:
        _, grey = self._analysis_frames(sample)
        coverage = np.array([
            text_block_mask(frame, self.config).mean() if min(frame.shape) >= self.config.block_size else 0.0
            for frame in grey
        ])
        return {"text_coverage": float(coverage.mean()), "text_coverage_max": float(coverage.max())}

    def _drop_reason(self, scores: dict[str, float]) -> tuple[str, str] | None:
        if _above(scores["text_coverage"], self.config.max_text_coverage):
            return "text", f"text_coverage={scores['text_coverage']:.3g} > {self.config.max_text_coverage}"
        return None


# ----------------------------------------------------------------------------------------------------------------
# Aesthetics
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AestheticFilterConfig(FilterConfig):
    """``aesthetic`` is the mean score of ``max_frames`` evenly spread frames under a pluggable scorer
    (:mod:`data_pipelines.aesthetic`): ``scorer="heuristic"`` (no model; colourfulness, contrast and sharpness,
    0-10) or ``scorer="mlp"`` (a CLIP-style image embedding from ``model_path`` and a LAION-style head from
    ``head_path``, a safetensors file)."""

    max_frames: int = 3
    scorer: str = "heuristic"
    model_path: str | None = None
    head_path: str | None = None
    device: str = "cpu"
    min_aesthetic: float | None = 3.0


class AestheticFilter(ClipFilter):
    """Drops clips the aesthetic scorer rates low (``"low_aesthetic"``). The scorer is built on first use, so the
    filter pickles cheaply into worker processes."""

    name = "aesthetic"
    config_class = AestheticFilterConfig
    score_names = ("aesthetic",)

    def __init__(
        self, config: AestheticFilterConfig | None = None, aesthetic_scorer: Any = None, **overrides: Any
    ) -> None:
        super().__init__(config, **overrides)
        # An already built scorer (any AestheticScorer) can be passed instead of naming one in the config.
        self._scorer = aesthetic_scorer

    @property
    def scorer(self):
        if self._scorer is None:
            from data_pipelines.aesthetic import build_aesthetic_scorer

            self._scorer = build_aesthetic_scorer(
                self.config.scorer, model_path=self.config.model_path, head_path=self.config.head_path,
                device=self.config.device,
            )
        return self._scorer

    def __getstate__(self) -> dict[str, Any]:
        # Model weights are not shipped to workers; each process loads its own scorer from the config.
        state = dict(self.__dict__)
        state["_scorer"] = None
        return state

    def score(self, sample: ClipSample) -> dict[str, float]:
        indices = sample_indices(len(sample.frames), self.config.max_frames)
        return {"aesthetic": float(np.mean(self.scorer.score(sample.frames[indices])))}

    def _drop_reason(self, scores: dict[str, float]) -> tuple[str, str] | None:
        if _below(scores["aesthetic"], self.config.min_aesthetic):
            return "low_aesthetic", f"aesthetic={scores['aesthetic']:.3g} < {self.config.min_aesthetic}"
        return None


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------

FILTERS: dict[str, type[ClipFilter]] = {
    "motion": MotionFilter,
    "sharpness": SharpnessFilter,
    "brightness": BrightnessFilter,
    "static": StaticFilter,
    "text": TextFilter,
    "aesthetic": AestheticFilter,
}


def build_filter(name: str, options: dict[str, Any] | None = None) -> ClipFilter:
    """Build the filter registered as ``name`` with config fields from ``options`` (e.g. a YAML mapping)."""
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; valid: {', '.join(FILTERS)}")
    filter_class = FILTERS[name]
    options = dict(options or {})
    valid = {field.name for field in dataclasses.fields(filter_class.config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for filter {name!r}; valid: {', '.join(sorted(valid))}")
    return filter_class(filter_class.config_class(**options))
