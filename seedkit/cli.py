"""The `seedkit` command.

Each subcommand lives in its own module that defines ``add_arguments(parser)`` and ``run(args) -> int``; this file
only wires them together, importing a subcommand's module when that subcommand runs so `seedkit --help` stays fast
and a missing optional dependency of one command never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("seedkit.generate", "generate images or videos from prompts (one prompt or a prompts file)"),
    "shapes": ("seedkit.data.shapes_cli", "write a ShapesWorld dataset (clips, captions, audio, manifest)"),
    "eval": ("evaluation.cli", "run an evaluation suite (e.g. `seedkit eval shapesbench --model DIR`)"),
    "curate": ("data_pipelines.cli", "curate raw videos into captioned, scored training clips"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedkit", description="seedkit: video and image diffusion toolkit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        subparser.set_defaults(_module=module_name)
        # Arguments are added lazily (see main) so unrelated imports stay out of `seedkit --help`.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ("-h", "--help") and argv[0] not in SUBCOMMANDS:
            parser.error(f"unknown command {argv[0]!r}; valid commands: {', '.join(SUBCOMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    subparser = argparse.ArgumentParser(prog=f"seedkit {name}", description=help_text)
    module.add_arguments(subparser)
    args = subparser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
