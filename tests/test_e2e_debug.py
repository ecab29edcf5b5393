"""The end-to-end debug recipe (recipes/e2e_debug.py) at toy size: every stage runs, the exported pipeline loads and
generates, the ShapesBench report has every metric, and a re-run skips the finished stages."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.shapesbench.metrics import METRIC_NAMES
from seedkit.pipelines import SeedkitTextToVideoPipeline

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "e2e_debug.py"


def load_recipe(monkeypatch):
    spec = importlib.util.spec_from_file_location("e2e_debug_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules, so the module must be registered while it runs
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """Toy models gain nothing from threads, and on a shared CPU extra threads oversubscribe it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_e2e_debug_smoke(tmp_path, capsys, monkeypatch, one_thread):
    recipe = load_recipe(monkeypatch)
    out = tmp_path / "run"
    assert recipe.main(["--out", str(out), "--preset", "smoke", "--no-progress"]) == 0

    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert list(stages) == list(recipe.STAGES)
    assert stages["vae"]["steps"] == recipe.PRESETS["smoke"].vae_steps
    assert stages["transformer"]["steps"] == recipe.PRESETS["smoke"].transformer_steps
    assert stages["cache"]["samples"] == recipe.PRESETS["smoke"].num_clips

    report = json.loads((out / "shapesbench" / "report.json").read_text())
    assert set(METRIC_NAMES) <= set(report["summary"]["metrics"])
    assert report["summary"]["items"] == recipe.PRESETS["smoke"].bench_items
    assert all(item["status"] == "ok" for item in report["items"]), [item["reason"] for item in report["items"]]
    assert "ShapesBench report:" in capsys.readouterr().out

    pipeline = SeedkitTextToVideoPipeline.from_pretrained(out / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    frames = pipeline(
        "a small red circle moving right",
        num_inference_steps=2,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert frames.shape == (1, 5, 16, 16, 3)  # the pipeline's defaults are the training size
    assert np.isfinite(frames).all()

    # A re-run resumes: every stage is found finished and skipped, so the recorded timings do not change.
    assert recipe.main(["--out", str(out), "--preset", "smoke", "--no-progress"]) == 0
    assert json.loads((out / "stages.json").read_text())["stages"] == stages
