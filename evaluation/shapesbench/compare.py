"""Compare two ShapesBench reports on the same items: paired differences with bootstrap confidence intervals.

    python -m evaluation.shapesbench.compare reports/v12/report.json reports/candidate/report.json

Two checkpoints scored on a few dozen prompts differ by a few items, and a mean accuracy moves by 1 / N per item:
without an interval, noise reads as progress. Both reports must hold the same items (same ids and prompts, as the
same suite file gives); each metric's difference is the mean over items of `candidate - base`, its interval the
percentile bootstrap over items (Efron & Tibshirani 1993), resampling the pairs so that what both models find hard
cancels out. `won` / `lost` count the items where the candidate scores higher / lower.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from evaluation.shapesbench.metrics import bootstrap_interval

DEFAULT_METRICS = ("color", "shape", "size", "count", "motion")


@dataclass(frozen=True)
class PairedDifference:
    """One metric over the items both reports scored it on.

    Attributes:
        metric: the metric's name.
        items: how many items had it in both reports.
        base, candidate: the mean score of each.
        difference: `candidate - base`.
        low, high: the bootstrap interval of `difference` at the asked confidence.
        won, lost: items where the candidate scores higher / lower than the base.
    """

    metric: str
    items: int
    base: float
    candidate: float
    difference: float
    low: float
    high: float
    won: int
    lost: int


def _scored_items(report: dict, name: str) -> dict[str, dict]:
    items = {item["id"]: item for item in report.get("items", []) if item.get("status") == "ok"}
    if not items:
        raise ValueError(f"{name} has no scored items (is it a ShapesBench report.json?)")
    return items


def paired_differences(
    base: dict,
    candidate: dict,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    confidence: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
    names: tuple[str, str] = ("base", "candidate"),
) -> list[PairedDifference]:
    """Paired differences of two reports' per-item metrics (report dicts as `run_shapesbench` writes them).

    Raises:
        ValueError: the reports hold different items, or an item's prompt differs between them.
    """
    base_items, candidate_items = _scored_items(base, names[0]), _scored_items(candidate, names[1])
    if base_items.keys() != candidate_items.keys():
        only_base = sorted(base_items.keys() - candidate_items.keys())[:5]
        only_candidate = sorted(candidate_items.keys() - base_items.keys())[:5]
        raise ValueError(
            f"the reports scored different items (only in {names[0]}: {only_base}, only in {names[1]}: "
            f"{only_candidate}); compare reports of one suite file"
        )
    for item_id, item in base_items.items():
        if item["prompt"] != candidate_items[item_id]["prompt"]:
            raise ValueError(f"item {item_id} has another prompt in {names[1]}; compare reports of one suite file")
    results = []
    for metric in metrics:
        pairs = [
            (item["metrics"].get(metric), candidate_items[item_id]["metrics"].get(metric))
            for item_id, item in sorted(base_items.items())
        ]
        pairs = np.array([pair for pair in pairs if None not in pair], dtype=np.float64)
        if len(pairs) == 0:
            continue
        differences = pairs[:, 1] - pairs[:, 0]
        low, high = bootstrap_interval(differences, confidence, resamples, seed)
        results.append(
            PairedDifference(
                metric=metric,
                items=len(differences),
                base=float(pairs[:, 0].mean()),
                candidate=float(pairs[:, 1].mean()),
                difference=float(differences.mean()),
                low=low,
                high=high,
                won=int((differences > 0).sum()),
                lost=int((differences < 0).sum()),
            )
        )
    return results


def format_differences(differences: list[PairedDifference], confidence: float) -> str:
    """A table, one metric per line: `shape  0.833 -> 0.875  +0.042 [-0.021, +0.104]  won 7 lost 3 (96 items)`."""
    lines = []
    for row in differences:
        lines.append(
            f"{row.metric:<8} {row.base:.3f} -> {row.candidate:.3f}  {row.difference:+.3f} "
            f"[{row.low:+.3f}, {row.high:+.3f}]  won {row.won} lost {row.lost} ({row.items} items)"
        )
    return f"paired difference, {confidence:.0%} bootstrap interval\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the reference report.json (or its directory)")
    parser.add_argument("candidate", type=Path, help="the report.json to compare with it (or its directory)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metrics to compare")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default: 0.95)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default: 10000)")
    parser.add_argument("--json", type=Path, help="also write the differences here")
    args = parser.parse_args(argv)
    reports = []
    for path in (args.base, args.candidate):
        path = path / "report.json" if path.is_dir() else path
        if not path.is_file():
            parser.error(f"{path} does not exist; pass a report.json written by `seedkit eval shapesbench`")
        reports.append(json.loads(path.read_text(encoding="utf-8")))
    try:
        differences = paired_differences(
            *reports, tuple(args.metrics), args.confidence, args.resamples, names=(str(args.base), str(args.candidate))
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_differences(differences, args.confidence))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(row) for row in differences], indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
