"""`seedkit generate`: images and videos from one prompt, or from a prompts file in bulk.

One prompt:

    seedkit generate "a red circle bouncing" --out clip.mp4            # t2v (mp4 / gif by suffix)
    seedkit generate "a blue square" --out square.png                  # t2i (an image suffix picks it)
    seedkit generate "it moves right" --task i2v --image first.png --out clip.mp4

In bulk (`--prompts` .txt: one prompt per line; .jsonl: one object per line with "prompt" and optional "id",
"seed", "task", "height", "width", "frames", "steps", "guidance", "guidance_2", "negative_prompt", "image",
"format"):

    seedkit generate --prompts prompts.jsonl --out-dir out/ [--num-shards 4 --shard-index 0]
    torchrun --nproc-per-node 4 -m seedkit.cli generate --prompts prompts.jsonl --out-dir out/   # shards from env

Bulk runs are resumable: an item whose output file exists is skipped (outputs are written to a temporary name and
renamed, so an existing file is complete). A failing item is recorded with its reason and the run goes on; a
summary JSON lists done / skipped / failed items, and the exit code is 1 when any item failed. Each item's seed is
its own "seed" or `--seed + its index` (its position among the file's prompts), so a rerun reproduces it.

Without `--model`, the bundled default model (`seedkit/default_model/`, diffusers layout) is used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seedkit.pipelines.schedulers import SDESampling

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
TASKS = ("t2i", "t2v", "i2v")
IMAGE_FORMATS = ("png", "jpg", "webp")
VIDEO_FORMATS = ("mp4", "gif", "webm")
ITEM_KEYS = ("prompt", "id", "seed", "task", "height", "width", "frames", "steps", "guidance", "guidance_2",
             "negative_prompt", "image", "format")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="the prompt (one-prompt mode; use --prompts for a file)")
    parser.add_argument("--model", help=f"model directory in diffusers layout (default: {DEFAULT_MODEL_DIR})")
    parser.add_argument("--out", help="output file for one prompt: .mp4 / .gif for video, .png for an image")
    parser.add_argument(
        "--prompts", help="prompts file: .txt (one per line) or .jsonl (objects with per-item settings)"
    )
    parser.add_argument("--out-dir", help="output directory for --prompts")
    parser.add_argument(
        "--task", choices=TASKS, help="t2i, t2v or i2v (default: from --out's suffix / --image, else t2v)"
    )
    parser.add_argument("--image", help="first frame for --task i2v")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (default: 50)")
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default: 5.0)")
    parser.add_argument(
        "--guidance-2",
        type=float,
        help="guidance scale of a two-expert model's low-noise steps (transformer_2; default: --guidance)",
    )
    parser.add_argument(
        "--image-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="t2v: draw the first frame as an image, then the video from it (default: the model's image_first)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; bulk items use seed + their index (default: 0)"
    )
    parser.add_argument("--height", type=int, help="pixels (default: the model's)")
    parser.add_argument("--width", type=int, help="pixels (default: the model's)")
    parser.add_argument("--frames", type=int, help="frames, 1 + 4k (default: the model's)")
    parser.add_argument("--negative-prompt", default=None, help="negative prompt for CFG (default: empty)")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second of video outputs (default: 8)")
    parser.add_argument("--format", choices=IMAGE_FORMATS + VIDEO_FORMATS,
                        help="bulk output format (default: png for t2i, mp4 for video)")
    parser.add_argument("--summary", help="bulk summary JSON path (default: OUT_DIR/summary.json)")
    parser.add_argument("--num-shards", type=int, default=int(os.environ.get("WORLD_SIZE", 1)),
                        help="split a bulk run over this many processes (default: $WORLD_SIZE from torchrun / "
                        "accelerate launch, else 1)")
    parser.add_argument("--shard-index", type=int, default=int(os.environ.get("RANK", 0)),
                        help="which shard this process runs, 0-based (default: $RANK, else 0)")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda:$LOCAL_RANK when CUDA is available, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    add_sde_arguments(parser)


def add_sde_arguments(parser: argparse.ArgumentParser) -> None:
    """`--sde-noise`, `--sde-window`, `--sde-passes` (seedkit.pipelines.schedulers.SDESampling); shared with
    `seedkit eval`."""
    parser.add_argument(
        "--sde-noise", type=float, metavar="A",
        help="sample with SDE steps of this noise level instead of the model's schedulers (FlowMatchSDEScheduler; "
        "0: the ODE)",
    )
    parser.add_argument(
        "--sde-window", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(0.0, 1.0),
        help="with --sde-noise: steps starting at a sigma in [LOW, HIGH] are stochastic (default: 0 1)",
    )
    parser.add_argument(
        "--sde-passes", default="all", metavar="{all,images,videos}",
        help="with --sde-noise: what samples with the SDE: all, images (text-to-image and the image pass of image "
        "first) or videos (default: all)",
    )


def sde_sampling_from_args(args: argparse.Namespace) -> SDESampling | None:
    """The command line's :class:`~seedkit.pipelines.schedulers.SDESampling`, or None without --sde-noise."""
    if args.sde_noise is None:
        return None
    from seedkit.pipelines.schedulers import SDESampling

    return SDESampling(args.sde_noise, tuple(args.sde_window), args.sde_passes)


# --------------------------------------------------------------------------------------------------------------
# items


@dataclass
class GenerationItem:
    """One thing to generate. `index` counts the prompts in the file (0 for a single prompt); `line` is its line
    number there (None for a single prompt)."""

    index: int
    id: str
    prompt: str
    seed: int
    task: str
    output: Path
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    steps: int = 50
    guidance: float = 5.0
    guidance_2: float | None = None
    image_first: bool | None = None
    negative_prompt: str | None = None
    image: str | None = None
    line: int | None = None


@dataclass
class Summary:
    """What a bulk run did; written as JSON."""

    done: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        counts = {"done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed)}
        return {"counts": counts, **asdict(self)}


class ItemError(ValueError):
    """A problem with one item of a prompts file (recorded as that item's failure)."""


def infer_task(task: str | None, out: str | None, image: str | None) -> str:
    """The task from `--task`, else `--image` (i2v), else the output suffix (image suffix: t2i), else t2v."""
    suffix = Path(out).suffix.lower().lstrip(".") if out else ""
    if task is None:
        task = "i2v" if image else ("t2i" if suffix in IMAGE_FORMATS else "t2v")
    if task not in TASKS:
        raise ItemError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if suffix:
        valid = IMAGE_FORMATS if task == "t2i" else VIDEO_FORMATS
        if suffix not in valid:
            raise ItemError(f"task {task} writes {', '.join('.' + name for name in valid)} files, not .{suffix}")
    if task == "i2v" and not image:
        raise ItemError("task i2v needs an image (--image PATH, or \"image\" in the jsonl item)")
    if task != "i2v" and image:
        raise ItemError(f"an image was given but the task is {task}; use task i2v to condition on it")
    return task


def _typed(record: dict, key: str, kind: type, default):
    value = record.get(key, default)
    if value is None or isinstance(value, kind) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ItemError(f"{key!r} must be {kind.__name__}, got {value!r}")


def parse_prompts_file(path: Path, args: argparse.Namespace, out_dir: Path) -> tuple[list[GenerationItem], list[dict]]:
    """Read a .txt or .jsonl prompts file.

    Returns:
        `(items, failures)`: the valid items, and one `{"id", "line", "error"}` per line that could not be read
        (bad JSON, unknown keys, duplicate ids, ...), so one bad line never stops the others.
    """
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise ValueError(f"--prompts must be a .txt (one prompt per line) or .jsonl file; got {path.name}")
    items, failures, seen_ids = [], [], set()
    lines = path.read_text(encoding="utf-8").splitlines()
    index = -1
    for line_number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        index += 1
        default_id = f"{index:05d}"
        record = None
        try:
            if suffix == ".txt":
                record = {"prompt": line.strip()}
            else:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ItemError(f"invalid JSON: {error}") from None
                if not isinstance(record, dict):
                    raise ItemError("each jsonl line must be an object with at least a \"prompt\"")
                unknown = sorted(set(record) - set(ITEM_KEYS))
                if unknown:
                    raise ItemError(f"unknown keys {unknown}; valid keys: {', '.join(ITEM_KEYS)}")
            item_id = str(record.get("id", default_id))
            if not _SAFE_ID.match(item_id):
                raise ItemError(f"id {item_id!r} is not a safe file name (letters, digits, '.', '_', '-')")
            if item_id in seen_ids:
                raise ItemError(f"duplicate id {item_id!r}")
            seen_ids.add(item_id)
            prompt = record.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ItemError("\"prompt\" must be a non-empty string")
            image = _typed(record, "image", str, None)
            if image is not None and not Path(image).is_absolute():
                image = str((path.parent / image).resolve())  # relative to the prompts file
            task = infer_task(_typed(record, "task", str, args.task), None, image or args.image)
            output_format = _typed(record, "format", str, args.format) or ("png" if task == "t2i" else "mp4")
            infer_task(task, f"x.{output_format}", image or args.image)
            items.append(
                GenerationItem(
                    index=index,
                    id=item_id,
                    prompt=prompt,
                    seed=_typed(record, "seed", int, args.seed + index),
                    task=task,
                    output=out_dir / f"{item_id}.{output_format}",
                    height=_typed(record, "height", int, args.height),
                    width=_typed(record, "width", int, args.width),
                    frames=_typed(record, "frames", int, args.frames),
                    steps=_typed(record, "steps", int, args.steps),
                    guidance=_typed(record, "guidance", float, args.guidance),
                    guidance_2=_typed(record, "guidance_2", float, args.guidance_2),
                    image_first=args.image_first,
                    negative_prompt=_typed(record, "negative_prompt", str, args.negative_prompt),
                    image=image or args.image,
                    line=line_number,
                )
            )
        except ItemError as error:
            failed_id = str(record.get("id", default_id)) if isinstance(record, dict) else default_id
            failures.append({"id": failed_id, "line": line_number, "error": str(error)})
    return items, failures


# --------------------------------------------------------------------------------------------------------------
# generation


class PipelineCache:
    """Loads the model directory once and hands out the pipeline of each task over the same components."""

    def __init__(self, model_dir: Path, device: str, dtype: str, sde: SDESampling | None = None):
        import torch

        from seedkit.pipelines import PIPELINES_BY_TASK, SeedkitTextToVideoPipeline

        self._pipelines_by_task = PIPELINES_BY_TASK
        # float32 is the stored dtype; only pass a dtype when converting (the keyword's name differs across versions).
        kwargs = {} if dtype == "float32" else {"torch_dtype": getattr(torch, dtype)}
        self.base = SeedkitTextToVideoPipeline.from_pretrained(model_dir, **kwargs).to(device)
        if sde is not None:
            sde.apply(self.base)
        self.cache = {"t2v": self.base}

    def get(self, task: str):
        if task not in self.cache:
            self.cache[task] = self._pipelines_by_task[task](**self.base.components, **self.base.pipeline_kwargs())
        return self.cache[task]

    def set_progress_bar(self, enabled: bool) -> None:
        for pipeline in self.cache.values():
            pipeline.set_progress_bar_config(disable=not enabled)


def generate_item(pipelines: PipelineCache, item: GenerationItem, fps: float, progress: bool) -> Path:
    """Generate one item and write it (atomically) to `item.output`."""
    import torch
    from PIL import Image

    from seedkit.data.video_io import unit_frames_to_uint8, write_video

    pipeline = pipelines.get(item.task)
    pipeline.set_progress_bar_config(disable=not progress)
    generator = torch.Generator(device="cpu").manual_seed(item.seed)
    kwargs = dict(
        prompt=item.prompt,
        negative_prompt=item.negative_prompt,
        height=item.height,
        width=item.width,
        num_inference_steps=item.steps,
        guidance_scale=item.guidance,
        guidance_scale_2=item.guidance_2,
        generator=generator,
        output_type="np",
    )
    if item.task == "t2i":
        frames = pipeline(**kwargs).images[:1]  # [1, H, W, 3]
    else:
        if item.task == "i2v":
            with Image.open(item.image) as image:
                kwargs["image"] = image.convert("RGB")
        else:
            kwargs["image_first"] = item.image_first
        frames = pipeline(**kwargs, num_frames=item.frames).frames[0]  # [F, H, W, 3]
    return write_video(item.output, unit_frames_to_uint8(frames), fps=fps)


def resolve_model_dir(model: str | None) -> Path:
    model_dir = Path(model) if model else DEFAULT_MODEL_DIR
    if not (model_dir / "model_index.json").is_file():
        if model:
            raise FileNotFoundError(
                f"--model {model_dir} is not a seedkit model directory (no model_index.json); pass a directory "
                "written by a seedkit pipeline's save_pretrained"
            )
        raise FileNotFoundError(
            f"no --model given and the bundled default model is not installed (expected {model_dir}/model_index.json)"
            "; pass --model DIR, a directory written by SeedkitTextToVideoPipeline.save_pretrained(DIR)"
        )
    return model_dir


def _write_json_atomically(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def run_single(args: argparse.Namespace, pipelines_factory) -> int:
    if not args.out:
        print("error: give --out FILE for one prompt (or --prompts FILE --out-dir DIR for bulk)", file=sys.stderr)
        return 2
    try:
        task = infer_task(args.task, args.out, args.image)
    except ItemError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    item = GenerationItem(
        index=0, id=Path(args.out).stem, prompt=args.prompt, seed=args.seed, task=task, output=Path(args.out),
        height=args.height, width=args.width, frames=args.frames, steps=args.steps, guidance=args.guidance,
        guidance_2=args.guidance_2, image_first=args.image_first, negative_prompt=args.negative_prompt,
        image=args.image,
    )
    pipelines = pipelines_factory()
    try:
        path = generate_item(pipelines, item, args.fps, progress=True)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def run_bulk(args: argparse.Namespace, pipelines_factory) -> int:
    from tqdm.auto import tqdm

    if not args.out_dir:
        print("error: --prompts needs --out-dir DIR", file=sys.stderr)
        return 2
    if args.num_shards < 1 or not 0 <= args.shard_index < args.num_shards:
        print(f"error: --shard-index must be in [0, {args.num_shards - 1}] for --num-shards {args.num_shards}",
              file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    try:
        items, parse_failures = parse_prompts_file(Path(args.prompts), args, out_dir)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    items = [item for item in items if item.index % args.num_shards == args.shard_index]
    parse_failures = [failure for position, failure in enumerate(parse_failures)
                      if position % args.num_shards == args.shard_index]
    default_summary = (
        "summary.json" if args.num_shards == 1 else f"summary-{args.shard_index}-of-{args.num_shards}.json"
    )
    summary_path = Path(args.summary) if args.summary else out_dir / default_summary
    summary = Summary(failed=list(parse_failures))

    pending = []
    for item in items:
        if item.output.exists():
            summary.skipped.append({"id": item.id, "path": str(item.output), "reason": "output exists"})
        else:
            pending.append(item)
    pipelines = pipelines_factory() if pending else None
    progress = tqdm(pending, desc="generate", unit="item", disable=None)
    for item in progress:
        started = time.perf_counter()
        try:
            path = generate_item(pipelines, item, args.fps, progress=False)
        except Exception as error:  # one bad item is recorded and the run goes on
            summary.failed.append({"id": item.id, "line": item.line, "error": _describe(error)})
        else:
            summary.done.append({"id": item.id, "path": str(path), "seed": item.seed, "task": item.task,
                                 "seconds": round(time.perf_counter() - started, 3)})
        progress.set_postfix(done=len(summary.done), failed=len(summary.failed))
        _write_json_atomically(summary_path, summary.to_json())  # progress survives a crash
    _write_json_atomically(summary_path, summary.to_json())
    counts = summary.to_json()["counts"]
    print(f"done {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}; summary: {summary_path}")
    for failure in summary.failed:
        print(f"  failed {failure['id']}: {failure['error']}", file=sys.stderr)
    return 1 if summary.failed else 0


def run(args: argparse.Namespace) -> int:
    if (args.prompt is None) == (args.prompts is None):
        print("error: give one PROMPT (with --out FILE) or --prompts FILE (with --out-dir DIR)", file=sys.stderr)
        return 2
    try:
        model_dir = resolve_model_dir(args.model)
        sde = sde_sampling_from_args(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def pipelines_factory() -> PipelineCache:
        import torch

        device = args.device or (
            f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
        )
        return PipelineCache(model_dir, device, args.dtype, sde)

    if args.prompts is not None:
        return run_bulk(args, pipelines_factory)
    return run_single(args, pipelines_factory)
