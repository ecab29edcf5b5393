"""Turn a training run's export into a diffusers-layout pipeline directory (this is how the bundled default model
in `seedkit/default_model` is made).

    python recipes/export_pipeline.py runs/shapes-tiny/final --out seedkit/default_model
    python recipes/export_pipeline.py runs/shapes-tiny/checkpoints/step-00003000 --out models/step3000

`recipes/train.py` writes `<output_dir>/final/{transformer,vae,text_encoder_name.txt}`; this script assembles them with
the text encoder and a flow-matching scheduler into one `SeedkitTextToVideoPipeline` directory that every seedkit
pipeline (T2I, T2V, I2V) and `seedkit generate` load. Text encoders whose weights an installed package ships (MiniLM)
are stored by name only, which keeps the directory small. The directory is written next to the target and renamed,
so a reader never sees half of it. A checkpoint directory exports its EMA weights (see
`seedkit.training.recipes.export_checkpoint`), for picking a step other than the run's last.

A run trained on the high-noise part of the path only (`--set task.sigma_range=[0.8,1.0]`) is one of two
noise-interval experts; `--low-noise-transformer DIR --boundary-ratio 0.8` stores it as `transformer` and the
transformer in DIR (for example an existing model's `transformer` folder) as `transformer_2`, which samples below
the boundary:

    python recipes/export_pipeline.py runs/high-noise/final --out models/experts \
        --low-noise-transformer seedkit/default_model/transformer --boundary-ratio 0.8

and a run trained below the boundary (`task.sigma_range=[0.0,0.6]`) takes `--high-noise-transformer DIR` instead: it is
stored as `transformer_2` and DIR as `transformer`.

`--transformer-dtype float16` stores the transformer weights (every expert) in half precision, half the bytes; they
load back as float32 (diffusers casts to the model's dtype), so sampling is unchanged apart from the weights'
rounding, which is far below what training noise moves them by. The VAE stays in float32.

`--image-first` makes the model's text-to-video draw the first frame as an image and the video from it (see
`SeedkitTextToVideoPipeline`); it needs a transformer trained for image-to-video (`task.i2v_probability > 0`).
`--image-transformer DIR` / `--image-low-noise-transformer DIR` add image experts, which text-to-image and the image
pass sample with in place of the video experts above / below the boundary (for example a low-noise expert trained on
images alone with finer patches, `--set data.image_fraction=1.0 --set 'model.transformer={patch_size: [1, 1, 1]}'`):

    python recipes/export_pipeline.py runs/high-noise/final --out models/experts \
        --low-noise-transformer runs/low-noise/final/transformer --boundary-ratio 0.6 --image-first \
        --image-low-noise-transformer runs/low-noise-images/final/transformer

`--sde-noise A` (with `--sde-window LOW HIGH`, `--sde-passes all|images|videos`) stores
`seedkit.pipelines.schedulers.FlowMatchSDEScheduler` schedulers, so the model samples with SDE steps by default.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from seedkit.generate import add_sde_arguments, sde_sampling_from_args

if TYPE_CHECKING:
    from seedkit.pipelines.schedulers import SDESampling

STORAGE_DTYPES = ("float32", "float16", "bfloat16")


@contextlib.contextmanager
def exported_run(run_dir: Path) -> Iterator[Path]:
    """`run_dir` itself when it is a run's `final` export; for a checkpoint directory, its EMA weights exported to a
    temporary `final` directory that lives as long as the context."""
    from seedkit.training.checkpoint import CHECKSUM_FILE
    from seedkit.training.recipes import export_checkpoint

    if not (run_dir / CHECKSUM_FILE).is_file():
        yield run_dir
        return
    with tempfile.TemporaryDirectory(prefix="export-") as exported:
        yield export_checkpoint(run_dir, Path(exported) / "final")


def export_pipeline(
    run_dir: Path,
    out_dir: Path,
    height: int,
    width: int,
    num_frames: int,
    *,
    shift: float = 1.0,
    low_noise_transformer: Path | None = None,
    boundary_ratio: float | None = None,
    transformer_dtype: str = "float32",
    high_noise_transformer: Path | None = None,
    image_first: bool = False,
    image_transformer: Path | None = None,
    image_low_noise_transformer: Path | None = None,
    sde: SDESampling | None = None,
) -> Path:
    if low_noise_transformer is not None and high_noise_transformer is not None:
        raise ValueError("a run is one expert of a pair: give its partner as low_noise_transformer or as "
                         "high_noise_transformer, not both")
    if transformer_dtype not in STORAGE_DTYPES:
        raise ValueError(f"transformer_dtype must be one of {', '.join(STORAGE_DTYPES)}; got {transformer_dtype!r}")
    from diffusers import FlowMatchEulerDiscreteScheduler

    from seedkit.models.text_encoders import TEXT_ENCODERS
    from seedkit.pipelines import SeedkitTextToVideoPipeline
    from seedkit.pipelines.base import assemble_components

    with exported_run(run_dir) as run_dir:
        name_file = run_dir / "text_encoder_name.txt"
        if not name_file.exists():
            raise FileNotFoundError(
                f"{name_file} is missing: pass the 'final' directory that recipes/train.py exports"
            )
        text_encoder_name = name_file.read_text(encoding="utf-8").strip()
        components = assemble_components(
            run_dir / "transformer",
            run_dir / "vae",
            text_encoder_name,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        )
        from seedkit.models.transformer_mmdit import SeedTransformer3DModel

        if low_noise_transformer is not None:
            components["transformer_2"] = SeedTransformer3DModel.from_pretrained(low_noise_transformer)
        if high_noise_transformer is not None:
            # the pipeline samples `transformer` above the boundary and `transformer_2` below it
            components["transformer_2"] = components["transformer"]
            components["transformer"] = SeedTransformer3DModel.from_pretrained(high_noise_transformer)
        if image_transformer is not None:
            components["image_transformer"] = SeedTransformer3DModel.from_pretrained(image_transformer)
        if image_low_noise_transformer is not None:
            components["image_transformer_2"] = SeedTransformer3DModel.from_pretrained(image_low_noise_transformer)
        pipeline = SeedkitTextToVideoPipeline(
            **components,
            boundary_ratio=boundary_ratio,
            default_height=height,
            default_width=width,
            default_num_frames=num_frames,
            # Prompts are truncated exactly as the latent cache truncated them in training.
            max_sequence_length=TEXT_ENCODERS[text_encoder_name].max_sequence_length,
            text_encoder_name=text_encoder_name,
            image_first=image_first,
        )
        if image_first:
            pipeline.check_first_frame_condition("--image-first")
        if sde is not None:  # store its schedulers as the model's
            sde.apply(pipeline)
        pipeline.check_geometry(height, width, num_frames)  # the defaults must be a size the model generates
        # from_pretrained records where each component was loaded from (the run's local paths); a published model
        # names each component by its folder instead.
        experts = ("transformer", "transformer_2", "image_transformer", "image_transformer_2")
        for name in ("vae", *experts):
            if getattr(pipeline, name) is not None:
                getattr(pipeline, name).register_to_config(_name_or_path=name)
        for name in experts:
            if getattr(pipeline, name) is not None:
                getattr(pipeline, name).to(getattr(torch, transformer_dtype))
        return pipeline.save_model_directory(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "run_dir", type=Path, help="the 'final' directory written by recipes/train.py, or one of its checkpoints"
    )
    parser.add_argument("--out", type=Path, required=True, help="pipeline directory to write")
    parser.add_argument("--height", type=int, default=64, help="default height of generated samples")
    parser.add_argument("--width", type=int, default=64, help="default width of generated samples")
    parser.add_argument("--frames", type=int, default=17, help="default frame count (1 + 4k)")
    parser.add_argument("--shift", type=float, default=1.0, help="the scheduler's timestep shift")
    partner = parser.add_mutually_exclusive_group()  # the run is one expert of the pair, the partner the other
    partner.add_argument(
        "--low-noise-transformer",
        type=Path,
        help="a transformer directory to sample below --boundary-ratio (this run then samples above it)",
    )
    partner.add_argument(
        "--high-noise-transformer",
        type=Path,
        help="a transformer directory to sample above --boundary-ratio (this run then samples below it)",
    )
    parser.add_argument(
        "--boundary-ratio", type=float, help="noise level in (0, 1) where the run hands over to the low-noise one"
    )
    parser.add_argument(
        "--image-transformer",
        type=Path,
        help="a transformer directory for image generation (text-to-image, the image pass) above --boundary-ratio, "
        "or throughout in a one-expert model",
    )
    parser.add_argument(
        "--image-low-noise-transformer",
        type=Path,
        help="a transformer directory for image generation below --boundary-ratio (needs a two-expert model)",
    )
    parser.add_argument(
        "--transformer-dtype",
        choices=STORAGE_DTYPES,
        default="float32",
        help="precision the transformer weights are stored in (they load as float32)",
    )
    parser.add_argument(
        "--image-first",
        action="store_true",
        help="text-to-video draws the first frame as an image, then the video conditioned on it",
    )
    add_sde_arguments(parser)
    args = parser.parse_args(argv)
    has_partner = args.low_noise_transformer is not None or args.high_noise_transformer is not None
    if has_partner != (args.boundary_ratio is not None):
        parser.error("--low-noise-transformer (or --high-noise-transformer) and --boundary-ratio go together")
    path = export_pipeline(
        args.run_dir,
        args.out,
        args.height,
        args.width,
        args.frames,
        shift=args.shift,
        low_noise_transformer=args.low_noise_transformer,
        boundary_ratio=args.boundary_ratio,
        transformer_dtype=args.transformer_dtype,
        high_noise_transformer=args.high_noise_transformer,
        image_first=args.image_first,
        image_transformer=args.image_transformer,
        image_low_noise_transformer=args.image_low_noise_transformer,
        sde=sde_sampling_from_args(args),
    )
    size_mb = sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 1e6
    print(f"pipeline written to {path} ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
