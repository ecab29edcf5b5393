"""`seedkit curate INPUT --out DIR`: curate raw videos into scored (and captioned) training clips.

INPUT is a folder (searched recursively), a ``.txt`` list of paths or a manifest. Command-line options override the
YAML config. Exit code 0 when the run finished (even with failed sources, listed in the summary), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_pipelines.config import EXECUTORS, SHARD_MODES, SHOT_DETECTOR_NAMES, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", help="folder of videos (recursive), a .txt list of paths, or a .jsonl/.parquet manifest"
    )
    parser.add_argument("--out", required=True, help="output folder: clips, manifest, status files, summary.json")
    parser.add_argument("--config", default=None, help="YAML config (see data_pipelines/config.py)")
    parser.add_argument("--executor", choices=EXECUTORS, default=None, help="local process pool (default) or ray")
    parser.add_argument("--workers", type=int, default=None, help="worker processes / concurrent Ray tasks")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per source before it is failed")
    parser.add_argument("--shot-detector", choices=SHOT_DETECTOR_NAMES, default=None, help="shot boundary detector")
    parser.add_argument("--mode", choices=SHARD_MODES, default=None, help="write clip files or frame ranges")
    parser.add_argument("--retry-failed", action="store_true", help="redo sources that failed in an earlier run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.executor is not None:
        config.executor.kind = args.executor
    if args.workers is not None:
        config.executor.workers = args.workers
    if args.timeout is not None:
        config.executor.timeout = args.timeout
    if args.shot_detector is not None:
        config.shots.detector = args.shot_detector
    if args.mode is not None:
        config.shard.mode = args.mode
    # Re-validate after the overrides.
    for section in (config.executor, config.shots, config.shard):
        section.__post_init__()

    from data_pipelines.pipeline import CurationRun

    out_dir = Path(args.out)
    summary = CurationRun(
        args.input, out_dir, config, retry_failed=args.retry_failed, progress=not args.no_progress
    ).run()
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1, default=str), encoding="utf-8")
    print(summary.format())
    return 0
