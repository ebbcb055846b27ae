"""`snapline` command line: one subcommand per capability, each calling its library entry.

The subcommands live by group (bench_commands, model_commands, build_commands,
serve_commands, fsck_commands, live_commands); each handler parses nothing itself and calls one library function.
Exit status (cluster.exit_status, the one policy): 0 done, 2 bad input (one line naming
the argument, key or file), 1 an environmental failure (one line: unreachable store, no
Ray cluster, service unavailable, partial result); `-v` adds the traceback.
"""
from __future__ import annotations

import argparse
import logging

from cluster.cli.bench_commands import add_bench_commands
from cluster.cli.build_commands import add_build_commands
from cluster.cli.fsck_commands import add_fsck_commands
from cluster.cli.live_commands import add_live_commands
from cluster.exit_status import OneLineArgumentParser, run_guarded
from cluster.cli.model_commands import add_reencode_commands, add_train_commands
from cluster.cli.serve_commands import add_serving_commands


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="snapline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_commands(sub)
    add_train_commands(sub)
    add_reencode_commands(sub)
    add_build_commands(sub)
    add_serving_commands(sub)
    add_fsck_commands(sub)
    add_live_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:      # a bad argument (one line, 2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:    # INFO chatter of libraries: which CPU build, where credentials are
        for noisy in ("faiss.loader", "botocore", "aiobotocore", "s3fs"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_guarded(f"snapline {args.command}", lambda: args.func(args), args.verbose)
