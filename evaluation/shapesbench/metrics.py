"""ShapesBench metrics: a detected scene scored against the prompt's ground truth.

Every metric is a number in [0, 1] (accuracies and shares) or a physical quantity (PSNR in dB, offsets in ms), or
``None`` when it does not apply to the item (motion for an image, consistency for a single shot, audio for a silent
task).
Objects are matched by colour: ShapesWorld draws every colour at most once per clip, so the colour names the subject.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from seedkit.data.shapes import Scene

from .detector import DetectedScene

# A visual bounce is paired with the nearest same-colour tone within this many ms (larger: no pairing).
AV_PAIR_WINDOW_MS = 500.0

ACCURACY_METRICS = (
    "color", "shape", "size", "count", "motion", "persistence", "continuity", "consistency", "pitch_color"
)
METRIC_NAMES = ACCURACY_METRICS + ("first_frame_psnr", "av_offset_ms")

# Whether a larger value is better, for reports.
HIGHER_IS_BETTER = {name: True for name in ACCURACY_METRICS} | {"first_frame_psnr": True, "av_offset_ms": False}


def bootstrap_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of `values` (Efron & Tibshirani 1993): resample the items with
    replacement `resamples` times and take the central `confidence` of the resampled means. Seeded, so a report's
    intervals do not change between readings."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    draws = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


@dataclass
class ItemScore:
    """Metrics of one generated sample; ``details`` says what was matched or missed, per object."""

    metrics: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)


# PSNR of identical images is infinite; reports cap it so means and JSON stay finite.
PSNR_CAP_DB = 100.0


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    """PSNR in dB between two ``uint8 [H, W, 3]`` images, capped at ``PSNR_CAP_DB`` (identical images)."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"PSNR needs equal shapes, got {reference.shape} and {candidate.shape}")
    mse = float(np.mean((reference - candidate) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def score_objects(detected: DetectedScene, truth: Scene, with_motion: bool) -> ItemScore:
    """Colour, shape, size, count and (for videos) motion accuracy, and multi-shot subject consistency.

    Per ground-truth object of every shot: colour is right when the shot holds a detected object of that colour;
    shape, size and motion are right when that detected object has them (a missing object scores 0 on all).
    Count is right per shot when the number of detected objects equals the number asked for. A subject carried
    across shots is consistent when it is found, with the same shape, in every shot it appears in.
    """
    if len(detected.shots) != len(truth.shots):
        raise ValueError(
            f"detected scene has {len(detected.shots)} shots but the ground truth has {len(truth.shots)}; "
            f"detect with shot_starts from the ground truth"
        )
    hits: dict[str, list[float]] = {"color": [], "shape": [], "size": [], "count": [], "motion": []}
    objects_detail = []
    subject_shapes: dict[int, list[str | None]] = {}
    for shot_index, (shot_detected, shot_truth) in enumerate(zip(detected.shots, truth.shots)):
        found = {obj.color: obj for obj in shot_detected.objects}
        hits["count"].append(float(len(shot_detected.objects) == len(shot_truth.objects)))
        for obj in shot_truth.objects:
            match = found.get(obj.color)
            record = {"shot": shot_index, "subject_id": obj.subject_id, "color": obj.color, "found": match is not None}
            hits["color"].append(float(match is not None))
            for attribute in ("shape", "size") + (("motion",) if with_motion else ()):
                expected = getattr(obj, attribute)
                got = getattr(match, attribute) if match is not None else None
                hits[attribute].append(float(got == expected))
                record[attribute] = {"expected": expected, "detected": got}
            objects_detail.append(record)
            subject_shapes.setdefault(obj.subject_id, []).append(match.shape if match is not None else None)
    carried = {subject: shapes for subject, shapes in subject_shapes.items() if len(shapes) > 1}
    consistency = [float(None not in shapes and len(set(shapes)) == 1) for shapes in carried.values()]
    metrics: dict[str, float | None] = {name: _mean(values) for name, values in hits.items()}
    if not with_motion:
        metrics["motion"] = None
    metrics["consistency"] = _mean(consistency)
    extra = [
        {"color": obj.color, "shot": index}
        for index, (shot_detected, shot_truth) in enumerate(zip(detected.shots, truth.shots))
        for obj in shot_detected.objects
        if obj.color not in {o.color for o in shot_truth.objects}
    ]
    return ItemScore(metrics, {"objects": objects_detail, "unexpected_objects": extra, "carried_subjects": carried})


# Attributes a prompt asks of each object that the detector reads back, for the per-value breakdown.
OBJECT_ATTRIBUTES = ("shape", "size", "motion")
NOT_FOUND = "not found"


def attribute_confusion(objects: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per asked-for value of each object attribute, how often it was drawn and what was drawn instead.

    A mean accuracy hides which values fail (a model drawing every square as a circle scores shape 0.67 on a suite of
    equal thirds); this is the confusion table behind it, the breakdown one reads to decide what to fix.

    Args:
        objects: per-object records of :func:`score_objects` (``details["objects"]`` of every scored item), each with
            ``{attribute: {"expected": value, "detected": value or None}}`` for the attributes that applied.

    Returns:
        ``{attribute: {expected value: {"objects": n, "accuracy": share drawn right, "detected": {value: count}}}}``,
        values sorted by name; an object the detector did not find counts as detected ``"not found"``.
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for record in objects:
        for attribute in OBJECT_ATTRIBUTES:
            if attribute not in record:
                continue
            expected, detected = record[attribute]["expected"], record[attribute]["detected"]
            entry = table.setdefault(attribute, {}).setdefault(str(expected), {"objects": 0, "detected": {}})
            entry["objects"] += 1
            name = NOT_FOUND if detected is None else str(detected)
            entry["detected"][name] = entry["detected"].get(name, 0) + 1
    for values in table.values():
        for expected, entry in values.items():
            entry["accuracy"] = entry["detected"].get(expected, 0) / entry["objects"]
            entry["detected"] = dict(sorted(entry["detected"].items()))
    return {attribute: dict(sorted(values.items())) for attribute, values in sorted(table.items())}


def format_attribute_confusion(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One line per attribute of :func:`attribute_confusion`'s table, e.g.
    ``shape: circle 1.00 (16), square 0.31 (16; drawn as circle 11), triangle 0.81 (16; drawn as circle 3)``."""
    lines = []
    for attribute, values in table.items():
        parts = []
        for expected, entry in values.items():
            misses = [(name, count) for name, count in entry["detected"].items() if name != expected]
            misses.sort(key=lambda miss: -miss[1])
            drawn = "; drawn as " + ", ".join(f"{name} {count}" for name, count in misses) if misses else ""
            parts.append(f"{expected} {entry['accuracy']:.2f} ({entry['objects']}{drawn})")
        lines.append(f"{attribute}: " + ", ".join(parts))
    return "\n".join(lines)


def score_temporal(detected: DetectedScene, truth: Scene) -> ItemScore:
    """Whether what a video draws stays the same things from frame to frame (ShapesWorld's analogue of VBench's
    subject consistency and temporal flickering; a model can fail them while getting every first frame right).

    * ``persistence``: per ground-truth object, the share of its shot's frames in which an object of its colour is
      seen (0 when none is found): an object that fades out or changes colour halfway scores about 0.5.
    * ``continuity``: the share of frame transitions inside the ground truth's shots that the detector does not
      read as a cut (a colour appearing or vanishing in the open, a velocity jump away from any wall, a size jump):
      a generation that flickers, teleports or swaps objects loses one transition per glitch.
    """
    persistence = []
    for shot_detected, shot_truth in zip(detected.shots, truth.shots):
        found = {obj.color: obj for obj in shot_detected.objects}
        for obj in shot_truth.objects:
            match = found.get(obj.color)
            persistence.append(0.0 if match is None else match.visible_frames / shot_truth.num_frames)
    boundaries = set(truth.shot_boundaries)
    transitions = [frame for frame in range(1, truth.num_frames) if frame not in boundaries]
    spurious = set(detected.cut_frames) - boundaries
    continuity = 1.0 - len(spurious) / len(transitions) if transitions else None
    return ItemScore(
        {"persistence": _mean(persistence), "continuity": continuity},
        {"spurious_cuts": sorted(spurious)},
    )


def detected_bounces(detected: DetectedScene, fps: float) -> list[tuple[float, str]]:
    """Visual bounces of the clip as ``(time_s, colour)``: the frame nearest each wall contact, over ``fps``."""
    return sorted(
        (frame / fps, obj.color) for shot in detected.shots for obj in shot.objects for frame in obj.bounce_frames
    )


def score_audio(detected: DetectedScene, truth: Scene, fps: float) -> ItemScore:
    """Pitch-to-colour accuracy and audio-video offset, both read from the generated clip alone.

    Where a generated object bounces depends on where the model put it, so tones are judged against the clip's own
    video and the prompt's colours, never against the ground truth's bounce times:

    * ``pitch_color``: share of heard tones whose pitch names the colour of an object the prompt makes bounce
      (0 when the prompt makes something bounce and nothing is heard; 1 when it makes nothing bounce and nothing
      is heard).
    * ``av_offset_ms``: mean absolute time between every visual bounce read from the video and the nearest tone of
      the same colour (``None`` when the video shows no bounce or no such tone is heard within
      ``AV_PAIR_WINDOW_MS``).
    """
    if detected.audio_events is None:
        raise ValueError("the detected scene has no audio analysis; pass the clip's audio and sample rate")
    heard = [(event.time_s, event.color) for event in detected.audio_events]
    bouncing_colors = {obj.color for shot in truth.shots for obj in shot.objects if obj.motion == "bouncing"}
    if heard:
        pitch = float(np.mean([color in bouncing_colors for _, color in heard]))
    else:
        pitch = 0.0 if truth.audio_events else 1.0
    offsets = []
    pairs = []
    for time, color in detected_bounces(detected, fps):
        candidates = [heard_time - time for heard_time, heard_color in heard if heard_color == color]
        if not candidates:
            continue
        nearest = min(candidates, key=abs)
        if abs(nearest) * 1000 <= AV_PAIR_WINDOW_MS:
            offsets.append(abs(nearest) * 1000)
            pairs.append({"color": color, "bounce_s": time, "offset_ms": nearest * 1000})
    return ItemScore(
        {"pitch_color": pitch, "av_offset_ms": _mean(offsets)},
        {"heard": [[t, c] for t, c in heard], "bouncing_colors": sorted(bouncing_colors), "av_pairs": pairs},
    )


def score_item(
    detected: DetectedScene,
    truth: Scene,
    task: str,
    conditioning_image: np.ndarray | None = None,
    first_frame: np.ndarray | None = None,
) -> ItemScore:
    """All metrics of one sample for its task (``t2i``, ``t2v``, ``i2v`` or ``t2av``); non-applicable ones are None.

    Args:
        detected: the generated clip read by :func:`~evaluation.shapesbench.detector.detect_scene` with the ground
            truth's shot starts (and audio for ``t2av``).
        truth: the prompt's ground-truth scene.
        conditioning_image: ``uint8 [H, W, 3]`` image given to an ``i2v`` model; ``first_frame`` the generated one.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    score = score_objects(detected, truth, with_motion=task != "t2i")
    metrics = {name: None for name in METRIC_NAMES} | score.metrics
    details = dict(score.details)
    if task != "t2i":
        temporal = score_temporal(detected, truth)
        metrics.update(temporal.metrics)
        details.update(temporal.details)
    if task == "i2v":
        if conditioning_image is None or first_frame is None:
            raise ValueError("an i2v item needs the conditioning image and the generated first frame for PSNR")
        metrics["first_frame_psnr"] = psnr(conditioning_image, first_frame)
    if task == "t2av":
        audio = score_audio(detected, truth, truth.fps)
        metrics.update(audio.metrics)
        details.update(audio.details)
    return ItemScore(metrics, details)


TASKS = ("t2i", "t2v", "i2v", "t2av")
