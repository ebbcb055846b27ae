"""`snapline` command line: one subcommand per capability, each calling its library entry.

The subcommands live by group (bench_commands, model_commands, build_commands,
serve_commands); each handler parses nothing itself and calls one library function.
Exit status: 0 done, 2 bad input (one line naming the argument or key), 1 an
environmental failure (Ray cluster or service unavailable, partial result).
"""
from __future__ import annotations

import argparse
import logging
import sys

from cluster.cli.bench_commands import add_bench_commands
from cluster.cli.build_commands import add_build_commands
from cluster.cli.fsck_commands import add_fsck_commands
from cluster.cli.model_commands import add_reencode_commands, add_train_commands
from cluster.cli.serve_commands import add_serving_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snapline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_commands(sub)
    add_train_commands(sub)
    add_reencode_commands(sub)
    add_build_commands(sub)
    add_serving_commands(sub)
    add_fsck_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cluster.serving.types import PartialResultError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"snapline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, PartialResultError) as exc:   # incl. ServiceUnavailableError
        print(f"snapline {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
