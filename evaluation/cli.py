"""`seedkit eval`: run an evaluation suite.

    seedkit eval shapesbench --model DIR --out report_dir [--suite motion --suite multi_shot] [--limit 8]
    seedkit eval shapesbench --oracle --out report_dir      # the ground truth itself: must score about 1.0
    seedkit eval shapesbench --reconstruct VAE_DIR --out d  # ground truth through a VAE: its model's ceiling
    seedkit eval shapesbench --model DIR --renoise 0.8 --out d  # denoise the ground truth noised to 0.8 (SDEdit)
    seedkit eval sensitivity --model DIR --out d            # does the model use colour / shape / size / motion words?
    seedkit eval steering --model DIR --out d               # do direction words move the generated object?

The report directory receives ``report.json`` (per-metric means overall, per suite and per caption split, and one
record per item including failures and their reasons), ``report.html`` (bar charts and a contact sheet) and the
contact-strip PNGs under ``samples/``. ``sensitivity`` (forward passes only, see
:mod:`evaluation.shapesbench.sensitivity`) writes ``sensitivity.json``; ``steering`` (paired generations, see
:mod:`evaluation.shapesbench.steering`) writes ``steering.json``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from seedkit.generate import add_sde_arguments, sde_sampling_from_args

BENCHMARKS = ("shapesbench", "sensitivity", "steering")


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
    parser.add_argument(
        "--guidance-2",
        type=float,
        help="guidance scale of a two-expert model's low-noise steps (transformer_2); default: --guidance",
    )
    parser.add_argument(
        "--image-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="text-to-video items: sample the first frame as an image, then the clip from it (default: the model's)",
    )
    parser.add_argument(
        "--renoise",
        type=float,
        metavar="STRENGTH",
        help="with --model: start each text-to-video item from its ground truth noised to this strength in (0, 1] "
        "and denoise it (SDEdit); near 0 scores approach the VAE ceiling, 1 is plain generation",
    )
    parser.add_argument("--height", type=int, help="generate at this height (ground truth rebuilt at that size)")
    parser.add_argument("--width", type=int, help="generate at this width (ground truth rebuilt at that size)")
    parser.add_argument("--frames", type=int, help="generate this many frames, 1 + 4k (videos only)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--clips", type=int, help="sensitivity: clips per attribute (default: 32); steering: scenes (default: 8)"
    )
    parser.add_argument(
        "--sigmas", type=float, nargs="+", help="sensitivity: noise levels to probe (default: 0.8 0.95)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sensitivity, steering: seed of the probe clips and noise")
    add_sde_arguments(parser)


def pipeline_generator(args: argparse.Namespace, renoise: float | None = None) -> tuple[Any, dict[str, Any]]:
    """The ``--model`` directory's sampler with the command line's settings, and those settings for the report."""
    from evaluation.shapesbench.runner import PipelineGenerator

    try:
        sde = sde_sampling_from_args(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    generate_fn = PipelineGenerator(
        args.model, args.steps, args.guidance, args.device, renoise=renoise, guidance_scale_2=args.guidance_2,
        image_first=args.image_first, sde=sde,
    )
    settings = {"model": str(args.model), "steps": args.steps, "guidance": args.guidance}
    if sde is not None:
        settings["sde"] = {"noise_level": sde.noise_level, "window": list(sde.window), "passes": sde.passes}
    if args.guidance_2 is not None:
        settings["guidance_2"] = args.guidance_2
    if args.image_first is not None:
        settings["image_first"] = args.image_first
    return generate_fn, settings


def run(args: argparse.Namespace) -> int:
    if args.sde_noise is not None and (args.benchmark == "sensitivity" or not args.model):
        raise SystemExit(
            "--sde-noise changes how a model samples: it needs --model, and not the sensitivity probe (which scores "
            "one-step predictions, no sampler steps)"
        )
    if args.benchmark == "sensitivity":
        return run_sensitivity(args)
    if args.benchmark == "steering":
        return run_steering(args)
    from evaluation.shapesbench.metrics import format_attribute_confusion
    from evaluation.shapesbench.runner import VAEReconstructionGenerator, oracle_generate_fn, run_shapesbench
    from evaluation.shapesbench.suites import SUITES, available_suites, load_suite

    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}")
    if args.renoise is not None and not args.model:
        raise SystemExit("--renoise denoises with a model: pass --model DIR (not --oracle / --reconstruct)")
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
        generate_fn, settings = pipeline_generator(args, renoise=args.renoise)
        if args.renoise is not None:
            settings["renoise"] = args.renoise
    # The suites were cut to --limit here, so the report must hear of it from here.
    settings |= {"suites": names, "limit": args.limit}
    settings |= {"height": args.height, "width": args.width, "frames": args.frames}
    report = run_shapesbench(generate_fn, items, args.out, settings=settings, progress=not args.no_progress)
    print(json.dumps({"metrics": report.summary["metrics"], "items": report.summary["items"],
                      "failed": report.summary["failed"]}, indent=2))
    intervals = report.summary["intervals"]
    print("95% bootstrap intervals over items: " + ", ".join(
        f"{name} [{low:.2f}, {high:.2f}]" for name, (low, high) in intervals.items()
    ))
    print(format_attribute_confusion(report.summary["by_attribute"]))
    print(f"wrote {args.out}/report.json and {args.out}/report.html")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from evaluation.shapesbench.sensitivity import DEFAULT_SIGMAS, caption_sensitivity, format_table
    from seedkit.pipelines import SeedkitTextToVideoPipeline

    if not args.model:
        raise SystemExit("sensitivity probes a trained model: pass --model DIR (not --oracle / --reconstruct)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipeline = SeedkitTextToVideoPipeline.from_pretrained(args.model).to(device)
    pipeline.set_progress_bar_config(disable=True)
    sigmas = tuple(args.sigmas or DEFAULT_SIGMAS)
    geometry = {"height": args.height or 64, "width": args.width or 64, "num_frames": args.frames or 17}
    clips = args.clips or 32
    results = caption_sensitivity(
        pipeline, num_clips=clips, sigmas=sigmas, seed=args.seed, progress=not args.no_progress, **geometry
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"model": str(args.model), "clips": clips, "sigmas": list(sigmas), "seed": args.seed, **geometry}
    payload["attributes"] = {name: result.to_dict() for name, result in results.items()}
    (out / "sensitivity.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(format_table(results))
    print(f"wrote {out}/sensitivity.json")
    return 0


def run_steering(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evaluation.shapesbench.runner import oracle_generate_fn
    from evaluation.shapesbench.steering import format_table, motion_steering

    if args.reconstruct:
        raise SystemExit("steering compares generations: pass --model DIR (or --oracle for ShapesWorld's renders)")
    if args.oracle:
        generate_fn, settings = oracle_generate_fn, {"model": "oracle (ShapesWorld ground truth)"}
    else:
        generate_fn, settings = pipeline_generator(args)
    geometry = {"height": args.height or 64, "width": args.width or 64, "num_frames": args.frames or 17}
    report = motion_steering(generate_fn, args.clips or 8, args.seed, progress=not args.no_progress, **geometry)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = settings | {"seed": args.seed, **geometry} | report.to_dict()
    (out / "steering.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(format_table(report))
    print(f"wrote {out}/steering.json")
    return 0
