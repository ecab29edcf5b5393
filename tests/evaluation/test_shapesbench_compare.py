"""Paired comparison of two ShapesBench reports: exact means and counts, intervals that shrink with items and cover
the truth, and refusals for reports of different items."""

import json

import numpy as np
import pytest

from evaluation.shapesbench.compare import main, paired_differences
from evaluation.shapesbench.metrics import bootstrap_interval


def report(scores: dict[str, list[float | None]], prompts=None) -> dict:
    """A report.json with one item per position of the score lists."""
    count = len(next(iter(scores.values())))
    items = []
    for index in range(count):
        metrics = {name: values[index] for name, values in scores.items()}
        prompt = prompts[index] if prompts else f"prompt {index}"
        items.append({"id": f"item-{index:03d}", "prompt": prompt, "status": "ok", "metrics": metrics})
    return {"items": items}


def test_means_counts_and_an_interval_that_covers_the_difference():
    base = report({"shape": [1, 0, 0, 1, 0, 1, 0, 0], "motion": [1, 1, 1, 1, None, 0, 0, 0]})
    candidate = report({"shape": [1, 1, 1, 1, 0, 0, 1, 0], "motion": [1, 1, 1, 1, 1, 0, 0, 0]})
    shape, motion = paired_differences(base, candidate, metrics=("shape", "motion"))
    assert (shape.items, shape.base, shape.candidate, shape.won, shape.lost) == (8, 3 / 8, 5 / 8, 3, 1)
    assert shape.difference == pytest.approx(0.25) and shape.low < 0.25 < shape.high
    assert motion.items == 7 and motion.difference == 0.0 and (motion.low, motion.high) == (0.0, 0.0)


def test_the_interval_narrows_with_more_items_and_covers_a_known_gain():
    generator = np.random.default_rng(0)
    widths = []
    for count in (40, 640):
        base = (generator.random(count) < 0.6).astype(float)
        # the candidate fixes a tenth of the items on average and breaks none
        candidate = np.maximum(base, (generator.random(count) < 0.1).astype(float))
        row, = paired_differences(report({"shape": list(base)}), report({"shape": list(candidate)}), ("shape",))
        widths.append(row.high - row.low)
        assert row.low <= row.difference <= row.high and row.lost == 0
    assert widths[1] < widths[0] / 2
    assert row.low > 0  # 640 items resolve a gain of about 0.04


def test_reports_of_different_items_are_refused(tmp_path, capsys):
    base = report({"shape": [1, 0, 1]})
    with pytest.raises(ValueError, match="different items"):
        paired_differences(base, report({"shape": [1, 0]}))
    with pytest.raises(ValueError, match="another prompt"):
        paired_differences(base, report({"shape": [1, 0, 1]}, prompts=["a", "b", "c"]))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(report({"shape": [1, 1, 1]})))
    arguments = ["--metrics", "shape", "--json", str(tmp_path / "d.json")]
    assert main([str(tmp_path / "a"), str(tmp_path / "b.json"), *arguments]) == 0
    assert "shape    0.667 -> 1.000  +0.333" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.json").read_text())[0]["won"] == 1
    (tmp_path / "c.json").write_text(json.dumps(report({"shape": [1]})))
    assert main([str(tmp_path / "a"), str(tmp_path / "c.json")]) == 2


def test_bootstrap_interval_of_a_mean_matches_the_binomial_spread():
    # 19 of 24 right: the normal approximation gives 0.79 +- 1.96 * sqrt(0.79 * 0.21 / 24) = 0.79 +- 0.16
    low, high = bootstrap_interval([1.0] * 19 + [0.0] * 5)
    assert low < 19 / 24 < high and 0.26 < high - low < 0.38
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_interval([1.0] * 19 + [0.0] * 5) == (low, high)  # seeded
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="confidence must be in"):
        bootstrap_interval([1.0], confidence=1.0)
