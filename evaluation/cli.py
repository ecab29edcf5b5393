"""`seedkit eval`: run an evaluation suite.

    seedkit eval shapesbench --model DIR --out report_dir [--suite motion --suite multi_shot] [--limit 8]
    seedkit eval shapesbench --oracle --out report_dir      # the ground truth itself: must score about 1.0
    seedkit eval shapesbench --reconstruct VAE_DIR --out d  # ground truth through a VAE: its model's ceiling

The report directory receives ``report.json`` (per-metric means overall, per suite and per caption split, and one
record per item including failures and their reasons), ``report.html`` (bar charts and a contact sheet) and the
contact-strip PNGs under ``samples/``.
"""

from __future__ import annotations

import argparse
import json

BENCHMARKS = ("shapesbench",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=BENCHMARKS, help="which benchmark to run")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="seedkit model directory (diffusers layout, with model_index.json)")
    source.add_argument("--oracle", action="store_true", help="score ShapesWorld's own renders (sanity baseline)")
    source.add_argument(
        "--reconstruct",
        metavar="VAE_DIR",
        help="score ground truth encoded and decoded by this VAE: the ceiling it sets for any model on its latents",
    )
    parser.add_argument("--out", required=True, help="report directory (report.json, report.html, samples/)")
    parser.add_argument(
        "--suite",
        action="append",
        help="suite name, or a suite .jsonl file such as a larger one from `python -m evaluation.shapesbench.suites "
        "--items N --out DIR` (repeatable; default: every bundled shapes_*.jsonl)",
    )
    parser.add_argument("--limit", type=int, help="at most this many items per suite")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (default: 50)")
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default: 5.0)")
    parser.add_argument("--height", type=int, help="generate at this height (ground truth rebuilt at that size)")
    parser.add_argument("--width", type=int, help="generate at this width (ground truth rebuilt at that size)")
    parser.add_argument("--frames", type=int, help="generate this many frames, 1 + 4k (videos only)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from evaluation.shapesbench.runner import (
        PipelineGenerator,
        VAEReconstructionGenerator,
        oracle_generate_fn,
        run_shapesbench,
    )
    from evaluation.shapesbench.suites import SUITES, available_suites, load_suite

    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}")
    names = args.suite or available_suites()
    unknown = [
        name for name in names
        if not name.endswith(".jsonl") and name.removeprefix("shapes_") not in available_suites()
    ]
    if unknown:
        raise SystemExit(f"unknown suite(s) {unknown}; valid suites: {', '.join(available_suites() or SUITES)}")
    items = []
    for name in names:
        suite_items = load_suite(name)
        if args.limit is not None:
            suite_items = suite_items[: args.limit]
        for item in suite_items:
            frames = None if item.num_frames == 1 else args.frames
            items.append(item.with_geometry(args.height, args.width, frames))
    if args.oracle:
        generate_fn = oracle_generate_fn
        settings = {"model": "oracle (ShapesWorld ground truth)"}
    elif args.reconstruct:
        generate_fn = VAEReconstructionGenerator(args.reconstruct, args.device)
        settings = {"model": f"ground truth reconstructed by the VAE in {args.reconstruct}"}
    else:
        generate_fn = PipelineGenerator(args.model, args.steps, args.guidance, args.device)
        settings = {"model": str(args.model), "steps": args.steps, "guidance": args.guidance}
    settings |= {"suites": names, "height": args.height, "width": args.width, "frames": args.frames}
    report = run_shapesbench(generate_fn, items, args.out, settings=settings, progress=not args.no_progress)
    print(json.dumps({"metrics": report.summary["metrics"], "items": report.summary["items"],
                      "failed": report.summary["failed"]}, indent=2))
    print(f"wrote {args.out}/report.json and {args.out}/report.html")
    return 0
