"""The Ray executor runs the same per-source processor as Ray tasks (a local Ray instance here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipelines.config import CurateConfig
from data_pipelines.pipeline import CurationRun
from seedkit.data.manifest import Manifest
from seedkit.data.video_io import write_video


def two_shot_video(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(2):
        base = rng.integers(60, 195, 3)
        pattern = np.kron(base + rng.integers(-50, 50, (6, 8, 1)), np.ones((8, 8, 1))).clip(0, 255).astype(np.uint8)
        for step in range(24):
            frame = pattern.copy()
            frame[16:28, (2 * step) % 52 : (2 * step) % 52 + 12] = 255
            frames.append(frame)
    return write_video(path, np.stack(frames), fps=12)


def test_ray_executor_matches_local_and_survives_a_crashing_task(tmp_path):
    pytest.importorskip("ray")
    inputs = tmp_path / "in"
    for index, name in enumerate(["a", "b_crash", "c"]):
        two_shot_video(inputs / f"{name}.mp4", seed=index)
    options = {
        "decode": {"analysis_size": 64},
        "split": {"min_duration": 1.0, "max_duration": 4.0},
        "filters": {},
        "dedup": {"enabled": False},
        "shard": {"mode": "ranges"},
    }
    ray_config = CurateConfig.from_dict(
        {**options, "executor": {"kind": "ray", "workers": 2, "timeout": 120, "debug_crash_on": ["b_crash"]}}
    )
    ray_summary = CurationRun(inputs, tmp_path / "ray", ray_config, progress=False).run()
    assert ray_summary.failures == {"worker_crashed": 1} and ray_summary.clips_kept == 4

    local_config = CurateConfig.from_dict({**options, "executor": {"workers": 1, "debug_crash_on": ["b_crash"]}})
    local_summary = CurationRun(inputs, tmp_path / "local", local_config, progress=False).run()
    assert local_summary.failures == {"worker_crashed": 1} and local_summary.clips_kept == 4
    spans = lambda out: sorted(
        (r.metadata["source"], r.start_frame, r.end_frame) for r in Manifest.read(out / "manifest.jsonl", root=inputs)
    )
    assert spans(tmp_path / "ray") == spans(tmp_path / "local")
    assert len(spans(tmp_path / "ray")) == 4
