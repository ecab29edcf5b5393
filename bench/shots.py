"""Shot boundary detection benchmark: TransNetV2 and seedkit's histogram detector against PySceneDetect's
ContentDetector, on the same decoded frames, in one run.

    python bench/shots.py [--videos DIR] [--repeats 3] [--tolerance 2]

Every clip is decoded once with PyAV (``data_pipelines.decode``): frames at 256 px on the longer side (what the
curation pipeline analyses; PySceneDetect's ContentDetector gets these, our histogram detector every other pixel of
them, as in the pipeline) and 48x27 thumbnails (TransNetV2's input). Detector speed is the median over ``--repeats``
interleaved runs of detection alone, in frames per second; precision and recall count a detection within
``--tolerance`` frames of a true cut (one-to-one).

Ground truth (first frame of each new shot, constant-frame-rate indices):

* ``psd/testvideo.mp4``: 30, 180, 394, as published with PySceneDetect's test resources.
* ``bbb_0_30.webm``: 283, 376, 551 (hard cuts; the opening fade from black and the title fade-in around 605 are
  not cuts), by inspecting the frames around every candidate any detector proposed.
* ``psd/goldeneye-vfr-drop3.mp4``: 90, 210 on the 23.976 fps grid (variable frame rate source).
* ``psd/counter.mp4``: 10, 20 (background colour changes; frame numbers are burned in).
* ``chaplin.mp4``, ``smpte_2997.mp4``: no cuts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipelines.decode import decode_video  # noqa: E402
from data_pipelines.shots import (  # noqa: E402
    TRANSNET_SIZE,
    HistogramShotDetector,
    TransNetV2ShotDetector,
    match_cuts,
)

GROUND_TRUTH = {
    "psd/testvideo.mp4": [30, 180, 394],
    "bbb_0_30.webm": [283, 376, 551],
    "psd/goldeneye-vfr-drop3.mp4": [90, 210],
    "psd/counter.mp4": [10, 20],
    "chaplin.mp4": [],
    "smpte_2997.mp4": [],
}


def pyscenedetect_cuts(frames: np.ndarray, fps: float) -> list[int]:
    """PySceneDetect ContentDetector (default threshold 27, min_scene_len 15) fed our RGB frames as BGR."""
    from scenedetect import ContentDetector
    from scenedetect.common import FrameTimecode

    detector = ContentDetector()
    cuts = []
    for index, frame in enumerate(frames):
        timecode = FrameTimecode(index, fps=fps)
        cuts.extend(cut.frame_num for cut in detector.process_frame(timecode, np.ascontiguousarray(frame[..., ::-1])))
    cuts.extend(cut.frame_num for cut in detector.post_process(FrameTimecode(len(frames), fps=fps)))
    return sorted(set(int(c) for c in cuts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_videos = os.environ.get(
        "SEEDKIT_SHARED_VIDEOS", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos")
    )
    parser.add_argument("--videos", default=default_videos, help="folder with the shared test clips")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per detector and clip (median)")
    parser.add_argument("--tolerance", type=int, default=2, help="frames a detection may be off by")
    args = parser.parse_args()
    root = Path(args.videos)
    if not root.is_dir():
        print(f"no videos at {root}; pass --videos", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(1)
    detectors = {
        "histogram": lambda clip: HistogramShotDetector().detect(clip["frames"][:, ::2, ::2]).cuts,
        "transnetv2": lambda clip, model=TransNetV2ShotDetector(): model.detect(clip["thumbnails"]).cuts,
        "pyscenedetect": lambda clip: pyscenedetect_cuts(clip["frames"], clip["fps"]),
    }
    totals = {name: {"tp": 0, "fp": 0, "fn": 0, "frames": 0, "seconds": 0.0} for name in detectors}
    rows = []
    decode_frames, decode_seconds = 0, 0.0
    for name, truth in GROUND_TRUTH.items():
        path = root / name
        if not path.exists():
            print(f"skipping missing {name}", file=sys.stderr)
            continue
        started = time.perf_counter()
        decoded = decode_video(path, size=256, thumbnail_size=TRANSNET_SIZE)
        decode_seconds += time.perf_counter() - started
        decode_frames += len(decoded.frames)
        clip = {"frames": decoded.frames, "thumbnails": decoded.thumbnails, "fps": decoded.fps}
        timings: dict[str, list[float]] = {detector: [] for detector in detectors}
        found: dict[str, list[int]] = {}
        for _ in range(args.repeats):
            for detector, run in detectors.items():  # interleaved, so load changes hit every detector alike
                started = time.perf_counter()
                found[detector] = run(clip)
                timings[detector].append(time.perf_counter() - started)
        for detector in detectors:
            match = match_cuts(found[detector], truth, args.tolerance)
            seconds = statistics.median(timings[detector])
            total = totals[detector]
            total["tp"] += match.true_positives
            total["fp"] += match.false_positives
            total["fn"] += match.false_negatives
            total["frames"] += len(decoded.frames)
            total["seconds"] += seconds
            rows.append((name, detector, match.precision, match.recall, len(decoded.frames) / seconds, found[detector]))

    print(f"{'clip':30} {'detector':14} {'precision':>9} {'recall':>7} {'fps':>8}  cuts")
    for name, detector, precision, recall, fps, cuts in rows:
        print(f"{name:30} {detector:14} {precision:9.2f} {recall:7.2f} {fps:8.0f}  {cuts}")
    print()
    print(f"{'all clips':30} {'detector':14} {'precision':>9} {'recall':>7} {'fps':>8}")
    for detector, total in totals.items():
        detected = total["tp"] + total["fp"]
        expected = total["tp"] + total["fn"]
        precision = total["tp"] / detected if detected else 1.0
        recall = total["tp"] / expected if expected else 1.0
        print(f"{'':30} {detector:14} {precision:9.2f} {recall:7.2f} {total['frames'] / total['seconds']:8.0f}")
    print(f"\nshared PyAV decode (256 px + 48x27 thumbnails): {decode_frames / decode_seconds:.0f} frames/s; "
          f"detector fps exclude decoding; torch threads: 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
