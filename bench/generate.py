"""End-to-end text-to-video generation time, split into text encoder, transformer and VAE decode.

The pipeline is timed from the outside, unmodified: forward hooks on the text encoder and the transformer sum the
time of every call (two text-encoder calls with classifier-free guidance, one transformer call per step), and the
VAE's ``decode`` is wrapped by a timer on the instance for the duration of the run. ``other`` is what is left of the
pipeline call (scheduler steps, noise, post-processing).

The transformer's achieved FLOP/s is its FLOPs per forward (counted with ``torch.utils.flop_counter`` on the exact
inputs the pipeline gave it, once per input shape: an image-first model's image pass has one latent frame) times the
number of calls of each shape, over the measured transformer time. It is compared with a
plain ``[tokens, width] @ [width, 4 * width]`` matmul (the shape of the transformer's MLP input projection) timed
in the same run, interleaved with the pipeline runs; ``ratio`` = transformer FLOP/s / matmul FLOP/s.

    python bench/generate.py --quick --threads 1            # about a minute on a busy 2-core CPU
    python bench/generate.py --sizes 64x64x17 256x256x33 --steps 10 --repeats 5
    python bench/generate.py --model seedkit/default_model  # a saved pipeline instead of a random flavor
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from seedkit.pipelines import SeedkitTextToVideoPipeline

STAGES = ("text_encoder", "transformer", "vae_decode", "other")
PROMPT = "A small red circle bouncing on a dark blue background."


@dataclass(frozen=True)
class VideoSize:
    height: int
    width: int
    num_frames: int

    @classmethod
    def parse(cls, text: str) -> "VideoSize":
        try:
            height, width, num_frames = (int(part) for part in text.lower().split("x"))
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"size {text!r} must look like HEIGHTxWIDTHxFRAMES, e.g. 64x64x17"
            ) from error
        return cls(height, width, num_frames)

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.num_frames}"


@dataclass
class StageTimes:
    """Seconds per stage for one pipeline call, plus the transformer's calls and first inputs per (expert, latent
    shape): experts may cut different patches, and an image-first pipeline samples a one-frame image before the
    video."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    transformer_calls: dict[tuple[str, tuple[int, ...]], int] = field(default_factory=lambda: defaultdict(int))
    transformer_inputs: dict[tuple[str, tuple[int, ...]], tuple[tuple, dict]] = field(default_factory=dict)

    @property
    def video_inputs(self) -> tuple[tuple, dict]:
        """The inputs of the largest latent shape (the video pass), as the high-noise expert got them."""
        return self.transformer_inputs[max(self.transformer_inputs, key=lambda key: (torch.Size(key[1]).numel(),
                                                                                     key[0] == "transformer"))]


@contextmanager
def stage_timers(pipeline: SeedkitTextToVideoPipeline) -> Iterator[StageTimes]:
    """Time the pipeline's components for the duration of the ``with`` block without changing the pipeline."""
    times = StageTimes()
    starts: dict[str, float] = {}

    def pre_hook(name: str, expert: str | None = None):
        def hook(module, args, kwargs):
            if expert is not None:
                key = (expert, tuple(kwargs["hidden_states"].shape))
                times.transformer_inputs.setdefault(key, (args, dict(kwargs)))
                times.transformer_calls[key] += 1
            starts[name] = time.perf_counter()

        return hook

    def post_hook(name: str):
        def hook(module, args, kwargs, output):
            times.seconds[name] += time.perf_counter() - starts.pop(name)

        return hook

    # Every expert (Wan 2.2's low-noise transformer_2, the image experts) is the transformer stage. One module in
    # two slots is hooked once, under its first slot.
    modules = [("text_encoder", None, pipeline.text_encoder)]
    for slot in ("transformer", "transformer_2", "image_transformer", "image_transformer_2"):
        expert = getattr(pipeline, slot, None)
        if expert is not None and all(expert is not module for _, _, module in modules):
            modules.append(("transformer", slot, expert))
    handles = []
    for name, slot, module in modules:
        handles.append(module.register_forward_pre_hook(pre_hook(name, slot), with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook(name), with_kwargs=True))

    vae = pipeline.vae
    decode = vae.decode  # the bound method; restored by deleting the instance attribute below

    def timed_decode(*args, **kwargs):
        start = time.perf_counter()
        try:
            return decode(*args, **kwargs)
        finally:
            times.seconds["vae_decode"] += time.perf_counter() - start

    vae.decode = timed_decode
    try:
        yield times
    finally:
        del vae.decode
        for handle in handles:
            handle.remove()


def count_transformer_flops(pipeline: SeedkitTextToVideoPipeline, expert: str, inputs: tuple[tuple, dict]) -> int:
    """FLOPs of one forward of the expert in slot ``expert`` on ``inputs`` (as captured from the pipeline)."""
    args, kwargs = inputs
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        getattr(pipeline, expert)(*args, **kwargs)
    return counter.get_total_flops()


def time_matmul(rows: int, width: int, dtype: torch.dtype, iterations: int = 5) -> tuple[float, int]:
    """Seconds per ``[rows, width] @ [width, 4 * width]`` matmul (mean over ``iterations``) and its FLOPs."""
    left = torch.randn(rows, width, dtype=dtype)
    right = torch.randn(width, 4 * width, dtype=dtype)
    torch.mm(left, right)  # warm-up: first-call allocation
    start = time.perf_counter()
    for _ in range(iterations):
        torch.mm(left, right)
    return (time.perf_counter() - start) / iterations, 2 * rows * width * 4 * width


def build_pipeline(args: argparse.Namespace) -> SeedkitTextToVideoPipeline:
    if args.model:
        pipeline = SeedkitTextToVideoPipeline.from_pretrained(args.model)
    else:
        pipeline = SeedkitTextToVideoPipeline.from_flavor(args.flavor, seed=0)
    if args.dtype != "float32":
        # Models load as float32; casting to it anyway makes diffusers 0.42 warn once per model about
        # `_keep_in_fp32_modules` even when there are none, which buried the benchmark's output.
        pipeline = pipeline.to(dtype=getattr(torch, args.dtype))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def bench_size(pipeline: SeedkitTextToVideoPipeline, size: VideoSize, args: argparse.Namespace) -> dict:
    def run_once() -> tuple[float, StageTimes]:
        with stage_timers(pipeline) as times:
            start = time.perf_counter()
            pipeline(
                PROMPT,
                height=size.height,
                width=size.width,
                num_frames=size.num_frames,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            )
            total = time.perf_counter() - start
        times.seconds["other"] = total - sum(times.seconds[name] for name in STAGES[:-1])
        return total, times

    _, warmup = run_once()  # also captures the transformer's inputs for the FLOP count
    flops_per_call = {
        key: count_transformer_flops(pipeline, key[0], inputs) for key, inputs in warmup.transformer_inputs.items()
    }
    transformer_flops = sum(flops_per_call[key] * calls for key, calls in warmup.transformer_calls.items())
    hidden_states = warmup.video_inputs[1]["hidden_states"]
    text = warmup.video_inputs[1]["encoder_hidden_states"]
    visual_tokens = pipeline.num_visual_tokens(tuple(hidden_states.shape))
    rows = hidden_states.shape[0] * (visual_tokens + text.shape[1])
    config = pipeline.transformer.config
    width = config.num_attention_heads * config.attention_head_dim
    dtype = pipeline.transformer.dtype

    totals, matmul_rates = [], []
    stage_runs: dict[str, list[float]] = {name: [] for name in STAGES}
    transformer_rates = []
    for _ in tqdm(range(args.repeats), desc=f"generate {size}", leave=False):
        total, times = run_once()
        totals.append(total)
        for name in STAGES:
            stage_runs[name].append(times.seconds[name])
        transformer_rates.append(transformer_flops / times.seconds["transformer"])
        seconds, matmul_flops = time_matmul(rows, width, dtype)
        matmul_rates.append(matmul_flops / seconds)
    median = statistics.median
    return {
        "size": str(size),
        "batch": hidden_states.shape[0],
        "tokens": visual_tokens + text.shape[1],
        "total": median(totals),
        "stages": {name: median(values) for name, values in stage_runs.items()},
        "transformer_calls": sum(warmup.transformer_calls.values()),
        "image_calls": sum(calls for (_, shape), calls in warmup.transformer_calls.items()
                           if shape != tuple(hidden_states.shape)),
        "flops_per_call": flops_per_call[("transformer", tuple(hidden_states.shape))],
        "transformer_flops_per_s": median(transformer_rates),
        "matmul_flops_per_s": median(matmul_rates),
        "matmul_shape": f"[{rows}, {width}] @ [{width}, {4 * width}]",
    }


def print_result(result: dict) -> None:
    total = result["total"]
    stages = "  ".join(
        f"{name} {seconds * 1e3:8.1f} ms ({100 * seconds / total:4.1f}%)" for name, seconds in result["stages"].items()
    )
    print(f"{result['size']:>12}  total {total * 1e3:9.1f} ms  {stages}")
    ratio = result["transformer_flops_per_s"] / result["matmul_flops_per_s"]
    print(
        f"{'':>12}  transformer: {result['transformer_calls']} calls ({result['image_calls']} of them image-first's "
        f"image pass); video pass batch {result['batch']} x {result['tokens']} tokens, "
        f"{result['flops_per_call'] / 1e9:.3f} GFLOP per high-noise call; "
        f"{result['transformer_flops_per_s'] / 1e9:.2f} "
        f"GFLOP/s; matmul {result['matmul_shape']} {result['matmul_flops_per_s'] / 1e9:.2f} GFLOP/s; "
        f"ratio {ratio:.3f}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--flavor", default="shapes-tiny", help="build a random pipeline of this flavor (default)")
    source.add_argument("--model", help="load a saved pipeline directory (diffusers layout) instead")
    parser.add_argument("--sizes", nargs="+", type=VideoSize.parse, default=None,
                        help="HEIGHTxWIDTHxFRAMES (default: 64x64x17 256x256x33; --quick: 32x32x9)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 10; --quick: 4)")
    parser.add_argument("--guidance", type=float, default=5.0, help="CFG scale; <= 1 runs one forward per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size (median reported; >= 5)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="32x32x9, 4 steps: about a minute on a busy 2-core CPU")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [VideoSize(32, 32, 9)] if args.quick else [VideoSize(64, 64, 17), VideoSize(256, 256, 33)]
    if args.steps is None:
        args.steps = 4 if args.quick else 10
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 for a meaningful median, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = build_pipeline(args)
    source = args.model or f"flavor {args.flavor} (random weights)"
    parameters = sum(p.numel() for p in pipeline.transformer.parameters())
    print(
        f"seedkit T2V generation: {source}; transformer {parameters / 1e6:.2f}M parameters; {args.steps} steps, "
        f"guidance {args.guidance}, {args.dtype}, {torch.get_num_threads()} threads; median of {args.repeats} runs"
    )
    for size in args.sizes:
        print_result(bench_size(pipeline, size, args))


if __name__ == "__main__":
    main()
