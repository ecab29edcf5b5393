"""Train a seedkit transformer from a YAML recipe.

    python recipes/train.py recipes/debug.yaml --set train.max_steps=20
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/train.py recipes/shapes-tiny.yaml

The run encodes its data into a latent cache once, trains with exact resume (re-run the same command to continue
from the newest valid checkpoint in <output_dir>/checkpoints), and exports <output_dir>/final/{transformer,vae}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedkit.training.config import RecipeConfig, load_config
from seedkit.training.recipes import build_transformer_trainer, export_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path, help="a recipes/*.yaml file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=20 (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.recipe, args.overrides, cls=RecipeConfig)
    trainer = build_transformer_trainer(config)
    trainer.train()
    export_model(trainer, config, Path(config.train.output_dir) / "final")
    trainer.end()
    if trainer.accelerator.is_main_process:
        print(f"done: {trainer.summary()}; model in {Path(config.train.output_dir) / 'final'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
