"""Fixtures of the curation tests: synthetic multi-shot sources and a small, fast curation config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipelines.config import CurateConfig
from seedkit.data.video_io import write_video


def _multi_shot_video(path: Path, seed: int, shot_frames=(24, 24, 24), fps: float = 12.0, audio: bool = False) -> Path:
    """Shots of different coarse random patterns (distinct to perceptual hashes), each with a square moving across
    it (64x48)."""
    rng = np.random.default_rng(seed)
    frames = []
    for length in shot_frames:
        # A distinct palette per shot (so colour histograms see the cut) with a coarse pattern (so hashes differ).
        base = rng.integers(60, 195, 3)
        pattern = np.kron(base + rng.integers(-50, 50, (6, 8, 1)), np.ones((8, 8, 1))).clip(0, 255).astype(np.uint8)
        for step in range(length):
            frame = pattern.copy()
            left = (step * 2) % 52
            frame[16:28, left : left + 12] = 255
            frames.append(frame)
    sound = None
    if audio:
        time = np.arange(int(16000 * len(frames) / fps)) / 16000
        sound = (0.3 * np.sin(2 * np.pi * 330 * time)).astype(np.float32)[None]
    return write_video(path, np.stack(frames), fps=fps, audio=sound, sample_rate=16000 if audio else None)


def _small_config(**executor) -> CurateConfig:
    return CurateConfig.from_dict(
        {
            "decode": {"analysis_size": 64},
            "split": {"min_duration": 1.0, "max_duration": 4.0},
            "filters": {},
            "dedup": {"enabled": True},
            "shard": {"output_size": 32},
            "executor": {"workers": 2, "timeout": 120, **executor},
        }
    )


@pytest.fixture
def multi_shot_video():
    """``multi_shot_video(path, seed, shot_frames=(24, 24, 24), fps=12.0, audio=False) -> path``."""
    return _multi_shot_video


@pytest.fixture
def small_config():
    """``small_config(**executor) -> CurateConfig`` (small analysis size and shards, 2 workers)."""
    return _small_config
