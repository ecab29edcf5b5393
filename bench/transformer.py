"""Benchmark SeedTransformer3DModel against diffusers' WanTransformer3DModel and HunyuanVideoTransformer3DModel.

All models share width, heads, head dim, depth and the token count (~4k video tokens plus a prompt); runs are
interleaved (every repeat times each model once, in turn) and the median over repeats is reported. Ratios are
``ours / reference`` (below 1.0: we are faster). Achieved FLOP/s of our model (FLOPs counted with
``torch.utils.flop_counter``) is compared with a plain matmul of the same dtype timed in the same run.

    python bench/transformer.py --quick          # a couple of minutes on a 2-core CPU
    python bench/transformer.py --heads 8 --depth 4 --repeats 7 --dtypes float32 bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import HunyuanVideoTransformer3DModel, WanTransformer3DModel
from diffusers.utils import logging as diffusers_logging
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from seedkit.models.transformer_mmdit import SeedTransformer3DModel


@dataclass
class BenchCase:
    name: str
    model: torch.nn.Module
    inputs: dict


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small width/depth and 5 repeats (a couple of minutes)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4, help="total blocks; ours: half dual-stream, half single")
    parser.add_argument("--frames", type=int, default=4, help="latent frames")
    parser.add_argument("--height", type=int, default=64, help="latent height (tokens: F * H/2 * W/2)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--text-len", type=int, default=128)
    parser.add_argument("--text-dim", type=int, default=512)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--no-hunyuan", action="store_true", help="skip HunyuanVideoTransformer3DModel")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    args = parser.parse_args()
    if args.quick:
        args.heads, args.head_dim, args.depth, args.repeats, args.text_len = 4, 64, 2, 5, 64
    if args.depth < 2:
        parser.error("--depth must be at least 2 (one dual-stream and one single-stream block)")
    return args


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    spatial = (head_dim * 3 // 8) // 2 * 2
    return head_dim - 2 * spatial, spatial, spatial


def build_cases(args: argparse.Namespace, dtype: torch.dtype) -> list[BenchCase]:
    torch.manual_seed(0)
    dim = args.heads * args.head_dim
    num_dual = args.depth // 2
    num_single = args.depth - num_dual
    batch = 1
    latents = torch.randn(batch, args.channels, args.frames, args.height, args.width, dtype=dtype)
    timestep = torch.tensor([500.0])
    text = torch.randn(batch, args.text_len, args.text_dim, dtype=dtype)
    text_mask = torch.ones(batch, args.text_len, dtype=torch.long)

    ours = SeedTransformer3DModel(
        in_channels=args.channels,
        num_attention_heads=args.heads,
        attention_head_dim=args.head_dim,
        num_dual_layers=num_dual,
        num_single_layers=num_single,
        text_embed_dim=args.text_dim,
        rope_axes_dim=rope_axes(args.head_dim),
    )
    cases = [
        BenchCase(
            "seedkit",
            ours,
            dict(
                hidden_states=latents, timestep=timestep, encoder_hidden_states=text, encoder_attention_mask=text_mask
            ),
        )
    ]
    wan = WanTransformer3DModel(
        num_attention_heads=args.heads,
        attention_head_dim=args.head_dim,
        in_channels=args.channels,
        out_channels=args.channels,
        text_dim=args.text_dim,
        ffn_dim=4 * dim,
        num_layers=args.depth,
    )
    cases.append(BenchCase("wan", wan, dict(hidden_states=latents, timestep=timestep, encoder_hidden_states=text)))
    if not args.no_hunyuan:
        hunyuan = HunyuanVideoTransformer3DModel(
            in_channels=args.channels,
            out_channels=args.channels,
            num_attention_heads=args.heads,
            attention_head_dim=args.head_dim,
            num_layers=num_dual,
            num_single_layers=num_single,
            num_refiner_layers=1,
            guidance_embeds=False,
            text_embed_dim=args.text_dim,
            pooled_projection_dim=args.text_dim,
            rope_axes_dim=rope_axes(args.head_dim),
        )
        cases.append(
            BenchCase(
                "hunyuan",
                hunyuan,
                dict(
                    hidden_states=latents,
                    timestep=timestep,
                    encoder_hidden_states=text,
                    encoder_attention_mask=text_mask,
                    pooled_projections=torch.randn(batch, args.text_dim, dtype=dtype),
                ),
            )
        )
    for case in cases:
        case.model.to(dtype)
    return cases


def run_forward(case: BenchCase) -> None:
    case.model.eval()
    with torch.no_grad():
        case.model(**case.inputs)


def run_forward_backward(case: BenchCase) -> None:
    case.model.train()
    case.model.zero_grad(set_to_none=True)
    output = case.model(**case.inputs).sample
    output.float().square().mean().backward()


def timed(function: Callable[[], None]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def matmul_flops_per_second(dim: int, tokens: int, dtype: torch.dtype, repeats: int) -> float:
    """Achieved FLOP/s of a plain [tokens, dim] x [dim, 4 dim] matmul, the MLP-shaped GEMM of the model."""
    left = torch.randn(tokens, dim, dtype=dtype)
    right = torch.randn(dim, 4 * dim, dtype=dtype)
    torch.mm(left, right)
    seconds = statistics.median(timed(lambda: torch.mm(left, right)) for _ in range(repeats))
    return 2 * tokens * dim * 4 * dim / seconds


def count_flops(case: BenchCase, backward: bool) -> int:
    counter = FlopCounterMode(display=False)
    # The fused CPU SDPA kernels are invisible to the flop counter; the math kernel runs as counted matmuls.
    with counter, sdpa_kernel(SDPBackend.MATH):
        if backward:
            run_forward_backward(case)
        else:
            run_forward(case)
    return counter.get_total_flops()


def main() -> int:
    args = parse_args()
    # ModelMixin.to() warns about fp32-pinned modules on every cast; irrelevant for timing.
    diffusers_logging.set_verbosity_error()
    torch.set_grad_enabled(True)
    tokens = args.frames * (args.height // 2) * (args.width // 2)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; width {args.heads * args.head_dim} "
        f"({args.heads} heads x {args.head_dim}), depth {args.depth}, {tokens} video + {args.text_len} text tokens, "
        f"median of {args.repeats} interleaved runs"
    )
    passes = [("forward", run_forward)]
    if not args.no_backward:
        passes.append(("forward+backward", run_forward_backward))

    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        cases = build_cases(args, dtype)
        parameter_counts = {case.name: sum(p.numel() for p in case.model.parameters()) for case in cases}
        print(f"\n[{dtype_name}] parameters: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in parameter_counts.items()))
        for pass_name, run in passes:
            for _ in range(args.warmup):
                for case in cases:
                    run(case)
            times: dict[str, list[float]] = {case.name: [] for case in cases}
            for _ in tqdm(range(args.repeats), desc=f"{dtype_name} {pass_name}", leave=False):
                for case in cases:
                    times[case.name].append(timed(lambda: run(case)))
            medians = {name: statistics.median(values) for name, values in times.items()}
            ours = medians["seedkit"]
            line = f"  {pass_name:17s} seedkit {ours * 1e3:8.1f} ms"
            for name, median in medians.items():
                if name != "seedkit":
                    line += f" | {name} {median * 1e3:8.1f} ms, ratio {ours / median:.3f}"
            print(line)

            flops = count_flops(cases[0], backward=pass_name != "forward")
            matmul_rate = matmul_flops_per_second(
                args.heads * args.head_dim, tokens, dtype, repeats=max(args.repeats, 5)
            )
            achieved = flops / ours
            print(
                f"  {'':17s} seedkit {flops / 1e9:.1f} GFLOP -> {achieved / 1e9:.1f} GFLOP/s; plain matmul "
                f"{matmul_rate / 1e9:.1f} GFLOP/s; utilisation {achieved / matmul_rate:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
