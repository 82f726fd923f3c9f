"""The `fusionedge` command line: the one layer that reaches every package.

parser.py builds the argument parser; commands.py runs each subcommand, importing
training, export or the runtime only when its command needs them, so `fusionedge --help`
and `fusionedge eval model.onnx` load no torch. quickstart.py, compare.py and
benchmark.py are the commands that chain several packages. docs/ARCHITECTURE.md,
"Layers and imports".
"""

from __future__ import annotations

import logging
import sys

from fusionedge.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return args.run_command(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        # Caller mistakes (bad data, bad config, missing files) end in one clear line;
        # anything else is a bug and keeps its traceback.
        print(f"fusionedge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
