"""ShapesBench: measure what a generator drew against ShapesWorld's exact ground truth.

* :mod:`.detector` reads a clip (frames and audio) back into a structured scene.
* :mod:`.metrics` scores a detected scene against a prompt's ground truth.
* :mod:`.suites` builds and loads the prompt suites (``evaluation/suites/shapes_*.jsonl``).
* :mod:`.runner` runs a generator over suites and writes ``report.json`` and ``report.html`` (:mod:`.report`).
* :mod:`.validate` checks the detector on the generator's own clips.
"""

from .detector import DetectedObject, DetectedScene, DetectedShot, DetectorConfig, detect_scene
from .metrics import METRIC_NAMES, ItemScore, psnr, score_item

__all__ = [
    "DetectedObject",
    "DetectedScene",
    "DetectedShot",
    "DetectorConfig",
    "ItemScore",
    "METRIC_NAMES",
    "detect_scene",
    "psnr",
    "score_item",
]
