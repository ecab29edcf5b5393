"""Change the sampler a saved model directory uses by default, without rewriting its weights.

    python recipes/set_sampler.py seedkit/default_model --sde-noise 0.5 --sde-passes images

writes `seedkit.pipelines.schedulers.FlowMatchSDEScheduler` configs into the directory's `scheduler/` (and
`image_scheduler/`, for `--sde-passes images` or `videos`) and `model_index.json`; the timesteps and shift stay those of
its current `scheduler/`. `--sde-noise 0` makes every step the ODE's again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedkit.generate import add_sde_arguments, sde_sampling_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a model directory written by a seedkit pipeline")
    add_sde_arguments(parser)
    args = parser.parse_args(argv)
    if args.sde_noise is None:
        parser.error("give --sde-noise A (0: the ODE)")
    sde = sde_sampling_from_args(args)
    sde.write(args.model_dir)
    print(f"{args.model_dir}: SDE noise {sde.noise_level} on sigma in {list(sde.window)}, passes: {sde.passes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
