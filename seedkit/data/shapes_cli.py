"""`seedkit shapes`: write a ShapesWorld dataset (clips, captions, audio, manifest).

    seedkit shapes --out data/shapes --clips 1000 --frames 17,33 --size 64x64 --size 48x80 \\
        --multi-shot 0.3 --audio --images 200 --seed 0
"""

from __future__ import annotations

import argparse
import sys

from seedkit.data.shapes import DEFAULT_FPS, DEFAULT_SAMPLE_RATE, check_num_frames


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            raise argparse.ArgumentTypeError(f"size {item!r} is not HxW (e.g. 64x64 or 48x80)")
        sizes.append((int(parts[0]), int(parts[1])))
    return sizes


def _parse_frames(text: str) -> list[int]:
    try:
        return [check_num_frames(int(item)) for item in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset directory (manifest.jsonl + shard folders)")
    parser.add_argument("--clips", type=int, required=True, help="number of video clips")
    parser.add_argument("--images", type=int, default=0, help="number of single images (F = 1) added to the clips")
    parser.add_argument(
        "--frames",
        type=_parse_frames,
        action="append",
        help="frame count(s) 1 + 4k; repeat or comma-separate (default 17)",
    )
    parser.add_argument(
        "--size", type=_parse_sizes, action="append", help="HxW; repeat or comma-separate to mix sizes (default 64x64)"
    )
    parser.add_argument(
        "--multi-shot",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="FRACTION",
        help="make clips multi-shot (all of them, or the given fraction)",
    )
    parser.add_argument("--max-shots", type=int, default=3, help="most shots in a multi-shot clip (default 3)")
    parser.add_argument("--audio", action="store_true", help="add bounce-tone audio tracks to the clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS)
    parser.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE)
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--caption-split", choices=("train", "heldout"), default="train")
    parser.add_argument("--shard-size", type=int, default=1000, help="files per shard folder")
    parser.add_argument("--workers", type=int, default=0, help="processes that render and encode (default: this one)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from seedkit.data.shapes_writers import write_shapes_dataset

    if args.clips < 0 or args.images < 0:
        raise SystemExit(f"--clips and --images must be >= 0, got {args.clips} and {args.images}")
    frames = [count for group in (args.frames or [[17]]) for count in group]
    sizes = [size for group in (args.size or [[(64, 64)]]) for size in group]
    try:
        summary = write_shapes_dataset(
            args.out,
            num_clips=args.clips + args.images,
            seed=args.seed,
            frames=frames,
            sizes=sizes,
            multi_shot=args.multi_shot,
            audio=args.audio,
            num_images=args.images,
            max_shots=args.max_shots,
            max_objects=args.max_objects,
            fps=args.fps,
            sample_rate=args.sample_rate,
            caption_split=args.caption_split,
            shard_size=args.shard_size,
            num_workers=args.workers,
            progress=not args.no_progress,
        )
    except ValueError as error:  # invalid sizes, frame counts or fractions: say what was wrong, no traceback
        print(f"seedkit shapes: error: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 0
