"""Train a seedkit causal video VAE from a YAML recipe (ShapesWorld on the fly + random crops of real clips).

    python recipes/train_vae.py recipes/vae-debug.yaml --set train.max_steps=20
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/train_vae.py recipes/vae-shapes-tiny.yaml

Re-running the same command resumes from the newest valid checkpoint; the result (EMA weights, measured latent
shift / scale) is saved to <output_dir>/final/vae in diffusers layout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedkit.training.config import VAERecipeConfig, load_config
from seedkit.training.vae_trainer import build_vae_trainer, export_vae


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path, help="a recipes/vae-*.yaml file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=20 (repeatable)")
    args = parser.parse_args(argv)
    config = load_config(args.recipe, args.overrides, cls=VAERecipeConfig)
    trainer = build_vae_trainer(config)
    real = trainer.dataset.real_clips
    if trainer.accelerator.is_main_process:
        print(f"real clips: {len(real) if real else 0} ({', '.join(real.names) if real else 'none'})"
              + (f"; failed to decode: {real.failed}" if real and real.failed else ""))
    trainer.train()
    path = export_vae(trainer, Path(config.train.output_dir) / "final", use_ema=config.ema.enabled)
    trainer.end()
    if trainer.accelerator.is_main_process:
        print(f"done: {trainer.summary()}; VAE in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
