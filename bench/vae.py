"""Benchmark: CausalVideoAutoencoder against diffusers' AutoencoderKLWan at matched channels and compression.

Both models get the Wan 2.1 layout: block channels ``base * (1, 2, 4, 4)``, two ResNet blocks per encoder level,
16 latent channels, 8x spatial and 4x temporal compression, one mid attention block. Weights are random (speed and
memory do not depend on them).

Time: encode + decode of the same clip, the two models interleaved in one process, median of ``--repeats`` runs;
the printed ratio is ours / Wan (target <= 1.0).

Peak memory: each measurement runs in a fresh subprocess (``--measure-memory``). The subprocess builds the model and
the input, resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``, Linux), runs the operation and
reads the new peak (``VmHWM`` in ``/proc/self/status``); the reported number is that peak minus the resident size
just before the operation, i.e. the extra memory the operation needed. This sees every allocation torch makes on the
CPU, which ``tracemalloc`` does not. Where ``clear_refs`` is unavailable it falls back to ``ru_maxrss``.
The chunked decode peak is printed for 17, 33 and 65 frames with the ratio 65 / 17 (target <= 1.2).

    python bench/vae.py            # base 96 (the real Wan 2.1 VAE width), 17 frames of 64x64
    python bench/vae.py --quick    # base 32, 9 frames, a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm


def build_model(kind: str, base: int, chunk_frames: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "seedkit":
        from seedkit.models.autoencoder_causal import CausalVideoAutoencoder

        model = CausalVideoAutoencoder(
            latent_channels=16,
            block_out_channels=(base, 2 * base, 4 * base, 4 * base),
            layers_per_block=2,
            temporal_compression_ratio=4,
            spatial_compression_ratio=8,
            mid_attention=True,
        ).eval()
        model.enable_temporal_chunking(chunk_frames)
        return model
    if kind == "wan":
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan(
            base_dim=base, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]
        ).eval()
    raise ValueError(f"kind must be 'seedkit' or 'wan', got {kind!r}")


def _resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _peak_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("VmHWM not found in /proc/self/status")


def run_operation(model: torch.nn.Module, operation: str, inputs: torch.Tensor) -> torch.Tensor:
    if operation == "decode":
        return model.decode(inputs).sample
    return model.decode(model.encode(inputs).latent_dist.mode()).sample


def measure_memory(
    kind: str, operation: str, base: int, frames: int, size: int, chunked: bool, chunk_frames: int
) -> dict:
    """Extra peak memory (MiB) of one operation; meant to run alone in a fresh process."""
    import gc
    import resource

    model = build_model(kind, base, chunk_frames)
    if kind == "seedkit" and not chunked:
        model.disable_temporal_chunking()
    latent_frames = 1 + (frames - 1) // 4
    with torch.inference_mode():
        if operation == "decode":
            inputs = torch.randn(1, 16, latent_frames, size // 8, size // 8)
        else:
            inputs = torch.rand(1, 3, frames, size, size) * 2 - 1
        # Warm-up with the same operation: the first call loads kernels and builds oneDNN primitives (one per input
        # shape), a one-off cost that is not the operation's working memory.
        run_operation(model, operation, inputs)
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            before, read_peak, method = _resident_kib(), _peak_kib, "VmHWM after clear_refs"
        except OSError:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            read_peak, method = (lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "ru_maxrss"
        output = run_operation(model, operation, inputs)
        peak = read_peak()
    return {"peak_mib": (peak - before) / 1024, "output_shape": list(output.shape), "method": method}


def run_memory_subprocess(
    kind: str, operation: str, base: int, frames: int, size: int, chunk_frames: int, chunked: bool = True
) -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--measure-memory", kind, operation,
        "--base", str(base), "--frames", str(frames), "--size", str(size), "--chunk-frames", str(chunk_frames),
    ]  # fmt: skip
    if not chunked:
        command.append("--no-chunking")
    # A fixed mmap threshold makes glibc return every large freed block to the kernel at once; with its default
    # dynamic threshold, freed activations stay in the heap and RSS reflects allocator history, not live memory.
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_encode_decode(model: torch.nn.Module, sample: torch.Tensor) -> tuple[float, float]:
    with torch.inference_mode():
        start = time.perf_counter()
        latents = model.encode(sample).latent_dist.mode()
        middle = time.perf_counter()
        model.decode(latents)
        end = time.perf_counter()
    return middle - start, end - middle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="base 32, 9 frames: a few minutes on 2 CPU cores")
    parser.add_argument("--base", type=int, default=None, help="channels of the first level (Wan base_dim)")
    parser.add_argument("--frames", type=int, default=None, help="frames of the timed clip (1 + 4k)")
    parser.add_argument("--size", type=int, default=64, help="height and width in pixels (multiple of 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--chunk-frames", type=int, default=16, help="our temporal chunk (default 16; 4 matches Wan's memory use)"
    )
    parser.add_argument("--memory-base", type=int, default=None, help="base channels for the memory runs")
    parser.add_argument("--measure-memory", nargs=2, metavar=("KIND", "OPERATION"), help=argparse.SUPPRESS)
    parser.add_argument("--no-chunking", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    base = args.base or (32 if args.quick else 96)
    frames = args.frames or (9 if args.quick else 17)

    if args.measure_memory:
        kind, operation = args.measure_memory
        chunked = not args.no_chunking
        print(json.dumps(measure_memory(kind, operation, base, frames, args.size, chunked, args.chunk_frames)))
        return 0

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; base {base}, {frames}x{args.size}x{args.size}")
    models = {kind: build_model(kind, base, args.chunk_frames) for kind in ("seedkit", "wan")}
    print(f"  seedkit temporal chunks: first frame, then {args.chunk_frames} frames")
    for kind, model in models.items():
        print(f"  {kind:8s} {sum(p.numel() for p in model.parameters()) / 1e6:7.2f}M parameters")
    sample = torch.rand(1, 3, frames, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1

    # 1. Time, interleaved, after one warm-up run each.
    for model in models.values():
        time_encode_decode(model, sample)
    timings = {kind: {"encode": [], "decode": []} for kind in models}
    for _ in tqdm(range(args.repeats), desc="timing", leave=False):
        for kind, model in models.items():
            encode_seconds, decode_seconds = time_encode_decode(model, sample)
            timings[kind]["encode"].append(encode_seconds)
            timings[kind]["decode"].append(decode_seconds)
    medians = {
        kind: {stage: statistics.median(values) for stage, values in stages.items()} for kind, stages in timings.items()
    }
    for kind, stage_medians in medians.items():
        total = stage_medians["encode"] + stage_medians["decode"]
        print(
            f"  {kind:8s} encode {stage_medians['encode']:.3f}s  decode {stage_medians['decode']:.3f}s  "
            f"total {total:.3f}s"
        )
    ratio = {stage: medians["seedkit"][stage] / medians["wan"][stage] for stage in ("encode", "decode")}
    total_ratio = sum(medians["seedkit"].values()) / sum(medians["wan"].values())
    print(
        f"time ratio seedkit / wan: encode {ratio['encode']:.2f}, decode {ratio['decode']:.2f}, "
        f"encode+decode {total_ratio:.2f} (target <= 1.0)"
    )
    del models

    # 2. Peak memory of encode + decode, each in a fresh process.
    memory_base = args.memory_base or base
    memory = {
        kind: run_memory_subprocess(kind, "encode_decode", memory_base, frames, args.size, args.chunk_frames)
        for kind in ("seedkit", "wan")
    }
    print(
        f"peak extra memory, encode+decode {frames} frames (base {memory_base}, {memory['seedkit']['method']}): "
        f"seedkit {memory['seedkit']['peak_mib']:.1f} MiB, wan {memory['wan']['peak_mib']:.1f} MiB, "
        f"ratio {memory['seedkit']['peak_mib'] / memory['wan']['peak_mib']:.2f}"
    )

    # 3. Chunked decode memory as clips get longer (default 16-frame chunks), and whole-clip decode for contrast
    #    (skipped with --quick: it is the slowest part and only illustrates what chunking avoids).
    peaks = {}
    for chunked in (True,) if args.quick else (True, False):
        for num_frames in (17, 33, 65):
            peaks[chunked, num_frames] = run_memory_subprocess(
                "seedkit", "decode", memory_base, num_frames, args.size, args.chunk_frames, chunked=chunked
            )["peak_mib"]
        label = f"chunked ({args.chunk_frames}-frame chunks)" if chunked else "whole clip (chunking off)"
        print(
            f"decode peak extra memory, {label}: 17 frames {peaks[chunked, 17]:.1f} MiB, 33 frames "
            f"{peaks[chunked, 33]:.1f} MiB, 65 frames {peaks[chunked, 65]:.1f} MiB, ratio 65/17 "
            f"{peaks[chunked, 65] / peaks[chunked, 17]:.2f}" + (" (target <= 1.20)" if chunked else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
